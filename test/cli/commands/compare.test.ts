// `peft compare` end to end: two methods (plus full fine-tuning, the reference) with a tiny budget
// fill every cell of the measured table and every field of compare.json, and write both figures;
// a bad method name fails in one line before the output folder exists.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { mkdtemp, readFile, readdir, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { ComparisonReport } from '../../../src/compare/index.js';
import { bundledModelDir, taskDataDir } from '../../../src/tasks/tasks.js';
import { filledMeasuredTable } from '../compare_support.js';
import { peft } from '../peft.js';
import { methodNames } from '../../../src/tuners/registry.js';

/** The bundled model and a slice of its sentiment task. */
async function setup(): Promise<{ dir: string; model: string; train: string; eval: string }> {
  const dir = await mkdtemp(join(tmpdir(), 'peft-compare-'));
  const model = bundledModelDir();
  const lines = async (file: string, n: number) =>
    (await readFile(join(taskDataDir('sentiment'), file), 'utf8')).split('\n').filter(Boolean).slice(0, n).join('\n') + '\n';
  const train = join(dir, 'train.jsonl');
  const ev = join(dir, 'eval.jsonl');
  await writeFile(train, await lines('train.jsonl', 24));
  await writeFile(ev, await lines('eval.jsonl', 6));
  return { dir, model, train, eval: ev };
}

const ROW_FIELDS = [
  'method',
  'label',
  'peft_type',
  'settings',
  'learning_rate',
  'status',
  'trainable_params',
  'total_params',
  'trainable_share',
  'step_time_ms',
  'step_time_vs_full',
  'inference_latency_ms',
  'base_latency_ms',
  'latency_vs_base',
  'peak_train_rss_bytes',
  'peak_vs_full',
  'stored_bytes',
  'stored_vs_full',
  'stored_files',
  'quality',
  'relative_gain',
  'gain_basis',
  'flexibility',
  'ratings',
  'final_loss',
  'train_seconds',
  'run_seconds',
  'steps',
  'loss_curve',
] as const;

test('peft compare with two methods and a tiny budget fills every column', async () => {
  const s = await setup();
  const out = join(s.dir, 'out');
  const r = await peft([
    'compare',
    '--model',
    s.model,
    '--data',
    s.train,
    '--eval',
    s.eval,
    '--methods',
    'lora,ia3',
    '--budget',
    '2',
    '--batch',
    '4',
    '--flex-lrs',
    '0.5,1',
    '--flex-tasks',
    'none',
    '--latency-prompts',
    '2',
    '--latency-tokens',
    '2',
    '--threads',
    '2',
    '--out',
    out,
  ]);
  assert.equal(r.code, 0, r.stderr);
  // a progress line per method, the table on stdout
  for (const label of ['LoRA', 'IA3', 'Full fine-tuning']) assert.match(r.stderr, new RegExp(`\\] ${label}: [\\d,]+ trainable`));
  assert.match(r.stdout, /## Measured/);
  assert.match(r.stdout, /Flexibility: flexibility = /);

  for (const f of ['compare.md', 'compare.json', 'loss_curves.svg', 'quality_vs_params.svg']) assert.ok(existsSync(join(out, f)), f);
  const md = await readFile(join(out, 'compare.md'), 'utf8');
  filledMeasuredTable(md, ['LoRA', 'IA3', 'Full fine-tuning']);
  const ratings = md.slice(md.indexOf('## Ratings'), md.indexOf('## What the columns mean'));
  assert.equal((ratings.match(/(High|Medium|Low)\*{0,2} \/ (High|Medium|Low)/g) ?? []).length, 15);
  assert.match(md, /## Flexibility runs/);

  const report = JSON.parse(await readFile(join(out, 'compare.json'), 'utf8')) as ComparisonReport;
  assert.deepEqual(
    report.methods.map((m) => m.method),
    ['lora', 'ia3', 'full'],
  );
  for (const m of report.methods) {
    for (const k of ROW_FIELDS) assert.ok(m[k] !== undefined, `${m.method}.${k} is missing`);
    for (const k of [
      'trainable_params',
      'trainable_share',
      'step_time_ms',
      'inference_latency_ms',
      'peak_train_rss_bytes',
      'stored_bytes',
      'learning_rate',
    ] as const) {
      assert.ok(Number.isFinite(m[k]) && (m[k] as number) > 0, `${m.method}.${k} = ${m[k]}`);
    }
    assert.ok(m.flexibility!.value >= 0 && m.flexibility!.value <= 1);
    assert.equal(m.flexibility!.lrGrid.length, 2);
    assert.equal(m.loss_curve!.filter((x) => x.kind === 'train').length, 2);
    assert.ok(m.stored_files!.length > 0);
  }
  const lora = report.methods.find((m) => m.method === 'lora')!;
  const full = report.methods.find((m) => m.method === 'full')!;
  assert.ok(lora.trainable_params! < full.trainable_params!);
  assert.ok(lora.stored_bytes! < full.stored_bytes!);
  assert.equal(full.step_time_vs_full, 1);
  assert.ok(report.flexibility_definition.length > 100);
  assert.ok(report.machine.nproc >= 1);
  // the recommendations come from these rows: the pick is one of the measured methods, with evidence
  const advice = report.recommendations!;
  assert.ok(['lora', 'ia3', 'full'].includes(advice.pick!.method), JSON.stringify(advice.pick));
  assert.ok(advice.pick!.evidence.length >= 4);
  assert.equal(advice.guidelines.length, 8);
  assert.match(await readFile(join(out, 'compare.md'), 'utf8'), /## Which method for you/);

  const curves = await readFile(join(out, 'loss_curves.svg'), 'utf8');
  const scatter = await readFile(join(out, 'quality_vs_params.svg'), 'utf8');
  for (const svg of [curves, scatter]) {
    assert.match(svg, /^<svg[\s\S]*<\/svg>\n$/);
    for (const label of ['LoRA', 'IA3', 'Full fine-tuning']) assert.ok(svg.includes(label), label);
  }
  assert.deepEqual((await readdir(join(out, 'runs'))).sort(), ['base', 'full', 'ia3', 'lora']);
});

test('peft compare refuses an unknown method before writing anything', async () => {
  const s = await setup();
  const out = join(s.dir, 'out');
  const r = await peft(['compare', '--model', s.model, '--data', s.train, '--eval', s.eval, '--methods', 'lora,dora2', '--out', out]);
  assert.equal(r.code, 1);
  // the choices are the registry's methods, full fine-tuning (the reference) last
  assert.equal(r.stderr, `error: unknown method dora2; choose from ${methodNames().join(', ')}\n`);
  assert.ok(r.stderr.includes('lora, qlora, ia3, prompt, prefix, ptuning, adapter, loha, lokr') && r.stderr.endsWith(', full\n'));
  assert.ok(!existsSync(out));
});
