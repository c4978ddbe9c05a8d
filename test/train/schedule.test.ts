// Learning-rate schedules against transformers' formulas, the warmup-ratio rounding, and the
// seeded generator whose state checkpoints carry.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { LrSchedule, lrLambda, warmupStepsFor } from '../../src/train/schedule.js';
import { Rng, permutation } from '../../src/train/rng.js';
import { TrainError } from '../../src/train/errors.js';

const close = (a: number, b: number) => assert.ok(Math.abs(a - b) < 1e-12, `${a} vs ${b}`);

test('linear, cosine and constant schedules with warmup match get_scheduler', () => {
  const at = (name: 'linear' | 'cosine' | 'constant', steps: number[]) => steps.map((s) => lrLambda(name, s, 2, 10));
  // get_linear_schedule_with_warmup(warmup=2, total=10)
  at('linear', [0, 1, 2, 5, 9, 10]).forEach((v, i) => close(v, [0, 0.5, 1, 5 / 8, 1 / 8, 0][i]!));
  // get_cosine_schedule_with_warmup: 0.5 * (1 + cos(pi * progress)), progress = (s - 2) / 8
  at('cosine', [0, 1, 2, 6, 10]).forEach((v, i) => close(v, [0, 0.5, 1, 0.5, 0][i]!));
  close(lrLambda('cosine', 4, 2, 10), 0.5 * (1 + Math.cos(Math.PI * 0.25)));
  // get_constant_schedule_with_warmup
  at('constant', [0, 1, 2, 9]).forEach((v, i) => close(v, [0, 0.5, 1, 1][i]!));
  // no warmup: the first update runs at the full rate
  close(lrLambda('linear', 0, 0, 4), 1);
  close(lrLambda('linear', 3, 0, 4), 0.25);
  const s = new LrSchedule({ name: 'linear', baseLr: 1e-3, totalSteps: 10, warmupSteps: 2 });
  close(s.lrAt(5), (1e-3 * 5) / 8);
  assert.deepEqual(new LrSchedule(s.toJSON()).toJSON(), s.toJSON());
  assert.throws(() => new LrSchedule({ name: 'exp' as never, baseLr: 1, totalSteps: 1, warmupSteps: 0 }), TrainError);
});

test('warmup: explicit steps win, a ratio rounds up as TrainingArguments does', () => {
  assert.equal(warmupStepsFor(10, { warmupRatio: 0.15 }), 2);
  assert.equal(warmupStepsFor(10, { warmupSteps: 3, warmupRatio: 0.5 }), 3);
  assert.equal(warmupStepsFor(10, {}), 0);
  assert.throws(() => warmupStepsFor(10, { warmupRatio: 2 }), TrainError);
});

test('the generator is seeded, its state round-trips, and permutations are permutations', () => {
  const a = Rng.fromSeed(42);
  const xs = Array.from({ length: 5 }, () => a.nextUint32());
  assert.deepEqual(Array.from({ length: 5 }, () => Rng.fromSeed(42).nextUint32())[0], xs[0]);
  assert.notDeepEqual(Rng.fromSeed(42, 1).nextUint32(), xs[0]);
  const mid = Rng.fromSeed(7);
  for (let i = 0; i < 10; i++) mid.nextFloat();
  const copy = Rng.fromState(mid.state());
  for (let i = 0; i < 100; i++) assert.equal(copy.nextUint32(), mid.nextUint32());
  const p = permutation(50, Rng.fromSeed(1));
  assert.deepEqual(
    [...p].sort((x, y) => x - y),
    Array.from({ length: 50 }, (_, i) => i),
  );
  let sum = 0;
  const r = Rng.fromSeed(3);
  for (let i = 0; i < 10000; i++) sum += r.nextFloat();
  assert.ok(Math.abs(sum / 10000 - 0.5) < 0.02);
  assert.throws(() => Rng.fromState([1, 2, 3]));
});
