// The frozen base as int8 for training (--base-precision int8): each frozen matrix W, used as x @ M
// with M [K, N], is held as two symmetric int8 copies, M per output column (the forward product)
// and M^T per output column (the input-gradient product of the backward pass), and multiplied by
// the Int8MatMul op (ONNX Runtime's DynamicQuantizeMatMul, a u8s8 VNNI GEMM). 2 bytes per
// parameter instead of 4; the trainable tensors, their gradients and AdamW stay float32.

import type { Graph, Value } from '../graph/ir.js';
import * as o from '../graph/ops.js';
import { QuantizationError } from './errors.js';

/** Symmetric int8 codes of a [rows, cols] matrix with one scale per column (absmax / 127). */
export interface Int8Columns {
  codes: Int8Array;
  scales: Float32Array;
  rows: number;
  cols: number;
}

/** The two int8 copies of one frozen matrix M [K, N]: M for x @ M, M^T for g @ M^T. */
export interface Int8Base {
  forward: Int8Columns;
  backward: Int8Columns;
}

function checkFinite(m: number, what: string): void {
  if (!(m < Infinity)) throw new QuantizationError(`${what} holds NaN or infinity; the base weights are corrupt (check the checkpoint)`);
}

/**
 * Quantizes `m` ([rows, cols], row-major; or, with `transposed`, the matrix m^T [cols, rows] it
 * holds transposed) per column of the result: the codes come out row-major in the result's layout.
 */
export function quantizeColumns(m: Float32Array, rows: number, cols: number, transposed = false, what = 'weight'): Int8Columns {
  if (m.length !== rows * cols) throw new QuantizationError(`${what}: ${m.length} values do not fill [${rows}, ${cols}]`);
  const [R, C] = transposed ? [cols, rows] : [rows, cols];
  const absmax = new Float32Array(C);
  if (!transposed) {
    for (let r = 0; r < rows; r++) {
      const o = r * cols;
      for (let c = 0; c < cols; c++) {
        const a = Math.abs(m[o + c]!);
        if (a > absmax[c]!) absmax[c] = a;
        else if (a !== a) absmax[c] = NaN;
      }
    }
  } else {
    // result column c = row c of m
    for (let c = 0; c < rows; c++) {
      let a = 0;
      const o = c * cols;
      for (let k = 0; k < cols; k++) {
        const v = Math.abs(m[o + k]!);
        if (v > a || v !== v) a = v;
      }
      absmax[c] = a;
    }
  }
  const scales = new Float32Array(C);
  const inv = new Float32Array(C);
  for (let c = 0; c < C; c++) {
    checkFinite(absmax[c]!, what);
    scales[c] = absmax[c]! / 127;
    inv[c] = absmax[c]! > 0 ? 127 / absmax[c]! : 0;
  }
  const codes = new Int8Array(R * C);
  if (!transposed) {
    for (let r = 0; r < R; r++) {
      const o = r * C;
      for (let c = 0; c < C; c++) codes[o + c] = Math.round(m[o + c]! * inv[c]!);
    }
  } else {
    for (let c = 0; c < C; c++) {
      const s = inv[c]!;
      const o = c * cols;
      for (let r = 0; r < R; r++) codes[r * C + c] = Math.round(m[o + r]! * s);
    }
  }
  return { codes, scales, rows: R, cols: C };
}

// Host quantization is done once per weight array and shared by every graph built over it (the
// training step, the evaluation step), so each int8 copy is held once per process.
const cache = new WeakMap<Float32Array, Int8Base>();

/**
 * The int8 copies of a frozen weight as it is stored: 'conv1d' = [in, out] (GPT-2's Conv1D, so M
 * = W), 'linear' = [out, in] (nn.Linear, so M = W^T).
 */
export function int8Base(data: Float32Array, shape: readonly number[], layout: 'linear' | 'conv1d', what = 'weight'): Int8Base {
  const hit = cache.get(data);
  if (hit) return hit;
  if (shape.length !== 2) throw new QuantizationError(`${what}: only a matrix can be held as int8, got shape [${shape.join(', ')}]`);
  const [a, b] = shape as [number, number];
  const q: Int8Base =
    layout === 'conv1d'
      ? { forward: quantizeColumns(data, a, b, false, what), backward: quantizeColumns(data, a, b, true, what) }
      : { forward: quantizeColumns(data, a, b, true, what), backward: quantizeColumns(data, a, b, false, what) };
  cache.set(data, q);
  return q;
}

/** The graph constants of an int8 base matrix, as o.int8Matmul takes them: [B, scales, Bt, scales]. */
export function int8Operands(g: Graph, name: string, q: Int8Base): [Value, Value, Value, Value] {
  const c = (suffix: string, m: Int8Columns): [Value, Value] => [
    g.constant(`${name}.${suffix}`, 'int8', [m.rows, m.cols], { kind: 'array', data: m.codes }),
    g.constant(`${name}.${suffix}_scale`, 'float32', [m.cols], { kind: 'array', data: m.scales }),
  ];
  return [...c('int8', q.forward), ...c('int8_t', q.backward)] as [Value, Value, Value, Value];
}

/**
 * The input gradient g @ W^T of an int8 base matrix (its forward operands [b, bScale, bt, btScale],
 * as o.int8Matmul takes them for x @ W), through the transposed copy Bt, with each row of g scaled to a
 * largest |g| of 1 before the product and the result scaled back. DynamicQuantizeMatMul quantizes
 * its left operand to 8 bits with one scale for the whole tensor, and the rows (tokens) of a
 * gradient differ in size by orders of magnitude, so per tensor most rows keep only a few levels;
 * that lost exact match on the arith quickstart (bench/RESULTS.md, issue #19 notes). Per row, every
 * row keeps its 8 bits, for two passes over g and one over the product.
 */
export function int8InputGrad(g: Value, [b, bScale, bt, btScale]: readonly [Value, Value, Value, Value]): Value {
  // 1e-30 keeps an all-zero row (a masked token) at 0 instead of 0 / 0.
  const rowMax = o.add(o.max(o.abs(g), -1, true), 1e-30);
  return o.mul(o.int8Matmul(o.mul(g, o.reciprocal(rowMax)), [bt, btScale, b, bScale]), rowMax);
}
