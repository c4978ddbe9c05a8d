// The int8 frozen base (--base-precision int8): host quantization per output column (error at most
// half a step, the transposed copy equal to quantizing the transpose), and a LoRA training step on
// it whose loss stays within 1% of the float32 step's and whose gradients point the same way; the
// input-gradient product keeps every row of a gradient whose rows differ in size by orders of
// magnitude (scaled per row), where one 8-bit scale for the tensor loses the small rows.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { loadModel } from '../../src/models/load.js';
import { QuantizationError } from '../../src/quant/errors.js';
import { Graph } from '../../src/graph/ir.js';
import * as o from '../../src/graph/ops.js';
import { int8Base, int8InputGrad, int8Operands, quantizeColumns } from '../../src/quant/int8_base.js';
import { RuntimeSession } from '../../src/runtime/session.js';
import { collate } from '../../src/train/batches.js';
import { TrainStep } from '../../src/train/step.js';
import { createAdapter } from '../../src/tuners/load.js';
import { fixturePath } from '../helpers/fixtures.js';
import { randn, rng } from '../helpers/gradcheck.js';

test('quantizeColumns: per-column scales, error <= half a step, transposed = quantizing the transpose', () => {
  const [R, C] = [7, 5];
  const m = Float32Array.from(randn(rng(11), R * C));
  const q = quantizeColumns(m, R, C);
  for (let c = 0; c < C; c++) {
    let absmax = 0;
    for (let r = 0; r < R; r++) absmax = Math.max(absmax, Math.abs(m[r * C + c]!));
    assert.ok(Math.abs(q.scales[c]! - absmax / 127) <= 1e-7 * absmax);
    for (let r = 0; r < R; r++) assert.ok(Math.abs(q.codes[r * C + c]! * q.scales[c]! - m[r * C + c]!) <= q.scales[c]! / 2 + 1e-7);
  }
  const mt = Float32Array.from({ length: R * C }, (_, i) => m[(i % R) * C + Math.floor(i / R)]!);
  const viaT = quantizeColumns(m, R, C, true);
  const direct = quantizeColumns(mt, C, R);
  assert.deepEqual([viaT.rows, viaT.cols], [C, R]);
  assert.deepEqual(viaT.codes, direct.codes);
  assert.deepEqual(viaT.scales, direct.scales);
  assert.throws(() => quantizeColumns(Float32Array.of(1, NaN), 1, 2), QuantizationError);
  // one quantization per weight array, whatever asks for it
  assert.equal(int8Base(m, [R, C], 'conv1d'), int8Base(m, [R, C], 'conv1d'));
});

test('int8InputGrad: each row of g @ W^T within 3% of float32, rows 1e6 apart; per tensor the small rows are lost', async () => {
  const [T, N, K] = [6, 48, 32];
  const w = Float32Array.from(randn(rng(5), K * N), (v) => v * 0.05); // x @ W, W [K, N] (conv1d layout)
  const sizes = [1, 1e-2, 1e-4, 1e-6, 0, 0.3];
  const gv = Float32Array.from(randn(rng(6), T * N), (v, i) => v * sizes[Math.floor(i / N)]!);
  const g = new Graph();
  const grad = g.tensor('g', 'float32', [T, N], Array.from(gv));
  const [b, bScale, bt, btScale] = int8Operands(g, 'w', int8Base(w, [K, N], 'conv1d'));
  const outs = {
    rowScaled: int8InputGrad(grad, [b, bScale, bt, btScale]),
    perTensor: o.int8Matmul(grad, [bt, btScale, b, bScale]),
    exact: o.matmul(grad, o.transposeLast2(g.tensor('wf', 'float32', [K, N], Array.from(w)))),
  };
  const s = await RuntimeSession.fromGraph(g, outs, { threads: 1 });
  const r = await s.run({});
  await s.dispose();
  const [rowScaled, perTensor, exact] = [r.rowScaled!, r.perTensor!, r.exact!].map((t) => t.data as Float32Array);
  const rowError = (got: Float32Array, t: number): number => {
    let [err, norm] = [0, 0];
    for (let k = 0; k < K; k++) {
      err += (got[t * K + k]! - exact![t * K + k]!) ** 2;
      norm += exact![t * K + k]! ** 2;
    }
    return norm === 0 ? Math.sqrt(err) : Math.sqrt(err / norm);
  };
  for (let t = 0; t < T; t++)
    assert.ok(rowError(rowScaled!, t) < 0.03, `row ${t} (size ${sizes[t]}): relative error ${rowError(rowScaled!, t)}`);
  assert.equal(rowError(rowScaled!, 4), 0, 'an all-zero row stays exactly zero');
  // the reason for the scaling: per tensor, the 1e-4 and 1e-6 rows round to (nearly) nothing
  assert.ok(
    rowError(perTensor!, 2) > 0.5 && rowError(perTensor!, 3) > 0.5,
    `per tensor: ${rowError(perTensor!, 2)}, ${rowError(perTensor!, 3)}`,
  );
});

const cosine = (a: Float32Array, b: Float32Array): number => {
  let ab = 0;
  let aa = 0;
  let bb = 0;
  for (let i = 0; i < a.length; i++) {
    ab += a[i]! * b[i]!;
    aa += a[i]! * a[i]!;
    bb += b[i]! * b[i]!;
  }
  return ab / Math.sqrt(aa * bb);
};

for (const family of ['gpt2', 'llama'] as const) {
  test(`${family}: a LoRA step on the int8 base has the float32 step's loss (1%) and gradients (cosine > 0.999)`, async () => {
    const base = await loadModel(fixturePath('models', family));
    const targets = family === 'gpt2' ? ['c_attn', 'c_proj', 'c_fc'] : ['q_proj', 'v_proj', 'down_proj'];
    const model = await createAdapter(
      base,
      { peft_type: 'LORA', r: 4, lora_alpha: 8, target_modules: targets, task_type: 'CAUSAL_LM' },
      { seed: 7 },
    );
    const params = model.parameters();
    // non-zero B, so that A gets a gradient too (peft starts B at zero)
    let s = 1;
    for (const [name, p] of params) if (name.includes('lora_B')) p.data.forEach((_, i) => (p.data[i] = Math.sin(s++ * 0.7) * 0.05));
    const ids = (b: number) => Array.from({ length: 24 }, (_, i) => (31 * b + 7 * i + 3) % base.vocabSize);
    const batch = collate(
      [0, 1, 2].map((b) => ({ inputIds: ids(b), labels: ids(b) })),
      0,
    );
    const fp32 = await TrainStep.compile(model, { threads: 1 });
    const int8 = await TrainStep.compile(model, { threads: 1, basePrecision: 'int8' });
    const a = await fp32.run(batch, params);
    const b = await int8.run(batch, params);
    await fp32.dispose();
    await int8.dispose();
    assert.notEqual(a.loss, b.loss, 'the int8 step must not be the float32 step');
    assert.ok(Math.abs(a.loss - b.loss) <= 0.01 * a.loss, `loss ${b.loss} vs float32 ${a.loss}`);
    let minCos = 1;
    for (const [name, g] of a.grads) {
      const h = b.grads.get(name)!;
      assert.ok(
        h.some((x) => x !== 0),
        `${name}: no gradient on the int8 base`,
      );
      minCos = Math.min(minCos, cosine(g, h));
    }
    assert.ok(minCos > 0.999, `smallest gradient cosine ${minCos}`);
  });
}

test('int8Exclude keeps the named modules float32: all of them = the float32 step; lm_head alone = int8 elsewhere', async () => {
  const base = await loadModel(fixturePath('models', 'llama'));
  const model = await createAdapter(
    base,
    { peft_type: 'LORA', r: 4, lora_alpha: 8, target_modules: ['q_proj', 'v_proj'], task_type: 'CAUSAL_LM' },
    { seed: 7 },
  );
  const params = model.parameters();
  let s = 1;
  for (const [name, p] of params) if (name.includes('lora_B')) p.data.forEach((_, i) => (p.data[i] = Math.sin(s++ * 0.7) * 0.05));
  const ids = (b: number) => Array.from({ length: 16 }, (_, i) => (29 * b + 5 * i + 1) % base.vocabSize);
  const batch = collate(
    [0, 1].map((b) => ({ inputIds: ids(b), labels: ids(b) })),
    0,
  );
  const every = ['q_proj', 'k_proj', 'v_proj', 'o_proj', 'gate_proj', 'up_proj', 'down_proj', 'lm_head'];
  const steps = {
    fp32: await TrainStep.compile(model, { threads: 1 }),
    int8: await TrainStep.compile(model, { threads: 1, basePrecision: 'int8' }),
    none: await TrainStep.compile(model, { threads: 1, basePrecision: 'int8', int8Exclude: every }),
    head: await TrainStep.compile(model, { threads: 1, basePrecision: 'int8', int8Exclude: ['lm_head'] }),
  };
  const loss: Record<string, number> = {};
  for (const [k, step] of Object.entries(steps)) {
    loss[k] = (await step.run(batch, params)).loss;
    await step.dispose();
  }
  assert.deepEqual(steps.none.int8OnlyWeights, []);
  assert.equal(loss.none, loss.fp32);
  const headOnly = steps.head.int8OnlyWeights;
  assert.ok(headOnly.length > 0 && headOnly.every((n) => !/lm_head|embed_tokens/.test(n)), headOnly.join(', '));
  assert.notEqual(loss.head, loss.fp32);
  assert.notEqual(loss.head, loss.int8);
});
