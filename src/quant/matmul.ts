// QLoRA's frozen 4-bit layers in the graph: the per-weight constants (packed codes, absmax state,
// shared code tables) as QuantMatMul operands, and x @ W^T through that op, which rebuilds W from
// the 4-bit data in the forward pass and again in the backward pass instead of holding it.

import type { Graph, Value } from '../graph/ir.js';
import * as o from '../graph/ops.js';
import type { QuantMatMulAttrs } from '../graph/attrs.js';
import { type Quantized4bit, numel, validateQuantized } from './blockwise.js';
import { FP4_CODE, NF4_CODE } from './codes.js';
import { QuantizationError } from './errors.js';
import { type UnpackMode, fed, pairTable, sharedTable } from './graph.js';

/**
 * How the product is computed:
 * - 'ops' (default): the dequantization is a chain of ONNX ops inside QuantMatMul's lowering
 *   (bit-identical to dequantizeInGraph), then a float32 matmul;
 * - 'bnb4': the forward x @ W^T runs in ONNX Runtime's com.microsoft.MatMulBnb4 kernel, which
 *   dequantizes into a transient buffer itself (the backward g @ W always uses the op chain: the
 *   kernel only multiplies by W^T). Falls back to 'ops' for a code table that is not bitsandbytes' own.
 * - 'dequantize': no QuantMatMul: the matrix is dequantized once (dequantizeInGraph, ordered after
 *   x) and multiplied with MatMulT, whose gradient then reuses that float32 copy, so in a training
 *   step it stays alive from the forward pass to the backward pass. The behaviour before
 *   QuantMatMul, kept to measure what it costs (bench/qlora.ts).
 */
export type QuantKernel = 'ops' | 'bnb4' | 'dequantize';

export interface QuantOperandOptions {
  unpack?: UnpackMode;
  kernel?: QuantKernel;
}

/** A quantized matrix as QuantMatMul takes it: its graph constants and the layout attributes. */
export interface QuantOperands {
  values: Value[];
  attrs: Omit<QuantMatMulAttrs, 'transB'>;
}

function sameTable(a: Float32Array, b: Float32Array): boolean {
  return a.length === b.length && a.every((v, i) => Object.is(v, b[i]) || v === b[i]);
}

/** ONNX Runtime's MatMulBnb4 quant_type for a bitsandbytes code table, or undefined for any other table. */
function bnb4QuantType(q: Quantized4bit): 0 | 1 | undefined {
  if (q.type === 'nf4' && sameTable(q.code, NF4_CODE)) return 1;
  if (q.type === 'fp4' && sameTable(q.code, FP4_CODE)) return 0;
  return undefined;
}

/**
 * The constants of one quantized matrix in `g`, named after `name` as dequantizeInGraph names them
 * ("<name>" packed codes, "<name>.absmax", "<name>.nested_absmax"). The per-weight arrays are fed
 * to the session from the host arrays (never initializers, so ONNX Runtime cannot constant-fold the
 * dequantization into a float32 copy); the code tables are small shared initializers.
 */
export function quantOperands(g: Graph, name: string, q: Quantized4bit, opts: QuantOperandOptions = {}): QuantOperands {
  validateQuantized(q, name);
  const n = numel(q.shape);
  if (q.shape.length !== 2)
    throw new QuantizationError(`${name}: only a 4-bit matrix can be multiplied, got shape [${q.shape.join(', ')}]`);
  const blocks = Math.ceil(n / q.blockSize);
  const pairs = (opts.unpack ?? 'pairs') === 'pairs';
  const code = pairs ? sharedTable(g, `${q.type}_pairs`, pairTable(q.code), [256, 2]) : sharedTable(g, `${q.type}_quant_map`, q.code, [16]);
  const packed = g.constant(name, 'uint8', [q.packed.length], fed(q.packed));
  const a = q.absmax;
  const bnb4 = opts.kernel === 'bnb4' ? bnb4QuantType(q) : undefined;
  const base = { shape: [q.shape[0]!, q.shape[1]!] as [number, number], blockSize: q.blockSize, ...(bnb4 !== undefined ? { bnb4 } : {}) };
  if (a.kind === 'plain') {
    return { values: [packed, code, g.constant(`${name}.absmax`, 'float32', [blocks], fed(a.absmax))], attrs: base };
  }
  const nested = a.nestedAbsmax.length;
  return {
    values: [
      packed,
      code,
      g.constant(`${name}.absmax`, 'uint8', [blocks], fed(a.codes)),
      g.constant(`${name}.nested_absmax`, 'float32', [nested, 1], fed(a.nestedAbsmax)),
      sharedTable(g, 'nested_quant_map', a.code, [a.code.length]),
    ],
    attrs: { ...base, nested: { blockSize: a.nestedBlockSize, offset: Math.fround(a.offset) } },
  };
}

/** x @ W^T for a quantized W [out, in] (torch nn.Linear / bitsandbytes Linear4bit). */
export function quantLinear(x: Value, w: QuantOperands): Value {
  return o.quantMatmul(x, w.values, { ...w.attrs, transB: true });
}

/** x @ W for a quantized W [rows, cols]. */
export function quantMatmul(x: Value, w: QuantOperands): Value {
  const { bnb4: _kernel, ...attrs } = w.attrs;
  return o.quantMatmul(x, w.values, { ...attrs, transB: false });
}
