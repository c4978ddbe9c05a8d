// Seeded initial values for prompt-learning tensors, drawn the way torch initialises the modules
// peft builds: nn.Embedding ~ N(0, 1), nn.Linear and nn.LSTM ~ U(-1/sqrt(fan), 1/sqrt(fan)).
// The generator is seeded (nn/random.ts), so an adapter made with a seed is reproducible.

import { SeededRandom, uniforms } from '../../nn/random.js';

/** The prompt-learning stream: SplitMix32 (nn/random.ts), which saved prompt-learning adapters were made with. */
export function promptRandom(seed: number): SeededRandom {
  return new SeededRandom(seed, 'splitmix32');
}

/** torch nn.Linear(in, out) default init: weight [out, in] and bias [out] ~ U(-1/sqrt(in), 1/sqrt(in)). */
export function linearInit(
  rng: SeededRandom,
  outFeatures: number,
  inFeatures: number,
): { weight: { shape: number[]; data: Float32Array }; bias: { shape: number[]; data: Float32Array } } {
  const bound = 1 / Math.sqrt(inFeatures);
  return {
    weight: { shape: [outFeatures, inFeatures], data: uniforms(rng, outFeatures * inFeatures, bound) },
    bias: { shape: [outFeatures], data: uniforms(rng, outFeatures, bound) },
  };
}
