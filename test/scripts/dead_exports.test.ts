// An export is a promise that another file uses the name: scripts/dead_exports.ts finds the exports
// of src/ that nothing outside their own file imports, and src/ must have none.

import assert from 'node:assert/strict';
import { mkdtempSync, mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { findDeadExports } from '../../scripts/dead_exports.js';

const here = dirname(fileURLToPath(import.meta.url));
const root = resolve(here, '../../..');

test('dead_exports: finds an export used only in its own file and keeps the ones others use', () => {
  const dir = mkdtempSync(join(tmpdir(), 'peft-dead-'));
  try {
    mkdirSync(join(dir, 'src/lib'), { recursive: true });
    mkdirSync(join(dir, 'test'), { recursive: true });
    writeFileSync(
      join(dir, 'src/lib/a.ts'),
      [
        'export interface Shape { n: number }', // named by used(): kept
        'export interface Unused { n: number }',
        'export function used(s: Shape): number { return local(s.n); }',
        'export function local(n: number): number { return n; }', // used only here: dead
        'export const viaNamespace = 1;',
      ].join('\n'),
    );
    writeFileSync(join(dir, 'src/index.ts'), "export { used } from './lib/a.js';\nexport const entry = 1;\n");
    writeFileSync(join(dir, 'test/b.test.ts'), "import * as a from '../src/lib/a.js';\nconsole.log(a.viaNamespace);\n");
    assert.deepEqual(findDeadExports(dir), ['src/lib/a.ts: Unused', 'src/lib/a.ts: local']);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('dead_exports: src/ has no export without a user outside its file', () => {
  assert.deepEqual(
    findDeadExports(root),
    [],
    'exports nothing outside their file uses: remove `export`, delete the code if nothing uses it, or add it to src/index.ts if library users need it',
  );
});
