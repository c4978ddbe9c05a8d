// AdaLoRA's rank allocator (peft 0.20's RankAllocator): the cubic budget schedule, pruning by the
// smoothed sensitivity x uncertainty score down to the budget (E entries zeroed, rank_pattern
// recorded), the final pattern re-applied after total_step - tfinal, and the saved adapter holding
// only the kept rows/columns.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { RankAllocator, type AllocatorLayer } from '../../../src/tuners/adalora/allocator.js';

function layer(module: string, r: number, e: number[]): AllocatorLayer {
  return {
    module,
    A: { shape: [r, 2], data: new Float32Array(r * 2).fill(1) },
    B: { shape: [3, r], data: new Float32Array(3 * r).fill(1) },
    E: { shape: [r, 1], data: Float32Array.from(e) },
    names: { A: `${module}.A`, B: `${module}.B`, E: `${module}.E` },
  };
}

test('budget schedule: init_r per layer until tinit, cubic decay to target_r per layer at total_step - tfinal, masking every deltaT steps', () => {
  const a = new RankAllocator({ initR: 4, targetR: 1, tinit: 1, tfinal: 2, deltaT: 2, beta1: 0.85, beta2: 0.85, totalStep: 10 }, [
    layer('a', 4, [1, 1, 1, 1]),
    layer('b', 4, [1, 1, 1, 1]),
    layer('c', 4, [1, 1, 1, 1]),
  ]);
  assert.equal(a.initBudget, 12);
  assert.equal(a.targetBudget, 3);
  assert.deepEqual(a.budgetAt(0), { budget: 12, mask: false });
  assert.deepEqual(a.budgetAt(1), { budget: 12, mask: false });
  // 1 - (2 - 1) / (10 - 2 - 1) = 6/7: trunc(9 · (6/7)³ + 3) = trunc(8.667) = 8
  assert.deepEqual(a.budgetAt(2), { budget: 8, mask: true });
  // 5/7: trunc(9 · 0.3644 + 3) = 6, and step 3 is not a multiple of deltaT
  assert.deepEqual(a.budgetAt(3), { budget: 6, mask: false });
  assert.deepEqual(a.budgetAt(8), { budget: 3, mask: true });
  assert.deepEqual(a.budgetAt(9), { budget: 3, mask: true });
  assert.throws(
    () =>
      new RankAllocator({ initR: 2, targetR: 1, tinit: 8, tfinal: 2, deltaT: 1, beta1: 0.85, beta2: 0.85, totalStep: 10 }, [
        layer('a', 2, [1, 1]),
      ]),
    /tinit/,
  );
});

test('pruning keeps the highest sensitivity x uncertainty triplets within the budget and zeroes the others', () => {
  const l1 = layer('m.layers.0.q', 4, [1, 1, 1, 1]);
  const l2 = layer('m.layers.0.v', 4, [1, 1, 1, 1]);
  const a = new RankAllocator({ initR: 4, targetR: 2, tinit: 0, tfinal: 1, deltaT: 1, beta1: 0.85, beta2: 0.85, totalStep: 3 }, [l1, l2]);
  // Only E has gradients: a triplet's score is then (0.15 |p g|) (0.15 · 0.85 |p g|) ∝ g².
  const grads = new Map<string, Float32Array>([
    [l1.names.A, new Float32Array(8)],
    [l1.names.B, new Float32Array(12)],
    [l1.names.E, Float32Array.from([1, 2, 3, 4])],
    [l2.names.A, new Float32Array(8)],
    [l2.names.B, new Float32Array(12)],
    [l2.names.E, Float32Array.from([0.5, 5, 0.1, 6])],
  ]);
  // step 0 <= tinit: scores accumulate, nothing is masked
  assert.equal(a.step(0, grads, null), undefined);
  // step 2 = total_step - tfinal: the final allocation with the target budget 4 of 8, from the scores so far
  const pattern = a.step(2, grads, null)!;
  assert.deepEqual(pattern, { 'm.layers.0.q.lora_E': [false, false, true, true], 'm.layers.0.v.lora_E': [false, true, false, true] });
  assert.deepEqual([...l1.E.data], [0, 0, 1, 1]);
  assert.deepEqual([...l2.E.data], [0, 1, 0, 1]);
  // after it, the fixed pattern is applied again at every step (training may have moved E)
  l1.E.data.fill(2);
  assert.equal(a.step(3, grads, pattern), undefined);
  assert.deepEqual([...l1.E.data], [0, 0, 2, 2]);
});

test('the A row and B column scores count toward a triplet (means over in and out features)', () => {
  const l = layer('m.q', 2, [1, 1]);
  const a = new RankAllocator({ initR: 2, targetR: 1, tinit: 0, tfinal: 1, deltaT: 1, beta1: 0.85, beta2: 0.85, totalStep: 3 }, [l]);
  // E grads favour triplet 0 a little; A's row 1 has large gradients, so triplet 1 wins.
  const grads = new Map<string, Float32Array>([
    [l.names.A, Float32Array.from([0, 0, 10, 10])],
    [l.names.B, new Float32Array(6)],
    [l.names.E, Float32Array.from([2, 1])],
  ]);
  a.step(0, grads, null);
  assert.deepEqual(a.step(2, grads, null), { 'm.q.lora_E': [false, true] });
});
