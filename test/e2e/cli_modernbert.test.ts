// The CLI on ModernBERT (the 2026 fixture): `peft forward` reproduces transformers' logits and loss,
// with each peft adapter (--adapter) its logits and (--merged) merged_logits; `peft train` on
// {"text","label"} rows lowers the loss and saves a SEQ_CLS adapter that `peft forward` loads; `peft
// info` describes the local/global attention layout; the tokenizer wraps texts in [CLS] .. [SEP].

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { readSafetensors, toFloat32 } from '../../src/io/safetensors.js';
import { Tokenizer } from '../../src/io/tokenizer.js';
import { type EvalRecord, parseMetrics } from '../../src/train/metrics.js';
import { fixture2026Path, maxAbsDiff } from '../helpers/fixtures.js';
import { writeClassTask } from '../train/synthetic.js';
import { peft } from '../cli/peft.js';

const tmp = mkdtempSync(join(tmpdir(), 'peft-modernbert-'));
process.on('exit', () => rmSync(tmp, { recursive: true, force: true }));
const MODEL = fixture2026Path('models', 'modernbert');
const BATCH = fixture2026Path('models', 'modernbert', 'batch.safetensors');

async function check(out: string, expectedFile: string, key: string): Promise<void> {
  const got = await readSafetensors(out);
  const want = await readSafetensors(expectedFile);
  assert.deepEqual(got.get('logits')!.shape, want.get(key)!.shape);
  const d = maxAbsDiff(toFloat32(got.get('logits')!), toFloat32(want.get(key)!));
  assert.ok(d < 1e-4, `${key}: max abs diff ${d}`);
  const loss = toFloat32(got.get('loss')!)[0]!;
  const wantLoss = toFloat32(want.get('loss')!)[0]!;
  assert.ok(Math.abs(loss - wantLoss) <= 1e-5 * wantLoss, `loss ${loss} vs ${wantLoss}`);
}

test('peft forward on modernbert: base, each adapter and each merged adapter match transformers/peft', async () => {
  const out = join(tmp, 'base.safetensors');
  const r = await peft(['forward', '--model', MODEL, '--batch', BATCH, '--out', out, '--threads', '1']);
  assert.equal(r.code, 0, r.stderr);
  await check(out, join(MODEL, 'expected_outputs.safetensors'), 'logits');
  for (const c of ['lora_attn', 'lora_all_linear_rslora', 'lora_dora']) {
    const dir = fixture2026Path('adapters', 'modernbert', c);
    for (const [flags, key] of [
      [[], 'logits'],
      [['--merged'], 'merged_logits'],
    ] as const) {
      const o = join(tmp, `${c}-${key}.safetensors`);
      const a = await peft(['forward', '--model', MODEL, '--adapter', dir, ...flags, '--batch', BATCH, '--out', o, '--threads', '1']);
      assert.equal(a.code, 0, a.stderr);
      // merged_logits come from the merged model, whose loss peft did not record: the unmerged loss
      // equals it within float32 (MANIFEST merged_vs_unmerged <= 5e-7).
      await check(o, join(dir, 'expected_outputs.safetensors'), key);
    }
  }
});

test('modernbert tokenizer: texts are [CLS] text [SEP] as the fast tokenizer makes them', async () => {
  const tok = await Tokenizer.fromDir(MODEL);
  const cases = JSON.parse(readFileSync(join(MODEL, 'tokenizer_cases.json'), 'utf8')) as {
    cases: { text: string; input_ids: number[]; input_ids_without_special_tokens: number[] }[];
  };
  assert.deepEqual(tok.specialTokenAffixes, { prefix: [598], suffix: [599] });
  for (const c of cases.cases) {
    assert.deepEqual(tok.encode(c.text), c.input_ids, c.text);
    assert.deepEqual(tok.encode(c.text, { addSpecialTokens: false }), c.input_ids_without_special_tokens, c.text);
  }
});

test('peft train --method lora on modernbert lowers the loss on {"text","label"} rows; the adapter runs in peft forward', async () => {
  const task = await writeClassTask();
  const out = join(task.dir, 'out');
  const r = await peft([
    'train',
    '--model',
    MODEL,
    '--method',
    'lora',
    '--target',
    'Wqkv,Wo,Wi',
    '--dropout',
    '0',
    '--lr',
    '2e-3',
    '--data',
    task.train,
    '--eval-data',
    task.eval,
    '--out',
    out,
    '--steps',
    '30',
    '--eval-every',
    '30',
    '--threads',
    '2',
    '--log-every',
    '10',
  ]);
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stderr, /data: 64 training examples \(\{"text","label"\}, 2 classes\), 32 for evaluation/);
  const cfg = JSON.parse(readFileSync(join(out, 'adapter_config.json'), 'utf8'));
  assert.equal(cfg.task_type, 'SEQ_CLS');
  assert.deepEqual(cfg.modules_to_save, ['classifier', 'score']);
  const evals = parseMetrics(readFileSync(join(out, 'metrics.jsonl'), 'utf8')).filter((m): m is EvalRecord => m.kind === 'eval');
  assert.deepEqual(
    evals.map((e) => e.step),
    [0, 30],
  );
  assert.ok(evals[1]!.eval_loss < 0.8 * evals[0]!.eval_loss, `eval loss ${evals[0]!.eval_loss} -> ${evals[1]!.eval_loss}`);
  const saved = await readSafetensors(join(out, 'adapter_model.safetensors'));
  assert.deepEqual(
    saved.get('base_model.model.model.layers.0.mlp.Wi.lora_B.weight')!.shape,
    [192, 8],
    'one LoRA pair over the fused Wi output',
  );
  assert.ok(saved.has('base_model.model.classifier.weight'));
  const o = join(tmp, 'trained.safetensors');
  const f = await peft(['forward', '--model', MODEL, '--adapter', out, '--batch', BATCH, '--out', o, '--threads', '1']);
  assert.equal(f.code, 0, f.stderr);
  const base = toFloat32((await readSafetensors(join(MODEL, 'expected_outputs.safetensors'))).get('logits')!);
  assert.ok(maxAbsDiff(toFloat32((await readSafetensors(o)).get('logits')!), base) > 1e-3, 'the trained adapter changes the logits');
});

test('peft info on modernbert: architecture, labels and the local/global attention layout', async () => {
  const r = await peft(['info', MODEL, '--json']);
  assert.equal(r.code, 0, r.stderr);
  const info = JSON.parse(r.stdout);
  assert.deepEqual(
    [info.architecture, info.model_type, info.supported, info.layers, info.num_labels],
    ['ModernBertForSequenceClassification', 'modernbert', true, 3, 2],
  );
  assert.equal(
    info.attention,
    'global on layers 0 (every 3), local |i-j| <= 2 elsewhere; RoPE base 160000 global / 10000 local; cls pooling',
  );
  const text = await peft(['info', MODEL]);
  assert.match(text.stdout, /attention +global on layers 0/);
});

test('bottleneck adapters on modernbert are refused in one line', async () => {
  const task = await writeClassTask();
  const out = join(task.dir, 'bn');
  const r = await peft(['train', '--model', MODEL, '--method', 'adapter', '--data', task.train, '--out', out, '--steps', '1']);
  assert.equal(r.code, 1, r.stderr);
  assert.match(r.stderr, /error: bottleneck adapters are not implemented for ModernBERT/);
});
