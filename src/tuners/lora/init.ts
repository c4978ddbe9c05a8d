// LoRA weight initialisation as peft does it: kaiming-uniform A (nn.Linear's default) and zero B,
// Gaussian A, nn.Linear's default for both (init_lora_weights=false), and PiSSA's principal
// singular vectors, from a seeded generator so an adapter created twice is the same adapter.

import { Graph } from '../../graph/ir.js';
import * as o from '../../graph/ops.js';
import { RuntimeSession } from '../../runtime/session.js';

/** SplitMix64-style seeded generator over 32-bit halves (mulberry32); uniform in [0, 1). */
export class SeededRandom {
  private a: number;
  constructor(seed: number) {
    this.a = seed >>> 0;
  }
  next(): number {
    this.a = (this.a + 0x6d2b79f5) >>> 0;
    let t = this.a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  }
  /** Standard normal (Box-Muller). */
  normal(): number {
    const u = Math.max(this.next(), 1e-300);
    return Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * this.next());
  }
}

/** torch.nn.init.kaiming_uniform_(w, a=sqrt(5)) for a [fanOut, fanIn] weight: U(-1/sqrt(fanIn), 1/sqrt(fanIn)). */
export function kaimingUniform(rng: SeededRandom, fanOut: number, fanIn: number): Float32Array {
  const bound = 1 / Math.sqrt(fanIn);
  const w = new Float32Array(fanOut * fanIn);
  for (let i = 0; i < w.length; i++) w[i] = (rng.next() * 2 - 1) * bound;
  return w;
}

export function gaussian(rng: SeededRandom, n: number, std: number): Float32Array {
  const w = new Float32Array(n);
  for (let i = 0; i < n; i++) w[i] = rng.normal() * std;
  return w;
}

/** Initial lora_A [r, in] and lora_B [out, r] for the random init modes. */
export function randomLoraInit(mode: boolean | 'gaussian', rng: SeededRandom, r: number, inF: number, outF: number): { A: Float32Array; B: Float32Array } {
  if (mode === false) return { A: kaimingUniform(rng, r, inF), B: kaimingUniform(rng, outF, r) };
  const A = mode === 'gaussian' ? gaussian(rng, r * inF, 1 / r) : kaimingUniform(rng, r, inF);
  return { A, B: new Float32Array(outF * r) };
}

// ---- PiSSA --------------------------------------------------------------------------------------

/**
 * PiSSA's adapter from the top-r singular triplets of W [out, in] (nn.Linear layout), as peft's
 * pissa_init: A = sqrt(S_r / s) Vh_r, B = U_r sqrt(S_r / s); the base weight then becomes the
 * residual W - s B A (computed by the caller). peft runs a full torch SVD; TopSvd below finds the
 * top r by subspace iteration.
 */
export function pissaFactors(svd: { U: Float64Array; S: Float64Array; Vt: Float64Array }, outF: number, inF: number, r: number, scaling: number): { A: Float32Array; B: Float32Array } {
  const { U, S, Vt } = svd;
  const A = new Float32Array(r * inF);
  const B = new Float32Array(outF * r);
  for (let j = 0; j < r; j++) {
    const s = Math.sqrt(S[j]! / scaling);
    for (let c = 0; c < inF; c++) A[j * inF + c] = s * Vt[j * inF + c]!;
    for (let i = 0; i < outF; i++) B[i * r + j] = U[i * r + j]! * s;
  }
  return { A, B };
}

/**
 * Top-k singular value decomposition by block subspace iteration with Rayleigh-Ritz, in float64.
 * The two products per iteration with the (model-sized) matrix run in one ONNX Runtime session
 * shared by all calls (the matrix is a feed, dims symbolic); only p x p and n x p work (p = block
 * size, n = the smaller side) is done in JS. Cost per iteration: 4 * rows * cols * p flops in ORT;
 * when p reaches the smaller side one iteration is exact, else it iterates until the top-k Ritz
 * residuals fall below 1e-10 of the largest eigenvalue of the Gram matrix (at most 500 iterations:
 * a 4096 x 4096 weight with r = 16 takes a few seconds).
 */
export class TopSvd {
  private sessions = new Map<string, RuntimeSession>();

  private async session(kind: 'cols' | 'rows'): Promise<RuntimeSession> {
    const hit = this.sessions.get(kind);
    if (hit) return hit;
    const g = new Graph();
    const w = g.input('w', 'float64', ['m', 'n']);
    let outputs: Record<string, ReturnType<typeof o.matmul>>;
    if (kind === 'cols') {
      // Gram W^T W on the column side: xq = W Q, zt = (W Q)^T W = (W^T W Q)^T
      const q = g.input('q', 'float64', ['n', 'p']);
      const xq = o.matmul(w, q);
      outputs = { xq, z: o.matmul(o.transposeLast2(xq), w) };
    } else {
      // Gram W W^T on the row side: pt = Q^T W, z = W pt^T = W W^T Q
      const q = g.input('q', 'float64', ['m', 'p']);
      const pt = o.matmul(o.transposeLast2(q), w);
      outputs = { xq: pt, z: o.matmulT(w, pt) };
    }
    const s = await RuntimeSession.fromGraph(g, outputs, { name: 'pissa-svd' });
    this.sessions.set(kind, s);
    return s;
  }

  async dispose(): Promise<void> {
    for (const s of this.sessions.values()) await s.dispose();
    this.sessions.clear();
  }

  /** U [rows, k], S [k] (descending), Vt [k, cols] of a row-major [rows, cols] matrix. */
  async compute(w32: Float32Array, rows: number, cols: number, k: number, seed = 0): Promise<{ U: Float64Array; S: Float64Array; Vt: Float64Array }> {
    const colSide = cols <= rows;
    const n = colSide ? cols : rows;
    const m = colSide ? rows : cols;
    if (k > n) throw new RangeError(`rank ${k} exceeds the smaller side ${n} of a ${rows} x ${cols} matrix`);
    const p = Math.min(n, 2 * k + 10);
    const sess = await this.session(colSide ? 'cols' : 'rows');
    const w = { dtype: 'float64' as const, shape: [rows, cols], data: Float64Array.from(w32) };
    const rng = new SeededRandom(seed + 1);
    let Q: Float64Array = new Float64Array(n * p);
    for (let i = 0; i < Q.length; i++) Q[i] = rng.normal();
    orthonormalize(Q, n, p);
    let lambda: Float64Array = new Float64Array(p);
    let Y: Float64Array = Q;
    let XY: Float64Array = new Float64Array(0);
    for (let iter = 0; iter < 500; iter++) {
      const r = await sess.run({ w, q: { dtype: 'float64', shape: [n, p], data: Q } });
      // Z = G Q as [n, p], and X Q ([m, p]) where X is the matrix whose right vectors Q holds.
      const Z = colSide ? transposed(r.z!.data as Float64Array, p, n) : (r.z!.data as Float64Array);
      const XQ = colSide ? (r.xq!.data as Float64Array) : transposed(r.xq!.data as Float64Array, p, m);
      const H = new Float64Array(p * p);
      for (let a = 0; a < p; a++) {
        for (let b = a; b < p; b++) {
          let s = 0;
          for (let i = 0; i < n; i++) s += Q[i * p + a]! * Z[i * p + b]!;
          H[a * p + b] = s;
          H[b * p + a] = s;
        }
      }
      const { values, vectors } = symmetricEigen(H, p);
      lambda = values;
      Y = matmulSmall(Q, vectors, n, p, p);
      XY = matmulSmall(XQ, vectors, m, p, p);
      const ZE = matmulSmall(Z, vectors, n, p, p);
      // Ritz residuals ||G y_j - lambda_j y_j|| for the top k decide convergence.
      let worst = 0;
      for (let j = 0; j < k; j++) {
        let s = 0;
        for (let i = 0; i < n; i++) {
          const d = ZE[i * p + j]! - lambda[j]! * Y[i * p + j]!;
          s += d * d;
        }
        worst = Math.max(worst, Math.sqrt(s));
      }
      if (p === n || worst <= 1e-10 * Math.max(lambda[0]!, 1e-300)) break;
      Q = ZE;
      orthonormalize(Q, n, p);
    }
    const S = new Float64Array(k);
    for (let j = 0; j < k; j++) S[j] = Math.sqrt(Math.max(lambda[j]!, 0));
    // Right vectors of X are Y's columns; left ones are X y / sigma.
    const right = new Float64Array(n * k);
    const left = new Float64Array(m * k);
    for (let j = 0; j < k; j++) {
      for (let i = 0; i < n; i++) right[i * k + j] = Y[i * p + j]!;
      const inv = S[j]! > 0 ? 1 / S[j]! : 0;
      for (let i = 0; i < m; i++) left[i * k + j] = XY[i * p + j]! * inv;
    }
    // X is W (column side) or W^T (row side): W = U S Vt.
    const U = colSide ? left : right;
    const V = colSide ? right : left;
    return { U, S, Vt: transposed(V, cols, k) };
  }
}

function transposed(a: Float64Array, rows: number, cols: number): Float64Array {
  const t = new Float64Array(a.length);
  for (let i = 0; i < rows; i++) for (let j = 0; j < cols; j++) t[j * rows + i] = a[i * cols + j]!;
  return t;
}

/** [n, a] @ [a, b] for small a, b. */
function matmulSmall(x: Float64Array, y: Float64Array, n: number, a: number, b: number): Float64Array {
  const out = new Float64Array(n * b);
  for (let i = 0; i < n; i++) {
    for (let t = 0; t < a; t++) {
      const v = x[i * a + t]!;
      if (v === 0) continue;
      for (let j = 0; j < b; j++) out[i * b + j] += v * y[t * b + j]!;
    }
  }
  return out;
}

/** Orthonormal columns of a row-major [n, p] matrix in place (modified Gram-Schmidt, twice for stability). */
function orthonormalize(q: Float64Array, n: number, p: number): void {
  for (let pass = 0; pass < 2; pass++) {
    for (let j = 0; j < p; j++) {
      for (let k = 0; k < j; k++) {
        let d = 0;
        for (let i = 0; i < n; i++) d += q[i * p + j]! * q[i * p + k]!;
        for (let i = 0; i < n; i++) q[i * p + j] -= d * q[i * p + k]!;
      }
      let s = 0;
      for (let i = 0; i < n; i++) s += q[i * p + j]! ** 2;
      const norm = Math.sqrt(s);
      if (norm < 1e-300) continue;
      for (let i = 0; i < n; i++) q[i * p + j] /= norm;
    }
  }
}

/** Eigen-decomposition of a symmetric p x p matrix by cyclic Jacobi; values descending, vectors as columns. */
export function symmetricEigen(h: Float64Array, p: number): { values: Float64Array; vectors: Float64Array } {
  const a = Float64Array.from(h);
  const v = new Float64Array(p * p);
  for (let i = 0; i < p; i++) v[i * p + i] = 1;
  for (let sweep = 0; sweep < 100; sweep++) {
    let off = 0;
    let diag = 0;
    for (let i = 0; i < p; i++) {
      diag += a[i * p + i]! ** 2;
      for (let j = i + 1; j < p; j++) off += a[i * p + j]! ** 2;
    }
    if (off <= 1e-30 * diag || off === 0) break;
    for (let i = 0; i < p; i++) {
      for (let j = i + 1; j < p; j++) {
        const aij = a[i * p + j]!;
        if (aij === 0) continue;
        const theta = (a[j * p + j]! - a[i * p + i]!) / (2 * aij);
        const t = Math.sign(theta || 1) / (Math.abs(theta) + Math.sqrt(theta * theta + 1));
        const c = 1 / Math.sqrt(t * t + 1);
        const s = t * c;
        for (let k = 0; k < p; k++) {
          const aki = a[k * p + i]!;
          const akj = a[k * p + j]!;
          a[k * p + i] = c * aki - s * akj;
          a[k * p + j] = s * aki + c * akj;
        }
        for (let k = 0; k < p; k++) {
          const aik = a[i * p + k]!;
          const ajk = a[j * p + k]!;
          a[i * p + k] = c * aik - s * ajk;
          a[j * p + k] = s * aik + c * ajk;
        }
        for (let k = 0; k < p; k++) {
          const vki = v[k * p + i]!;
          const vkj = v[k * p + j]!;
          v[k * p + i] = c * vki - s * vkj;
          v[k * p + j] = s * vki + c * vkj;
        }
      }
    }
  }
  const order = Array.from({ length: p }, (_, i) => i).sort((x, y) => a[y * p + y]! - a[x * p + x]!);
  const values = new Float64Array(p);
  const vectors = new Float64Array(p * p);
  order.forEach((src, dst) => {
    values[dst] = a[src * p + src]!;
    for (let k = 0; k < p; k++) vectors[k * p + dst] = v[k * p + src]!;
  });
  return { values, vectors };
}
