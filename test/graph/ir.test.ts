// Shape and dtype inference at build time: errors name the op, the shapes and the model scope;
// symbolic dims flow through reshape, slice and concat.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Graph } from '../../src/graph/ir.js';
import * as o from '../../src/graph/ops.js';
import { GraphShapeError } from '../../src/graph/types.js';

test('a shape mismatch names the op, the shapes and the scope', () => {
  const g = new Graph();
  const x = g.input('x', 'float32', ['batch', 'seq', 64]);
  const w = g.constant('w', 'float32', [32, 16], new Float32Array(32 * 16));
  assert.throws(
    () => g.scope('model.layers.0.self_attn', () => g.scope('q_proj', () => o.matmul(x, w))),
    (e: unknown) =>
      e instanceof GraphShapeError &&
      /MatMul in model\.layers\.0\.self_attn\.q_proj: inner dimensions differ: 64 vs 32/.test(e.message) &&
      /float32\[batch, seq, 64\]/.test(e.message),
  );
});

test('dtype mismatches are rejected', () => {
  const g = new Graph();
  const a = g.input('a', 'float32', [2]);
  const b = g.input('b', 'float64', [2]);
  assert.throws(() => o.add(a, b), /dtypes differ: float32 vs float64/);
  assert.throws(() => o.gather(a, b), /indices must be int64 or int32/);
});

test('symbolic dims flow through reshape, slice, concat and matmul', () => {
  const g = new Graph();
  const x = g.input('x', 'float32', ['batch', 'seq', 12]);
  assert.deepEqual(o.reshape(x, [0, 0, 3, 4]).shape, ['batch', 'seq', 3, 4]);
  assert.deepEqual(o.reshape(x, [-1, 12]).shape, ['batch*seq', 12]);
  assert.deepEqual(o.reshape(o.reshape(x, [-1, 12]), [-1, 4]).shape, ['3*batch*seq', 4]);
  assert.deepEqual(o.slice(x, 1, 0, -1).shape, ['batch', 'seq-1', 12]);
  assert.deepEqual(o.slice(x, 1, 1).shape, ['batch', 'seq-1', 12]);
  const prompt = g.param('prompt', 'float32', [1, 5, 12]);
  assert.deepEqual(o.concat([o.expandLike(prompt, g.input('like', 'float32', ['batch', 5, 12])), x], 1).shape, ['batch', 'seq+5', 12]);
  assert.throws(() => o.reshape(x, [0, 5, -1]), /cannot infer -1/);
});

test('constants check their element count; params need static shapes', () => {
  const g = new Graph();
  assert.throws(() => g.constant('w', 'float32', [2, 3], new Float32Array(5)), /has 5 elements but shape \[2, 3\] needs 6/);
  assert.throws(() => g.param('p', 'float32', ['batch', 3]), /needs a static shape/);
  assert.throws(() => g.input('x', 'float32', [1]) && g.input('x', 'float32', [1]), /already used/);
});
