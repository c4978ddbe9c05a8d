// `peft compare` on a sequence classifier (the BERT fixture) with {"text","label"} data: quality is
// eval accuracy (argmax of the logits), the base model is scored the same way with the
// most-common-label share beside it, latency is one batch-1 forward pass, every cell of the measured
// table is filled, and the bundled (causal-LM) flexibility tasks are skipped with a note. A bundled
// --task, or no --data, is refused in one line before the output folder exists.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { readFile, readdir } from 'node:fs/promises';
import { join } from 'node:path';
import type { ComparisonReport } from '../../../../src/compare/index.js';
import { fixturePath } from '../../../helpers/fixtures.js';
import { writeClassTask } from '../../../train/synthetic.js';
import { filledMeasuredTable } from '../../compare_support.js';
import { peft } from '../../peft.js';

const bert = fixturePath('models', 'bert');

test('peft compare on a BERT sequence classifier scores accuracy and fills every column', async () => {
  const task = await writeClassTask();
  const out = join(task.dir, 'out');
  const r = await peft([
    'compare',
    '--model',
    bert,
    '--data',
    task.train,
    '--eval',
    task.eval,
    '--methods',
    'lora,ia3',
    '--budget',
    '2',
    '--batch',
    '4',
    '--flex-lrs',
    '0.5,1',
    '--latency-prompts',
    '2',
    '--threads',
    '2',
    '--out',
    out,
  ]);
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stderr, /\(accuracy of a sequence classifier\)/);
  assert.match(r.stderr, /base model: [\d,]+ parameters, accuracy \d+\.\d% \(\d+\/32\), latency [\d.]+ ms \(one forward pass\)/);
  assert.match(r.stderr, /flexibility: bundled tasks sentiment, json, arith not run/);
  for (const label of ['LoRA', 'IA3', 'Full fine-tuning'])
    assert.match(r.stderr, new RegExp(`\\] ${label}: [\\d,]+ trainable .* accuracy \\d+\\.\\d% \\(\\d+/32\\)`));

  const md = await readFile(join(out, 'compare.md'), 'utf8');
  const { header, rows } = filledMeasuredTable(md, ['LoRA', 'IA3', 'Full fine-tuning']);
  assert.equal(header[10], 'accuracy');
  for (const cells of rows) assert.match(cells[10]!, /^\d+\.\d%$/);
  assert.match(md, /accuracy of a sequence classifier \(argmax of its logits vs the label\) on 32 eval examples/);
  assert.match(md, /\*\*inference latency\*\*: median time of one forward pass of one eval example through the classifier \(batch 1/);
  assert.match(md, /the share of examples whose largest logit is their label/);
  assert.match(md, /- LoRA: bundled tasks sentiment, json, arith not run/);

  const report = JSON.parse(await readFile(join(out, 'compare.json'), 'utf8')) as ComparisonReport;
  assert.equal(report.task.metric, 'accuracy');
  assert.equal(report.task.classification, true);
  assert.equal(report.task.eval_examples_scored, 32);
  assert.equal(report.base.quality.metric, 'accuracy');
  assert.equal(report.base.quality.total, 32);
  assert.equal(report.base.quality.chance, 0.5);
  assert.equal(report.base.latency_tokens, 0);
  assert.ok(report.base.latency_ms > 0);
  assert.deepEqual(report.flex_tasks, []);
  for (const m of report.methods) {
    assert.equal(m.status, 'ok', `${m.method}: ${m.error}`);
    assert.equal(m.quality!.metric, 'accuracy');
    assert.equal(m.quality!.total, 32);
    assert.equal(m.quality!.value, m.quality!.correct! / 32);
    assert.ok(Number.isFinite(m.quality!.evalLoss));
    for (const k of [
      'trainable_params',
      'step_time_ms',
      'inference_latency_ms',
      'base_latency_ms',
      'peak_train_rss_bytes',
      'stored_bytes',
    ] as const) {
      assert.ok(Number.isFinite(m[k]) && (m[k] as number) > 0, `${m.method}.${k} = ${m[k]}`);
    }
    assert.equal(m.flexibility!.lrGrid.length, 2);
    assert.ok(m.flexibility!.value >= 0 && m.flexibility!.value <= 1);
    assert.equal(m.loss_curve!.filter((x) => x.kind === 'train').length, 2);
  }
  const lora = report.methods.find((m) => m.method === 'lora')!;
  const full = report.methods.find((m) => m.method === 'full')!;
  assert.equal(lora.peft_type, 'LORA');
  assert.ok(lora.trainable_params! < full.trainable_params!);
  const cfg = JSON.parse(await readFile(join(out, 'runs', 'lora', 'main', 'adapter', 'adapter_config.json'), 'utf8'));
  assert.equal(cfg.task_type, 'SEQ_CLS');
  assert.deepEqual((await readdir(join(out, 'runs'))).sort(), ['base', 'full', 'ia3', 'lora']);
});

test('peft compare on a classifier refuses a bundled task, or no --data, before writing anything', async () => {
  const task = await writeClassTask();
  const out = join(task.dir, 'out');
  const withTask = await peft(['compare', '--model', bert, '--task', 'sentiment', '--out', out]);
  assert.equal(withTask.code, 1);
  assert.match(
    withTask.stderr,
    /^error: --task sentiment is for a causal language model, but this model is a sequence classifier; pass --data TRAIN\.jsonl \(and --eval EVAL\.jsonl\) with \{"text","label"\} rows/,
  );
  const noData = await peft(['compare', '--model', bert, '--out', out]);
  assert.equal(noData.code, 1);
  assert.match(noData.stderr, /^error: this model is a sequence classifier: pass --data TRAIN\.jsonl/);
  assert.equal(withTask.stderr.split('\n').filter(Boolean).length, 1, withTask.stderr);
  assert.ok(!existsSync(out));
});
