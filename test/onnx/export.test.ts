// Lowering of Add chains: Add(Add(a, b), c) with a same-shaped, single-use inner sum becomes one
// ONNX Sum (fewer nodes per decode step for an unmerged LoRA whose delta meets the residual), with
// the same bits as the Adds; broadcasting Adds, inner sums used twice and graph outputs stay Adds.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Graph } from '../../src/graph/ir.js';
import * as o from '../../src/graph/ops.js';
import { lowerGraph } from '../../src/onnx/export.js';
import { RuntimeSession } from '../../src/runtime/session.js';
import { rng } from '../helpers/gradcheck.js';

function spread(n: number, seed: number): Float32Array {
  const r = rng(seed);
  // magnitudes over eight decades, so the order of the additions shows in the rounding
  return Float32Array.from({ length: n }, () => (r() - 0.5) * 10 ** Math.floor(r() * 8 - 4));
}

const opTypes = (g: Graph, outs: Parameters<typeof lowerGraph>[1]): string[] => lowerGraph(g, outs).spec.nodes.map((n) => n.opType);

test('Add chains lower to one Sum, left to right, bit for bit the Adds', async () => {
  const d = 1031;
  const g = new Graph();
  const [a, b, c, e] = ['a', 'b', 'c', 'e'].map((n) => g.input(n, 'float32', ['n', d]));
  // ((a + b) + c) as a LoRA module's delta meets the residual, then e + (...): one Sum of four
  const y = o.add(e!, o.add(o.add(a!, b!), c!));
  assert.deepEqual(opTypes(g, { y }), ['Sum']);
  const sum = lowerGraph(g, { y }).spec.nodes[0]!;
  assert.deepEqual(sum.inputs, [a!.name, b!.name, c!.name, e!.name]);

  // the same arithmetic with the chain kept: the inner sums are outputs too
  const g2 = new Graph();
  const [a2, b2, c2, e2] = ['a', 'b', 'c', 'e'].map((n) => g2.input(n, 'float32', ['n', d]));
  const ab = o.add(a2!, b2!);
  const abc = o.add(ab, c2!);
  const y2 = o.add(e2!, abc);
  assert.deepEqual(opTypes(g2, { y: y2, ab, abc }), ['Add', 'Add', 'Add']);

  const rows = 3;
  const feeds = Object.fromEntries(
    ['a', 'b', 'c', 'e'].map((n, i) => [n, { dtype: 'float32' as const, shape: [rows, d], data: spread(rows * d, i + 1) }]),
  );
  const s1 = await RuntimeSession.fromGraph(g, { y }, { threads: 1 });
  const s2 = await RuntimeSession.fromGraph(g2, { y: y2, ab, abc }, { threads: 1 });
  try {
    const fused = (await s1.run(feeds)).y!.data as Float32Array;
    const chained = (await s2.run(feeds)).y!.data as Float32Array;
    assert.equal(fused.length, rows * d);
    for (let i = 0; i < fused.length; i++) assert.ok(Object.is(fused[i], chained[i]), `y[${i}] ${fused[i]} vs ${chained[i]}`);
  } finally {
    await s1.dispose();
    await s2.dispose();
  }
});

test('Add chains: broadcasting adds, shared inner sums and integer adds stay Adds', () => {
  const g = new Graph();
  const x = g.input('x', 'float32', ['n', 8]);
  const bias = g.input('bias', 'float32', [8]);
  const r = g.input('r', 'float32', ['n', 8]);
  // a bias add (broadcast) under a residual add
  assert.deepEqual(opTypes(g, { y: o.add(o.add(x, bias), r) }), ['Add', 'Add']);
  // an inner sum that something else reads
  const s = o.add(x, r);
  assert.deepEqual(opTypes(g, { y: o.add(s, x), z: o.mul(s, 2) }).sort(), ['Add', 'Add', 'Mul']);
  // an integer chain (ONNX Sum takes float types only)
  const i = g.input('i', 'int64', ['n', 8]);
  assert.deepEqual(opTypes(g, { y: o.add(o.add(i, i), i) }), ['Add', 'Add']);
  // another shape in the chain: [n, 8] + [1, 8] broadcast
  const one = g.input('one', 'float32', [1, 8]);
  assert.deepEqual(opTypes(g, { y: o.add(o.add(x, one), r) }), ['Add', 'Add']);
});
