// peft train --report-to tensorboard / --run-name / --max-examples / field-name flags end to end:
// the event file under --out/runs/<run name> holds the same losses as metrics.jsonl, only the first
// n rows are used, rows with their own field names train, and a row without them is one line.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { readEventScalars } from '../../../helpers/tfevents.js';
import { peft } from '../../peft.js';

const tmp = mkdtempSync(join(tmpdir(), 'peft-train-report-'));
process.on('exit', () => rmSync(tmp, { recursive: true, force: true }));
const BASE = ['--model', 'models/tiny-llama', '--steps', '3', '--batch', '4', '--max-len', '64', '--threads', '1', '--no-eval-at-start'];

test('peft train --report-to tensorboard mirrors metrics.jsonl into an event file; --max-examples; --run-name', async () => {
  const out = join(tmp, 'tb');
  const r = await peft([
    'train',
    ...BASE,
    '--data',
    'data/tasks/sentiment/train.jsonl',
    '--eval-data',
    'data/tasks/sentiment/eval.jsonl',
    '--eval-every',
    '3',
    '--out',
    out,
    '--report-to',
    'tensorboard',
    '--run-name',
    'first',
    '--max-examples',
    '12',
  ]);
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stderr, /data: 12 training examples/);
  const files = readdirSync(join(out, 'runs', 'first'));
  assert.equal(files.length, 1);
  assert.match(files[0]!, /^events\.out\.tfevents\./);
  const events = readEventScalars(join(out, 'runs', 'first', files[0]!));
  const metrics = readFileSync(join(out, 'metrics.jsonl'), 'utf8')
    .trim()
    .split('\n')
    .map((l) => JSON.parse(l) as { kind: string; step: number; loss?: number; eval_loss?: number });
  const trainLosses = metrics.filter((m) => m.kind === 'train').map((m) => [m.step, Math.fround(m.loss!)]);
  assert.deepEqual(
    events.filter((e) => 'train/loss' in e.scalars).map((e) => [e.step, e.scalars['train/loss']]),
    trainLosses,
  );
  const evals = metrics.filter((m) => m.kind === 'eval');
  assert.ok(evals.length >= 1);
  assert.deepEqual(
    events.filter((e) => 'eval/loss' in e.scalars).map((e) => e.scalars['eval/loss']),
    evals.map((m) => Math.fround(m.eval_loss!)),
  );
  assert.equal(JSON.parse(readFileSync(join(out, 'run_config.json'), 'utf8')).runName, 'first');
  const bad = await peft(['train', ...BASE, '--data', 'data/tasks/sentiment/train.jsonl', '--out', join(tmp, 'x'), '--report-to', 'wandb']);
  assert.equal(bad.code, 1);
  assert.match(bad.stderr, /--report-to takes jsonl, tensorboard/);
});

test('peft train --prompt-key/--completion-key read rows with other field names; a row without them is one line', async () => {
  const data = join(tmp, 'qa.jsonl');
  const rows = Array.from({ length: 8 }, (_, i) => JSON.stringify({ question: `What is ${i} plus one?`, answer: ` ${i + 1}` }));
  writeFileSync(data, rows.join('\n') + '\n');
  const out = join(tmp, 'qa');
  const r = await peft(['train', ...BASE, '--data', data, '--out', out, '--prompt-key', 'question', '--completion-key', 'answer']);
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stderr, /data: 8 training examples \(prompt-completion/);
  writeFileSync(data, rows.slice(0, 2).join('\n') + '\n{"q": "x"}\n');
  const out2 = join(tmp, 'qa2');
  const b = await peft(['train', ...BASE, '--data', data, '--out', out2, '--prompt-key', 'question', '--completion-key', 'answer']);
  assert.equal(b.code, 1);
  assert.match(b.stderr, /qa\.jsonl:3: none of the fields "question", "answer" is in this row/);
  assert.ok(!existsSync(out2));
});
