// int8 weights for inference (RuntimeOptions.quantize 'int8'): the block quantizer's error bound, and
// on the fixture models that the sessions really run MatMulNBits, that their logits stay close to
// float32's, that the KV cache under int8 is exact against an int8 full forward, and that an
// unmerged LoRA model stays as close.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { loadModel } from '../../src/models/load.js';
import { ForwardSession } from '../../src/generate/index.js';
import { DecoderSessions, type StepInputs } from '../../src/generate/sessions.js';
import type { InferenceModel } from '../../src/generate/index.js';
import { loadAdapter } from '../../src/tuners/load.js';
import { INT8_BLOCK, dequantizeInt8Blocks, quantizeInt8Blocks } from '../../src/onnx/int8_matmul.js';
import { RuntimeError } from '../../src/runtime/session.js';
import { fixturePath } from '../helpers/fixtures.js';

function seeded(n: number, seed: number): Float32Array {
  let x = seed >>> 0 || 1;
  return Float32Array.from({ length: n }, () => {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    return ((x >>> 0) / 2 ** 32 - 0.5) * 3;
  });
}

test('int8 blocks: every weight within half a step of its block scale, both layouts, K not a whole number of blocks', () => {
  for (const [rows, cols, layout] of [
    [37, 300, 'nk'],
    [300, 37, 'kn'],
    [5, INT8_BLOCK, 'nk'],
  ] as const) {
    const w = seeded(rows * cols, rows * 7 + cols);
    w[3] = 0;
    const q = quantizeInt8Blocks(w, rows, cols, layout);
    const back = dequantizeInt8Blocks(q);
    const [n, k] = layout === 'nk' ? [rows, cols] : [cols, rows];
    assert.equal(q.n, n);
    assert.equal(q.k, k);
    assert.equal(q.blocks, Math.ceil(k / INT8_BLOCK));
    for (let r = 0; r < n; r++) {
      for (let c = 0; c < k; c++) {
        const orig = layout === 'nk' ? w[r * k + c]! : w[c * n + r]!;
        const s = q.scales[r * q.blocks + Math.floor(c / INT8_BLOCK)]!;
        assert.ok(Math.abs(back[r * k + c]! - orig) <= s / 2 + 1e-7, `(${r}, ${c}): ${back[r * k + c]} vs ${orig}, step ${s}`);
      }
      // the padding past K holds code 128 (zero)
      const last = (r * q.blocks + q.blocks - 1) * INT8_BLOCK;
      for (let i = k - (q.blocks - 1) * INT8_BLOCK; i < INT8_BLOCK; i++) assert.equal(q.codes[last + i], 128);
    }
  }
  assert.throws(() => quantizeInt8Blocks(Float32Array.of(1, NaN, 2, 3), 2, 2, 'nk'), /NaN or infinity/);
});

function step(ids: number[]): StepInputs {
  const n = ids.length;
  return {
    batch: 1,
    seq: n,
    inputIds: BigInt64Array.from(ids.map(BigInt)),
    attentionMask: new BigInt64Array(n).fill(1n),
    positionIds: BigInt64Array.from({ length: n }, (_, i) => BigInt(i)),
  };
}

const maxAbs = (a: Float32Array): number => a.reduce((m, x) => Math.max(m, Math.abs(x)), 0);
const maxDiff = (a: Float32Array, b: Float32Array): number => a.reduce((m, x, i) => Math.max(m, Math.abs(x - b[i]!)), 0);

async function compare(model: InferenceModel, vocab: number, label: string): Promise<void> {
  const prompt = Array.from({ length: 9 }, (_, i) => (i * 37 + 5) % vocab);
  const next = (prompt[3]! * 11 + 1) % vocab;
  const f32 = await DecoderSessions.create(model, { threads: 1 });
  const i8 = await DecoderSessions.create(model, { threads: 1, quantize: 'int8' });
  const i8fwd = await ForwardSession.create(model, { runtime: { threads: 1, quantize: 'int8' } });
  try {
    assert.equal(f32.memory.decode.int8Products, 0);
    assert.ok(i8.memory.prefill.int8Products > 0 && i8.memory.decode.int8Products > 0, `${label}: no product runs on int8 weights`);
    const a = await f32.prefill(step(prompt));
    const b = await i8.prefill(step(prompt));
    const scale = maxAbs(a.logits);
    const d = maxDiff(a.logits, b.logits);
    // int8 changes the logits (it ran), by little: within 3% of the largest logit
    assert.ok(d > 0, `${label}: int8 logits are bit-identical to float32`);
    assert.ok(d < 0.03 * scale, `${label}: int8 prefill logits differ by ${d} (largest logit ${scale})`);
    const da = await f32.decode(
      {
        ...step([next]),
        attentionMask: new BigInt64Array(prompt.length + 1).fill(1n),
        positionIds: BigInt64Array.of(BigInt(prompt.length)),
      },
      a.cache,
    );
    const db = await i8.decode(
      {
        ...step([next]),
        attentionMask: new BigInt64Array(prompt.length + 1).fill(1n),
        positionIds: BigInt64Array.of(BigInt(prompt.length)),
      },
      b.cache,
    );
    assert.ok(
      maxDiff(da.logits, db.logits) < 0.03 * maxAbs(da.logits),
      `${label}: int8 decode-step logits differ by ${maxDiff(da.logits, db.logits)}`,
    );
    // the cached step under int8 equals the int8 full forward's last position
    const all = [...prompt, next];
    const full = await i8fwd.run({
      inputIds: { dtype: 'int64', shape: [1, all.length], data: BigInt64Array.from(all.map(BigInt)) },
      attentionMask: { dtype: 'int64', shape: [1, all.length], data: new BigInt64Array(all.length).fill(1n) },
    });
    const last = full.logits.data as Float32Array;
    const tail = last.subarray(last.length - vocab);
    assert.ok(
      maxDiff(tail, db.logits) < 1e-3 * maxAbs(tail) + 1e-5,
      `${label}: int8 cached step differs from the int8 full forward by ${maxDiff(tail, db.logits)}`,
    );
  } finally {
    await Promise.all([f32.dispose(), i8.dispose(), i8fwd.dispose()]);
  }
}

for (const name of ['gpt2', 'llama']) {
  test(`${name}: quantize 'int8' runs MatMulNBits, logits within 3% of float32, cached step equals the int8 full forward`, async () => {
    const model = await loadModel(fixturePath('models', name));
    await compare(model, model.vocabSize, name);
  });
}

test('gpt2 + lora_attn unmerged under int8: base products on int8, logits within 3% of the float32 LoRA model', async () => {
  const base = await loadModel(fixturePath('models', 'gpt2'));
  const adapted = await loadAdapter(base, fixturePath('adapters', 'gpt2', 'lora_attn'));
  await compare(adapted, base.vocabSize, 'gpt2 + lora_attn');
});

test("quantize other than 'int8' is refused before any session is built", async () => {
  const model = await loadModel(fixturePath('models', 'gpt2'));
  await assert.rejects(
    DecoderSessions.create(model, { quantize: 'int4' as never }),
    (e: unknown) => e instanceof RuntimeError && /only choice is 'int8'/.test((e as Error).message),
  );
});
