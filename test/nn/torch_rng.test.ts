// The replay of torch's CPU generator (src/nn/torch_rng.ts) against reference values: std::mt19937's
// (the C++ standard fixes its first output for seed 5489 and its 10000th for a default-constructed
// engine) and PyTorch 2.13's own, recorded with
//   torch.manual_seed(s); <draws>; torch.bernoulli(torch.full((n,), 0.6)).int().tolist()
// (PYTHONPATH=$HOME/torch213 python3, see /work/shared/bench/README.md). The fixtures' DARE merges
// (test/tuners/lora_weighted.test.ts) check the same stream end to end.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { TorchCpuGenerator } from '../../src/nn/torch_rng.js';

test('mt19937: the standard reference outputs', () => {
  const g = new TorchCpuGenerator(5489);
  assert.equal(g.random(), 3499211612);
  for (let i = 2; i < 10000; i++) g.random();
  assert.equal(g.random(), 4123659995);
});

const bernoulli16 = (g: TorchCpuGenerator) => Array.from({ length: 16 }, () => (g.bernoulli(0.6) ? 1 : 0));

test("bernoulli masks as torch.bernoulli draws them after torch.manual_seed", () => {
  assert.deepEqual(Array.from({ length: 12 }, ((g) => () => (g.bernoulli(0.6) ? 1 : 0))(new TorchCpuGenerator(5))), [0, 1, 0, 0, 0, 1, 1, 0, 1, 0, 0, 1]);
});

test('what uniform_ and normal_ consume: nn.Linear init, randn below and above 16 values, the cached double normal', () => {
  const after = (f: (g: TorchCpuGenerator) => void) => {
    const g = new TorchCpuGenerator(11);
    f(g);
    return bernoulli16(g);
  };
  // torch.randn(5) / randn(3), randn(3): serial double normals, second Box-Muller sample cached
  const randn5 = [1, 1, 0, 1, 1, 0, 0, 0, 0, 0, 0, 1, 0, 1, 1, 1];
  assert.deepEqual(after((g) => g.skipNormal(5)), randn5);
  assert.deepEqual(after((g) => (g.skipNormal(3), g.skipNormal(3))), randn5);
  // torch.randn(20): 20 uniforms, then 16 more for the last 16; randn(48): 48
  assert.deepEqual(after((g) => g.skipNormal(20)), [0, 1, 1, 1, 1, 0, 1, 1, 1, 1, 0, 1, 1, 1, 1, 0]);
  assert.deepEqual(after((g) => g.skipNormal(48)), [1, 1, 1, 0, 1, 1, 1, 0, 1, 1, 0, 1, 0, 1, 1, 1]);
  // nn.Linear(7, 3, bias=True): 21 weight + 3 bias uniforms
  assert.deepEqual(after((g) => g.skipUniform(24)), [0, 1, 1, 1, 1, 0, 0, 1, 1, 1, 0, 1, 0, 1, 1, 1]);
});

test('manualSeed resets the stream and refuses what torch cannot seed', () => {
  const g = new TorchCpuGenerator(7);
  const first = [g.random(), g.random()];
  g.skipNormal(3);
  g.manualSeed(7);
  assert.deepEqual([g.random(), g.random()], first);
  assert.throws(() => new TorchCpuGenerator(-1), RangeError);
  assert.throws(() => new TorchCpuGenerator(1.5), RangeError);
});
