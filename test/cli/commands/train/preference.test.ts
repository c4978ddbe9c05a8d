// peft train --objective dpo|orpo end to end on the bundled preference task (data/tasks/preference):
// a few steps raise the held-out preference accuracy and the reward margin, metrics.jsonl carries
// TRL's rewards/*, `peft eval --metric preference` agrees with the trainer's last evaluation, and a
// bad row or flag is a one-line error before the output folder exists.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { readEventScalars } from '../../../helpers/tfevents.js';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { peft } from '../../peft.js';

const tmp = mkdtempSync(join(tmpdir(), 'peft-train-pref-'));
process.on('exit', () => rmSync(tmp, { recursive: true, force: true }));
const TRAIN = 'data/tasks/preference/train.jsonl';
// the first 48 held-out pairs keep the test fast (docs/TRAINING.md measures all 128)
const EVAL = join(tmp, 'eval48.jsonl');
writeFileSync(EVAL, readFileSync('data/tasks/preference/eval.jsonl', 'utf8').split('\n').slice(0, 48).join('\n') + '\n');
const BASE = [
  '--model',
  'models/tiny-llama',
  '--data',
  TRAIN,
  '--eval-data',
  EVAL,
  '--steps',
  '6',
  '--batch',
  '8',
  '--lr',
  '2e-3',
  '--target',
  'all-linear',
  '--threads',
  '1',
];
const REWARDS = ['rewards/chosen', 'rewards/rejected', 'rewards/accuracies', 'rewards/margins'];

type Rec = Record<string, number | string>;
const metricsOf = (out: string): Rec[] =>
  readFileSync(join(out, 'metrics.jsonl'), 'utf8')
    .trim()
    .split('\n')
    .map((l) => JSON.parse(l) as Rec);

for (const objective of ['dpo', 'orpo'] as const) {
  test(`peft train --objective ${objective} raises held-out preference accuracy and margin on the bundled preference task`, async () => {
    const out = join(tmp, objective);
    // both on peft train's default base (int8): DPO's policy, its adapter a no-op, equals the
    // reference bit for bit there too (test/train/preference/step.test.ts checks fp32 and int8)
    const r = await peft([
      'train',
      ...BASE,
      '--objective',
      objective,
      '--beta',
      '0.1',
      '--out',
      out,
      '--report-to',
      'tensorboard',
      '--run-name',
      objective,
    ]);
    assert.equal(r.code, 0, r.stderr);
    assert.match(
      r.stderr,
      new RegExp(`data: 256 training preference pairs \\(\\{"prompt","chosen","rejected"\\}, ${objective}, beta 0.1\\), 48 for evaluation`),
    );
    const m = metricsOf(out);
    const train = m.filter((x) => x.kind === 'train');
    assert.equal(train.length, 6);
    for (const t of train) for (const k of REWARDS) assert.equal(typeof t[k], 'number', `${k} in ${JSON.stringify(t)}`);
    const evals = m.filter((x) => x.kind === 'eval');
    const [first, last] = [evals[0]!, evals[evals.length - 1]!];
    assert.equal(first.step, 0);
    assert.equal(last.step, 6);
    for (const k of REWARDS) assert.equal(typeof last[`eval_${k}`], 'number');
    assert.equal(last.eval_pairs, 48);
    const acc = [first.eval_accuracy as number, last.eval_accuracy as number];
    const margin = [first['eval_rewards/margins'] as number, last['eval_rewards/margins'] as number];
    console.log(
      `${objective}: held-out preference accuracy ${acc[0]} -> ${acc[1]}, reward margin ${margin[0].toFixed(3)} -> ${margin[1].toFixed(3)}`,
    );
    // DPO reaches every pair here in 6 steps; ORPO's NLL term dominates its first steps, so its accuracy
    // may move by a pair or two either way while its margin grows steadily
    if (objective === 'dpo') assert.ok(acc[1] > acc[0], `${objective}: accuracy ${acc[0]} -> ${acc[1]}`);
    else assert.ok(acc[1] >= acc[0], `${objective}: accuracy ${acc[0]} -> ${acc[1]}`);
    assert.ok(margin[1] > margin[0] + 0.05, `${objective}: margin ${margin[0]} -> ${margin[1]}`);
    if (objective === 'dpo') {
      // the reference is the base with the adapter disabled: before any step policy = reference
      assert.equal(first['eval_rewards/chosen'], 0);
      assert.equal(first['eval_rewards/margins'], 0);
    }
    assert.match(r.stderr, /eval accuracy \d+\.\d% -> \d+\.\d%/);
    // TensorBoard gets the same rewards, as train/rewards/* and eval/rewards/*
    const tbDir = join(out, 'runs', objective);
    const events = readEventScalars(join(tbDir, readdirSync(tbDir)[0]!));
    assert.deepEqual(
      events.filter((e) => 'train/rewards/margins' in e.scalars).map((e) => e.scalars['train/rewards/margins']),
      train.map((t) => Math.fround(t['rewards/margins'] as number)),
    );
    assert.deepEqual(
      events.filter((e) => 'eval/rewards/margins' in e.scalars).map((e) => e.scalars['eval/rewards/margins']),
      evals.map((t) => Math.fround(t['eval_rewards/margins'] as number)),
    );
    const cfg = JSON.parse(readFileSync(join(out, 'run_config.json'), 'utf8')) as Record<string, unknown>;
    assert.equal(cfg.objective, objective);
    assert.equal(cfg.beta, 0.1);
    if (objective === 'dpo') {
      // peft eval scores the same pairs the same way: base vs adapted
      const base = await peft([
        'eval',
        '--model',
        'models/tiny-llama',
        '--data',
        EVAL,
        '--metric',
        'preference',
        '--json',
        '--threads',
        '1',
      ]);
      assert.equal(base.code, 0, base.stderr);
      const tuned = await peft([
        'eval',
        '--model',
        'models/tiny-llama',
        '--adapter',
        out,
        '--data',
        EVAL,
        '--metric',
        'preference',
        '--json',
        '--threads',
        '1',
      ]);
      assert.equal(tuned.code, 0, tuned.stderr);
      const [b, t] = [
        JSON.parse(base.stdout) as { score: number; rows: number },
        JSON.parse(tuned.stdout) as { score: number; ci95: number[] },
      ];
      assert.equal(b.rows, 48);
      assert.ok(Math.abs(b.score - acc[0]!) <= 1 / 48 + 1e-9, `base ${b.score} vs trainer ${acc[0]}`);
      assert.ok(Math.abs(t.score - acc[1]!) <= 1 / 48 + 1e-9, `tuned ${t.score} vs trainer ${acc[1]}`);
      assert.ok(t.ci95[0]! <= t.score && t.score <= t.ci95[1]! + 1e-12, JSON.stringify(t));
    }
  });
}

test('a preference row without "rejected" is one line naming the file, the line and the field, before --out exists', async () => {
  const data = join(tmp, 'bad.jsonl');
  writeFileSync(
    data,
    '{"prompt":"a","chosen":" b","rejected":" c"}\n{"prompt":"a","chosen":" b","rejected":" d"}\n{"prompt":"a","chosen":" b"}\n',
  );
  const out = join(tmp, 'bad');
  const r = await peft(['train', '--model', 'models/tiny-llama', '--data', data, '--out', out, '--objective', 'dpo', '--steps', '1']);
  assert.equal(r.code, 1);
  assert.match(
    r.stderr,
    /bad\.jsonl:3: field "rejected" is missing; a preference row is \{"prompt": "...", "chosen": "...", "rejected": "..."\}/,
  );
  assert.equal(r.stderr.trim().split('\n').length, 1, r.stderr);
  assert.ok(!existsSync(out));
  writeFileSync(data, '{"prompt":"a","chosen":[" b"],"rejected":" c"}\n');
  const r2 = await peft(['train', '--model', 'models/tiny-llama', '--data', data, '--out', out, '--objective', 'orpo', '--steps', '1']);
  assert.match(r2.stderr, /bad\.jsonl:1: field "chosen" is a list, not a string/);
  assert.ok(!existsSync(out));
  const e = await peft(['eval', '--model', 'models/tiny-llama', '--data', data, '--metric', 'preference']);
  assert.equal(e.code, 1);
  assert.match(e.stderr, /bad\.jsonl:1: field "chosen" must be a string/);
});

test('preference flags that do not fit are refused before anything is loaded', async () => {
  const out = join(tmp, 'flags');
  const cases: [string[], RegExp][] = [
    [['--beta', '0.2'], /--beta is for --objective dpo or orpo/],
    [['--objective', 'dpo', '--packing'], /--packing is not for --objective dpo/],
    [['--objective', 'dpo', '--method', 'full'], /DPO's reference model is the base with the adapter disabled/],
    [['--objective', 'orpo', '--beta', '0'], /--beta must be a positive number/],
  ];
  for (const [flags, want] of cases) {
    const r = await peft(['train', '--model', 'models/tiny-llama', '--data', TRAIN, '--out', out, '--steps', '1', ...flags]);
    assert.equal(r.code, 1, flags.join(' '));
    assert.match(r.stderr, want);
    assert.ok(!existsSync(out));
  }
});
