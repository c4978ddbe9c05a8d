// LoRA weight initialisation as peft does it: kaiming-uniform A (nn.Linear's default) and zero B,
// Gaussian A, nn.Linear's default for both (init_lora_weights=false), and PiSSA's principal
// singular vectors, from a seeded generator so an adapter created twice is the same adapter.

import { Graph } from '../../graph/ir.js';
import * as o from '../../graph/ops.js';
import { SeededRandom, normals, uniforms } from '../../nn/random.js';
import { RuntimeSession } from '../../runtime/session.js';

/** torch.nn.init.kaiming_uniform_(w, a=sqrt(5)) for a [fanOut, fanIn] weight: U(-1/sqrt(fanIn), 1/sqrt(fanIn)). */
export function kaimingUniform(rng: SeededRandom, fanOut: number, fanIn: number): Float32Array {
  return uniforms(rng, fanOut * fanIn, 1 / Math.sqrt(fanIn));
}

/** Initial lora_A [r, in] and lora_B [out, r] for the random init modes. */
export function randomLoraInit(
  mode: boolean | 'gaussian',
  rng: SeededRandom,
  r: number,
  inF: number,
  outF: number,
): { A: Float32Array; B: Float32Array } {
  if (mode === false) return { A: kaimingUniform(rng, r, inF), B: kaimingUniform(rng, outF, r) };
  const A = mode === 'gaussian' ? normals(rng, r * inF, 1 / r) : kaimingUniform(rng, r, inF);
  return { A, B: new Float32Array(outF * r) };
}

// ---- PiSSA --------------------------------------------------------------------------------------

/**
 * PiSSA's adapter from the top-r singular triplets of W [out, in] (nn.Linear layout), as peft's
 * pissa_init: A = sqrt(S_r / s) Vh_r, B = U_r sqrt(S_r / s); the base weight then becomes the
 * residual W - s B A (computed by the caller). peft runs a full torch SVD; TopSvd below finds the
 * top r by subspace iteration.
 */
export function pissaFactors(
  svd: { U: Float64Array; S: Float64Array; Vt: Float64Array },
  outF: number,
  inF: number,
  r: number,
  scaling: number,
): { A: Float32Array; B: Float32Array } {
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
 * shared by all calls (the matrix is a feed, dims symbolic); JS only does O(n p^2) work on the
 * block (p = min(n, 2k + 10) columns, n = the smaller side), kept column-major so every loop is
 * contiguous. When p reaches n one iteration is exact; otherwise it iterates until the top-k Ritz
 * residuals fall below 1e-10 of the largest Gram eigenvalue, or `maxIterations` (peft's
 * "pissa_niter_<n>" gives a fixed count, as torch.svd_lowrank's niter). Measured on 2 cores with
 * a flat (uniform random) spectrum, the worst case, and k = 16: 1024 x 1024 takes ~190 iterations
 * and 9 s, 2048 x 2048 22 s; trained weights, whose top singular values stand out, converge in far
 * fewer. peft's own full-SVD "pissa" likewise takes minutes on a 7B model (hence pissa_niter_<n>).
 */
export class TopSvd {
  private sessions = new Map<string, RuntimeSession>();

  private async session(kind: 'cols' | 'rows'): Promise<RuntimeSession> {
    const hit = this.sessions.get(kind);
    if (hit) return hit;
    const g = new Graph();
    const w = g.input('w', 'float64', ['rows', 'cols']);
    const qt = g.input('qt', 'float64', ['p', kind]);
    let outputs: Record<string, ReturnType<typeof o.matmul>>;
    if (kind === 'cols') {
      // Gram W^T W (n = cols): xqt = (W Q)^T = Q^T W^T, zt = (W^T W Q)^T = xqt W
      const xqt = o.matmulT(qt, w);
      outputs = { xqt, zt: o.matmul(xqt, w) };
    } else {
      // Gram W W^T (n = rows): xqt = (W^T Q)^T = Q^T W, zt = (W W^T Q)^T = xqt W^T
      const xqt = o.matmul(qt, w);
      outputs = { xqt, zt: o.matmulT(xqt, w) };
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
  async compute(
    w32: Float32Array,
    rows: number,
    cols: number,
    k: number,
    opts: { seed?: number; maxIterations?: number } = {},
  ): Promise<{ U: Float64Array; S: Float64Array; Vt: Float64Array }> {
    const colSide = cols <= rows;
    const n = colSide ? cols : rows;
    const m = colSide ? rows : cols;
    if (k > n) throw new RangeError(`rank ${k} exceeds the smaller side ${n} of a ${rows} x ${cols} matrix`);
    const fixed = opts.maxIterations !== undefined;
    const p = fixed ? k : Math.min(n, 2 * k + 10);
    const maxIter = opts.maxIterations ?? 1000;
    const sess = await this.session(colSide ? 'cols' : 'rows');
    const w = { dtype: 'float64' as const, shape: [rows, cols], data: Float64Array.from(w32) };
    // Column-major blocks: column j of an [n, p] block lives at [j * n, (j + 1) * n).
    const rand = new SeededRandom((opts.seed ?? 0) + 1);
    let Q: Float64Array = new Float64Array(n * p);
    for (let i = 0; i < Q.length; i++) Q[i] = rand.normal();
    orthonormalize(Q, n, p);
    // Set by every iteration; the loop below runs at least once.
    let lambda: Float64Array;
    let E: Float64Array;
    let XQ: Float64Array;
    let Y: Float64Array;
    for (let iter = 0; ; iter++) {
      const r = await sess.run({ w, qt: { dtype: 'float64', shape: [p, n], data: Q } });
      const Z = r.zt!.data as Float64Array;
      XQ = r.xqt!.data as Float64Array;
      const H = new Float64Array(p * p);
      for (let a = 0; a < p; a++) {
        for (let b = a; b < p; b++) {
          const v = dot(Q, a * n, Z, b * n, n);
          H[a * p + b] = v;
          H[b * p + a] = v;
        }
      }
      ({ values: lambda, vectors: E } = symmetricEigen(H, p));
      Y = combine(Q, E, n, p, k);
      const ZE = combine(Z, E, n, p, p);
      // Ritz residuals ||G y_j - lambda_j y_j|| of the top k decide convergence.
      let worst = 0;
      for (let j = 0; j < k; j++) {
        let sq = 0;
        for (let i = 0; i < n; i++) sq += (ZE[j * n + i]! - lambda[j]! * Y[j * n + i]!) ** 2;
        worst = Math.max(worst, Math.sqrt(sq));
      }
      if (p === n || iter + 1 >= maxIter || (!fixed && worst <= 1e-10 * Math.max(lambda[0]!, 1e-300))) break;
      Q = ZE;
      orthonormalize(Q, n, p);
    }
    const S = new Float64Array(k);
    for (let j = 0; j < k; j++) S[j] = Math.sqrt(Math.max(lambda[j]!, 0));
    // Right vectors of X (W, or W^T on the row side) are Y's columns; left ones are X y / sigma.
    const XY = combine(XQ, E, m, p, k);
    const right = Y;
    const left = XY;
    for (let j = 0; j < k; j++) {
      const inv = S[j]! > 0 ? 1 / S[j]! : 0;
      for (let i = 0; i < m; i++) left[j * m + i]! *= inv;
    }
    // Column-major [len, k] blocks to U [rows, k] row-major and Vt [k, cols] row-major.
    const rowMajor = (cm: Float64Array, len: number) => {
      const out = new Float64Array(len * k);
      for (let j = 0; j < k; j++) for (let i = 0; i < len; i++) out[i * k + j] = cm[j * len + i]!;
      return out;
    };
    const [uCm, uLen, vCm] = colSide ? [left, m, right] : [right, n, left];
    return { U: rowMajor(uCm, uLen), S, Vt: vCm.slice(0, k * cols) };
  }
}

function dot(a: Float64Array, ao: number, b: Float64Array, bo: number, n: number): number {
  let s = 0;
  for (let i = 0; i < n; i++) s += a[ao + i]! * b[bo + i]!;
  return s;
}

/** The first `cols` columns of X E for a column-major [n, p] block X and a p x p matrix E (row-major). */
function combine(x: Float64Array, e: Float64Array, n: number, p: number, cols: number): Float64Array {
  const out = new Float64Array(n * cols);
  for (let j = 0; j < cols; j++) {
    const o = j * n;
    for (let t = 0; t < p; t++) {
      const c = e[t * p + j]!;
      if (c === 0) continue;
      const xo = t * n;
      for (let i = 0; i < n; i++) out[o + i] += c * x[xo + i]!;
    }
  }
  return out;
}

/** Orthonormal columns of a column-major [n, p] block in place (modified Gram-Schmidt, twice for stability). */
function orthonormalize(q: Float64Array, n: number, p: number): void {
  for (let pass = 0; pass < 2; pass++) {
    for (let j = 0; j < p; j++) {
      const jo = j * n;
      for (let t = 0; t < j; t++) {
        const to = t * n;
        const d = dot(q, jo, q, to, n);
        for (let i = 0; i < n; i++) q[jo + i] -= d * q[to + i]!;
      }
      const norm = Math.sqrt(dot(q, jo, q, jo, n));
      if (norm < 1e-300) continue;
      for (let i = 0; i < n; i++) q[jo + i] /= norm;
    }
  }
}

/** cos and sin of the Jacobi rotation that zeroes an off-diagonal entry, from cot(2θ). */
export function jacobiRotation(cot2: number): { c: number; s: number } {
  const t = Math.sign(cot2 || 1) / (Math.abs(cot2) + Math.sqrt(cot2 * cot2 + 1));
  const c = 1 / Math.sqrt(t * t + 1);
  return { c, s: t * c };
}

/**
 * Applies the Givens rotation (c, s) in place to lines p and q of a row-major matrix, element k of
 * line i at m[k * stride + i * step]: columns are (stride = row length, step = 1), rows (1, row length).
 */
export function rotatePair(m: Float64Array, stride: number, step: number, len: number, p: number, q: number, c: number, s: number): void {
  for (let k = 0; k < len; k++) {
    const ip = k * stride + p * step;
    const iq = k * stride + q * step;
    const x = m[ip]!;
    const y = m[iq]!;
    m[ip] = c * x - s * y;
    m[iq] = s * x + c * y;
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
        const { c, s } = jacobiRotation((a[j * p + j]! - a[i * p + i]!) / (2 * aij));
        rotatePair(a, p, 1, p, i, j, c, s);
        rotatePair(a, 1, p, p, i, j, c, s);
        rotatePair(v, p, 1, p, i, j, c, s);
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

// ---- OLoRA --------------------------------------------------------------------------------------

/**
 * OLoRA (peft olora_init): Q, R = torch.linalg.qr(W) for W [out, in]; lora_A = R[:r] [r, in],
 * lora_B = Q[:, :r] [out, r] (no scaling), and the base weight becomes W - s·BA. Householder QR in
 * float64 with LAPACK's sign convention (dlarfg: R's diagonal is -sign(x0)·||x||), computing only the
 * r reflectors the factors need: O(r·out·in), a one-off at adapter creation.
 */
export function oloraFactors(w: Float32Array, outF: number, inF: number, r: number): { A: Float32Array; B: Float32Array } {
  if (r > Math.min(outF, inF)) throw new RangeError(`OLoRA needs r <= min(out, in) = ${Math.min(outF, inF)}, got ${r}`);
  const M = Float64Array.from(w);
  const vs: Float64Array[] = [];
  const taus: number[] = [];
  for (let j = 0; j < r; j++) {
    const alpha = M[j * inF + j]!;
    let xnorm2 = 0;
    for (let i = j + 1; i < outF; i++) xnorm2 += M[i * inF + j]! ** 2;
    const v = new Float64Array(outF - j);
    v[0] = 1;
    if (xnorm2 === 0) {
      vs.push(v);
      taus.push(0);
      continue;
    }
    const norm = Math.hypot(alpha, Math.sqrt(xnorm2));
    const beta = alpha >= 0 ? -norm : norm;
    const tau = (beta - alpha) / beta;
    const scale = 1 / (alpha - beta);
    for (let i = j + 1; i < outF; i++) v[i - j] = M[i * inF + j]! * scale;
    // apply H = I - tau v v^T to columns j.. of rows j..
    for (let c = j; c < inF; c++) {
      let dot = 0;
      for (let i = j; i < outF; i++) dot += v[i - j]! * M[i * inF + c]!;
      const f = tau * dot;
      if (f !== 0) for (let i = j; i < outF; i++) M[i * inF + c] -= f * v[i - j]!;
    }
    M[j * inF + j] = beta;
    for (let i = j + 1; i < outF; i++) M[i * inF + j] = 0;
    vs.push(v);
    taus.push(tau);
  }
  const A = new Float32Array(r * inF);
  for (let i = 0; i < r; i++) for (let c = i; c < inF; c++) A[i * inF + c] = M[i * inF + c]!;
  // Q[:, :r] = H_0 ... H_{r-1} [I_r; 0]
  const Q = new Float64Array(outF * r);
  for (let i = 0; i < r; i++) Q[i * r + i] = 1;
  for (let j = r - 1; j >= 0; j--) {
    const v = vs[j]!;
    const tau = taus[j]!;
    if (tau === 0) continue;
    for (let c = 0; c < r; c++) {
      let dot = 0;
      for (let i = j; i < outF; i++) dot += v[i - j]! * Q[i * r + c]!;
      const f = tau * dot;
      if (f !== 0) for (let i = j; i < outF; i++) Q[i * r + c] -= f * v[i - j]!;
    }
  }
  return { A, B: Float32Array.from(Q) };
}
