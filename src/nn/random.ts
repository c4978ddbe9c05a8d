// The seeded generators, one of each. Two uniform streams are kept apart because adapters, fixtures
// and checkpoints were made with them: mulberry32 (LoRA and the linear tuners, IA3, bottleneck
// adapters, evaluation bootstraps, tests, benchmarks) and SplitMix32 (prompt-learning tensors; it also
// seeds train/rng.ts's xoshiro128** state). Normals come from one Box-Muller. torch's own MT19937,
// for the cases that must replay torch draw for draw, is nn/torch_rng.ts.

/** mulberry32: uniform floats in [0, 1), the same stream for the same 32-bit seed. */
export function mulberry32(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** SplitMix32: unsigned 32-bit integers from a 32-bit seed. */
export function splitMix32(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (s + 0x9e3779b9) >>> 0;
    let z = s;
    z = Math.imul(z ^ (z >>> 16), 0x85ebca6b) >>> 0;
    z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35) >>> 0;
    return (z ^ (z >>> 16)) >>> 0;
  };
}

/**
 * One standard normal from two uniforms (Box-Muller, cosine branch). The first uniform is clamped
 * away from 0, which for both streams (whose smallest positive value is 2^-32) only ever acts on an
 * exact 0.
 */
export function boxMuller(uniform: () => number): number {
  const u = Math.max(uniform(), 1e-12);
  return Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * uniform());
}

/** A seeded stream of uniforms, integers and normals over mulberry32 (default) or SplitMix32. */
export class SeededRandom {
  private readonly draw: () => number;
  constructor(seed: number, stream: 'mulberry32' | 'splitmix32' = 'mulberry32') {
    if (stream === 'mulberry32') this.draw = mulberry32(seed);
    else {
      const bits = splitMix32(seed);
      this.draw = () => bits() / 4294967296;
    }
  }
  /** uniform in [0, 1) */
  next(): number {
    return this.draw();
  }
  /** uniform integer in [0, n) */
  int(n: number): number {
    return Math.floor(this.draw() * n);
  }
  /** standard normal */
  normal(): number {
    return boxMuller(this.draw);
  }
}

/** n draws of N(0, std^2). */
export function normals(rng: SeededRandom, n: number, std = 1): Float32Array {
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) out[i] = rng.normal() * std;
  return out;
}

/** n draws of U(-bound, bound). */
export function uniforms(rng: SeededRandom, n: number, bound: number): Float32Array {
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) out[i] = (rng.next() * 2 - 1) * bound;
  return out;
}
