// io/files.ts: the regular-file guards and the one reader of JSON-object files, whose three
// mistakes (not a file, not JSON, not an object) come back as the caller's typed error.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PeftError } from '../../src/errors.js';
import { readJsonObject, readSmallTextFile } from '../../src/io/files.js';

class CallerError extends PeftError {}

test('readJsonObject returns the object and raises the caller error for each mistake', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'peft-files-'));
  try {
    const ok = join(dir, 'ok.json');
    await writeFile(ok, '{"r": 8, "target_modules": ["q_proj"]}');
    assert.deepEqual(await readJsonObject(ok, (m) => new CallerError(m)), { r: 8, target_modules: ['q_proj'] });
    const cases: [string, string | undefined, RegExp][] = [
      ['broken.json', '{"r": 8', /broken\.json is not valid JSON/],
      ['array.json', '[1, 2]', /array\.json must hold a JSON object/],
      ['null.json', 'null', /null\.json must hold a JSON object/],
      ['missing.json', undefined, /missing\.json does not exist/],
    ];
    for (const [name, text, re] of cases) {
      if (text !== undefined) await writeFile(join(dir, name), text);
      await assert.rejects(
        readJsonObject(join(dir, name), (m) => new CallerError(m)),
        (e: unknown) => e instanceof CallerError && re.test(e.message) && !e.message.includes('\n'),
      );
    }
    await assert.rejects(
      readJsonObject(dir, (m) => new CallerError(m)),
      (e: unknown) => e instanceof CallerError && /is a folder, not a file/.test(e.message),
    );
    await assert.rejects(
      readJsonObject(ok, (m) => new CallerError(m), 10),
      (e: unknown) => e instanceof CallerError && /above the 10-byte limit/.test(e.message),
    );
    assert.equal(await readSmallTextFile(ok, 1000, (m) => new CallerError(m)), '{"r": 8, "target_modules": ["q_proj"]}');
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});
