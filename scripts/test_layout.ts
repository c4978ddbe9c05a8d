// Tests mirror src/ file for file (docs/ARCHITECTURE.md, "Conventions"): the tests of
// `src/<path>.ts` are `test/<path>.test.ts`, or, when one file has several test files,
// `test/<path>/<aspect>.test.ts` (e.g. test/cli/commands/train/config.test.ts for
// src/cli/commands/train.ts); the tests of `scripts/<path>` are `test/scripts/<path>.test.ts`.
// Suites that run the library across many files (fixture matrices, CLI runs over several commands,
// fault, fuzz, browser and package tests) live under test/e2e/. This lists every test file that
// is neither, so a file's tests are found without searching.
// `node dist/scripts/test_layout.js` prints one line each; test/scripts/test_layout.test.ts fails
// while there is any.

import { existsSync, readdirSync, statSync } from 'node:fs';
import { dirname, join, posix, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

/** The folder under test/ for suites that are not the tests of one file. */
export const E2E_DIR = 'e2e';
const SKIP_DIRS = new Set(['fixtures', 'node_modules', 'dist']);

function testFiles(dir: string, out: string[]): void {
  for (const e of readdirSync(dir)) {
    if (SKIP_DIRS.has(e)) continue;
    const p = join(dir, e);
    if (statSync(p).isDirectory()) testFiles(p, out);
    else if (e.endsWith('.test.ts')) out.push(p);
  }
}

/** One line per test file of `root`/test that neither mirrors a source file nor sits under test/e2e/. */
export function findMisplacedTests(root = resolve(dirname(fileURLToPath(import.meta.url)), '../..')): string[] {
  const files: string[] = [];
  testFiles(join(root, 'test'), files);
  const misplaced: string[] = [];
  for (const file of files) {
    const rel = relative(join(root, 'test'), file).split('\\').join('/');
    if (rel.startsWith(`${E2E_DIR}/`)) continue;
    const path = rel.slice(0, -'.test.ts'.length);
    // test/scripts/<path> mirrors scripts/<path>; every other folder mirrors src/
    const [base, mirrored] = path.startsWith('scripts/') ? ['scripts', path.slice('scripts/'.length)] : ['src', path];
    const candidates = [mirrored, posix.dirname(mirrored)].flatMap((p) => [`${base}/${p}.ts`, `${base}/${p}.mjs`]);
    if (candidates.some((c) => existsSync(join(root, c)))) continue;
    misplaced.push(
      `test/${rel}: no ${base}/${mirrored}.ts (nor ${base}/${posix.dirname(mirrored)}.ts for an aspect folder): ` +
        `move it to test/<path of the file it tests>.test.ts, or to test/${E2E_DIR}/ if it runs the library across many files`,
    );
  }
  return misplaced.sort();
}

if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const misplaced = findMisplacedTests();
  for (const m of misplaced) console.log(m);
  console.error(`${misplaced.length} test file${misplaced.length === 1 ? '' : 's'} outside the src/ mirror and test/${E2E_DIR}/`);
  process.exitCode = misplaced.length ? 1 : 0;
}
