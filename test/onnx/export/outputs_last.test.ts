// LowerOptions.outputsLast (training steps): the nodes that only produce outputs move to the end of
// the ModelProto, earliest-built last, so that ONNX Runtime's depth-first execution order finishes
// each parameter's gradient as the backward pass reaches it. The same nodes and the same results.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { grad } from '../../../src/autodiff/grad.js';
import { Graph, type Value } from '../../../src/graph/ir.js';
import * as o from '../../../src/graph/ops.js';
import { lowerGraph } from '../../../src/onnx/export.js';
import { RuntimeSession } from '../../../src/runtime/session.js';
import { randn, rng } from '../../helpers/gradcheck.js';

/** a 3-layer chain y = tanh(y * v_i), each v_i a [4] vector, and the gradient of sum(y) with respect to each v_i */
function chain(): { g: Graph; outputs: Record<string, Value> } {
  const g = new Graph();
  let y = g.input('x', 'float32', ['n', 4]);
  const vs = [0, 1, 2].map((i) => g.input(`v${i}`, 'float32', [4]));
  for (const v of vs) y = o.tanh(o.mul(y, v));
  const loss = o.sum(y);
  const grads = grad(loss, vs);
  return { g, outputs: { loss, ...Object.fromEntries(grads.map((d, i) => [`grad.v${i}`, d])) } };
}

test('outputsLast: output-only nodes last, earliest-built at the end; the same nodes and results', async () => {
  const { g, outputs } = chain();
  const plain = lowerGraph(g, outputs, 'm').spec.nodes;
  const reordered = lowerGraph(g, outputs, 'm', { outputsLast: true }).spec.nodes;
  assert.deepEqual(reordered.map((n) => n.name).sort(), plain.map((n) => n.name).sort());
  const read = new Set(plain.flatMap((n) => n.inputs));
  const leaves = plain.filter((n) => n.outputs.every((x) => !read.has(x)));
  assert.equal(leaves.length, 4, 'the loss and three gradients');
  assert.deepEqual(
    reordered.slice(-leaves.length).map((n) => n.name),
    leaves.map((n) => n.name).reverse(),
  );
  const feeds = {
    x: { dtype: 'float32' as const, shape: [3, 4], data: Float32Array.from(randn(rng(1), 12)) },
    ...Object.fromEntries(
      [0, 1, 2].map((i) => [`v${i}`, { dtype: 'float32' as const, shape: [4], data: Float32Array.from(randn(rng(2 + i), 4)) }]),
    ),
  };
  const results = [];
  for (const outputsLast of [false, true]) {
    const s = await RuntimeSession.fromGraph(g, outputs, { threads: 1, outputsLast });
    results.push(await s.run(feeds));
    await s.dispose();
  }
  for (const k of Object.keys(outputs)) assert.deepEqual([...results[1]![k]!.data], [...results[0]![k]!.data], k);
});
