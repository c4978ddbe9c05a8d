// Every registered op, one row each: differentiable ops are checked against central finite
// differences in float64 (with broadcasting where the op broadcasts); the others by value.
// The table is keyed by OpName, so a new op without a test here does not compile.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Graph, type Value } from '../../src/graph/ir.js';
import * as o from '../../src/graph/ops.js';
import type { OpName } from '../../src/graph/attrs.js';
import { RuntimeSession, type HostTensor } from '../../src/runtime/session.js';
import { fusedMatchesComposed, gradCheck, randn, rng } from '../helpers/gradcheck.js';
import { dequantize4bit, quantize4bit } from '../../src/quant/blockwise.js';
import { quantLinear, quantMatmul, quantOperands } from '../../src/quant/matmul.js';
import { grad } from '../../src/autodiff/grad.js';
import { int8Base, int8Operands } from '../../src/quant/int8_base.js';
import { checkpoint } from '../../src/autodiff/checkpoint.js';

const pos = (n: number, lo = 0.5) => Float64Array.from({ length: n }, (_, i) => lo + ((i * 37) % 11) / 7);

async function evalGraph(build: (g: Graph) => Value, feeds: Record<string, HostTensor> = {}): Promise<HostTensor> {
  const g = new Graph();
  const y = build(g);
  const s = await RuntimeSession.fromGraph(g, { y }, { threads: 1 });
  const r = await s.run(feeds);
  await s.dispose();
  return r.y!;
}
const i64 = (g: Graph, name: string, shape: number[], v: number[]) => g.tensor(name, 'int64', shape, v);

const cases: Record<OpName, () => Promise<void>> = {
  Add: () => gradCheck({ a: { shape: [2, 3, 4] }, b: { shape: [3, 1] } }, ({ a, b }) => o.add(a!, b!)),
  Sub: () => gradCheck({ a: { shape: [4] }, b: { shape: [2, 3, 4] } }, ({ a, b }) => o.sub(a!, b!)),
  Mul: () => gradCheck({ a: { shape: [2, 1, 4] }, b: { shape: [3, 1] } }, ({ a, b }) => o.mul(a!, b!)),
  Div: () => gradCheck({ a: { shape: [2, 3] }, b: { shape: [1, 3], init: pos(3) } }, ({ a, b }) => o.div(a!, b!)),
  Pow: () => gradCheck({ a: { shape: [2, 3], init: pos(6) }, b: { shape: [3] } }, ({ a, b }) => o.pow(a!, b!)),
  Neg: () => gradCheck({ a: { shape: [5] } }, ({ a }) => o.neg(a!)),
  Abs: () => gradCheck({ a: { shape: [2, 3], init: Float64Array.from([-1.5, -0.25, 0.5, 2, -3, 0.75]) } }, ({ a }) => o.abs(a!)),
  Sqrt: () => gradCheck({ a: { shape: [5], init: pos(5) } }, ({ a }) => o.sqrt(a!)),
  Reciprocal: () => gradCheck({ a: { shape: [5], init: pos(5) } }, ({ a }) => o.reciprocal(a!)),
  Exp: () => gradCheck({ a: { shape: [2, 3] } }, ({ a }) => o.exp(a!)),
  Log: () => gradCheck({ a: { shape: [5], init: pos(5) } }, ({ a }) => o.log(a!)),
  Tanh: () => gradCheck({ a: { shape: [2, 3] } }, ({ a }) => o.tanh(a!)),
  // Erf runs in float32 inside ONNX Runtime even in a float64 graph: a coarser check.
  Erf: () => gradCheck({ a: { shape: [2, 3] } }, ({ a }) => o.erf(a!), { eps: 1e-3, rtol: 2e-3, atol: 1e-4 }),
  Sigmoid: () => gradCheck({ a: { shape: [2, 3] } }, ({ a }) => o.sigmoid(a!)),
  Relu: () => gradCheck({ a: { shape: [6], init: Float64Array.from([-1.5, -0.3, 0.2, 0.7, 1.1, -2]) } }, ({ a }) => o.relu(a!)),
  Cos: () => gradCheck({ a: { shape: [2, 3] } }, ({ a }) => o.cos(a!)),
  Sin: () => gradCheck({ a: { shape: [2, 3] } }, ({ a }) => o.sin(a!)),
  Identity: () => gradCheck({ a: { shape: [2, 3] } }, ({ a }) => o.identity(a!)),
  Softmax: () => gradCheck({ a: { shape: [2, 3, 4] } }, ({ a }) => o.softmax(a!, 1)),
  LogSoftmax: () => gradCheck({ a: { shape: [3, 5] } }, ({ a }) => o.logSoftmax(a!, -1)),
  ReduceSum: () => gradCheck({ a: { shape: [2, 3, 4] } }, ({ a }) => o.add(o.sum(a!, [0, 2]), o.sum(o.sum(a!, 1, true)))),
  ReduceMean: () => gradCheck({ a: { shape: [2, 3, 4] } }, ({ a }) => o.mul(o.mean(a!, 1, true), o.sum(o.mean(a!, [0, 2], false)))),
  ReduceMax: () => gradCheck({ a: { shape: [3, 4] } }, ({ a }) => o.max(a!, -1)),
  // float64: the spelled-out lowering against finite differences; float32: LayerNormalization and
  // the gradient from its saved mean and 1/std against the composition's.
  LayerNorm: async () => {
    await gradCheck({ x: { shape: [2, 3, 5] }, w: { shape: [5] }, b: { shape: [5] } }, ({ x, w, b }) => o.layerNorm(x!, w!, b!, 1e-5));
    await fusedMatchesComposed(
      { x: { shape: [3, 7, 64] }, w: { shape: [64] }, b: { shape: [64] } },
      ({ x, w, b }) => o.layerNorm(x!, w!, b!, 1e-5),
      ({ x, w, b }) => o.layerNormComposed(x!, w!, b!, 1e-5),
    );
  },
  // float64: the spelled-out lowering against finite differences; float32: FastGelu and the
  // recomputing gradient against the composition's autodiff (values across the tanh's range).
  GeluTanh: async () => {
    await gradCheck({ a: { shape: [2, 7] } }, ({ a }) => o.geluTanh(a!));
    const x = Float64Array.from({ length: 4 * 300 }, (_, i) => -6 + i * 0.01);
    await fusedMatchesComposed(
      { x: { shape: [4, 300], init: x } },
      ({ x }) => o.geluTanh(x!),
      ({ x }) => o.geluTanhComposed(x!),
    );
  },
  // float64 against finite differences; float32: the recomputing gradient against x * sigmoid(x)'s autodiff.
  Silu: async () => {
    await gradCheck({ a: { shape: [2, 7] } }, ({ a }) => o.silu(a!));
    const x = Float64Array.from({ length: 4 * 300 }, (_, i) => -12 + i * 0.02);
    await fusedMatchesComposed(
      { x: { shape: [4, 300], init: x } },
      ({ x }) => o.silu(x!),
      ({ x }) => o.siluComposed(x!),
    );
  },
  // float64: the spelled-out lowering against finite differences; float32: ONNX Runtime's
  // SimplifiedLayerNormalization and the gradient from its 1/rms against the composition's.
  RmsNorm: async () => {
    await gradCheck({ x: { shape: [2, 3, 5] }, w: { shape: [5] } }, ({ x, w }) => o.rmsNorm(x!, w!, 1e-5));
    await fusedMatchesComposed(
      { x: { shape: [3, 7, 64] }, w: { shape: [64] } },
      ({ x, w }) => o.rmsNorm(x!, w!, 1e-6),
      ({ x, w }) => o.rmsNormComposed(x!, w!, 1e-6),
    );
  },
  // float64: the spelled-out lowering (x and both tables) against finite differences; float32:
  // ONNX Runtime's RotaryEmbedding, forward and the -sin rotation of the backward, against the
  // composition (the tables from angles a, so their gradients too), per batch row and broadcast.
  Rotary: async () => {
    await gradCheck({ x: { shape: [2, 3, 4, 6] }, c: { shape: [2, 1, 4, 3] }, s: { shape: [1, 1, 4, 3] } }, ({ x, c, s }) =>
      o.rotary(x!, c!, s!),
    );
    for (const batch of [2, 1]) {
      const angles = Float64Array.from({ length: batch * 5 * 4 }, (_, i) => 0.3 * i - 2);
      await fusedMatchesComposed(
        { x: { shape: [2, 3, 5, 8] }, a: { shape: [batch, 1, 5, 4], init: angles } },
        ({ x, a }) => o.rotary(x!, o.cos(a!), o.sin(a!)),
        ({ x, a }) => o.rotaryComposed(x!, o.cos(a!), o.sin(a!)),
      );
    }
  },
  MatMul: async () => {
    await gradCheck({ a: { shape: [2, 3, 4] }, b: { shape: [4, 5] } }, ({ a, b }) => o.matmul(a!, b!));
    await gradCheck({ a: { shape: [2, 1, 3, 4] }, b: { shape: [3, 4, 2] } }, ({ a, b }) => o.matmul(a!, b!));
  },
  MatMulT: async () => {
    await gradCheck({ a: { shape: [2, 3, 4] }, b: { shape: [5, 4] } }, ({ a, b }) => o.matmulT(a!, b!));
    // float32 takes the FusedMatMul lowering: compare with MatMul of the transposed weight
    const y = await evalGraph((g) => {
      const a = g.tensor('a', 'float32', [2, 3], [1, 2, 3, 4, 5, 6]);
      const b = g.tensor('b', 'float32', [2, 3], [1, 0, -1, 2, 1, 0]);
      return o.sub(o.matmulT(a, b), o.matmul(a, o.transpose(b, [1, 0])));
    });
    assert.deepEqual([...y.data], [0, 0, 0, 0]);
  },
  // x @ W^T and y @ W with W 4-bit (odd size, a partial block, padded nested blocks): gradients in
  // float64, values in float32 against the host dequantization with every lowering, and the
  // backward rebuilds W from the packed data (a second QuantMatMul on the incoming gradient).
  QuantMatMul: async () => {
    const w = Float32Array.from(randn(rng(3), 35));
    for (const doubleQuant of [true, false]) {
      const q = quantize4bit(w, [5, 7], { blockSize: 16, doubleQuant });
      await gradCheck({ x: { shape: [2, 3, 7] }, y: { shape: [2, 3, 5] } }, ({ x, y }, g) => {
        const ops = quantOperands(g, 'w', q);
        return o.concat([quantLinear(x!, ops), quantMatmul(y!, ops)], -1);
      });
      const xs = Array.from({ length: 15 }, (_, i) => Math.sin(i));
      for (const opts of [{ unpack: 'pairs' as const }, { unpack: 'bitops' as const }, { kernel: 'bnb4' as const }]) {
        const y = await evalGraph((g) => {
          const x = g.tensor('x', 'float32', [2, 7], xs.slice(0, 14));
          const ref = g.tensor('wref', 'float32', [5, 7], dequantize4bit(q));
          const ops = quantOperands(g, 'w', q, opts);
          assert.equal(ops.attrs.bnb4, opts.kernel ? 1 : undefined);
          const z = g.tensor('z', 'float32', [3, 5], xs);
          const d1 = o.reshape(o.sub(quantLinear(x, ops), o.matmulT(x, ref)), [-1]);
          const d2 = o.reshape(o.sub(quantMatmul(z, ops), o.matmul(z, ref)), [-1]);
          return o.concat([d1, d2], 0);
        });
        const d = Math.max(...[...y.data].map((v) => Math.abs(v as number)));
        assert.ok(d <= (opts.kernel ? 1e-6 : 0), `${JSON.stringify(opts)}, double ${doubleQuant}: differs by ${d}`);
      }
    }
    const g = new Graph();
    const x = g.param('x', 'float32', [3, 7]);
    const loss = o.sum(quantLinear(x, quantOperands(g, 'w', quantize4bit(w, [5, 7], { blockSize: 16 }), { kernel: 'bnb4' })));
    grad(loss, [x]);
    const qm = g.nodes.filter((n) => n.op === 'QuantMatMul');
    assert.equal(qm.length, 2);
    assert.deepEqual([(qm[0]!.attrs as { transB: boolean }).transB, (qm[1]!.attrs as { transB: boolean }).transB], [true, false]);
    assert.equal((qm[1]!.attrs as { bnb4?: number }).bnb4, undefined);
    assert.deepEqual(qm[1]!.inputs.slice(1), qm[0]!.inputs.slice(1));
  },
  // x @ W with W held as two int8 copies. The gradient check uses a W both copies represent exactly
  // (every row and column holds a +-127 multiple of one scale), so the backward copy is the forward
  // one transposed; then float32 through DynamicQuantizeMatMul against x @ W (activation quantization).
  Int8MatMul: async () => {
    const s = 0.01;
    const [K, N] = [5, 4];
    const ints = Array.from({ length: K * N }, (_, i) => ((i * 29) % 41) - 20);
    for (let i = 0; i < K; i++) ints[i * N + (i % N)] = i % 2 ? -127 : 127;
    const w = Float32Array.from(ints, (v) => v * s);
    for (const layout of ['conv1d', 'linear'] as const) {
      const stored = layout === 'conv1d' ? w : Float32Array.from({ length: K * N }, (_, i) => w[(i % K) * N + Math.floor(i / K)]!);
      const q = int8Base(stored, layout === 'conv1d' ? [K, N] : [N, K], layout);
      assert.deepEqual([q.forward.rows, q.forward.cols, q.backward.rows, q.backward.cols], [K, N, N, K]);
      await gradCheck({ x: { shape: [2, 3, K] } }, ({ x }, g) => o.int8Matmul(x!, int8Operands(g, 'w', q)));
    }
    const xs = Array.from({ length: 6 * K }, (_, i) => Math.sin(i * 1.3));
    const y = await evalGraph((g) => {
      const x = g.tensor('x', 'float32', [6, K], xs);
      const q = int8Base(Float32Array.from(w), [K, N], 'conv1d');
      return o.concat([o.int8Matmul(x, int8Operands(g, 'w', q)), o.matmul(x, g.tensor('wf', 'float32', [K, N], w))], 0);
    });
    const d = y.data as Float32Array;
    const ref = d.subarray(6 * N);
    const scale = Math.max(...ref.map(Math.abs));
    for (let i = 0; i < 6 * N; i++) assert.ok(Math.abs(d[i]! - ref[i]!) <= 0.02 * scale, `element ${i}: ${d[i]} vs ${ref[i]}`);
  },
  // Gradients through two chained checkpointed regions (a param read inside and outside them) equal
  // finite differences; the forward values of a region are not read by the backward pass.
  Checkpoint: async () => {
    await gradCheck({ a: { shape: [2, 3] }, b: { shape: [3] } }, ({ a, b }) => {
      const layer = (x: Value) => checkpoint([x], ([h]) => o.add(o.tanh(o.mul(o.add(h!, b!), h!)), h!));
      return o.mul(layer(layer(a!)), b!);
    });
    const g = new Graph();
    const a = g.param('a', 'float32', [4]);
    const inner: Value[] = [];
    const y = checkpoint([a], ([h]) => {
      const t = o.exp(h!);
      inner.push(t);
      return o.mul(t, h!);
    });
    const [da] = grad(o.sum(y), [a]);
    const backward = g.nodes.filter((n) => n.id > y.producer!.id);
    assert.ok(!backward.some((n) => n.inputs.includes(inner[0]!)), 'the backward pass reads no forward intermediate');
    const s = await RuntimeSession.fromGraph(g, { y, da: da! }, { threads: 1 });
    const r = await s.run({ a: { dtype: 'float32', shape: [4], data: Float32Array.from([0, 1, -1, 0.5]) } });
    await s.dispose();
    // d/da a e^a = (1 + a) e^a
    [0, 1, -1, 0.5].forEach((x, i) => assert.ok(Math.abs((r.da!.data[i] as number) - (1 + x) * Math.exp(x)) < 1e-5));
  },
  Reshape: () => gradCheck({ a: { shape: [2, 3, 4] } }, ({ a }) => o.mul(o.reshape(a!, [0, -1]), o.reshape(a!, [2, 12]))),
  ReshapeLike: () => gradCheck({ a: { shape: [2, 6] }, b: { shape: [3, 4] } }, ({ a, b }) => o.mul(o.reshapeLike(a!, b!), b!)),
  Transpose: () => gradCheck({ a: { shape: [2, 3, 4] } }, ({ a }) => o.transpose(a!, [2, 0, 1])),
  Concat: () => gradCheck({ a: { shape: [2, 1, 3] }, b: { shape: [2, 2, 3] } }, ({ a, b }) => o.concat([a!, b!, a!], 1)),
  Slice: () => gradCheck({ a: { shape: [3, 5] } }, ({ a }) => o.add(o.slice(a!, 1, 1, -1), o.slice(a!, 1, 0, 3))),
  Chunk: async () => {
    // 7 rows in 3 parts: 2, 2, 3; every part weighted differently so a misplaced row shows
    await gradCheck({ a: { shape: [7, 2] } }, ({ a }) =>
      o.concat([o.mul(o.chunk(a!, 0, 0, 3), 2), o.mul(o.chunk(a!, 0, 1, 3), 3), o.chunk(a!, 0, 2, 3)], 0),
    );
    // a symbolic axis: the parts cover it exactly once, in order, empty parts included
    const g = new Graph();
    const x = g.input('x', 'float32', ['n', 2]);
    const parts = [0, 1, 2, 3, 4].map((i) => o.chunk(x, 0, i, 5));
    const s = await RuntimeSession.fromGraph(g, { y: o.concat(parts, 0), n1: o.sizeOf(parts[1]!) }, { threads: 1 });
    const r = await s.run({ x: { dtype: 'float32', shape: [3, 2], data: Float32Array.from([1, 2, 3, 4, 5, 6]) } });
    await s.dispose();
    assert.deepEqual([...r.y!.data], [1, 2, 3, 4, 5, 6]);
    assert.equal(Number(r.n1!.data[0]), 2, 'part 1 is floor(3*2/5) - floor(3/5) = 1 row of 2');
  },
  Split: () =>
    gradCheck({ a: { shape: [2, 5] } }, ({ a }) => {
      const [p, q] = o.split(a!, 1, [2, 3]);
      return o.concat([o.mul(p!, 2), o.slice(q!, 1, 0, 2)], 1);
    }),
  Pad: () => gradCheck({ a: { shape: [2, 3] } }, ({ a }) => o.pad(a!, [1, 0, 0, 2])),
  Gather: () => gradCheck({ t: { shape: [5, 3] } }, ({ t }, g) => o.gather(t!, i64(g, 'ids', [2, 3], [0, 4, 4, 2, 0, 1]))),
  Where: () =>
    gradCheck({ a: { shape: [2, 3] }, b: { shape: [3] } }, ({ a, b }, g) =>
      o.where(o.greater(g.tensor('c', 'float64', [2, 3], [1, -1, 1, -1, -1, 1]), 0), a!, b!),
    ),
  ExpandLike: () => gradCheck({ a: { shape: [3, 1] }, b: { shape: [2, 3, 4] } }, ({ a, b }) => o.mul(o.expandLike(a!, b!), b!)),
  Unsqueeze: () => gradCheck({ a: { shape: [2, 3] } }, ({ a }) => o.unsqueeze(a!, [0, 3])),
  Squeeze: () => gradCheck({ a: { shape: [2, 1, 3] } }, ({ a }) => o.squeeze(a!, 1)),
  Cast: () =>
    gradCheck({ a: { shape: [4] } }, ({ a }) => o.cast(o.mul(o.cast(a!, 'float32'), 1), 'float64'), { eps: 1e-2, rtol: 1e-5, atol: 1e-5 }),
  Dropout: () =>
    gradCheck({ a: { shape: [2, 3] } }, ({ a }, g) => o.dropout(a!, g.tensor('keep', 'bool', [2, 3], [1, 0, 1, 1, 0, 1]), 0.25)),
  SoftmaxCrossEntropy: () =>
    gradCheck({ z: { shape: [4, 5] } }, ({ z }, g) => o.softmaxCrossEntropy(z!, i64(g, 'labels', [4], [1, -100, 4, 0]))),
  SoftmaxCrossEntropyGrad: async () => {
    const z = [0.5, -1, 2, 0.25, 0.25, -3];
    const got = await evalGraph((g) =>
      o.softmaxCrossEntropyGrad(
        g.tensor('z', 'float32', [2, 3], z),
        i64(g, 'labels', [2], [2, 0]),
        g.tensor('s', 'float32', [2], [0.5, -2]),
      ),
    );
    const want: number[] = [];
    for (const [r, label, scale] of [
      [0, 2, 0.5],
      [1, 0, -2],
    ] as const) {
      const row = z.slice(3 * r, 3 * r + 3);
      const e = row.map((v) => Math.exp(v - Math.max(...row)));
      const sum = e.reduce((a, b) => a + b, 0);
      e.forEach((v, c) => want.push((v / sum - (c === label ? 1 : 0)) * scale));
    }
    [...got.data].forEach((v, i) => assert.ok(Math.abs(Number(v) - want[i]!) < 1e-6, `${i}: ${v} vs ${want[i]}`));
  },
  Equal: async () =>
    assert.deepEqual([...(await evalGraph((g) => o.equal(i64(g, 'a', [3], [1, 2, 3]), i64(g, 'b', [1], [2])))).data], [0, 1, 0]),
  Less: async () => assert.deepEqual([...(await evalGraph((g) => o.less(i64(g, 'a', [3], [1, 2, 3]), 2))).data], [1, 0, 0]),
  Greater: async () => assert.deepEqual([...(await evalGraph((g) => o.greater(i64(g, 'a', [3], [1, 2, 3]), 2))).data], [0, 0, 1]),
  And: async () =>
    assert.deepEqual(
      [...(await evalGraph((g) => o.and(g.tensor('a', 'bool', [4], [0, 1, 0, 1]), g.tensor('b', 'bool', [4], [0, 0, 1, 1])))).data],
      [0, 0, 0, 1],
    ),
  Or: async () =>
    assert.deepEqual(
      [...(await evalGraph((g) => o.or(g.tensor('a', 'bool', [4], [0, 1, 0, 1]), g.tensor('b', 'bool', [4], [0, 0, 1, 1])))).data],
      [0, 1, 1, 1],
    ),
  Not: async () => assert.deepEqual([...(await evalGraph((g) => o.not(g.tensor('a', 'bool', [2], [0, 1])))).data], [1, 0]),
  DimOf: async () => {
    const y = await evalGraph((g) => o.dimOf(g.input('x', 'float32', ['batch', 'seq']), 1), {
      x: { dtype: 'float32', shape: [2, 7], data: new Float32Array(14) },
    });
    assert.equal(y.data[0], 7n);
  },
  ArangeOfDim: async () => {
    const y = await evalGraph((g) => o.arangeOfDim(g.input('x', 'float32', ['batch', 'seq']), 1), {
      x: { dtype: 'float32', shape: [1, 4], data: new Float32Array(4) },
    });
    assert.deepEqual([...y.data], [0n, 1n, 2n, 3n]);
  },
  Size: async () => assert.equal((await evalGraph((g) => o.sizeOf(g.tensor('a', 'float32', [2, 3], [1, 2, 3, 4, 5, 6])))).data[0], 6n),
  ZerosLike: async () => assert.deepEqual([...(await evalGraph((g) => o.zerosLike(g.tensor('a', 'float32', [2], [3, 4])))).data], [0, 0]),
  ScatterAddRows: async () => {
    const y = await evalGraph((g) =>
      o.scatterAddRows(
        o.zerosLike(g.tensor('z', 'float32', [3, 2], [9, 9, 9, 9, 9, 9])),
        i64(g, 'i', [3], [2, 0, 2]),
        g.tensor('u', 'float32', [3, 2], [1, 2, 3, 4, 5, 6]),
      ),
    );
    assert.deepEqual([...y.data], [3, 4, 0, 0, 6, 8]);
  },
  BitShift: async () => {
    const y = await evalGraph((g) => o.bitShift(g.tensor('a', 'uint8', [3], [0xab, 0x10, 0xff]), g.tensor('s', 'uint8', [], [4]), 'RIGHT'));
    assert.deepEqual([...y.data], [0xa, 0x1, 0xf]);
  },
  BitwiseAnd: async () => {
    const y = await evalGraph((g) => o.bitwiseAnd(g.tensor('a', 'uint8', [3], [0xab, 0x10, 0xff]), g.tensor('m', 'uint8', [], [0x0f])));
    assert.deepEqual([...y.data], [0xb, 0x0, 0xf]);
  },
  // Forward is identity; autodiff sees a constant: d/da sum(a * sg(a)) = a, not 2a.
  StopGradient: async () => {
    const g = new Graph();
    const a = g.param('a', 'float32', [3]);
    const y = o.sum(o.mul(a, o.stopGradient(a)));
    const [da] = grad(y, [a]);
    const s = await RuntimeSession.fromGraph(g, { y, da: da! }, { threads: 1 });
    const r = await s.run({ a: { dtype: 'float32', shape: [3], data: Float32Array.from([1, -2, 3]) } });
    await s.dispose();
    assert.deepEqual([...r.y!.data], [14]);
    assert.deepEqual([...r.da!.data], [1, -2, 3]);
  },
};

for (const [name, run] of Object.entries(cases)) test(`op ${name}`, run);
