// The seeded streams adapters, fixtures and checkpoints were made with must not change: the first
// draws of each, recorded from the implementations they replaced (tuners/lora/init.ts's and
// tuners/prompt_learning/init.ts's SeededRandom classes, train/rng.ts's private SplitMix32).

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { SeededRandom, boxMuller, mulberry32, normals, splitMix32, uniforms } from '../../src/nn/random.js';
import { Rng } from '../../src/train/rng.js';

test('mulberry32 (LoRA, linear tuners, IA3, bottleneck): uniforms and Box-Muller normals unchanged', () => {
  const r = new SeededRandom(7);
  assert.deepEqual([r.next(), r.next(), r.next()], [0.011704753153026104, 0.06195825757458806, 0.97690763277933]);
  assert.deepEqual([r.normal(), r.normal()], [-0.8385722172331512, -1.313436351837185]);
  const raw = mulberry32(7);
  assert.equal(raw(), 0.011704753153026104);
});

test('SplitMix32 (prompt learning): uniforms, integers and normals unchanged', () => {
  const r = new SeededRandom(7, 'splitmix32');
  assert.deepEqual([r.next(), r.next()], [0.13706416846252978, 0.45108226174488664]);
  assert.deepEqual([r.int(1000), r.int(1000)], [998, 552]);
  assert.deepEqual([r.normal(), r.normal()], [-0.1640310408749154, -0.043504722417719216]);
  assert.equal(splitMix32(7)() / 4294967296, 0.13706416846252978);
});

test('train Rng seeding through SplitMix32 unchanged', () => {
  assert.deepEqual(Rng.fromSeed(7, 2).state(), [2248249160, 1615601020, 2449496016, 1433442029]);
});

test('normals and uniforms draw from the stream in order; Box-Muller survives a zero uniform', () => {
  const a = new SeededRandom(11);
  const b = new SeededRandom(11);
  const n = normals(a, 3, 0.5);
  for (let i = 0; i < 3; i++) assert.equal(n[i], Math.fround(b.normal() * 0.5));
  const u = uniforms(a, 4, 2);
  for (let i = 0; i < 4; i++) {
    assert.equal(u[i], Math.fround((b.next() * 2 - 1) * 2));
    assert.ok(Math.abs(u[i]!) <= 2);
  }
  let k = 0;
  const z = boxMuller(() => (k++ === 0 ? 0 : 0.25));
  assert.ok(Number.isFinite(z));
});
