// evaluateTask on the Llama fixture: greedy outputs are batched, cut at the first newline and
// scored by the task metric; references equal to the model's own outputs score 1, others 0.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Tokenizer } from '../../src/io/tokenizer.js';
import { loadModel } from '../../src/models/load.js';
import { type TaskSpec, evaluateTask, formatScore, TaskError } from '../../src/tasks/index.js';
import { fixturePath } from '../helpers/fixtures.js';

const dir = fixturePath('models', 'llama');
const spec: TaskSpec = { name: 'echo', description: 'test task', metric: 'exact_match', maxNewTokens: 6 };
const prompts = ['The cat', 'name: Bob; city:', 'Question: what is 2 plus 3?\nAnswer:', 'hello world', 'A'];

test('references equal to the greedy outputs score 1, batched or not; others score 0', async () => {
  const model = await loadModel(dir);
  const tokenizer = await Tokenizer.fromDir(dir);
  const progress: [number, number][] = [];
  const first = await evaluateTask(
    model,
    tokenizer,
    spec,
    prompts.map((prompt) => ({ prompt, completion: ' \u2603' })),
    {
      batchSize: 2,
      runtime: { threads: 1 },
      onProgress: (done, total) => progress.push([done, total]),
    },
  );
  assert.deepEqual(progress, [
    [2, 5],
    [4, 5],
    [5, 5],
  ]);
  assert.equal(first.total, 5);
  assert.equal(first.correct, 0);
  assert.equal(first.score, 0);
  assert.equal(first.metric, 'exact_match');
  for (const p of first.predictions) assert.ok(!p.prediction.includes('\n'), `cut at the newline: ${JSON.stringify(p.prediction)}`);

  const oracle = first.predictions.map((p) => ({ prompt: p.prompt, completion: ` ${p.prediction} ` }));
  const again = await evaluateTask(model, tokenizer, spec, oracle, { batchSize: 2, runtime: { threads: 1 } });
  assert.equal(again.score, 1, JSON.stringify(again.predictions));
  assert.equal(formatScore(again), 'exact match 100.0% (5/5)');
  // One prompt at a time gives the same greedy outputs as left-padded batches.
  const single = await evaluateTask(model, tokenizer, spec, oracle, { batchSize: 1, limit: 3, runtime: { threads: 1 } });
  assert.equal(single.total, 3);
  assert.equal(single.correct, 3, JSON.stringify(single.predictions));
});

test('bad options and empty example lists are typed errors', async () => {
  const model = await loadModel(dir);
  const tokenizer = await Tokenizer.fromDir(dir);
  await assert.rejects(evaluateTask(model, tokenizer, spec, []), TaskError);
  await assert.rejects(evaluateTask(model, tokenizer, spec, [{ prompt: 'a', completion: 'b' }], { batchSize: 0 }), TaskError);
  await assert.rejects(evaluateTask(model, tokenizer, spec, [{ prompt: 'a', completion: 'b' }], { limit: -1 }), TaskError);
});
