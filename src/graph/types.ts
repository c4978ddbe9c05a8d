// Core value types of the graph IR: dtypes, symbolic shapes, and the errors shape inference raises.
// Dimensions are numbers when known at build time and strings ("batch", "seq", "past+seq") when
// they are only known when a session runs, so one compiled session serves every batch shape.

import { PeftError } from '../errors.js';

export type DType = 'float32' | 'float16' | 'float64' | 'int64' | 'int32' | 'uint8' | 'int8' | 'bool';
export type Dim = number | string;
export type Shape = readonly Dim[];

export function isFloat(d: DType): boolean {
  return d === 'float32' || d === 'float16' || d === 'float64';
}

export type HostArray = Float32Array | Float64Array | BigInt64Array | Int32Array | Uint16Array | Uint8Array | Int8Array;

/** Raised when a node is built with inputs whose shapes or dtypes its op rejects. */
export class GraphShapeError extends PeftError {
  constructor(message: string) {
    super(message);
    this.name = 'GraphShapeError';
  }
}

export function shapeToString(s: Shape): string {
  return `[${s.join(', ')}]`;
}

function dimsEqual(a: Dim, b: Dim): boolean {
  return a === b;
}

export function shapesEqual(a: Shape, b: Shape): boolean {
  return a.length === b.length && a.every((d, i) => dimsEqual(d, b[i]!));
}

/** Number of elements when every dim is static, else undefined. */
export function staticSize(s: Shape): number | undefined {
  let n = 1;
  for (const d of s) {
    if (typeof d !== 'number') return undefined;
    n *= d;
  }
  return n;
}

export function addDims(a: Dim, b: Dim): Dim {
  if (typeof a === 'number' && typeof b === 'number') return a + b;
  if (a === 0) return b;
  if (b === 0) return a;
  // A symbol with a constant offset ("seq-1") plus a number folds the offset, so padding back a
  // slice (the gradient of logits[:, :-1]) gives "seq" again and not "seq-1+1".
  const sym = typeof a === 'number' ? (b as string) : a;
  const k = typeof a === 'number' ? a : typeof b === 'number' ? b : undefined;
  if (k !== undefined) {
    const m = /^(.*?)([+-])(\d+)$/.exec(sym);
    const base = m && !/[*()]/.test(m[1]!) ? m[1]! : sym;
    const off = (m && base !== sym ? (m[2] === '-' ? -Number(m[3]) : Number(m[3])) : 0) + k;
    return off === 0 ? base : off > 0 ? `${base}+${off}` : `${base}-${-off}`;
  }
  // Multiples of one symbolic dim add up ("seq" + "2*seq" = "3*seq", "(seq+20)" twice = "2*(seq+20)",
  // as productOf writes them), so a bias concatenated n times has the rows of a reshape to n times as many.
  const ta = multipleOf(a as string);
  const tb = multipleOf(b as string);
  if (ta.of === tb.of && !/^\d/.test(ta.of)) return `${ta.coef + tb.coef}*${/[+-]/.test(ta.of) ? `(${ta.of})` : ta.of}`;
  return typeof a === 'number' ? `${b}+${a}` : `${a}+${b}`;
}

/** A symbolic dim as coef * of: "3*seq", "2*(seq+20)" (the parentheses dropped), else 1 * itself. */
function multipleOf(d: string): { coef: number; of: string } {
  const m = /^(\d+)\*\(([^()]+)\)$/.exec(d) ?? /^(\d+)\*([A-Za-z_][\w*]*)$/.exec(d);
  return m ? { coef: Number(m[1]), of: m[2]! } : { coef: 1, of: d };
}

/** NumPy-style broadcast of two shapes; undefined when they are incompatible. */
export function broadcastShapes(a: Shape, b: Shape): Dim[] | undefined {
  const n = Math.max(a.length, b.length);
  const out: Dim[] = [];
  for (let i = 0; i < n; i++) {
    const da = i < n - a.length ? 1 : a[i - (n - a.length)]!;
    const db = i < n - b.length ? 1 : b[i - (n - b.length)]!;
    if (dimsEqual(da, db)) out.push(da);
    else if (da === 1) out.push(db);
    else if (db === 1) out.push(da);
    else return undefined;
  }
  return out;
}

export function normalizeAxis(axis: number, rank: number): number {
  const a = axis < 0 ? axis + rank : axis;
  if (a < 0 || a >= rank) throw new GraphShapeError(`axis ${axis} is out of range for rank ${rank}`);
  return a;
}

export function dtypeByteSize(d: DType): number {
  switch (d) {
    case 'float64':
    case 'int64':
      return 8;
    case 'float32':
    case 'int32':
      return 4;
    case 'float16':
      return 2;
    case 'uint8':
    case 'int8':
    case 'bool':
      return 1;
  }
}
