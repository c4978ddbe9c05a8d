// docs/ADAPTERS.md's table of `peft train --method` names stays true: one row per registered
// preset, in registry order, with its peft_type, its shorthand flags and the config field each
// sets, and whether the method merges. (A separate file from registry.test.ts, which registers a
// toy method into the same process's registry.)

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { resolve } from 'node:path';
import { tuners } from '../../../src/tuners/registry.js';

test('docs/ADAPTERS.md lists every method with its flags, as the registry has them', async () => {
  const doc = await readFile(resolve('docs/ADAPTERS.md'), 'utf8');
  const from = doc.indexOf('## Every method and its `peft train` flags');
  const section = doc.slice(from, doc.indexOf('\n## ', from + 1));
  const rows = section
    .split('\n')
    .filter((l) => /^\| `[a-z]/.test(l))
    .map((l) =>
      l
        .split('|')
        .slice(1, -1)
        .map((c) => c.trim()),
    );
  const want = tuners().flatMap((t) =>
    t.presets.map((p) => ({
      name: `\`${p.name}\``,
      type: t.peftType,
      flags:
        Object.entries(p.flags ?? {})
          .map(([f, field]) => `\`--${f}\` (${field})`)
          .join(', ') || '—',
      merges: typeof t.mergeable === 'object' ? 'no' : 'yes',
    })),
  );
  assert.deepEqual(
    rows.map((r) => ({ name: r[0], type: r[1], flags: r[2], merges: r[5] })),
    want,
  );
  // README's --method list names the same methods
  const readme = await readFile(resolve('README.md'), 'utf8');
  const listed = /# fine-tune \(methods: ([^;]+);/
    .exec(readme)![1]!
    .split(',')
    .map((s) => s.trim());
  assert.deepEqual(new Set(listed), new Set(want.map((w) => w.name.replace(/`/g, ''))));
});
