// Every exported error class a user can cause is a PeftError, and the CLI prints any PeftError as
// one line with exit status 1, anything else as an internal error with exit status 2.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as api from '../src/index.js';
import { PeftError, checkPositiveInts } from '../src/errors.js';
import { reportError, CliError } from '../src/cli/errors.js';

test('every exported *Error class extends PeftError', () => {
  const classes = Object.entries(api).filter(([name, v]) => name.endsWith('Error') && name !== 'PeftError' && typeof v === 'function');
  assert.ok(classes.length >= 20, `found ${classes.length} error classes`);
  for (const [name, cls] of classes) {
    assert.ok((cls as { prototype: unknown }).prototype instanceof PeftError, `${name} does not extend PeftError`);
  }
});

test('reportError: PeftError -> one line, exit 1; anything else -> internal error, exit 2', () => {
  const written: string[] = [];
  const orig = process.stderr.write.bind(process.stderr);
  (process.stderr as { write: unknown }).write = (s: string) => {
    written.push(s);
    return true;
  };
  try {
    assert.equal(reportError(new CliError('bad flag: use --x')), 1);
    assert.equal(written.at(-1), 'error: bad flag: use --x\n');
    class SomeLibraryError extends PeftError {}
    assert.equal(reportError(new SomeLibraryError('fix it')), 1);
    assert.equal(new SomeLibraryError('x').name, 'SomeLibraryError');
    assert.equal(reportError(new TypeError('boom')), 2);
    assert.match(written.at(-1)!, /^internal error \(please report\): TypeError: boom/);
  } finally {
    (process.stderr as { write: unknown }).write = orig;
  }
});

test('checkPositiveInts: skips undefined, throws Err for the first count that is not an integer >= 1', () => {
  class CountError extends PeftError {}
  assert.doesNotThrow(() => checkPositiveInts({ steps: 3, 'batch size': undefined, r: 1 }, CountError));
  assert.throws(
    () => checkPositiveInts({ steps: 3, 'batch size': 0, r: 1.5 }, CountError),
    (e: unknown) => e instanceof CountError && e.message === 'batch size must be a positive integer, got 0',
  );
  assert.throws(() => checkPositiveInts({ r: 1.5 }, CountError), /^CountError: r must be a positive integer, got 1.5$/);
  assert.throws(() => checkPositiveInts({ threads: Number.NaN }, CountError), /threads must be a positive integer, got NaN/);
});
