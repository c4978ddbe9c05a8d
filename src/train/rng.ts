// The seeded pseudo-random generator training draws from (data order, dropout masks): xoshiro128**
// with a four-word state that checkpoints store, so a resumed run draws exactly the numbers the
// uninterrupted run would have drawn.

import { splitMix32 } from '../nn/random.js';

export type RngState = [number, number, number, number];

export class Rng {
  private s: Uint32Array;

  private constructor(state: readonly number[]) {
    this.s = Uint32Array.from(state);
    if (this.s.every((x) => x === 0)) this.s[0] = 1;
  }

  /** A generator from an integer seed; several `streams` from one seed are independent. */
  static fromSeed(seed: number, stream = 0): Rng {
    // SplitMix32 spreads the seed over the four state words (xoshiro's recommended seeding).
    const mix = splitMix32(((seed >>> 0) ^ Math.imul(stream + 1, 0x632be5ab)) >>> 0);
    return new Rng([mix(), mix(), mix(), mix()]);
  }

  static fromState(state: readonly number[]): Rng {
    if (state.length !== 4 || state.some((x) => !Number.isInteger(x) || x < 0 || x > 0xffffffff)) {
      throw new Error(`an RNG state is four unsigned 32-bit integers, got ${JSON.stringify(state)}`);
    }
    return new Rng(state);
  }

  state(): RngState {
    return [this.s[0]!, this.s[1]!, this.s[2]!, this.s[3]!];
  }

  /** Continues from a state taken by state() (for generators that run the recurrence in bulk). */
  setState(state: readonly number[]): void {
    this.s = Rng.fromState(state).s;
  }

  /** The next unsigned 32-bit integer. */
  nextUint32(): number {
    const s = this.s;
    const result = Math.imul(rotl(Math.imul(s[1]!, 5) >>> 0, 7), 9) >>> 0;
    const t = (s[1]! << 9) >>> 0;
    s[2] ^= s[0]!;
    s[3] ^= s[1]!;
    s[1] ^= s[2]!;
    s[0] ^= s[3]!;
    s[2] ^= t;
    s[3] = rotl(s[3]!, 11);
    return result;
  }

  /** Uniform in [0, 1) with 32 random bits. */
  nextFloat(): number {
    return this.nextUint32() / 4294967296;
  }

  /** Uniform integer in [0, n), without modulo bias. */
  nextInt(n: number): number {
    if (!(n > 0 && n <= 0x100000000)) throw new Error(`nextInt needs 0 < n <= 2^32, got ${n}`);
    const limit = 0x100000000 - (0x100000000 % n);
    for (;;) {
      const x = this.nextUint32();
      if (x < limit) return x % n;
    }
  }
}

function rotl(x: number, k: number): number {
  return ((x << k) | (x >>> (32 - k))) >>> 0;
}

/** A Fisher-Yates permutation of 0..n-1 drawn from rng. */
export function permutation(n: number, rng: Rng): Uint32Array {
  const p = new Uint32Array(n);
  for (let i = 0; i < n; i++) p[i] = i;
  for (let i = n - 1; i > 0; i--) {
    const j = rng.nextInt(i + 1);
    const t = p[i]!;
    p[i] = p[j]!;
    p[j] = t;
  }
  return p;
}
