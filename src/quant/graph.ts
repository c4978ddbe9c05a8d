// In-graph dequantization: the packed 4-bit codes, the (double-quantized) absmax and the code tables
// go into the graph as uint8/float32 constants, and the float32 weight is rebuilt by ops at run time
// (unpack the nibbles, look codes up, scale by the per-block absmax), so only 4-bit data is held.

import type { ConstSource, Graph, Value } from '../graph/ir.js';
import * as o from '../graph/ops.js';
import { type AbsmaxState, type Quantized4bit, numel, validateQuantized } from './blockwise.js';

/**
 * How nibbles become code values:
 * - 'bitops': BitShift/BitwiseAnd split each byte into two indices, one Gather on the 16-entry table;
 * - 'pairs' (default): one Gather on a 256 x 2 table holding both codes of every byte value, which
 *   skips the bit ops, the interleaving Concat and half the index casting (see docs/QUANTIZATION.md).
 * Both give the same floats, bit for bit.
 */
export type UnpackMode = 'bitops' | 'pairs';

export interface DequantizeInGraphOptions {
  unpack?: UnpackMode;
  /**
   * A value the dequantization must wait for (the layer's input). Nothing else orders it: ONNX
   * Runtime would otherwise run every weight's dequantization up front and hold all the float32
   * weights at once. See orderAfter().
   */
  after?: Value;
}

/**
 * A uint8 scalar 255 that ONNX Runtime can only compute once `after` exists (it is derived from its
 * element count, which depends on symbolic dims): AND-ing it into the packed codes makes the
 * dequantization run right before its use, without changing a bit.
 */
function orderAfter(after: Value): Value {
  return o.cast(o.add(o.mul(o.sizeOf(after), 0), 255), 'uint8');
}

// Code tables are shared by every weight of a graph that uses the same table.
const tables = new WeakMap<Graph, Map<string, Value>>();

export function sharedTable(g: Graph, kind: string, values: Float32Array, shape: number[]): Value {
  let m = tables.get(g);
  if (!m) tables.set(g, (m = new Map()));
  const key = `${kind}:${new Uint32Array(values.buffer, values.byteOffset, values.length).join(',')}`;
  let v = m.get(key);
  if (!v) {
    v = g.constant(`quant.${kind}_${m.size}`, 'float32', shape, values.slice());
    m.set(key, v);
  }
  return v;
}

/**
 * The per-weight data is fed to the session from these arrays (never initializers): ONNX Runtime
 * would otherwise constant-fold the whole dequantization at session creation and hold the float32
 * weight, which is what quantizing is meant to avoid.
 */
export function fed(data: Uint8Array | Float32Array): ConstSource {
  return { kind: 'array', data, feed: true };
}

/** For every byte value b: [code[b >> 4], code[b & 15]]. */
export function pairTable(code: Float32Array): Float32Array {
  const t = new Float32Array(512);
  for (let b = 0; b < 256; b++) {
    t[2 * b] = code[b >> 4]!;
    t[2 * b + 1] = code[b & 15]!;
  }
  return t;
}

/** The per-block absmax as a float32 [blocks] value: a constant, or rebuilt from its 8-bit codes. */
function absmaxInGraph(g: Graph, name: string, state: AbsmaxState, blocks: number, gate?: Value): Value {
  if (state.kind === 'plain') return g.constant(`${name}.absmax`, 'float32', [blocks], fed(state.absmax));
  const nbs = state.nestedBlockSize;
  const nested = state.nestedAbsmax.length;
  let codes = g.constant(`${name}.absmax`, 'uint8', [blocks], fed(state.codes));
  if (gate) codes = o.bitwiseAnd(codes, gate);
  const table = sharedTable(g, 'nested_quant_map', state.code, [state.code.length]);
  let a = o.gather(table, o.cast(codes, 'int32'), 0);
  const padded = nested * nbs;
  if (padded !== blocks) a = o.pad(a, [0, padded - blocks]);
  const scale = g.constant(`${name}.nested_absmax`, 'float32', [nested, 1], fed(state.nestedAbsmax));
  a = o.reshape(o.mul(o.reshape(a, [nested, nbs]), scale), [padded]);
  if (padded !== blocks) a = o.slice(a, 0, 0, blocks);
  return o.add(a, g.scalar(Math.fround(state.offset), 'float32'));
}

/**
 * Builds the float32 weight of a quantized tensor in `g`, in its quantized shape (q.shape). The
 * constants are named after `name` ("<name>" packed, "<name>.absmax", ...). Equal, bit for bit, to
 * dequantize4bit(q) on the host.
 */
export function dequantizeInGraph(g: Graph, name: string, q: Quantized4bit, opts: DequantizeInGraphOptions = {}): Value {
  validateQuantized(q, name);
  const n = numel(q.shape);
  const bytes = q.packed.length;
  const bs = q.blockSize;
  const blocks = Math.ceil(n / bs);
  return g.scope(`${name}.dequant`, () => {
    let packed = g.constant(name, 'uint8', [bytes], fed(q.packed));
    const gate = opts.after ? orderAfter(opts.after) : undefined;
    if (gate) packed = o.bitwiseAnd(packed, gate);
    let values: Value;
    if ((opts.unpack ?? 'pairs') === 'pairs') {
      const table = sharedTable(g, `${q.type}_pairs`, pairTable(q.code), [256, 2]);
      values = o.reshape(o.gather(table, o.cast(packed, 'int32'), 0), [2 * bytes]);
    } else {
      const code = sharedTable(g, `${q.type}_quant_map`, q.code, [16]);
      const hi = o.bitShift(packed, g.scalar(4, 'uint8'), 'RIGHT');
      const lo = o.bitwiseAnd(packed, g.scalar(15, 'uint8'));
      const idx = o.reshape(o.concat([o.unsqueeze(hi, 1), o.unsqueeze(lo, 1)], 1), [2 * bytes]);
      values = o.gather(code, o.cast(idx, 'int32'), 0);
    }
    const absmax = absmaxInGraph(g, name, q.absmax, blocks, gate);
    const padded = blocks * bs;
    if (padded !== 2 * bytes) values = o.pad(values, [0, padded - 2 * bytes]);
    let w = o.reshape(o.mul(o.reshape(values, [blocks, bs]), o.unsqueeze(absmax, 1)), [padded]);
    if (padded !== n) w = o.slice(w, 0, 0, n);
    return o.reshape(w, q.shape);
  });
}
