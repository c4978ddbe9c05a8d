// runQuickstart's options: a bad count is a TaskError naming the option, raised before anything is read or written.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { TaskError, runQuickstart } from '../../src/index.js';

test('runQuickstart: rejects a count that is not an integer >= 1 with a TaskError naming it', async () => {
  for (const [opts, message] of [
    [{ steps: 0 }, 'steps must be a positive integer, got 0'],
    [{ r: 2.5 }, 'r must be a positive integer, got 2.5'],
    [{ batchSize: -1 }, 'batch size must be a positive integer, got -1'],
    [{ evalLimit: 0 }, 'eval limit must be a positive integer, got 0'],
    [{ threads: 0.5 }, 'threads must be a positive integer, got 0.5'],
    [{ evalEvery: 0 }, 'eval interval must be a positive integer, got 0'],
  ] as const) {
    await assert.rejects(
      runQuickstart({ ...opts, out: '/nonexistent/quickstart-out' }),
      (e: unknown) => e instanceof TaskError && e.message === message,
    );
  }
});
