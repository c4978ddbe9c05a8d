// Choosing the next token from one row of logits on the host: greedy argmax, or sampling with
// transformers' warpers in their order (temperature, top-k, top-p) from a seeded generator (the
// project's xoshiro128** Rng), so a seed reproduces a generation on any machine.

/** Where sampling draws its uniform numbers in [0, 1) from (train/rng.ts's seeded Rng). */
export interface UniformSource {
  nextFloat(): number;
}

export interface SamplingParams {
  /** divide logits by this before anything else; 1 leaves them as they are */
  temperature: number;
  /** keep the k highest logits (0: off) */
  topK: number;
  /** keep the smallest set of most likely tokens whose probability reaches p (1: off) */
  topP: number;
}

/** Index of the largest value; the first one on ties, as torch.argmax. */
export function argmax(row: ArrayLike<number>): number {
  let best = 0;
  let bestValue = -Infinity;
  for (let i = 0; i < row.length; i++) {
    const v = row[i]!;
    if (v > bestValue || (Number.isNaN(v) && !Number.isNaN(bestValue))) {
      best = i;
      bestValue = v;
    }
  }
  return best;
}

/**
 * Token probabilities after temperature, top-k and top-p, as transformers' warpers compute them
 * (removed tokens get probability 0). Returns a new array; `row` is left as it is.
 */
export function samplingProbabilities(row: ArrayLike<number>, p: SamplingParams): Float64Array {
  const n = row.length;
  const scores = new Float64Array(n);
  for (let i = 0; i < n; i++) scores[i] = row[i]! / p.temperature;
  if (p.topK > 0 && p.topK < n) {
    // Threshold = the k-th largest score; everything strictly below it is removed (ties stay).
    const sorted = Float64Array.from(scores).sort();
    const kth = sorted[n - p.topK]!;
    for (let i = 0; i < n; i++) if (scores[i]! < kth) scores[i] = -Infinity;
  }
  let max = -Infinity;
  for (let i = 0; i < n; i++) if (scores[i]! > max) max = scores[i]!;
  const probs = new Float64Array(n);
  let total = 0;
  for (let i = 0; i < n; i++) {
    const e = scores[i] === -Infinity ? 0 : Math.exp(scores[i]! - max);
    probs[i] = e;
    total += e;
  }
  for (let i = 0; i < n; i++) probs[i]! /= total;
  if (p.topP < 1) {
    // transformers sorts ascending and removes tokens whose cumulative probability is <= 1 - top_p,
    // always keeping the most likely one; the same set, found from the top down.
    const sorted = Float64Array.from(probs).sort();
    let cum = 0;
    let threshold = sorted[n - 1]!;
    for (let i = n - 1; i >= 0; i--) {
      threshold = sorted[i]!;
      cum += threshold;
      if (cum >= p.topP) break;
    }
    let kept = 0;
    for (let i = 0; i < n; i++) {
      if (probs[i]! < threshold) probs[i] = 0;
      else kept += probs[i]!;
    }
    for (let i = 0; i < n; i++) probs[i]! /= kept;
  }
  return probs;
}

/** Draws one token from a logits row (torch.multinomial on the warped softmax). */
export function sampleToken(row: ArrayLike<number>, p: SamplingParams, rng: UniformSource): number {
  const probs = samplingProbabilities(row, p);
  const u = rng.nextFloat();
  let cum = 0;
  let last = 0;
  for (let i = 0; i < probs.length; i++) {
    const q = probs[i]!;
    if (q <= 0) continue;
    last = i;
    cum += q;
    if (u < cum) return i;
  }
  // Rounding left the cumulative sum a hair below 1: the last token with mass takes the rest.
  return last;
}
