// runComparison's options: a bad count is a CompareError naming the option, raised before anything is read or written.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { CompareError, runComparison } from '../../src/index.js';

test('runComparison: rejects a count that is not an integer >= 1 with a CompareError naming it', async () => {
  for (const [opts, message] of [
    [{ budget: 0 }, 'the budget (steps) must be a positive integer, got 0'],
    [{ batchSize: 1.5 }, 'the batch size must be a positive integer, got 1.5'],
    [{ flexEvalLimit: 0 }, 'the flexibility eval limit must be a positive integer, got 0'],
    [{ latencyTokens: -2 }, 'latency tokens must be a positive integer, got -2'],
    [{ runTimeoutS: 0 }, 'the run timeout must be a positive integer, got 0'],
  ] as const) {
    await assert.rejects(
      runComparison({ ...opts, outDir: '/nonexistent/compare-out' }),
      (e: unknown) => e instanceof CompareError && e.message === message,
    );
  }
});
