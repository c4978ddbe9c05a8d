// peft train --eval-metric / --early-stopping-patience / --save-best end to end on the bundled
// model: the generation metric is logged at every evaluation, a run whose metric cannot improve
// (learning rate 0) stops after `patience` evaluations, and best/ holds the best evaluation's
// adapter; a metric that is not logged is a one-line error.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { peft } from '../../peft.js';

const tmp = mkdtempSync(join(tmpdir(), 'peft-train-evalmetric-'));
process.on('exit', () => rmSync(tmp, { recursive: true, force: true }));
const DATA = [
  '--model',
  'models/tiny-llama',
  '--data',
  'data/tasks/sentiment/train.jsonl',
  '--eval-data',
  'data/tasks/sentiment/eval.jsonl',
  '--batch',
  '4',
  '--max-len',
  '64',
  '--threads',
  '1',
];

test('peft train --eval-metric logs the generation metric; early stopping ends a run that cannot improve', async () => {
  const out = join(tmp, 'stop');
  const r = await peft([
    'train',
    ...DATA,
    '--out',
    out,
    '--lr',
    '0',
    '--steps',
    '20',
    '--eval-every',
    '2',
    '--eval-metric',
    'accuracy',
    '--early-stopping-patience',
    '2',
  ]);
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stderr, /done: 4 steps \(early stopping\)/);
  assert.match(r.stderr, /best eval_accuracy 0\.0000 at step 0; its adapter is in/);
  const evals = readFileSync(join(out, 'metrics.jsonl'), 'utf8')
    .trim()
    .split('\n')
    .map((l) => JSON.parse(l) as Record<string, number | string>)
    .filter((m) => m.kind === 'eval');
  assert.deepEqual(
    evals.map((e) => e.step),
    [0, 2, 4],
  );
  for (const e of evals) assert.ok(typeof e.eval_accuracy === 'number' && e.eval_accuracy >= 0 && e.eval_accuracy <= 1, JSON.stringify(e));
  assert.ok(existsSync(join(out, 'best', 'adapter_model.safetensors')));
  // with lr 0 the adapter never changes: best (step 0) and final weights agree
  assert.deepEqual(readFileSync(join(out, 'best', 'adapter_model.safetensors')), readFileSync(join(out, 'adapter_model.safetensors')));
});

test('peft train: a best-model metric that is not logged, or --eval-metric without --eval-data, is one line', async () => {
  const out = join(tmp, 'bad');
  const r = await peft(['train', ...DATA, '--out', out, '--steps', '2', '--metric-for-best-model', 'eval_bleu']);
  assert.equal(r.code, 1);
  assert.match(r.stderr, /--metric-for-best-model eval_bleu is not logged by this run; choose from eval_loss, eval_perplexity/);
  assert.ok(!existsSync(out), 'refused before the output folder exists');
  const r2 = await peft([
    'train',
    '--model',
    'models/tiny-llama',
    '--data',
    'data/tasks/sentiment/train.jsonl',
    '--out',
    join(tmp, 'bad2'),
    '--steps',
    '2',
    '--eval-metric',
    'exact',
  ]);
  assert.equal(r2.code, 1);
  assert.match(r2.stderr, /--eval-metric needs --eval-data/);
  assert.ok(!existsSync(join(tmp, 'bad2')));
});
