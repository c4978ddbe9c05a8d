// peft 0.20's add_weighted_adapter: a new LoRA adapter combining existing ones. The non-SVD types
// (linear, ties, dare_linear, dare_ties, magnitude_prune) combine the A matrices and the B matrices
// SEPARATELY with weights sign(w s) sqrt|w s| (A) and sqrt|w s| (B), s = each source's scaling; cat
// concatenates A·w·s and B; the *_svd types combine the full deltas s·BA with weights w·s (peft
// multiplies by the scaling twice there) and keep the top-r SVD factors (B = U S, A = Vh), clamped
// at the `svdClamp` quantile. The new adapter has lora_alpha = r (scaling 1) and the union of the
// sources' targets. All of it is one-off float64 work on adapter-sized host arrays; the SVD is a
// one-sided Jacobi SVD (exact to float64 rounding) for matrices whose smaller side is at most
// JACOBI_MAX, and the ORT subspace iteration of TopSvd above that.

import { PeftConfigError } from '../types.js';
import type { TorchCpuGenerator } from '../../nn/torch_rng.js';
import { TopSvd, jacobiRotation, rotatePair } from './init.js';

export const COMBINATION_TYPES = [
  'linear',
  'cat',
  'svd',
  'ties',
  'ties_svd',
  'magnitude_prune',
  'magnitude_prune_svd',
  'dare_linear',
  'dare_linear_svd',
  'dare_ties',
  'dare_ties_svd',
] as const;
export type CombinationType = (typeof COMBINATION_TYPES)[number];
export type MajoritySignMethod = 'total' | 'frequency';

export interface WeightedAdapterOptions {
  /** fraction of values kept by ties / magnitude_prune / dare_* (peft's density; required by them) */
  density?: number;
  majoritySignMethod?: MajoritySignMethod;
  /** rank of the *_svd result (default: the largest source rank) */
  svdRank?: number;
  /** quantile at which the SVD factors are clamped (peft's svd_clamp) */
  svdClamp?: number;
  /**
   * seed of DARE's Bernoulli masks: the seed of a `torch.manual_seed(seed)` right before peft's
   * add_weighted_adapter (peft draws the masks from torch's global CPU generator, after the draws
   * that initialise the new adapter's layers); the same seed gives peft's masks (default 0)
   */
  seed?: number;
}

/** Largest min(rows, cols) decomposed by one-sided Jacobi; larger matrices go through TopSvd. */
const JACOBI_MAX = 384;

export type Combine = (tensors: Float64Array[], weights: number[]) => Float64Array;

/** peft merge_utils, one function per combination (the task tensors are flat arrays of equal length). */
export function combiner(type: CombinationType, opts: WeightedAdapterOptions, rng: TorchCpuGenerator): Combine {
  const base = type.replace(/_svd$/, '') as 'svd' | 'linear' | 'ties' | 'magnitude_prune' | 'dare_linear' | 'dare_ties';
  const density = opts.density;
  const method = opts.majoritySignMethod ?? 'total';
  const needDensity = (): number => {
    if (density === undefined || !Number.isFinite(density) || density < 0)
      throw new PeftConfigError(`combination type "${type}" needs a density >= 0 (peft's density; e.g. 0.5)`);
    return density;
  };
  switch (base) {
    case 'svd':
    case 'linear':
      return (ts, ws) => weightedSum(ts, ws);
    case 'magnitude_prune': {
      const d = needDensity();
      return (ts, ws) =>
        weightedSum(
          ts.map((t) => magnitudePrune(t, d)),
          ws,
        );
    }
    case 'ties': {
      const d = needDensity();
      return (ts, ws) =>
        disjointMerge(
          ts.map((t) => magnitudePrune(t, d)),
          ws,
          method,
        );
    }
    case 'dare_linear': {
      const d = needDensity();
      return (ts, ws) =>
        weightedSum(
          ts.map((t) => randomPrune(t, d, rng)),
          ws,
        );
    }
    case 'dare_ties': {
      const d = needDensity();
      return (ts, ws) =>
        disjointMerge(
          ts.map((t) => randomPrune(t, d, rng)),
          ws,
          method,
        );
    }
  }
}

function weightedSum(ts: Float64Array[], ws: number[]): Float64Array {
  const out = new Float64Array(ts[0]!.length);
  ts.forEach((t, k) => {
    const w = ws[k]!;
    for (let i = 0; i < out.length; i++) out[i] += w * t[i]!;
  });
  return out;
}

/** Keeps the int(density * n) largest |values| (torch.topk), zeroing the rest; density >= 1 keeps all. */
function magnitudePrune(t: Float64Array, density: number): Float64Array {
  if (density >= 1) return t;
  const k = Math.floor(density * t.length);
  const out = new Float64Array(t.length);
  if (k === 0) return out;
  const mags = Float64Array.from(t, Math.abs).sort();
  const thr = mags[t.length - k]!;
  let atThreshold = 0;
  for (let j = t.length - k; j < t.length && mags[j] === thr; j++) atThreshold++;
  for (let i = 0; i < t.length; i++) {
    const a = Math.abs(t[i]!);
    if (a > thr || (a === thr && atThreshold-- > 0)) out[i] = t[i]!;
  }
  return out;
}

/**
 * DARE: each value kept with probability density and divided by it, the mask drawn as peft draws it
 * (torch.bernoulli(torch.full_like(t, density)): one float32 uniform per value, in row-major order);
 * density >= 1 keeps everything and draws nothing, as peft's prune().
 */
function randomPrune(t: Float64Array, density: number, rng: TorchCpuGenerator): Float64Array {
  if (density >= 1) return t;
  const out = new Float64Array(t.length);
  for (let i = 0; i < t.length; i++) if (rng.bernoulli(density)) out[i] = t[i]! / density;
  return out;
}

/**
 * TIES' sign election and disjoint merge: the majority sign per position from the (unweighted)
 * pruned tensors ("total": sign of their sum, "frequency": of their sign count; >= 0 counts as +),
 * then the mean of the weighted values that agree with it (divided by max(count, 1)).
 */
function disjointMerge(ts: Float64Array[], ws: number[], method: MajoritySignMethod): Float64Array {
  const n = ts[0]!.length;
  const out = new Float64Array(n);
  for (let i = 0; i < n; i++) {
    let mag = 0;
    for (const t of ts) mag += method === 'total' ? t[i]! : Math.sign(t[i]!);
    const majority = mag >= 0 ? 1 : -1;
    let sum = 0;
    let count = 0;
    ts.forEach((t, k) => {
      if (Math.sign(t[i]!) === majority) {
        sum += t[i]! * ws[k]!;
        count++;
      }
    });
    out[i] = sum / Math.max(count, 1);
  }
  return out;
}

/** torch.quantile (linear interpolation) of the values. */
function quantile(values: Float64Array, q: number): number {
  const s = Float64Array.from(values).sort();
  const pos = q * (s.length - 1);
  const lo = Math.floor(pos);
  const hi = Math.min(lo + 1, s.length - 1);
  return s[lo]! + (s[hi]! - s[lo]!) * (pos - lo);
}

/**
 * SVD of a row-major [m, n] float64 matrix by one-sided Jacobi (Hestenes) on the side with fewer
 * columns: U [m, k], S [k] descending, Vt [k, n], k = min(m, n).
 */
export function jacobiSvd(a: Float64Array, m: number, n: number): { U: Float64Array; S: Float64Array; Vt: Float64Array } {
  if (m < n) {
    const t = transposeRM(a, m, n);
    const r = jacobiSvd(t, n, m);
    // A^T = U S Vt  =>  A = Vt^T S U^T
    return { U: transposeRM(r.Vt, m, m), S: r.S, Vt: transposeRM(r.U, n, m) };
  }
  // m >= n: orthogonalise the n columns of W = A V
  const W = Float64Array.from(a);
  const V = new Float64Array(n * n);
  for (let i = 0; i < n; i++) V[i * n + i] = 1;
  for (let sweep = 0; sweep < 60; sweep++) {
    let off = 0;
    for (let p = 0; p < n - 1; p++) {
      for (let q = p + 1; q < n; q++) {
        let alpha = 0;
        let beta = 0;
        let gamma = 0;
        for (let i = 0; i < m; i++) {
          const x = W[i * n + p]!;
          const y = W[i * n + q]!;
          alpha += x * x;
          beta += y * y;
          gamma += x * y;
        }
        if (gamma === 0 || Math.abs(gamma) <= 1e-15 * Math.sqrt(alpha * beta)) continue;
        off = Math.max(off, Math.abs(gamma) / Math.sqrt(alpha * beta));
        const { c, s } = jacobiRotation((beta - alpha) / (2 * gamma));
        rotatePair(W, n, 1, m, p, q, c, s);
        rotatePair(V, n, 1, n, p, q, c, s);
      }
    }
    if (off <= 1e-15) break;
  }
  const norms = Array.from({ length: n }, (_, j) => {
    let s = 0;
    for (let i = 0; i < m; i++) s += W[i * n + j]! ** 2;
    return Math.sqrt(s);
  });
  const order = Array.from(norms.keys()).sort((x, y) => norms[y]! - norms[x]!);
  const U = new Float64Array(m * n);
  const S = new Float64Array(n);
  const Vt = new Float64Array(n * n);
  order.forEach((j, k) => {
    const sv = norms[j]!;
    S[k] = sv;
    for (let i = 0; i < m; i++) U[i * n + k] = sv > 0 ? W[i * n + j]! / sv : 0;
    for (let i = 0; i < n; i++) Vt[k * n + i] = V[i * n + j]!;
  });
  return { U, S, Vt };
}

function transposeRM(a: Float64Array, rows: number, cols: number): Float64Array {
  const t = new Float64Array(a.length);
  for (let i = 0; i < rows; i++) for (let j = 0; j < cols; j++) t[j * rows + i] = a[i * cols + j]!;
  return t;
}

/**
 * The top-r factors of a [m, n] delta as peft takes them from torch.linalg.svd: B = U[:, :r] S[:r]
 * [m, r] and A = Vh[:r] [r, n], clamped symmetrically at the `clamp` quantile of their values.
 */
export async function svdFactors(
  delta: Float64Array,
  m: number,
  n: number,
  r: number,
  clamp: number | undefined,
  svd: TopSvd,
): Promise<{ A: Float32Array; B: Float32Array }> {
  const k = Math.min(m, n);
  if (r > k) throw new PeftConfigError(`svd rank ${r} is larger than the ${m} x ${n} module allows (${k}); pass a smaller svd_rank`);
  let U: Float64Array;
  let S: Float64Array;
  let Vt: Float64Array;
  let uCols: number;
  if (k <= JACOBI_MAX) {
    ({ U, S, Vt } = jacobiSvd(delta, m, n));
    uCols = k;
  } else {
    ({ U, S, Vt } = await svd.compute(Float32Array.from(delta), m, n, r));
    uCols = r;
  }
  const B = new Float64Array(m * r);
  for (let i = 0; i < m; i++) for (let j = 0; j < r; j++) B[i * r + j] = U[i * uCols + j]! * S[j]!;
  const A = Float64Array.from(Vt.subarray(0, r * n));
  if (clamp !== undefined) {
    const all = new Float64Array(B.length + A.length);
    all.set(B);
    all.set(A, B.length);
    const hi = quantile(all, clamp);
    const lo = -hi;
    for (const x of [A, B]) for (let i = 0; i < x.length; i++) x[i] = Math.min(Math.max(x[i]!, lo), hi);
  }
  return { A: Float32Array.from(A), B: Float32Array.from(B) };
}
