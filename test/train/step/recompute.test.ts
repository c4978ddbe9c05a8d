// Selective recomputation (BuildContext.recomputed: attention cores, gated MLPs; StepOptions.selectiveRecompute) and the
// Reshape gradient that does not read its input: the same loss and gradients as the plain graph
// (finite differences in float64; a LoRA step on the gpt2 / llama fixtures against the step that
// keeps the probabilities), and the backward pass reads neither the probabilities nor a reshaped
// value of the forward pass.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { grad } from '../../../src/autodiff/grad.js';
import { Graph, type Value } from '../../../src/graph/ir.js';
import * as o from '../../../src/graph/ops.js';
import { loadModel } from '../../../src/models/load.js';
import { BuildContext } from '../../../src/nn/context.js';
import { attentionBias, attentionOf } from '../../../src/nn/layers.js';
import { WeightStore } from '../../../src/nn/weights.js';
import { RuntimeSession } from '../../../src/runtime/session.js';
import { collate } from '../../../src/train/batches.js';
import { TrainStep } from '../../../src/train/step.js';
import { createAdapter } from '../../../src/tuners/load.js';
import { fixturePath } from '../../helpers/fixtures.js';
import { gradCheck, randn, rng } from '../../helpers/gradcheck.js';

const [B, H, KV, S, D] = [2, 4, 2, 5, 3];
const mask = [1, 1, 1, 1, 0, 1, 1, 1, 1, 1];
const maskInput = { value: { dtype: 'int64' as const, shape: [B, S], data: BigInt64Array.from(mask.map(BigInt)) } };

/** grouped-query causal attention of float64 q [B, H, S, D], k and v [B, KV, S, D] through attentionOf */
function attend(recompute: boolean, p: Record<string, Value>, g: Graph, m: Value): Value {
  const ctx = new BuildContext(g, new WeightStore(), { training: true, selectiveRecompute: recompute });
  const bias = o.cast(attentionBias(m, o.transpose(p.q!, [0, 2, 1, 3]), true), 'float64');
  return attentionOf(ctx, o.tanh(p.q!), o.tanh(p.k!), o.mul(p.v!, 2), bias, D, H / KV);
}

test('recomputed attention core: gradients equal finite differences in float64', async () => {
  await gradCheck(
    { q: { shape: [B, H, S, D] }, k: { shape: [B, KV, S, D] }, v: { shape: [B, KV, S, D] } },
    (p, g, i) => attend(true, p, g, i.mask!),
    {
      inputs: { mask: maskInput },
    },
  );
});

test('recomputed attention core: the plain graph gradients, without reading the forward probabilities', async () => {
  const run = async (recompute: boolean) => {
    const g = new Graph();
    const p = {
      q: g.input('q', 'float64', [B, H, S, D]),
      k: g.input('k', 'float64', [B, KV, S, D]),
      v: g.input('v', 'float64', [B, KV, S, D]),
    };
    const m = g.input('mask', 'int64', [B, S]);
    const y = attend(recompute, p, g, m);
    const w = g.tensor('w', 'float64', [B, H, S, D], randn(rng(4), B * H * S * D));
    const loss = o.sum(o.mul(y, w));
    const end = g.nodes.length;
    const grads = grad(loss, [p.q, p.k, p.v]);
    const softmax = g.nodes.slice(0, end).filter((n) => n.op === 'Softmax');
    assert.equal(softmax.length, 1);
    const readsProbs = g.nodes.slice(end).some((n) => n.inputs.includes(softmax[0]!.outputs[0]!));
    assert.equal(readsProbs, !recompute, recompute ? 'the backward pass recomputes the probabilities' : 'the plain graph reads them');
    const s = await RuntimeSession.fromGraph(g, { loss, dq: grads[0]!, dk: grads[1]!, dv: grads[2]! }, { threads: 1 });
    const feed = (shape: number[], seed: number) => ({
      dtype: 'float64' as const,
      shape,
      data: randn(
        rng(seed),
        shape.reduce((a, b) => a * b),
      ),
    });
    const r = await s.run({ q: feed([B, H, S, D], 1), k: feed([B, KV, S, D], 2), v: feed([B, KV, S, D], 3), mask: maskInput.value });
    await s.dispose();
    return r;
  };
  const ref = await run(false);
  const r = await run(true);
  for (const k of ['loss', 'dq', 'dk', 'dv']) {
    const a = ref[k]!.data as Float64Array;
    const b = r[k]!.data as Float64Array;
    assert.ok(
      a.some((x) => x !== 0),
      `${k} is all zeros`,
    );
    for (let i = 0; i < a.length; i++)
      assert.ok(Math.abs(a[i]! - b[i]!) <= 1e-12 * (1 + Math.abs(a[i]!)), `${k}[${i}]: ${b[i]} vs ${a[i]}`);
  }
});

test('recomputedWith: a scale of an element-wise activation has the plain gradients without keeping the activation', async () => {
  const run = async (recompute: boolean) => {
    const g = new Graph();
    const ctx = new BuildContext(g, new WeightStore(), { training: true, selectiveRecompute: recompute });
    const x = g.input('x', 'float64', [2, 3, 6]);
    const v = g.input('v', 'float64', [6]);
    const act = ctx.elementwise([o.mul(x, 1.5)], ([f]) => o.gelu(f!));
    const y = ctx.recomputedWith(act, (a) => o.mul(a, v));
    const w = g.tensor('w', 'float64', [2, 3, 6], randn(rng(5), 36));
    const loss = o.sum(o.mul(o.tanh(y), w));
    const end = g.nodes.length;
    const [dx, dv] = grad(loss, [x, v]);
    const readsAct = g.nodes.slice(end).some((n) => n.inputs.includes(act));
    assert.equal(readsAct, !recompute, recompute ? 'the backward pass recomputes the activation' : 'the plain graph reads it');
    const s = await RuntimeSession.fromGraph(g, { loss, dx: dx!, dv: dv! }, { threads: 1 });
    const r = await s.run({
      x: { dtype: 'float64', shape: [2, 3, 6], data: randn(rng(6), 36) },
      v: { dtype: 'float64', shape: [6], data: randn(rng(7), 6) },
    });
    await s.dispose();
    return r;
  };
  const ref = await run(false);
  const r = await run(true);
  for (const k of ['loss', 'dx', 'dv']) {
    const a = ref[k]!.data as Float64Array;
    const b = r[k]!.data as Float64Array;
    assert.ok(
      a.some((z) => z !== 0),
      `${k} is all zeros`,
    );
    for (let i = 0; i < a.length; i++)
      assert.ok(Math.abs(a[i]! - b[i]!) <= 1e-12 * (1 + Math.abs(a[i]!)), `${k}[${i}]: ${b[i]} vs ${a[i]}`);
  }
});

test('the gradient of a Reshape over symbolic dims does not read its input, and is right', async () => {
  const g = new Graph();
  const x = g.input('x', 'float64', ['batch', 'seq', 6]);
  const t = o.tanh(x);
  const heads = o.reshape(t, [0, 0, 2, 3]);
  const flat = o.reshape(t, [0, -1]);
  const end = g.nodes.length;
  const loss = o.add(o.sum(o.mul(heads, heads)), o.sum(o.mul(flat, 3)));
  const [dx] = grad(loss, [x]);
  // [batch, seq, 2, 3] and [batch, seq*6] back to [batch, seq, 6]: static Reshapes, no ReshapeLike that reads t
  assert.ok(!g.nodes.slice(end).some((n) => n.op === 'ReshapeLike'), 'no ReshapeLike of the forward value');
  const s = await RuntimeSession.fromGraph(g, { dx: dx! }, { threads: 1 });
  const data = randn(rng(8), 2 * 3 * 6);
  const r = await s.run({ x: { dtype: 'float64', shape: [2, 3, 6], data } });
  await s.dispose();
  // d/dx [tanh(x)^2 + 3 tanh(x)] = (2 tanh(x) + 3) (1 - tanh(x)^2)
  data.forEach((v, i) => {
    const th = Math.tanh(v);
    assert.ok(Math.abs((r.dx!.data[i] as number) - (2 * th + 3) * (1 - th * th)) <= 1e-12, `dx[${i}]`);
  });
});

// IA3 scales the MLP's activation (GPT-2's GELU output, Llama's gated product) before its frozen
// down projection: with selective recomputation the scaling joins the activation's recomputation
// (BuildContext.recomputedWith), so the activation is not kept for the vector's gradient.
for (const [family, method] of [
  ['gpt2', 'LORA'],
  ['llama', 'LORA'],
  ['gpt2', 'IA3'],
  ['llama', 'IA3'],
] as const) {
  test(`${family}: a ${method} step with selective recomputation or gradient checkpointing has the plain step's loss and gradients`, async () => {
    const base = await loadModel(fixturePath('models', family));
    const targets = family === 'gpt2' ? ['c_attn', 'c_proj'] : ['q_proj', 'k_proj', 'v_proj'];
    const model = await createAdapter(
      base,
      method === 'LORA'
        ? { peft_type: 'LORA', r: 4, lora_alpha: 8, target_modules: targets, task_type: 'CAUSAL_LM' }
        : { peft_type: 'IA3', task_type: 'CAUSAL_LM' },
      { seed: 3 },
    );
    const params = model.parameters();
    let s = 1;
    for (const [name, p] of params) {
      if (name.includes('lora_B')) p.data.forEach((_, i) => (p.data[i] = Math.sin(s++ * 0.3) * 0.05));
      if (name.includes('ia3_l')) p.data.forEach((_, i) => (p.data[i] = 1 + Math.sin(s++ * 0.3) * 0.2));
    }
    const ids = (b: number, n: number) => Array.from({ length: n }, (_, i) => (13 * b + 5 * i + 1) % base.vocabSize);
    const batch = collate(
      [19, 23, 14].map((n, b) => ({ inputIds: ids(b, n), labels: ids(b, n).map((t, i) => (i < 3 ? -100 : t)) })),
      0,
    );
    const plain = await TrainStep.compile(model, { threads: 1, selectiveRecompute: false, gradientCheckpointing: false });
    const ref = await plain.run(batch, params);
    await plain.dispose();
    const variants = [
      { what: 'selective recomputation', opts: { selectiveRecompute: true, gradientCheckpointing: false } },
      { what: 'gradient checkpointing', opts: { gradientCheckpointing: true } },
      { what: 'the defaults (every second layer checkpointed, selective recomputation in the others)', opts: {} },
    ];
    for (const { what, opts } of variants) {
      const step = await TrainStep.compile(model, { threads: 1, ...opts });
      const r = await step.run(batch, params);
      await step.dispose();
      assert.ok(Math.abs(r.loss - ref.loss) <= 1e-6 * ref.loss, `${what}: loss ${r.loss} vs ${ref.loss}`);
      for (const [name, g] of ref.grads) {
        const h = r.grads.get(name)!;
        const scale = Math.max(...g.map(Math.abs));
        assert.ok(scale > 0, `${name}: no gradient`);
        for (let i = 0; i < g.length; i++) assert.ok(Math.abs(h[i]! - g[i]!) <= 1e-5 * scale, `${what}: ${name}[${i}] ${h[i]} vs ${g[i]}`);
      }
    }
  });
}
