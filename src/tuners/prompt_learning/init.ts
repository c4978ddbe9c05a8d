// Seeded initial values for prompt-learning tensors, drawn the way torch initialises the modules
// peft builds: nn.Embedding ~ N(0, 1), nn.Linear and nn.LSTM ~ U(-1/sqrt(fan), 1/sqrt(fan)).
// The generator is a small counter-based one so an adapter made with a seed is reproducible.

/** SplitMix32 stream: uniform floats in [0, 1) from a 32-bit seed. */
export class SeededRandom {
  private state: number;
  constructor(seed: number) {
    this.state = seed >>> 0;
  }
  private nextUint32(): number {
    this.state = (this.state + 0x9e3779b9) >>> 0;
    let z = this.state;
    z = Math.imul(z ^ (z >>> 16), 0x85ebca6b) >>> 0;
    z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35) >>> 0;
    return (z ^ (z >>> 16)) >>> 0;
  }
  /** uniform in [0, 1) */
  uniform(): number {
    return this.nextUint32() / 4294967296;
  }
  /** uniform integer in [0, n) */
  int(n: number): number {
    return Math.floor(this.uniform() * n);
  }
  /** standard normal (Box-Muller) */
  normal(): number {
    const u = Math.max(this.uniform(), 1e-12);
    return Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * this.uniform());
  }
}

export function normalTensor(rng: SeededRandom, n: number, std = 1): Float32Array {
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) out[i] = rng.normal() * std;
  return out;
}

export function uniformTensor(rng: SeededRandom, n: number, bound: number): Float32Array {
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) out[i] = (rng.uniform() * 2 - 1) * bound;
  return out;
}

/** torch nn.Linear(in, out) default init: weight [out, in] and bias [out] ~ U(-1/sqrt(in), 1/sqrt(in)). */
export function linearInit(rng: SeededRandom, outFeatures: number, inFeatures: number): { weight: { shape: number[]; data: Float32Array }; bias: { shape: number[]; data: Float32Array } } {
  const bound = 1 / Math.sqrt(inFeatures);
  return {
    weight: { shape: [outFeatures, inFeatures], data: uniformTensor(rng, outFeatures * inFeatures, bound) },
    bias: { shape: [outFeatures], data: uniformTensor(rng, outFeatures, bound) },
  };
}
