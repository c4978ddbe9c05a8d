// Symbolic dimension arithmetic used by shape rules: a dim is a coefficient times a product of
// symbols ("4*batch*seq"), which lets Reshape infer -1 and slices produce "seq-1" without knowing
// the numbers until a session runs.

import { type Dim, GraphShapeError } from './types.js';

interface Factors {
  coef: number;
  syms: string[];
}

function factorsOf(d: Dim): Factors {
  if (typeof d === 'number') return { coef: d, syms: [] };
  const f: Factors = { coef: 1, syms: [] };
  for (const part of splitTopLevelProduct(d)) {
    if (/^\d+$/.test(part)) f.coef *= Number(part);
    else f.syms.push(part);
  }
  return f;
}

/** Splits "a*b*(c+d)" at top-level '*' only; a bare sum or difference stays one atomic symbol. */
function splitTopLevelProduct(s: string): string[] {
  const parts: string[] = [];
  let depth = 0;
  let cur = '';
  for (const ch of s) {
    if (ch === '(') depth++;
    if (ch === ')') depth--;
    if (ch === '*' && depth === 0) {
      parts.push(cur);
      cur = '';
    } else cur += ch;
  }
  parts.push(cur);
  if (parts.length === 1) return parts;
  return parts.map((p) => (p.startsWith('(') && p.endsWith(')') ? p.slice(1, -1) : p));
}

function wrap(sym: string): string {
  return /[+-]/.test(sym) ? `(${sym})` : sym;
}

function fromFactors(f: Factors): Dim {
  if (f.syms.length === 0) return f.coef;
  if (f.syms.length === 1 && f.coef === 1) return f.syms[0]!;
  const syms = [...f.syms].sort().map(wrap);
  return f.coef === 1 ? syms.join('*') : `${f.coef}*${syms.join('*')}`;
}

export function productOf(dims: readonly Dim[]): Dim {
  const f: Factors = { coef: 1, syms: [] };
  for (const d of dims) {
    const g = factorsOf(d);
    f.coef *= g.coef;
    f.syms.push(...g.syms);
  }
  return fromFactors(f);
}

/** total / part, when it divides exactly (symbol multisets included); undefined otherwise. */
export function divideDims(total: Dim, part: Dim): Dim | undefined {
  const t = factorsOf(total);
  const p = factorsOf(part);
  if (p.coef === 0 || t.coef % p.coef !== 0) return undefined;
  const syms = [...t.syms];
  for (const s of p.syms) {
    const i = syms.indexOf(s);
    if (i < 0) return undefined;
    syms.splice(i, 1);
  }
  return fromFactors({ coef: t.coef / p.coef, syms });
}

/** d - k for a symbolic or static d (slice lengths). */
function subDim(d: Dim, k: number): Dim {
  if (typeof d === 'number') return d - k;
  if (k === 0) return d;
  const m = /^(.*)-(\d+)$/.exec(d);
  if (m) return subDim(m[1]!, k + Number(m[2]));
  // "seq+4" - 4 is "seq" again (the gradient of a concat behind a static prefix), as addDims folds.
  const p = /^(.*)\+(\d+)$/.exec(d);
  if (p && !/[*()]/.test(p[1]!)) {
    const n = Number(p[2]);
    return n === k ? p[1]! : n > k ? `${p[1]}+${n - k}` : subDim(p[1]!, k - n);
  }
  return `${d}-${k}`;
}

export const INT_MAX = 2 ** 31 - 1;

/** Length of x[start:end] along a dim of size d (step 1), with Python's negative indices. */
export function sliceLength(d: Dim, start: number, end: number): Dim {
  if (typeof d === 'number') {
    const s = clamp(start < 0 ? start + d : start, 0, d);
    const e = clamp(end < 0 ? end + d : end, 0, d);
    return Math.max(0, e - s);
  }
  if (start >= 0 && end >= INT_MAX) return subDim(d, start);
  if (start >= 0 && end < 0) return subDim(d, start - end);
  if (start < 0 && end >= INT_MAX) return -start;
  if (start < 0 && end < 0) return Math.max(0, end - start);
  if (start >= 0 && end >= 0) return Math.max(0, end - start);
  throw new GraphShapeError(`cannot infer the length of [${start}:${end}] on symbolic dim ${d}`);
}

function clamp(x: number, lo: number, hi: number): number {
  return Math.min(hi, Math.max(lo, x));
}
