// The replay of torch's CPU generator (src/nn/torch_rng.ts) against reference values: std::mt19937's
// (the C++ standard fixes its first output for seed 5489 and its 10000th for a default-constructed
// engine) and PyTorch 2.13's own, recorded with
//   torch.manual_seed(s); <draws>; torch.bernoulli(torch.full((n,), 0.6)).int().tolist()
// (PYTHONPATH=$HOME/torch213 python3, see /work/shared/bench/README.md). The fixtures' DARE merges
// (test/tuners/lora/weighted.test.ts) check the same stream end to end.

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

test('bernoulli masks as torch.bernoulli draws them after torch.manual_seed', () => {
  assert.deepEqual(
    Array.from({ length: 12 }, ((g) => () => (g.bernoulli(0.6) ? 1 : 0))(new TorchCpuGenerator(5))),
    [0, 1, 0, 0, 0, 1, 1, 0, 1, 0, 0, 1],
  );
});

test('what uniform_ and normal_ consume: nn.Linear init, randn below and above 16 values, the cached double normal', () => {
  const after = (f: (g: TorchCpuGenerator) => void) => {
    const g = new TorchCpuGenerator(11);
    f(g);
    return bernoulli16(g);
  };
  // torch.randn(5) / randn(3), randn(3): serial double normals, second Box-Muller sample cached
  const randn5 = [1, 1, 0, 1, 1, 0, 0, 0, 0, 0, 0, 1, 0, 1, 1, 1];
  assert.deepEqual(
    after((g) => g.skipNormal(5)),
    randn5,
  );
  assert.deepEqual(
    after((g) => (g.skipNormal(3), g.skipNormal(3))),
    randn5,
  );
  // torch.randn(20): 20 uniforms, then 16 more for the last 16; randn(48): 48
  assert.deepEqual(
    after((g) => g.skipNormal(20)),
    [0, 1, 1, 1, 1, 0, 1, 1, 1, 1, 0, 1, 1, 1, 1, 0],
  );
  assert.deepEqual(
    after((g) => g.skipNormal(48)),
    [1, 1, 1, 0, 1, 1, 1, 0, 1, 1, 0, 1, 0, 1, 1, 1],
  );
  // nn.Linear(7, 3, bias=True): 21 weight + 3 bias uniforms
  assert.deepEqual(
    after((g) => g.skipUniform(24)),
    [0, 1, 1, 1, 1, 0, 0, 1, 1, 1, 0, 1, 0, 1, 1, 1],
  );
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

test('normal_ values as torch draws them (to an ulp or two of its vectorised log/sin/cos)', () => {
  // g = torch.Generator().manual_seed(21); torch.empty(20).normal_(0, 0.1, generator=g);
  // torch.randn(5, generator=g) * 0.5; torch.empty(3).normal_(1, 2, generator=g)
  const g = new TorchCpuGenerator(21);
  const close = (a: Float32Array, b: number[]) =>
    a.forEach((x, i) => assert.ok(Math.abs(x - b[i]!) <= 2e-7 + 4e-6 * Math.abs(b[i]!), `${x} vs ${b[i]}`));
  close(
    g.normal(20, 0, 0.1),
    [
      -0.02385765127837658, -0.10934466123580933, 0.015584933571517467, 0.01749948225915432, 0.17597544193267822, 0.11749487370252609,
      0.02643733099102974, -0.06843365728855133, -0.011870614252984524, 0.03482036665081978, -0.1271200031042099, 0.03809114918112755,
      -0.0475885346531868, -0.009816504083573818, 0.02107374183833599, -0.02471412532031536, 0.0466921366751194, 0.11363565921783447,
      0.046497005969285965, 0.007949172519147396,
    ],
  );
  close(g.normal(5, 0, 0.5), [1.1381280422210693, 0.3826756477355957, 1.2034215927124023, 0.4344693124294281, -0.1652439832687378]);
  close(g.normal(3, 1, 2), [2.172628402709961, 1.2579160928726196, 1.4053226709365845]);
});
