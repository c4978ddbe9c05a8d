// `peft export --format transformers.js` against the real runtime: @huggingface/transformers loads
// every exported fixture model (adapter merged or --unmerged) and the bundled tiny Llama with a
// trained LoRA adapter; its forward pass on the fixture batch matches `peft forward` (the same
// ForwardSession, with the adapter live) within atol 1e-4 + rtol 1e-4 in fp32, its greedy
// generation matches `peft generate` token for token, and the other dtypes stay within the
// measured bounds in docs/EXPORT.md. Bad input fails with one line before anything is written.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { ForwardSession, Generator } from '../../src/generate/index.js';
import { Tokenizer } from '../../src/io/tokenizer.js';
import { loadModel } from '../../src/models/load.js';
import { loadAdapter } from '../../src/tuners/load.js';
import type { HostTensor } from '../../src/runtime/session.js';
import { toFloat32 } from '../../src/io/safetensors.js';
import { fixture2026Path, fixtureBatch, fixturePath, host, readTensors } from '../helpers/fixtures.js';
import { readSafetensors } from '../../src/io/safetensors.js';
import { peft } from '../cli/peft.js';
import { TINY_LLAMA, assertClose, maxAbs, mistralFromLlama, qwen2FromLlama, tempDir, trainTinyAdapter, transformersJs } from './support.js';
import { loadExportSource, writeTransformersJs } from '../../src/export/index.js';
import { TJS_POSITION_START } from '../../src/export/transformersjs.js';
import { exportDirOptions, writeExportFolder } from '../../src/export/files.js';

const tmp = tempDir('peft-export-tjs-');

async function exportCli(args: string[]): Promise<string> {
  const out = join(tmp, `out-${Math.random().toString(36).slice(2)}`);
  const r = await peft(['export', '--format', 'transformers.js', ...args, '--out', out]);
  assert.equal(r.code, 0, r.stderr);
  return out;
}

/** `peft forward` in process: the adapter live (not merged), position ids arange as the fixtures. */
async function peftForward(
  modelDir: string,
  adapterDir: string | undefined,
  batch: { input_ids: HostTensor; attention_mask: HostTensor },
): Promise<Float32Array> {
  const base = await loadModel(modelDir);
  const model = adapterDir ? await loadAdapter(base, adapterDir) : base;
  const s = await ForwardSession.create(model, { runtime: { threads: 1 } });
  try {
    return (await s.run({ inputIds: batch.input_ids, attentionMask: batch.attention_mask })).logits.data as Float32Array;
  } finally {
    await s.dispose();
  }
}

/** transformers.js forward on a batch; decoders get arange position ids (as the fixtures were made). */
async function tjsForward(
  dir: string,
  batch: { input_ids: HostTensor; attention_mask: HostTensor },
  opts: { dtype?: string; classifier?: boolean; positionStart?: number } = {},
): Promise<{ logits: Float32Array; dims: number[] }> {
  const t = await transformersJs();
  const Auto = opts.classifier ? t.AutoModelForSequenceClassification : t.AutoModelForCausalLM;
  const model = await Auto.from_pretrained(dir, { local_files_only: true, dtype: (opts.dtype ?? 'fp32') as 'fp32' });
  try {
    const [b, s] = batch.input_ids.shape as [number, number];
    const feeds: Record<string, unknown> = {
      input_ids: new t.Tensor('int64', batch.input_ids.data as BigInt64Array, [b, s]),
      attention_mask: new t.Tensor('int64', batch.attention_mask.data as BigInt64Array, [b, s]),
    };
    if (!opts.classifier) {
      const pos = new BigInt64Array(b * s);
      // transformers.js numbers Gemma 3's positions from 1 (TJS_POSITION_START); the export takes them so
      for (let i = 0; i < b * s; i++) pos[i] = BigInt((i % s) + (opts.positionStart ?? 0));
      feeds.position_ids = new t.Tensor('int64', pos, [b, s]);
    }
    const out = (await model(feeds)) as { logits: { data: Float32Array; dims: number[] } };
    return { logits: Float32Array.from(out.logits.data), dims: out.logits.dims };
  } finally {
    await model.dispose();
  }
}

for (const [family, adapter] of [
  ['llama', 'lora_attn'],
  ['gpt2', 'lora_all_linear_rslora'],
  ['llama', 'ia3'],
] as const) {
  test(`${family} + ${adapter}: transformers.js runs the merged export as peft forward runs the live adapter`, async () => {
    const modelDir = fixturePath('models', family);
    const adapterDir = fixturePath('adapters', family, adapter);
    const out = await exportCli(['--model', modelDir, '--adapter', adapterDir, ...ALL_DTYPES]);
    for (const f of ['config.json', 'generation_config.json', 'tokenizer.json', 'tokenizer_config.json', 'onnx/model.onnx'])
      assert.ok(existsSync(join(out, f)), f);
    const batch = await fixtureBatch(family);
    const got = await tjsForward(out, batch);
    const want = await peftForward(modelDir, adapterDir, batch);
    assert.deepEqual(got.dims, [...batch.input_ids.shape, got.dims[2]]);
    assertClose(got.logits, want, 1e-4, 1e-4, 'logits vs peft forward');
    const expected = await readTensors('adapters', family, adapter, 'expected_outputs.safetensors');
    assertClose(got.logits, toFloat32(expected.get('merged_logits')!), 1e-4, 1e-4, "logits vs peft's merged_logits");
    await lowPrecision(out, batch, want, `${family} + ${adapter}`);
  });
}

/** The export's fp16 / q8 / q4 files against peft forward: max |logit diff| within the bounds docs/EXPORT.md states. */
const LOW_PRECISION_BOUNDS: Record<string, number> = { fp16: 0.05, q8: 0.25, q4: 1.0 };
async function lowPrecision(
  out: string,
  batch: { input_ids: HostTensor; attention_mask: HostTensor },
  want: Float32Array,
  label: string,
  opts: { classifier?: boolean; positionStart?: number } = {},
): Promise<void> {
  const errors: Record<string, string> = {};
  for (const [dtype, bound] of Object.entries(LOW_PRECISION_BOUNDS)) {
    const e = maxAbs((await tjsForward(out, batch, { ...opts, dtype })).logits, want);
    assert.ok(e < bound, `${label} ${dtype}: max |logit diff| ${e} above ${bound}`);
    errors[dtype] = e.toExponential(1);
  }
  console.log(`${label}: max |logit diff| vs peft forward ${JSON.stringify(errors)}`);
}
const ALL_DTYPES = ['--dtype', 'fp32', '--dtype', 'fp16', '--dtype', 'q8', '--dtype', 'q4'];

/** Values of `x` ([batch, seq, vocab]) at the positions where the mask is 1. */
function atTokens(x: Float32Array, mask: HostTensor): Float32Array {
  const m = mask.data as BigInt64Array;
  const V = x.length / m.length;
  const keep: number[] = [];
  m.forEach((v, i) => {
    if (v === 1n) for (let j = 0; j < V; j++) keep.push(x[i * V + j]!);
  });
  return Float32Array.from(keep);
}

/**
 * transformers 4.57 fixtures: Qwen3, Llama 3 rope scaling, SmolLM3 NoPE layers, Gemma 3 (sliding and
 * global layers, 1-based position ids in transformers.js), Phi-3 (fused qkv/gate_up LoRA, partial
 * rotary with longrope) and ModernBERT.
 */
const CASES_2026: [string, string, boolean][] = [
  ['qwen3', 'lora_attn', false],
  ['llama3', 'lora_all_linear_rslora', false],
  ['smollm3', 'lora_attn', false],
  ['gemma3_text', 'lora_all_linear_rslora', false],
  ['phi3', 'lora_all_linear_rslora', false],
  ['modernbert', 'lora_attn', true],
];
/** Mistral and Qwen2 (no fixture of their own): the llama fixture as those checkpoints (Qwen2 with seeded q/k/v biases), its batch and lora_attn. */
const DERIVED: [string, () => Promise<string>][] = [
  ['mistral', () => mistralFromLlama(tmp)],
  ['qwen2', () => qwen2FromLlama(tmp)],
];
for (const [family, adapter, classifier] of [
  ...CASES_2026,
  ...DERIVED.map(([f]) => [f, 'lora_attn', false] as [string, string, boolean]),
]) {
  test(`${family} + ${adapter}: transformers.js runs the merged export (fp32, fp16, q8, q4) as peft forward runs the live adapter`, async () => {
    const derived = DERIVED.find(([f]) => f === family)?.[1];
    const modelDir = derived ? await derived() : fixture2026Path('models', family);
    const adapterDir = derived ? fixturePath('adapters', 'llama', adapter) : fixture2026Path('adapters', family, adapter);
    const out = await exportCli(['--model', modelDir, '--adapter', adapterDir, ...ALL_DTYPES]);
    const b = await readSafetensors(
      derived ? fixturePath('models', 'llama', 'batch.safetensors') : fixture2026Path('models', family, 'batch.safetensors'),
    );
    const batch = { input_ids: host(b.get('input_ids')!), attention_mask: host(b.get('attention_mask')!) };
    const opts = { classifier, positionStart: TJS_POSITION_START[family] };
    const got = await tjsForward(out, batch, opts);
    const want = await peftForward(modelDir, adapterDir, batch);
    assertClose(got.logits, want, 1e-4, 1e-4, 'logits vs peft forward');
    if (!derived) {
      const expected = await readSafetensors(fixture2026Path('adapters', family, adapter, 'expected_outputs.safetensors'));
      // Gemma 3: a padded query whose sliding window holds only padding differs from SDPA's zero rows (fixture README)
      const tokens = (x: Float32Array) => (family === 'gemma3_text' ? atTokens(x, batch.attention_mask) : x);
      if (expected.has('merged_logits'))
        assertClose(tokens(got.logits), tokens(toFloat32(expected.get('merged_logits')!)), 1e-4, 1e-4, "logits vs peft's merged_logits");
    }
    await lowPrecision(out, batch, want, `${family} + ${adapter}`, opts);
    if (classifier) return;
    // the cached path: 10 greedy tokens through transformers.js' KV cache vs peft generate
    const t = await transformersJs();
    const model = await t.AutoModelForCausalLM.from_pretrained(out, { local_files_only: true, dtype: 'fp32' });
    const tokenizer = await Tokenizer.fromDir(modelDir);
    const gen = await Generator.create(await loadAdapter(await loadModel(modelDir), adapterDir), { tokenizer, runtime: { threads: 1 } });
    try {
      const ours = (await gen.generate(['hello world'], { maxNewTokens: 10, stopTokenIds: [] })).sequences[0]!;
      const ids = new t.Tensor('int64', BigInt64Array.from(ours.promptIds.map(BigInt)), [1, ours.promptIds.length]);
      const mask = new t.Tensor('int64', new BigInt64Array(ours.promptIds.length).fill(1n), [1, ours.promptIds.length]);
      const theirs = (await model.generate({
        input_ids: ids,
        attention_mask: mask,
        max_new_tokens: 10,
        min_new_tokens: 10,
        do_sample: false,
        eos_token_id: [],
      } as never)) as { tolist(): bigint[][] };
      assert.deepEqual(theirs.tolist()[0]!.map(Number).slice(ours.promptIds.length), ours.tokenIds, 'greedy tokens');
    } finally {
      await gen.dispose();
      await model.dispose();
    }
  });
}

test('llama + lora_attn --unmerged: LoRA A/B stay separate initializers and give the same logits', async () => {
  const modelDir = fixturePath('models', 'llama');
  const adapterDir = fixturePath('adapters', 'llama', 'lora_attn');
  const out = await exportCli(['--model', modelDir, '--adapter', adapterDir, '--unmerged']);
  const bytes = readFileSync(join(out, 'onnx/model.onnx'));
  assert.ok(bytes.includes(Buffer.from('lora_A')) && bytes.includes(Buffer.from('lora_B')), 'the ONNX file names the LoRA initializers');
  const batch = await fixtureBatch('llama');
  const got = await tjsForward(out, batch);
  assertClose(got.logits, await peftForward(modelDir, adapterDir, batch), 1e-4, 1e-4, 'unmerged logits vs peft forward');
});

test('weights above externalDataBytes go to onnx/model.onnx_data chunks, which transformers.js loads (models above 2 GB)', async () => {
  const modelDir = fixturePath('models', 'llama');
  const adapterDir = fixturePath('adapters', 'llama', 'lora_attn');
  const src = await loadExportSource(modelDir, [adapterDir], { format: 'transformers.js' });
  const out = join(tmp, 'external');
  await writeExportFolder(out, exportDirOptions(false, []), async (dir) => {
    await writeTransformersJs(src.model, src.dir, dir, { dtypes: ['fp32', 'q4'], externalDataBytes: 0, chunkBytes: 200 * 1024 });
  });
  const config = JSON.parse(readFileSync(join(out, 'config.json'), 'utf8')) as {
    'transformers.js_config': { use_external_data_format: Record<string, number> };
  };
  const chunks = config['transformers.js_config'].use_external_data_format;
  assert.ok(chunks['model.onnx']! >= 2, JSON.stringify(chunks));
  for (const [file, n] of Object.entries(chunks))
    for (let i = 0; i < n; i++) assert.ok(existsSync(join(out, 'onnx', `${file}_data${i ? `_${i}` : ''}`)), `${file} chunk ${i}`);
  assert.ok(statSync(join(out, 'onnx/model.onnx')).size < 64 * 1024, 'the weights left the ModelProto');
  const batch = await fixtureBatch('llama');
  const want = await peftForward(modelDir, adapterDir, batch);
  assertClose((await tjsForward(out, batch)).logits, want, 1e-4, 1e-4, 'fp32 with external data vs peft forward');
  assert.ok(maxAbs((await tjsForward(out, batch, { dtype: 'q4' })).logits, want) < 1, 'q4 with external data');
});

test('bert + lora_attn: a sequence classifier loads as AutoModelForSequenceClassification', async () => {
  const modelDir = fixturePath('models', 'bert');
  const adapterDir = fixturePath('adapters', 'bert', 'lora_attn');
  const out = await exportCli(['--model', modelDir, '--adapter', adapterDir, ...ALL_DTYPES]);
  assert.ok(!existsSync(join(out, 'generation_config.json')));
  const batch = await fixtureBatch('bert');
  const got = await tjsForward(out, batch, { classifier: true });
  assert.deepEqual(got.dims, [3, 2]);
  const want = await peftForward(modelDir, adapterDir, batch);
  assertClose(got.logits, want, 1e-4, 1e-4, 'classifier logits vs peft forward');
  await lowPrecision(out, batch, want, 'bert + lora_attn', { classifier: true });
  const t = await transformersJs();
  const clf = await t.pipeline('text-classification', out, { local_files_only: true, dtype: 'fp32' });
  const r = (await clf('a fine day')) as { label: string; score: number }[];
  assert.ok(r[0] && typeof r[0].label === 'string' && r[0].score > 0 && r[0].score <= 1);
  await clf.dispose();
});

test('tiny Llama + trained LoRA: every dtype loads; fp32 matches peft forward and peft generate, fp16/q8/q4 within their measured error', async () => {
  const adapter = await trainTinyAdapter(tmp);
  const out = await exportCli([
    '--model',
    TINY_LLAMA,
    '--adapter',
    adapter,
    '--dtype',
    'fp32',
    '--dtype',
    'fp16',
    '--dtype',
    'q8',
    '--dtype',
    'q4',
  ]);
  const sizes = Object.fromEntries(readdirSync(join(out, 'onnx')).map((f) => [f, statSync(join(out, 'onnx', f)).size]));
  assert.deepEqual(Object.keys(sizes).sort(), ['model.onnx', 'model_fp16.onnx', 'model_q4.onnx', 'model_quantized.onnx']);
  assert.ok(
    sizes['model_fp16.onnx']! < 0.6 * sizes['model.onnx']! &&
      sizes['model_quantized.onnx']! < 0.35 * sizes['model.onnx']! &&
      sizes['model_q4.onnx']! < 0.35 * sizes['model.onnx']!,
    JSON.stringify(sizes),
  );

  // A batch of the task's prompts, right-padded.
  const tokenizer = await Tokenizer.fromDir(TINY_LLAMA);
  const prompts = ['Review: The food was excellent and the staff were kind.\nSentiment:', 'Review: A miserable, cold evening.\nSentiment:'];
  const ids = prompts.map((p) => tokenizer.encode(p));
  const s = Math.max(...ids.map((x) => x.length));
  const inputIds = new BigInt64Array(ids.length * s);
  const mask = new BigInt64Array(ids.length * s);
  ids.forEach((row, i) => row.forEach((id, j) => ((inputIds[i * s + j] = BigInt(id)), (mask[i * s + j] = 1n))));
  const batch = {
    input_ids: { dtype: 'int64' as const, shape: [ids.length, s], data: inputIds },
    attention_mask: { dtype: 'int64' as const, shape: [ids.length, s], data: mask },
  };
  const want = await peftForward(TINY_LLAMA, adapter, batch);
  // The adapter is trained here, so the logits' scale is not fixed: the low-precision bounds are
  // shares of the logits' spread (max - min), about 0.06 / 0.28 / 1.4 for a spread of 23.
  const spread = want.reduce((a, b) => Math.max(a, b), -Infinity) - want.reduce((a, b) => Math.min(a, b), Infinity);
  const bounds: Record<string, number> = { fp16: 0.0025 * spread, q8: 0.012 * spread, q4: 0.06 * spread };
  const errors: Record<string, number> = {};
  for (const dtype of ['fp32', 'fp16', 'q8', 'q4']) {
    const got = await tjsForward(out, batch, { dtype });
    errors[dtype] = maxAbs(got.logits, want);
    if (dtype === 'fp32') assertClose(got.logits, want, 1e-4, 1e-4, 'fp32 logits vs peft forward');
    else
      assert.ok(
        errors[dtype]! < bounds[dtype]!,
        `${dtype}: max |logit diff| ${errors[dtype]} above ${bounds[dtype]} (logit spread ${spread})`,
      );
  }
  console.log(`tiny-llama + LoRA, max |logit diff| vs peft forward: ${JSON.stringify(errors)}; file sizes ${JSON.stringify(sizes)}`);

  // 20 greedy tokens: transformers.js generate vs peft generate (Generator), same prompt ids.
  const t = await transformersJs();
  const tok = await t.AutoTokenizer.from_pretrained(out, { local_files_only: true });
  const model = await t.AutoModelForCausalLM.from_pretrained(out, { local_files_only: true, dtype: 'fp32' });
  const gen = await Generator.create(await loadAdapter(await loadModel(TINY_LLAMA), adapter), { tokenizer, runtime: { threads: 1 } });
  try {
    for (const prompt of [prompts[0]!, 'The cat sat on the']) {
      const enc = tok(prompt) as { input_ids: { tolist(): bigint[][] } };
      const promptIds = enc.input_ids.tolist()[0]!.map(Number);
      assert.deepEqual(promptIds, tokenizer.encode(prompt), 'both tokenizers give the same prompt ids');
      const ours = (await gen.generate([prompt], { maxNewTokens: 20 })).sequences[0]!;
      const theirs = (await model.generate({ ...(enc as object), max_new_tokens: 20, do_sample: false })) as { tolist(): bigint[][] };
      assert.deepEqual(
        theirs.tolist()[0]!.map(Number).slice(promptIds.length),
        ours.tokenIds,
        `greedy tokens for ${JSON.stringify(prompt)}`,
      );
    }
    const pipe = await t.pipeline('text-generation', out, { local_files_only: true, dtype: 'fp32' });
    const r = (await pipe('The cat sat on the', { max_new_tokens: 5, do_sample: false })) as { generated_text: string }[];
    assert.ok(r[0]!.generated_text.startsWith('The cat sat on the'));
    await pipe.dispose();
  } finally {
    await gen.dispose();
    await model.dispose();
  }
});

test('bad input is one line and writes nothing: existing --out, prompt-learning adapters, unknown dtype', async () => {
  const modelDir = fixturePath('models', 'llama');
  const existing = await exportCli(['--model', modelDir]);
  let r = await peft(['export', '--format', 'transformers.js', '--model', modelDir, '--out', existing]);
  assert.equal(r.code, 1);
  assert.match(r.stderr, /^error: --out .* holds an earlier peft export output; pass --overwrite/);
  const out = join(tmp, 'never');
  r = await peft([
    'export',
    '--format',
    'transformers.js',
    '--model',
    modelDir,
    '--adapter',
    fixturePath('adapters', 'llama', 'prompt_tuning_random'),
    '--out',
    out,
  ]);
  assert.equal(r.code, 1);
  assert.match(r.stderr, /^error: .*PROMPT_TUNING adapter/);
  assert.equal(r.stderr.trim().split('\n').length, 1);
  r = await peft(['export', '--format', 'transformers.js', '--model', modelDir, '--dtype', 'int3', '--out', out]);
  assert.equal(r.code, 1);
  assert.match(r.stderr, /^error: --dtype int3/);
  r = await peft(['export', '--format', 'tflite', '--model', modelDir, '--out', out]);
  assert.equal(r.code, 1);
  assert.ok(!existsSync(out));
  assert.deepEqual(
    readdirSync(tmp).filter((f) => f.startsWith('.')),
    [],
    'no temp folder left behind',
  );
});
