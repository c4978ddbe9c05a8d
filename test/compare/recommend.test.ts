// The recommendations follow from the numbers: the best method wins on quality, a memory or latency
// budget rules methods out and changes the advice, many tasks favour small adapters among ties,
// efficiency picks the cheapest good method, ties within noise are said, and each guideline's
// verdict follows its measurements. Also `peft compare --from DIR` end to end.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseBytes, parseDurationMs, recommend, withinNoise } from '../../src/compare/recommend.js';
import type { ComparisonReport, MethodRow } from '../../src/compare/report.js';
import { peft } from '../cli/peft.js';

const MiB = 1024 ** 2;

function row(
  method: string,
  o: { correct: number; peak: number; stored: number; share: number; step: number; latency?: number; gain?: number },
): MethodRow {
  const total = 200;
  return {
    method: method as MethodRow['method'],
    label: method,
    settings: '',
    learning_rate: 1e-3,
    status: 'ok',
    trainable_params: Math.round(o.share * 1e6),
    total_params: 1e6,
    trainable_share: o.share,
    step_time_ms: o.step,
    step_time_vs_full: o.step / 100,
    inference_latency_ms: o.latency ?? 10,
    base_latency_ms: 10,
    latency_vs_base: (o.latency ?? 10) / 10,
    peak_train_rss_bytes: o.peak,
    peak_vs_full: o.peak / (400 * MiB),
    stored_bytes: o.stored,
    stored_vs_full: o.stored / (4 * MiB),
    quality: {
      task: 'sentiment',
      metric: 'accuracy',
      value: o.correct / total,
      correct: o.correct,
      total,
      chance: 0.53,
      evalLoss: 1,
      lossQuality: 0.3,
    },
    relative_gain: o.gain ?? (o.correct / total - 0.53) / (0.93 - 0.53),
    flexibility: { value: 0.8, taskRetention: 0.8, lrGrid: [], tasks: [], notes: [] },
    ratings: Object.fromEntries(
      ['parameter', 'compute', 'space', 'performance', 'flexibility'].map((c) => [c, { measured: 'High', folklore: 'High' }]),
    ) as MethodRow['ratings'],
  };
}

function report(methods: MethodRow[]): ComparisonReport {
  return {
    created: '2026-12-02T00:00:00Z',
    command: null,
    machine: {
      nproc: 2,
      cpu: 'test',
      memory_gib: 24,
      node: 'v20',
      onnxruntime_node: '1.30.0',
      platform: 'linux',
      loadavg_start: [0],
      loadavg_end: [0],
    },
    model: { dir: 'models/tiny-llama', total_params: 1e6 },
    task: { name: 'sentiment', metric: 'accuracy', train_file: 't', eval_file: 'e', eval_examples_scored: 200 },
    budget: { steps: 100, batch_size: 8, max_length: 128, seed: 0, schedule: 'linear', eval_limit: null, flex_eval_limit: null },
    base: {
      quality: { task: 'sentiment', metric: 'accuracy', value: 0, correct: 0, total: 200, chance: 0.53, evalLoss: 3, lossQuality: 0.05 },
      latency_ms: 10,
      latency_prompts: 5,
      latency_tokens: 8,
      flex_tasks: [],
    },
    flexibility_definition: '',
    flex_lr_scales: [1],
    flex_tasks: [],
    rating_rules: { parameter: '', compute: '', space: '', performance: '', flexibility: '' },
    methods,
    wall_seconds: 1,
  };
}

const METHODS = () => [
  row('full', { correct: 186, peak: 400 * MiB, stored: 4 * MiB, share: 1, step: 100 }),
  row('lora', { correct: 182, peak: 250 * MiB, stored: 300 * 1024, share: 0.05, step: 60 }),
  row('qlora', { correct: 178, peak: 150 * MiB, stored: 300 * 1024, share: 0.05, step: 70 }),
  row('ia3', { correct: 146, peak: 240 * MiB, stored: 20 * 1024, share: 0.002, step: 55 }),
  row('prompt', { correct: 106, peak: 230 * MiB, stored: 10 * 1024, share: 0.001, step: 50 }),
  row('prefix', { correct: 110, peak: 235 * MiB, stored: 60 * 1024, share: 0.01, step: 52 }),
  row('adapter', { correct: 120, peak: 260 * MiB, stored: 100 * 1024, share: 0.02, step: 65, latency: 14 }),
];

test('quality: the best method within noise, and the cheapest among the tied', () => {
  const a = recommend(report(METHODS()), { objective: 'quality', tasks: 1 });
  // full 93% vs lora 91% vs qlora 89% on 200 examples: all within noise of full; qlora is the cheapest to train
  assert.ok(withinNoise(METHODS()[0]!, METHODS()[2]!));
  assert.equal(a.pick!.method, 'qlora');
  assert.deepEqual(a.alternatives.map((x) => x.method).sort(), ['full', 'lora']);
  assert.ok(
    a.pick!.evidence.some((e) => /89\.0% \(178\/200\) \(best: full 93\.0%/.test(e)),
    a.pick!.evidence.join('\n'),
  );
  assert.match(a.contradictions.join(' '), /LoRA for quality on one task; here lora scores 91\.0% .*within noise of qlora/);
});

test('a memory budget rules methods out and changes the advice; no fit says so', () => {
  const a = recommend(report(METHODS()), { objective: 'quality', tasks: 1, memoryBudgetBytes: 100 * MiB });
  assert.equal(a.pick, null);
  assert.equal(a.excluded.length, 7);
  const b = recommend(report(METHODS()), { objective: 'quality', tasks: 1, memoryBudgetBytes: 245 * MiB });
  // full, lora and adapter no longer fit; qlora is best of the rest
  assert.equal(b.pick!.method, 'qlora');
  assert.deepEqual(b.excluded.map((x) => x.method).sort(), ['adapter', 'full', 'lora']);
  assert.match(b.excluded.find((x) => x.method === 'full')!.why, /over the 245\.0 MiB budget/);
});

test('a latency budget rules out slow adapters; many tasks favour the smallest stored adapter among ties', () => {
  const rows = METHODS();
  rows.find((r) => r.method === 'ia3')!.quality!.correct = 178;
  rows.find((r) => r.method === 'ia3')!.quality!.value = 178 / 200;
  const single = recommend(report(rows), { objective: 'quality', tasks: 1 });
  const many = recommend(report(rows), { objective: 'quality', tasks: 100 });
  assert.equal(single.pick!.method, 'qlora');
  assert.equal(many.pick!.method, 'ia3', 'with 100 tasks storage decides among the tied');
  assert.match(many.pick!.evidence.join(' '), /for 100 tasks/);
  const fast = recommend(report(METHODS()), { objective: 'quality', tasks: 1, latencyBudgetMs: 12 });
  assert.ok(fast.excluded.some((x) => x.method === 'adapter' && /latency 14\.0 ms/.test(x.why)));
});

test('efficiency: the cheapest method within 90% of the best gain', () => {
  const a = recommend(report(METHODS()), { objective: 'efficiency', tasks: 1 });
  assert.equal(a.pick!.method, 'qlora');
  const rows = METHODS().filter((r) => r.method !== 'qlora');
  const b = recommend(report(rows), { objective: 'efficiency', tasks: 1 });
  assert.equal(b.pick!.method, 'lora');
});

test('guideline verdicts follow the measurements', () => {
  const a = recommend(report(METHODS()), { objective: 'quality', tasks: 1 });
  const v = Object.fromEntries(a.guidelines.map((g) => [g.guideline, g.verdict]));
  assert.equal(v['LoRA for quality on one task'], 'holds');
  assert.equal(v['QLoRA for efficiency (LoRA quality at a fraction of the memory)'], 'holds');
  assert.equal(v['soft prompts for many tasks at minimal cost'], 'does not hold here');
  assert.equal(v['prefix tuning for generation'], 'not testable here');
  assert.equal(v['prompt tuning for classification'], 'holds', 'prompt 53% vs prefix 55% on 200 examples is within noise');
  assert.equal(v['P-tuning where natural-language prompts matter'], 'not testable here');
  const noQ = recommend(report(METHODS().filter((r) => r.method !== 'qlora')), { objective: 'quality', tasks: 1 });
  assert.equal(noQ.guidelines.find((g) => g.guideline.startsWith('QLoRA'))!.verdict, 'not testable here');
});

test('sizes and durations parse; nonsense is refused', () => {
  assert.equal(parseBytes('4GiB'), 4 * 1024 ** 3);
  assert.equal(parseBytes('512 MiB'), 512 * MiB);
  assert.equal(parseBytes('2GB'), 2e9);
  assert.equal(parseDurationMs('0.2s'), 200);
  assert.equal(parseDurationMs('50ms'), 50);
  assert.throws(() => parseBytes('lots'), /4GiB/);
});

test('peft compare --from DIR recomputes the advice under new constraints and rewrites compare.json/md', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'peft-rec-'));
  try {
    writeFileSync(join(dir, 'compare.json'), JSON.stringify(report(METHODS())));
    const r = await peft(['compare', '--from', dir, '--memory-budget', '245MiB', '--tasks', '10']);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /## Which method for you/);
    assert.match(r.stdout, /\*\*Use /);
    assert.match(r.stdout, /- full: peak training memory 400\.0 MiB is over the 245\.0 MiB budget/);
    const saved = JSON.parse(readFileSync(join(dir, 'compare.json'), 'utf8')) as ComparisonReport;
    assert.equal(saved.recommendations!.constraints.tasks, 10);
    assert.match(readFileSync(join(dir, 'compare.md'), 'utf8'), /### The general guidelines, checked here/);
    const bad = await peft(['compare', '--from', join(dir, 'nope')]);
    assert.equal(bad.code, 1);
    assert.match(bad.stderr, /^error: .*holds no compare\.json/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('peft compare --recommend DIR: the advice moves with the memory budget and the number of tasks', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'peft-rec-'));
  try {
    // QLoRA clearly below LoRA here (75% vs 91% on 200 examples), so the budget decides between them
    const rows = METHODS();
    const q = rows.find((r) => r.method === 'qlora')!;
    q.quality = { ...q.quality!, correct: 150, value: 150 / 200 };
    writeFileSync(join(dir, 'compare.json'), JSON.stringify(report(rows)));
    const pick = async (...flags: string[]): Promise<string> => {
      const r = await peft(['compare', '--recommend', dir, ...flags]);
      assert.equal(r.code, 0, r.stderr);
      const saved = JSON.parse(readFileSync(join(dir, 'compare.json'), 'utf8')) as ComparisonReport;
      assert.match(r.stdout, new RegExp(`\\*\\*Use ${saved.recommendations!.pick?.label ?? 'nothing'}\\*\\*|No measured method fits`));
      return saved.recommendations!.pick?.method ?? 'none';
    };
    // no budget: LoRA (tied with full fine-tuning within noise, less memory)
    assert.equal(await pick(), 'lora');
    // 245 MiB rules out full fine-tuning, LoRA (250 MiB) and the adapter: QLoRA, the best of the rest, cheapest of its ties
    assert.equal(await pick('--memory-budget', '245MiB'), 'qlora');
    // the same budget with 10 adapters kept: storage decides among the tied (IA3 20 KiB vs QLoRA 300 KiB per task)
    assert.equal(await pick('--memory-budget', '245MiB', '--tasks', '10'), 'ia3');
    // below every method's peak: no method
    assert.equal(await pick('--memory-budget', '100MiB'), 'none');
    // two folders are refused before anything is read
    const two = await peft(['compare', '--recommend', dir, '--from', join(dir, 'other')]);
    assert.equal(two.code, 1);
    assert.match(two.stderr, /^error: --recommend .* and --from .* name two folders; pass one/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
