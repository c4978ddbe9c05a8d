// The LM head + causal-LM loss in chunks over the tokens (src/train/chunked_loss.ts): the same loss
// and hidden-state gradient as the one-product loss in float64 (any number of parts, ignored labels,
// parts of unequal and zero length), and a LoRA step on the gpt2 / llama fixtures with the same loss
// and gradients as with --loss-chunks 1, on the float32 and the int8 base. On the int8 base the
// parts' LM-head backward product runs on the int8 copy (softmax scaled per row, one-hot apart):
// its hidden-state gradient against float32's, and a few training steps' losses against the
// float32 backward product's.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { grad } from '../../src/autodiff/grad.js';
import { Graph, type Value } from '../../src/graph/ir.js';
import * as o from '../../src/graph/ops.js';
import { causalLmLoss } from '../../src/models/common.js';
import { loadModel } from '../../src/models/load.js';
import { RuntimeSession } from '../../src/runtime/session.js';
import { collate } from '../../src/train/batches.js';
import { chunkHeadLoss, MEMORY_LOSS_CHUNKS } from '../../src/train/chunked_loss.js';
import { TrainStep } from '../../src/train/step.js';
import { createAdapter } from '../../src/tuners/load.js';
import { fixturePath } from '../helpers/fixtures.js';
import { randn, rng } from '../helpers/gradcheck.js';
import { int8Base, int8Operands } from '../../src/quant/int8_base.js';
import { AdamW } from '../../src/train/adamw.js';

async function headLoss(
  chunks: number,
  B: number,
  T: number,
  labels: number[],
  ignoredLeading = 0,
): Promise<{ loss: number; dh: Float64Array }> {
  const [H, V] = [6, 11];
  const g = new Graph();
  const x = g.input('x', 'float64', ['batch', 'seq', H]);
  const w = g.constant('w', 'float64', [V, H], Float64Array.from(randn(rng(5), V * H)));
  const lab = g.input('labels', 'int64', ['batch', 'seq']);
  // a layer below the head, so the gradient flows through the rewrite into the rest of the graph
  const h = o.tanh(o.mul(x, 1.5));
  const plain = causalLmLoss(o.matmulT(h, w), lab);
  const loss = chunkHeadLoss(plain, chunks, true, undefined, ignoredLeading);
  if (chunks > 1) assert.notEqual(loss, plain, 'the rewrite must apply');
  if (ignoredLeading > 0)
    assert.ok(
      g.nodes.some((n) => n.op === 'Slice' && n.inputs[0] === h),
      'the ignored rows must skip the head',
    );
  const [dx] = grad(loss, [x]);
  const s = await RuntimeSession.fromGraph(g, { loss, dx: dx! }, { threads: 1 });
  const r = await s.run({
    x: { dtype: 'float64', shape: [B, T, H], data: Float64Array.from(randn(rng(9), B * T * H)) },
    labels: { dtype: 'int64', shape: [B, T], data: BigInt64Array.from(labels.map(BigInt)) },
  });
  await s.dispose();
  return { loss: r.loss!.data[0] as number, dh: r.dx!.data as Float64Array };
}

test('chunked LM head + loss: leading positions whose labels are ignored (prompt tuning) skip the head, same loss and gradient', async () => {
  const [B, T] = [3, 6];
  // labels [:, 0..2] are -100 (as prompt tuning prepends them): shifted, positions 0 and 1 are ignored
  const labels = Array.from({ length: B * T }, (_, i) => (i % T < 3 ? -100 : (i * 5) % 11));
  const ref = await headLoss(1, B, T, labels);
  for (const chunks of [2, 4]) {
    const r = await headLoss(chunks, B, T, labels, 2);
    assert.ok(Math.abs(r.loss - ref.loss) <= 1e-12 * Math.abs(ref.loss), `${chunks} parts: loss ${r.loss} vs ${ref.loss}`);
    for (let i = 0; i < ref.dh.length; i++)
      assert.ok(Math.abs(r.dh[i]! - ref.dh[i]!) <= 1e-12, `${chunks} parts: dx[${i}] ${r.dh[i]} vs ${ref.dh[i]}`);
  }
});

test('chunked LM head + loss: the one-product loss and gradient in float64, for any number of parts', async () => {
  const [B, T] = [3, 5];
  const labels = Array.from({ length: B * T }, (_, i) => (i % 4 === 1 ? -100 : (i * 7) % 11));
  const ref = await headLoss(1, B, T, labels);
  assert.ok(Number.isFinite(ref.loss) && ref.dh.some((v) => v !== 0));
  // 15 rows: 4 parts of 3-4 rows, 7 parts, and 20 parts (some empty)
  for (const chunks of [4, 7, 20]) {
    const r = await headLoss(chunks, B, T, labels);
    assert.ok(Math.abs(r.loss - ref.loss) <= 1e-12 * Math.abs(ref.loss), `${chunks} parts: loss ${r.loss} vs ${ref.loss}`);
    for (let i = 0; i < ref.dh.length; i++)
      assert.ok(Math.abs(r.dh[i]! - ref.dh[i]!) <= 1e-12, `${chunks} parts: dx[${i}] ${r.dh[i]} vs ${ref.dh[i]}`);
  }
});

for (const [family, method] of [
  ['gpt2', 'LoRA'],
  ['llama', 'LoRA'],
  ['llama', 'prompt tuning'],
] as const) {
  // prompt tuning: the virtual tokens' positions but the last skip the LM head (chunkHeadLoss's ignoredLeading)
  test(`${family}: a ${method} step with the loss in parts has the one-product step's loss and gradients`, async () => {
    const base = await loadModel(fixturePath('models', family));
    const targets = family === 'gpt2' ? ['c_attn', 'c_proj'] : ['q_proj', 'v_proj'];
    const model = await createAdapter(
      base,
      method === 'LoRA'
        ? { peft_type: 'LORA', r: 4, lora_alpha: 8, target_modules: targets, task_type: 'CAUSAL_LM' }
        : { peft_type: 'PROMPT_TUNING', num_virtual_tokens: 6, task_type: 'CAUSAL_LM' },
      { seed: 3 },
    );
    const params = model.parameters();
    let s = 1;
    for (const [name, p] of params) if (name.includes('lora_B')) p.data.forEach((_, i) => (p.data[i] = Math.sin(s++ * 0.3) * 0.05));
    const ids = (b: number, n: number) => Array.from({ length: n }, (_, i) => (13 * b + 5 * i + 1) % base.vocabSize);
    // ragged rows: padding and -100 labels in the parts
    const batch = collate(
      [19, 23, 14].map((n, b) => ({ inputIds: ids(b, n), labels: ids(b, n).map((t, i) => (i < 3 ? -100 : t)) })),
      0,
    );
    for (const basePrecision of ['fp32', 'int8'] as const) {
      const one = await TrainStep.compile(model, { threads: 1, basePrecision, lossChunks: 1 });
      assert.equal(one.lossChunks, 1);
      const ref = await one.run(batch, params);
      await one.dispose();
      for (const lossChunks of [MEMORY_LOSS_CHUNKS, 5]) {
        const step = await TrainStep.compile(model, { threads: 1, basePrecision, lossChunks });
        assert.equal(step.lossChunks, lossChunks, 'the rewrite must apply');
        const r = await step.run(batch, params);
        await step.dispose();
        const what = `${basePrecision}, ${lossChunks} parts`;
        // float32: only the summation order differs. int8: the LM head's activations are quantized per part (per tensor before)
        const tol = basePrecision === 'fp32' ? 1e-5 : 2e-3;
        assert.ok(Math.abs(r.loss - ref.loss) <= tol * ref.loss, `${what}: loss ${r.loss} vs ${ref.loss}`);
        for (const [name, g] of ref.grads) {
          const h = r.grads.get(name)!;
          let scale = 0;
          let diff = 0;
          let norm = 0;
          for (let i = 0; i < g.length; i++) {
            scale = Math.max(scale, Math.abs(g[i]!));
            diff += (h[i]! - g[i]!) ** 2;
            norm += g[i]! ** 2;
          }
          assert.ok(scale > 0, `${name}: no gradient`);
          if (basePrecision === 'fp32') {
            for (let i = 0; i < g.length; i++)
              assert.ok(Math.abs(h[i]! - g[i]!) <= 1e-4 * scale, `${what}: ${name}[${i}] ${h[i]} vs ${g[i]}`);
          } else {
            // per-part activation quantization moves single elements; the gradient as a whole stays
            assert.ok(Math.sqrt(diff / norm) <= 0.02, `${what}: ${name} relative error ${Math.sqrt(diff / norm)}`);
          }
        }
      }
    }
  });
}

/** Relative L2 error of the hidden-state gradient of an LM head + loss in 4 parts against the float32 one-product loss. */
async function int8HeadGradError(logitScale: number, head: 'row-scaled' | 'per-tensor'): Promise<number> {
  const [B, T, H, V] = [2, 24, 64, 3000];
  const w = Float32Array.from(randn(rng(21), V * H, logitScale / Math.sqrt(H)));
  const x = Float32Array.from(randn(rng(22), B * T * H));
  const labels = BigInt64Array.from({ length: B * T }, (_, i) => (i % 7 === 3 ? -100n : BigInt((i * 389) % V)));
  const run = async (build: (g: Graph, h: Value) => Value): Promise<Float32Array> => {
    const g = new Graph();
    const h = g.input('h', 'float32', ['batch', 'seq', H]);
    const [dh] = grad(build(g, h), [h]);
    const s = await RuntimeSession.fromGraph(g, { dh: dh! }, { threads: 1 });
    const r = await s.run({
      h: { dtype: 'float32', shape: [B, T, H], data: x },
      labels: { dtype: 'int64', shape: [B, T], data: labels },
    });
    await s.dispose();
    return r.dh!.data as Float32Array;
  };
  const lab = (g: Graph) => g.input('labels', 'int64', ['batch', 'seq']);
  const ref = await run((g, h) => causalLmLoss(o.matmulT(h, g.constant('w', 'float32', [V, H], w)), lab(g)));
  const got = await run((g, h) => {
    const ops = int8Operands(g, 'w', int8Base(w, [V, H], 'linear'));
    const wf = g.constant('wf', 'float32', [V, H], w);
    const loss = chunkHeadLoss(causalLmLoss(o.int8Matmul(h, head === 'row-scaled' ? [...ops, wf] : ops), lab(g)), 4, true);
    assert.equal(loss.producer?.op, 'Add', 'the rewrite must apply');
    return loss;
  });
  let diff = 0;
  let norm = 0;
  for (let i = 0; i < ref.length; i++) {
    diff += (got[i]! - ref[i]!) ** 2;
    norm += ref[i]! ** 2;
  }
  assert.ok(norm > 0);
  return Math.sqrt(diff / norm);
}

test('int8 LM head in parts: the row-scaled int8 backward product keeps the hidden-state gradient (per-tensor does not)', async () => {
  // near-uniform probabilities (a fresh head) and peaked ones (logits with standard deviation 4)
  for (const scale of [0.2, 4]) {
    const rowScaled = await int8HeadGradError(scale, 'row-scaled');
    const perTensor = await int8HeadGradError(scale, 'per-tensor');
    assert.ok(rowScaled < 0.03, `logit scale ${scale}: row-scaled relative error ${rowScaled}`);
    assert.ok(perTensor > 1.5 * rowScaled, `logit scale ${scale}: per-tensor ${perTensor} vs row-scaled ${rowScaled}`);
  }
});

test('gpt2: training steps on the int8 base with the head in parts (int8 backward) track the float32 backward product (1 part)', async () => {
  const base = await loadModel(fixturePath('models', 'gpt2'));
  const model = await createAdapter(
    base,
    { peft_type: 'LORA', r: 4, lora_alpha: 8, target_modules: ['c_attn'], task_type: 'CAUSAL_LM' },
    { seed: 5 },
  );
  const ids = (b: number) => Array.from({ length: 20 }, (_, i) => (17 * b + 3 * i + 2) % base.vocabSize);
  const batch = collate(
    [0, 1, 2].map((b) => ({ inputIds: ids(b), labels: ids(b) })),
    0,
  );
  const losses: number[][] = [];
  for (const lossChunks of [1, 4]) {
    const params = model.parameters();
    const start = new Map([...params].map(([n, p]) => [n, Float32Array.from(p.data)]));
    const step = await TrainStep.compile(model, { threads: 1, basePrecision: 'int8', lossChunks });
    const opt = new AdamW({ lr: 5e-3 });
    const curve: number[] = [];
    for (let i = 0; i < 8; i++) {
      const r = await step.run(batch, params);
      curve.push(r.loss);
      opt.step(params, r.grads);
    }
    await step.dispose();
    for (const [n, p] of params) p.data.set(start.get(n)!);
    losses.push(curve);
  }
  const [one, parts] = losses as [number[], number[]];
  assert.ok(one[7]! < one[0]!, `the loss must fall: ${one.join(', ')}`);
  for (let i = 0; i < one.length; i++)
    assert.ok(
      Math.abs(parts[i]! - one[i]!) <= 0.005 * one[i]!,
      `step ${i}: ${parts[i]} (4 parts) vs ${one[i]} (1 part): ${parts.join(', ')} vs ${one.join(', ')}`,
    );
});
