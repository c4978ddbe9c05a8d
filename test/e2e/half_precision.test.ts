// Half-precision checkpoints as users have them: a fixture model converted here to float16 and to
// bfloat16 (this test's own copy) loads, records its dtype, and reproduces the float32 fixture's
// logits within the rounding of its weights; `peft merge` writes the source dtype by default (half
// the bytes, config.json saying so) and what --dtype asks for otherwise.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { copyFileSync, mkdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { type RawTensor, fromTypedArray, readSafetensors, toFloat32, writeSafetensors } from '../../src/io/safetensors.js';
import { loadModel } from '../../src/models/load.js';
import { fixture2026Path, fixturePath, inTempDir, maxAbsDiff } from '../helpers/fixtures.js';
import { peft } from '../cli/peft.js';
import { getFullFineTuneModel } from '../../src/tuners/full/index.js';

type Half = 'float16' | 'bfloat16';
const FILE = { float16: 'F16', bfloat16: 'BF16', float32: 'F32' } as const;

/**
 * Bounds on |logits - float32 fixture logits| from the rounded weights, about 2x what was measured
 * (2026-12-02; float16 keeps 11 significant bits, bfloat16 8): llama float16 3.9e-4 (merged 4.7e-4,
 * merged written as float32 3.8e-4), bfloat16 4.0e-3 (4.6e-3, 3.2e-3); modernbert float16 4.5e-4
 * (7.4e-4, 6.1e-4), bfloat16 1.6e-3 (4.6e-3, 2.8e-3). The test prints its numbers.
 */
const BOUND: Record<string, Record<Half, number>> = {
  llama: { float16: 1e-3, bfloat16: 1e-2 },
  modernbert: { float16: 1.5e-3, bfloat16: 1e-2 },
};

/** A copy of a model folder with every float32 tensor rounded to `dtype` and config.json saying so under `key`. */
function convert(src: string, dst: string, dtype: Half, key: 'dtype' | 'torch_dtype'): Promise<void> {
  mkdirSync(dst, { recursive: true });
  const config = JSON.parse(readFileSync(join(src, 'config.json'), 'utf8'));
  config[key] = dtype;
  writeFileSync(join(dst, 'config.json'), JSON.stringify(config, null, 2));
  for (const f of ['tokenizer.json', 'tokenizer_config.json', 'special_tokens_map.json', 'vocab.json', 'merges.txt'])
    copyFileSync(join(src, f), join(dst, f));
  return readSafetensors(join(src, 'model.safetensors')).then((ts) => {
    const out = new Map<string, RawTensor>();
    for (const [name, t] of ts) out.set(name, t.dtype === 'F32' ? fromTypedArray(toFloat32(t), t.shape, FILE[dtype]) : t);
    return writeSafetensors(join(dst, 'model.safetensors'), out, { format: 'pt' });
  });
}

async function forwardLogits(tmp: string, model: string, batch: string, extra: string[] = []): Promise<Float32Array> {
  const out = join(tmp, `logits-${Math.random().toString(36).slice(2)}.safetensors`);
  const r = await peft(['forward', '--model', model, '--batch', batch, '--out', out, '--threads', '1', ...extra]);
  assert.equal(r.code, 0, r.stderr);
  return toFloat32((await readSafetensors(out)).get('logits')!);
}

const CASES = [
  {
    name: 'llama',
    dir: fixturePath('models', 'llama'),
    adapter: fixturePath('adapters', 'llama', 'lora_attn'),
    key: 'torch_dtype' as const,
  },
  {
    name: 'modernbert',
    dir: fixture2026Path('models', 'modernbert'),
    adapter: fixture2026Path('adapters', 'modernbert', 'lora_attn'),
    key: 'dtype' as const,
  },
];

for (const c of CASES) {
  for (const dtype of ['float16', 'bfloat16'] as const) {
    test(`${c.name} as ${dtype} (config "${c.key}"): loads, logits within the rounding; peft merge keeps ${dtype} unless --dtype says otherwise`, async () => {
      await inTempDir('peft-half-', async (tmp) => {
        const half = join(tmp, 'model');
        await convert(c.dir, half, dtype, c.key);
        const model = await loadModel(half);
        assert.equal(model.weights.checkpointDtype, dtype);
        assert.equal(model.config.torchDtype, dtype);
        const batch = join(c.dir, 'batch.safetensors');
        const want = toFloat32((await readSafetensors(join(c.dir, 'expected_outputs.safetensors'))).get('logits')!);
        const got = await forwardLogits(tmp, half, batch);
        const d = maxAbsDiff(got, want);
        assert.ok(d > 0 && d < BOUND[c.name]![dtype], `${c.name} ${dtype}: logits differ from float32 by ${d}`);

        // merge: the source dtype by default, half the bytes of a float32 merge, config.json telling the truth
        const merged = join(tmp, 'merged');
        const r = await peft(['merge', '--model', half, '--adapter', c.adapter, '--out', merged]);
        assert.equal(r.code, 0, r.stderr);
        assert.match(r.stderr, new RegExp(`${dtype} as the base checkpoint`));
        const tensors = await readSafetensors(join(merged, 'model.safetensors'));
        assert.deepEqual(new Set([...tensors.values()].map((t) => t.dtype)), new Set([FILE[dtype]]));
        const cfg = JSON.parse(readFileSync(join(merged, 'config.json'), 'utf8'));
        assert.equal(cfg[c.key], dtype);
        const merged32 = join(tmp, 'merged32');
        const r32 = await peft(['merge', '--model', half, '--adapter', c.adapter, '--out', merged32, '--dtype', 'float32']);
        assert.equal(r32.code, 0, r32.stderr);
        assert.deepEqual(
          new Set([...(await readSafetensors(join(merged32, 'model.safetensors'))).values()].map((t) => t.dtype)),
          new Set(['F32']),
        );
        assert.equal(JSON.parse(readFileSync(join(merged32, 'config.json'), 'utf8'))[c.key], 'float32');
        const [bytesHalf, bytes32] = [statSync(join(merged, 'model.safetensors')).size, statSync(join(merged32, 'model.safetensors')).size];
        assert.ok(Math.abs(bytesHalf / bytes32 - 0.5) < 0.01, `merged ${bytesHalf} bytes vs float32 ${bytes32}`);
        // the merged half-precision model gives peft's merged logits within the same rounding (and one more for W + BA)
        const wantMerged = toFloat32((await readSafetensors(join(c.adapter, 'expected_outputs.safetensors'))).get('merged_logits')!);
        const dm = maxAbsDiff(await forwardLogits(tmp, merged, batch), wantMerged);
        assert.ok(dm < 2 * BOUND[c.name]![dtype], `${c.name} ${dtype} merged logits differ by ${dm}`);
        const dm32 = maxAbsDiff(await forwardLogits(tmp, merged32, batch), wantMerged);
        assert.ok(dm32 < BOUND[c.name]![dtype], `${c.name} ${dtype} -> float32 merged logits differ by ${dm32}`);
        console.log(
          `${c.name} ${dtype}: logits ${d.toExponential(2)}, merged ${dm.toExponential(2)}, merged as float32 ${dm32.toExponential(2)}`,
        );
      });
    });
  }
}

test('peft merge --dtype float16 refuses a weight beyond float16 range before writing anything', async () => {
  await inTempDir('peft-half-', async (tmp) => {
    const src = fixturePath('models', 'llama');
    const big = join(tmp, 'model');
    mkdirSync(big);
    for (const f of ['config.json', 'tokenizer.json']) copyFileSync(join(src, f), join(big, f));
    const ts = await readSafetensors(join(src, 'model.safetensors'));
    const norm = toFloat32(ts.get('model.norm.weight')!);
    norm[0] = 1e5;
    ts.set('model.norm.weight', fromTypedArray(norm, ts.get('model.norm.weight')!.shape));
    await writeSafetensors(join(big, 'model.safetensors'), ts, { format: 'pt' });
    const out = join(tmp, 'out');
    const r = await peft([
      'merge',
      '--model',
      big,
      '--adapter',
      fixturePath('adapters', 'llama', 'lora_attn'),
      '--out',
      out,
      '--dtype',
      'float16',
    ]);
    assert.equal(r.code, 1, r.stderr);
    assert.match(
      r.stderr,
      /error: cannot save model\.norm\.weight as float16: it holds 100000, beyond float16's range \(65504\); save as bfloat16 or float32/,
    );
    assert.throws(() => statSync(out));
    const bad = await peft([
      'merge',
      '--model',
      big,
      '--adapter',
      fixturePath('adapters', 'llama', 'lora_attn'),
      '--out',
      out,
      '--dtype',
      'float64',
    ]);
    assert.equal(bad.code, 1);
    assert.match(bad.stderr, /float64.*(float32, float16, bfloat16|choices)/);
  });
});

test('full fine-tuning of a bfloat16 checkpoint saves float32 weights and says float32 in config.json', async () => {
  await inTempDir('peft-half-', async (tmp) => {
    const half = join(tmp, 'model');
    await convert(fixturePath('models', 'llama'), half, 'bfloat16', 'torch_dtype');
    const full = getFullFineTuneModel(await loadModel(half));
    const out = join(tmp, 'full');
    await full.savePretrained(out);
    assert.deepEqual(new Set([...(await readSafetensors(join(out, 'model.safetensors'))).values()].map((t) => t.dtype)), new Set(['F32']));
    assert.equal(JSON.parse(readFileSync(join(out, 'config.json'), 'utf8')).torch_dtype, 'float32');
  });
});
