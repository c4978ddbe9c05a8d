// A whole pre-norm transformer block (causal attention + tanh-GELU MLP + layer norms) built in the IR:
// its forward output against a plain float64 reference, gradients of weights against finite
// differences, and one session serving two batch shapes through symbolic batch/seq dims.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Graph, type Value } from '../../src/graph/ir.js';
import * as o from '../../src/graph/ops.js';
import { grad } from '../../src/autodiff/grad.js';
import { RuntimeSession } from '../../src/runtime/session.js';
import { gradCheck, randn, rng } from '../helpers/gradcheck.js';

const C = 8,
  H = 2,
  D = C / H,
  F = 16;
const shapes = {
  ln1w: [C],
  ln1b: [C],
  wqkv: [C, 3 * C],
  bqkv: [3 * C],
  wo: [C, C],
  ln2w: [C],
  ln2b: [C],
  w1: [C, F],
  b1: [F],
  w2: [F, C],
  b2: [C],
} as const;
type P = Record<keyof typeof shapes, Value>;

function block(x: Value, p: P): Value {
  const attn = (h: Value): Value => {
    const qkv = o.add(o.matmul(h, p.wqkv), p.bqkv);
    const heads = o.split(qkv, -1, [C, C, C]).map((t) => o.transpose(o.reshape(t, [0, 0, H, D]), [0, 2, 1, 3]));
    const [q, k, v] = heads as [Value, Value, Value];
    const scores = o.mul(o.matmul(q, o.transposeLast2(k)), 1 / Math.sqrt(D));
    const pos = o.arangeOfDim(x, 1);
    const future = o.greater(o.unsqueeze(pos, 0), o.unsqueeze(pos, 1));
    const probs = o.softmax(o.where(future, -1e9, scores), -1);
    const ctx = o.reshape(o.transpose(o.matmul(probs, v), [0, 2, 1, 3]), [0, 0, C]);
    return o.matmul(ctx, p.wo);
  };
  const h = o.add(x, attn(o.layerNorm(x, p.ln1w, p.ln1b, 1e-5)));
  const m = o.add(o.matmul(o.geluTanh(o.add(o.matmul(o.layerNorm(h, p.ln2w, p.ln2b, 1e-5), p.w1), p.b1)), p.w2), p.b2);
  return o.add(h, m);
}

// ---- plain float64 reference of the same block ----
function refBlock(x: Float64Array, B: number, T: number, w: Record<string, Float64Array>): Float64Array {
  const ln = (v: Float64Array, g: Float64Array, b: Float64Array) => {
    const out = new Float64Array(v.length);
    for (let r = 0; r < v.length / C; r++) {
      let mu = 0;
      for (let c = 0; c < C; c++) mu += v[r * C + c]!;
      mu /= C;
      let va = 0;
      for (let c = 0; c < C; c++) va += (v[r * C + c]! - mu) ** 2;
      va /= C;
      for (let c = 0; c < C; c++) out[r * C + c] = ((v[r * C + c]! - mu) / Math.sqrt(va + 1e-5)) * g[c]! + b[c]!;
    }
    return out;
  };
  const mm = (a: Float64Array, rows: number, k: number, m: Float64Array, n: number, bias?: Float64Array) => {
    const out = new Float64Array(rows * n);
    for (let r = 0; r < rows; r++)
      for (let j = 0; j < n; j++) {
        let s = bias ? bias[j]! : 0;
        for (let i = 0; i < k; i++) s += a[r * k + i]! * m[i * n + j]!;
        out[r * n + j] = s;
      }
    return out;
  };
  const R = B * T;
  const qkv = mm(ln(x, w.ln1w!, w.ln1b!), R, C, w.wqkv!, 3 * C, w.bqkv);
  const ctx = new Float64Array(R * C);
  for (let b = 0; b < B; b++)
    for (let h = 0; h < H; h++)
      for (let i = 0; i < T; i++) {
        const s: number[] = [];
        for (let j = 0; j <= i; j++) {
          let d = 0;
          for (let e = 0; e < D; e++) d += qkv[(b * T + i) * 3 * C + h * D + e]! * qkv[(b * T + j) * 3 * C + C + h * D + e]!;
          s.push(d / Math.sqrt(D));
        }
        const mx = Math.max(...s);
        const ex = s.map((v) => Math.exp(v - mx));
        const z = ex.reduce((a, c) => a + c, 0);
        for (let e = 0; e < D; e++) {
          let acc = 0;
          for (let j = 0; j <= i; j++) acc += (ex[j]! / z) * qkv[(b * T + j) * 3 * C + 2 * C + h * D + e]!;
          ctx[(b * T + i) * C + h * D + e] = acc;
        }
      }
  const attnOut = mm(ctx, R, C, w.wo!, C);
  const h1 = x.map((v, i) => v + attnOut[i]!);
  const f1 = mm(ln(h1, w.ln2w!, w.ln2b!), R, C, w.w1!, F, w.b1).map(
    (v) => 0.5 * v * (1 + Math.tanh(Math.sqrt(2 / Math.PI) * (v + 0.044715 * v ** 3))),
  );
  const f2 = mm(f1, R, F, w.w2!, C, w.b2);
  return h1.map((v, i) => v + f2[i]!);
}

function weights(seed: number): Record<string, Float64Array> {
  const rand = rng(seed);
  const w: Record<string, Float64Array> = {};
  for (const [k, s] of Object.entries(shapes))
    w[k] = randn(
      rand,
      s.reduce((a: number, b: number) => a * b, 1),
      0.3,
    );
  w.ln1w = w.ln1w!.map((v) => 1 + v);
  w.ln2w = w.ln2w!.map((v) => 1 + v);
  return w;
}

test('transformer block forward matches a float64 reference with symbolic batch and seq', async () => {
  const g = new Graph();
  const x = g.input('x', 'float64', ['batch', 'seq', C]);
  const w = weights(3);
  const p = Object.fromEntries(Object.entries(shapes).map(([k, s]) => [k, g.constant(k, 'float64', s, w[k]!)])) as P;
  const y = block(x, p);
  assert.deepEqual(y.shape, ['batch', 'seq', C]);
  const sess = await RuntimeSession.fromGraph(g, { y }, { threads: 1 });
  for (const [B, T] of [
    [2, 5],
    [3, 2],
  ] as const) {
    const xs = randn(rng(B * 10 + T), B * T * C);
    const out = (await sess.run({ x: { dtype: 'float64', shape: [B, T, C], data: xs } })).y!;
    assert.deepEqual(out.shape, [B, T, C]);
    const ref = refBlock(xs, B, T, w);
    for (let i = 0; i < ref.length; i++)
      assert.ok(Math.abs((out.data[i] as number) - ref[i]!) < 1e-10, `y[${i}] ${out.data[i]} vs ${ref[i]}`);
  }
  await sess.dispose();
});

test('transformer block: gradients of two weights match finite differences', async () => {
  const w = weights(5);
  const xs = randn(rng(11), 2 * 4 * C);
  await gradCheck(
    { wqkv: { shape: [...shapes.wqkv], init: w.wqkv }, w1: { shape: [...shapes.w1], init: w.w1 } },
    (tp, g) => {
      const x = g.tensor('x', 'float64', [2, 4, C], xs);
      const p = Object.fromEntries(Object.entries(shapes).map(([k, s]) => [k, tp[k] ?? g.constant(k, 'float64', s, w[k]!)])) as P;
      return block(x, p);
    },
    { eps: 1e-5, rtol: 1e-4, atol: 1e-6 },
  );
});

test('one session runs forward + backward for two batch shapes (symbolic dims)', async () => {
  const w = weights(9);
  const g = new Graph();
  const x = g.input('x', 'float64', ['batch', 'seq', C]);
  const target = g.input('target', 'float64', ['batch', 'seq', C]);
  const train = new Set(['wqkv', 'w2']);
  const p = Object.fromEntries(
    Object.entries(shapes).map(([k, s]) => [k, train.has(k) ? g.param(k, 'float64', s) : g.constant(k, 'float64', s, w[k]!)]),
  ) as P;
  const loss = o.mean(o.mul(block(x, p), target));
  const [gq, g2] = grad(loss, [p.wqkv, p.w2]);
  const sess = await RuntimeSession.fromGraph(g, { loss, gq: gq!, g2: g2! }, { threads: 1 });
  for (const [B, T] of [
    [1, 3],
    [4, 6],
  ] as const) {
    const feeds = {
      x: { dtype: 'float64' as const, shape: [B, T, C], data: randn(rng(B + T), B * T * C) },
      target: { dtype: 'float64' as const, shape: [B, T, C], data: randn(rng(B * T + 1), B * T * C) },
      wqkv: { dtype: 'float64' as const, shape: [C, 3 * C], data: w.wqkv! },
      w2: { dtype: 'float64' as const, shape: [F, C], data: w.w2! },
    };
    const r = await sess.run(feeds);
    assert.deepEqual(r.gq!.shape, [C, 3 * C]);
    // spot-check a few gradient entries by central differences through the same session
    for (const idx of [0, 7, 40]) {
      const base = w.wqkv![idx]!;
      const eps = 1e-6;
      w.wqkv![idx] = base + eps;
      const up = (await sess.run(feeds, ['loss'])).loss!.data[0] as number;
      w.wqkv![idx] = base - eps;
      const down = (await sess.run(feeds, ['loss'])).loss!.data[0] as number;
      w.wqkv![idx] = base;
      const fd = (up - down) / (2 * eps);
      const a = r.gq!.data[idx] as number;
      assert.ok(Math.abs(fd - a) < 1e-6 + 1e-4 * Math.abs(a), `B=${B} T=${T} wqkv[${idx}]: ${a} vs ${fd}`);
    }
  }
  await sess.dispose();
});
