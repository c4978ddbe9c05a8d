// Tests mirror src/ file for file: scripts/test_layout.ts lists the test files that neither sit at
// the test/ path of a source file (test/<path>.test.ts, or test/<path>/<aspect>.test.ts) nor under
// test/e2e/. Any such file fails here, with what to do.

import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { E2E_DIR, findMisplacedTests } from '../../scripts/test_layout.js';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '../../..');

test('test_layout: mirrored files, aspect folders, test/scripts and test/e2e pass; anything else is listed', () => {
  const dir = mkdtempSync(join(tmpdir(), 'peft-layout-'));
  const write = (path: string): void => {
    mkdirSync(dirname(join(dir, path)), { recursive: true });
    writeFileSync(join(dir, path), '\n');
  };
  try {
    for (const f of ['src/cli/commands/train.ts', 'src/io/files.ts', 'scripts/check.ts']) write(f);
    write('test/cli/commands/train.test.ts'); // mirrors the file
    write('test/cli/commands/train/config.test.ts'); // an aspect of the file
    write('test/scripts/check.test.ts'); // mirrors scripts/
    write(`test/${E2E_DIR}/fuzz/files.test.ts`); // a suite
    write('test/fixtures/x/y.test.ts'); // fixtures are not tests
    write('test/cli/peft.ts'); // a support file
    write('test/cli/train.test.ts'); // not mirrored
    write('test/io/files/deep/x.test.ts'); // an aspect folder is one level deep
    write('test/scripts/gone.test.ts'); // its script is gone
    const found = findMisplacedTests(dir).map((l) => l.split(':')[0]);
    assert.deepEqual(found, ['test/cli/train.test.ts', 'test/io/files/deep/x.test.ts', 'test/scripts/gone.test.ts']);
    assert.match(
      findMisplacedTests(dir)[0],
      /no src\/cli\/train\.ts .*move it to test\/<path of the file it tests>\.test\.ts, or to test\/e2e\//,
    );
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('test_layout: every test file of this repository mirrors a src/ or scripts/ file or is under test/e2e/', () => {
  assert.deepEqual(findMisplacedTests(root), [], 'see docs/ARCHITECTURE.md, "Tests mirror src/ file for file"');
});
