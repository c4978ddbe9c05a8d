// Lowering to ONNX: one rule per op that emits ONNX nodes (opset 18, plus com.microsoft FusedMatMul
// and MatMulBnb4) through a LowerContext; export.ts runs them over a graph's live nodes. The table
// is an exhaustive mapped type over OpName (graph/attrs.ts), so an op without a lowering does not
// compile. The 4-bit dequantization of QuantMatMul lives here too: it is a lowering, not an op.

import type { Node, Value } from '../graph/ir.js';
import type { OpAttrs, OpName, QuantMatMulAttrs, ReduceAttrs } from '../graph/attrs.js';
import type { DType } from '../graph/types.js';
import type { AttrValue } from './model.js';

/** An ONNX attribute as a lowering writes it: model.ts's, with a tensor given by its values (export.ts encodes it). */
export type OnnxAttr = Exclude<AttrValue, { type: 'tensor' }> | { type: 'tensor'; dtype: DType; dims: number[]; values: number[] };

/** What a lowering may do: emit ONNX nodes and ask for small constant initializers. */
export interface LowerContext {
  emit(opType: string, inputs: string[], outputs: string[], attrs?: Record<string, OnnxAttr>, domain?: string): void;
  int64s(values: readonly number[]): string;
  scalar(value: number, dtype: DType): string;
  tmp(hint: string): string;
  /** Whether the lowered graph reads v (a node's outputs that nothing reads may be left unnamed). */
  live(v: Value): boolean;
}

/** ins/outs are the ONNX value names of the node's inputs and outputs. */
export type LowerRule<A> = (ctx: LowerContext, ins: string[], outs: string[], attrs: A, node: Node) => void;

const ONNX_DTYPE: Record<DType, number> = { float32: 1, uint8: 2, int8: 3, int32: 6, int64: 7, bool: 9, float16: 10, float64: 11 };
/** The TensorProto.DataType code of a dtype. */
export function onnxDtype(d: DType): number {
  return ONNX_DTYPE[d];
}

const int = (value: number): OnnxAttr => ({ type: 'int', value });
const float = (value: number): OnnxAttr => ({ type: 'float', value });
const ints = (value: number[]): OnnxAttr => ({ type: 'ints', value });
const str = (value: string): OnnxAttr => ({ type: 'string', value });

// ---- rule families and helpers --------------------------------------------------------------

/** One ONNX node of the same inputs and outputs. */
function as(onnx: string): LowerRule<unknown> {
  return (ctx, ins, outs) => ctx.emit(onnx, ins, outs);
}
function reduce(onnx: string): LowerRule<ReduceAttrs> {
  return (ctx, ins, outs, { axes, keepdims }) => ctx.emit(onnx, [ins[0]!, ctx.int64s(axes)], outs, { keepdims: int(keepdims ? 1 : 0) });
}
function shapeOf(ctx: LowerContext, name: string): string {
  const s = ctx.tmp('shape');
  ctx.emit('Shape', [name], [s]);
  return s;
}
function dimScalar(ctx: LowerContext, name: string, axis: number): string {
  const s = ctx.tmp('dim1');
  ctx.emit('Shape', [name], [s], { start: int(axis), end: int(axis + 1) });
  const d = ctx.tmp('dim');
  ctx.emit('Squeeze', [s, ctx.int64s([0])], [d]);
  return d;
}

// ---- 4-bit dequantization (QuantMatMul) ------------------------------------------------------

/**
 * A uint8 255 that exists only once `x` does (derived from its element count, a run-time value):
 * AND-ed into the packed codes it orders the dequantization after x without changing a bit.
 */
function lowerAfterGate(ctx: LowerContext, x: string): string {
  const size = ctx.tmp('q_size');
  ctx.emit('Size', [x], [size]);
  const zero = ctx.tmp('q_zero');
  ctx.emit('Mul', [size, ctx.scalar(0, 'int64')], [zero]);
  const full = ctx.tmp('q_full');
  ctx.emit('Add', [zero, ctx.scalar(255, 'int64')], [full]);
  const gate = ctx.tmp('q_gate');
  ctx.emit('Cast', [full], [gate], { to: int(onnxDtype('uint8')) });
  return gate;
}

function lowerReshape(ctx: LowerContext, x: string, shape: number[], hint: string): string {
  const y = ctx.tmp(hint);
  ctx.emit('Reshape', [x, ctx.int64s(shape)], [y]);
  return y;
}
function lowerPadTail(ctx: LowerContext, x: string, extra: number): string {
  const y = ctx.tmp('q_pad');
  ctx.emit('Pad', [x, ctx.int64s([0, extra])], [y], { mode: str('constant') });
  return y;
}
function lowerHead(ctx: LowerContext, x: string, n: number): string {
  const y = ctx.tmp('q_head');
  ctx.emit('Slice', [x, ctx.int64s([0]), ctx.int64s([n]), ctx.int64s([0])], [y]);
  return y;
}
function lowerGather(ctx: LowerContext, table: string, idx: string, hint: string): string {
  const i32 = ctx.tmp(`${hint}_idx`);
  ctx.emit('Cast', [idx], [i32], { to: int(onnxDtype('int32')) });
  const y = ctx.tmp(hint);
  ctx.emit('Gather', [table, i32], [y], { axis: int(0) });
  return y;
}

/** float32 [blocks]: nested_code[codes & gate] * nested_absmax + offset (bitsandbytes double quantization). */
function lowerNestedAbsmax(ctx: LowerContext, ins: string[], a: QuantMatMulAttrs, gate: string): string {
  const nested = a.nested!;
  const blocks = Math.ceil((a.shape[0] * a.shape[1]) / a.blockSize);
  const count = Math.ceil(blocks / nested.blockSize);
  const codes = ctx.tmp('q_absmax_codes');
  ctx.emit('BitwiseAnd', [ins[3]!, gate], [codes]);
  let v = lowerGather(ctx, ins[5]!, codes, 'q_absmax_centered');
  const padded = count * nested.blockSize;
  if (padded !== blocks) v = lowerPadTail(ctx, v, padded - blocks);
  const scaled = ctx.tmp('q_absmax_scaled');
  ctx.emit('Mul', [lowerReshape(ctx, v, [count, nested.blockSize], 'q_absmax_rows'), ins[4]!], [scaled]);
  v = lowerReshape(ctx, scaled, [padded], 'q_absmax_flat');
  if (padded !== blocks) v = lowerHead(ctx, v, blocks);
  const out = ctx.tmp('q_absmax');
  ctx.emit('Add', [v, ctx.scalar(Math.fround(nested.offset), 'float32')], [out]);
  return out;
}

/** The float32 matrix [rows, cols], op for op what src/quant/graph.ts dequantizeInGraph builds. */
function lowerDequant4(ctx: LowerContext, ins: string[], a: QuantMatMulAttrs, gate: string, pairs: boolean): string {
  const [rows, cols] = a.shape;
  const n = rows * cols;
  const bytes = Math.ceil(n / 2);
  const bs = a.blockSize;
  const blocks = Math.ceil(n / bs);
  const packed = ctx.tmp('q_packed');
  ctx.emit('BitwiseAnd', [ins[1]!, gate], [packed]);
  let values: string;
  if (pairs) {
    values = lowerReshape(ctx, lowerGather(ctx, ins[2]!, packed, 'q_pairs'), [2 * bytes], 'q_values');
  } else {
    const hi = ctx.tmp('q_hi');
    ctx.emit('BitShift', [packed, ctx.scalar(4, 'uint8')], [hi], { direction: str('RIGHT') });
    const lo = ctx.tmp('q_lo');
    ctx.emit('BitwiseAnd', [packed, ctx.scalar(15, 'uint8')], [lo]);
    const hi1 = ctx.tmp('q_hi1');
    ctx.emit('Unsqueeze', [hi, ctx.int64s([1])], [hi1]);
    const lo1 = ctx.tmp('q_lo1');
    ctx.emit('Unsqueeze', [lo, ctx.int64s([1])], [lo1]);
    const both = ctx.tmp('q_nibbles');
    ctx.emit('Concat', [hi1, lo1], [both], { axis: int(1) });
    values = lowerGather(ctx, ins[2]!, lowerReshape(ctx, both, [2 * bytes], 'q_nibbles_flat'), 'q_values');
  }
  const absmax = a.nested ? lowerNestedAbsmax(ctx, ins, a, gate) : ins[3]!;
  const padded = blocks * bs;
  if (padded !== 2 * bytes) values = lowerPadTail(ctx, values, padded - 2 * bytes);
  const scale = ctx.tmp('q_scale');
  ctx.emit('Unsqueeze', [absmax, ctx.int64s([1])], [scale]);
  const scaled = ctx.tmp('q_scaled');
  ctx.emit('Mul', [lowerReshape(ctx, values, [blocks, bs], 'q_blocks'), scale], [scaled]);
  let w = lowerReshape(ctx, scaled, [padded], 'q_flat');
  if (padded !== n) w = lowerHead(ctx, w, n);
  return lowerReshape(ctx, w, [rows, cols], 'q_weight');
}

// ---- the table ------------------------------------------------------------------------------

export const LOWER: { [K in OpName]: LowerRule<OpAttrs[K]> } = {
  Add: as('Add'),
  Sub: as('Sub'),
  Mul: as('Mul'),
  Div: as('Div'),
  Pow: as('Pow'),
  Equal: as('Equal'),
  Less: as('Less'),
  Greater: as('Greater'),
  And: as('And'),
  Or: as('Or'),
  Not: as('Not'),
  Neg: as('Neg'),
  Abs: as('Abs'),
  Sqrt: as('Sqrt'),
  Reciprocal: as('Reciprocal'),
  Exp: as('Exp'),
  Log: as('Log'),
  Tanh: as('Tanh'),
  // ONNX Runtime's CPU Erf is float32-only; float64 graphs (gradient checks) round-trip through it.
  Erf: (ctx, ins, outs, _a, node) => {
    if (node.inputs[0]!.dtype === 'float32') return ctx.emit('Erf', ins, outs);
    const f = ctx.tmp('erf_in');
    const e = ctx.tmp('erf_out');
    ctx.emit('Cast', ins, [f], { to: int(onnxDtype('float32')) });
    ctx.emit('Erf', [f], [e]);
    ctx.emit('Cast', [e], outs, { to: int(onnxDtype(node.inputs[0]!.dtype)) });
  },
  Sigmoid: as('Sigmoid'),
  Relu: as('Relu'),
  Cos: as('Cos'),
  Sin: as('Sin'),
  Identity: as('Identity'),

  Softmax: (ctx, ins, outs, { axis }) => ctx.emit('Softmax', ins, outs, { axis: int(axis) }),
  LogSoftmax: (ctx, ins, outs, { axis }) => ctx.emit('LogSoftmax', ins, outs, { axis: int(axis) }),

  ReduceSum: reduce('ReduceSum'),
  ReduceMean: reduce('ReduceMean'),
  ReduceMax: reduce('ReduceMax'),

  // [y, mean, 1 / std]. Only y read (inference): LayerNormalization alone. Otherwise, float32:
  // LayerNormalization with its Mean and InvStdDev outputs (stash_type 1 keeps them float32, the
  // graph's type); other types spelled out (ONNX Runtime returns those outputs float32 only).
  LayerNorm: (ctx, [x, w, b], [y, m, r], { epsilon }, node) => {
    const dt = node.inputs[0]!.dtype;
    const stats = node.outputs.slice(1).some((v) => ctx.live(v));
    const attrs = { axis: int(-1), epsilon: float(epsilon), stash_type: int(1) };
    if (!stats) return ctx.emit('LayerNormalization', [x!, w!, b!], [y!], attrs);
    if (dt === 'float32') return ctx.emit('LayerNormalization', [x!, w!, b!], [y!, m!, r!], attrs);
    const step = (op: string, ins: string[], hint: string, out = ctx.tmp(hint)): string => {
      ctx.emit(op, ins, [out]);
      return out;
    };
    ctx.emit('ReduceMean', [x!, ctx.int64s([-1])], [m!], { keepdims: int(1) });
    const xc = step('Sub', [x!, m!], 'ln_xc');
    const v = ctx.tmp('ln_var');
    ctx.emit('ReduceMean', [step('Mul', [xc, xc], 'ln_sq'), ctx.int64s([-1])], [v], { keepdims: int(1) });
    step('Reciprocal', [step('Sqrt', [step('Add', [v, ctx.scalar(epsilon, dt)], 'ln_ve')], 'ln_std')], 'ln_rstd', r!);
    const scaled = step('Mul', [w!, step('Mul', [xc, r!], 'ln_xhat')], 'ln_wx');
    ctx.emit('Add', [scaled, b!], [y!]);
  },

  // float32: com.microsoft FastGelu (one pass); other types spelled out as geluTanhComposed.
  GeluTanh: (ctx, [x], outs, _a, node) => {
    const dt = node.inputs[0]!.dtype;
    if (dt === 'float32') return ctx.emit('FastGelu', [x!], outs, {}, 'com.microsoft');
    const step = (op: string, ins: string[], hint: string): string => {
      const y = ctx.tmp(hint);
      ctx.emit(op, ins, [y]);
      return y;
    };
    const cube = step('Mul', [step('Mul', [x!, x!], 'gelu_x2'), x!], 'gelu_x3');
    const inner = step('Add', [x!, step('Mul', [cube, ctx.scalar(0.044715, dt)], 'gelu_cx3')], 'gelu_inner');
    const t = step('Tanh', [step('Mul', [inner, ctx.scalar(Math.sqrt(2 / Math.PI), dt)], 'gelu_u')], 'gelu_t');
    const half = step('Mul', [x!, ctx.scalar(0.5, dt)], 'gelu_half');
    ctx.emit('Mul', [half, step('Add', [t, ctx.scalar(1, dt)], 'gelu_1t')], outs);
  },
  // Sigmoid and Mul, not com.microsoft QuickGelu (alpha 1): on this CPU QuickGelu took 18.5 ms for
  // [1024, 1536] against 1.5 ms for the two ops (bench/RESULTS.md). The op still pays in the
  // backward pass: no sigmoid output is kept from the forward.
  Silu: (ctx, [x], outs) => {
    const s = ctx.tmp('silu_sigmoid');
    ctx.emit('Sigmoid', [x!], [s]);
    ctx.emit('Mul', [x!, s], outs);
  },
  // float32: ONNX Runtime's SimplifiedLayerNormalization, which also returns 1 / rms (its other
  // types keep that output float32, so float64 graphs are spelled out).
  RmsNorm: (ctx, [x, w], [y, r], { epsilon }, node) => {
    const dt = node.inputs[0]!.dtype;
    if (dt === 'float32')
      return ctx.emit('SimplifiedLayerNormalization', [x!, w!], [y!, r!], { axis: int(-1), epsilon: float(epsilon), stash_type: int(1) });
    const sq = ctx.tmp('rms_sq');
    ctx.emit('Mul', [x!, x!], [sq]);
    const ms = ctx.tmp('rms_mean');
    ctx.emit('ReduceMean', [sq, ctx.int64s([-1])], [ms], { keepdims: int(1) });
    const ve = ctx.tmp('rms_var');
    ctx.emit('Add', [ms, ctx.scalar(epsilon, dt)], [ve]);
    const sd = ctx.tmp('rms_std');
    ctx.emit('Sqrt', [ve], [sd]);
    ctx.emit('Reciprocal', [sd], [r!]);
    const xr = ctx.tmp('rms_xhat');
    ctx.emit('Mul', [x!, r!], [xr]);
    ctx.emit('Mul', [w!, xr], [y!]);
  },
  // float32: com.microsoft RotaryEmbedding on the 4-D x, its caches one row per (batch, position)
  // ([b * seq, dim / 2], the tables broadcast over the batch) picked by position ids b * seq + s.
  // Other types: spelled out (x * [c, c] + rotate_half(x) * [s, s]).
  Rotary: (ctx, [x, c, s], outs, _a, node) => {
    const dt = node.inputs[0]!.dtype;
    const half = (node.inputs[0]!.shape[3] as number) / 2;
    if (dt !== 'float32') {
      const both = (t: string): string => {
        const y = ctx.tmp('rot_table');
        ctx.emit('Concat', [t, t], [y], { axis: int(-1) });
        return y;
      };
      const [x1, x2] = [ctx.tmp('rot_x1'), ctx.tmp('rot_x2')];
      ctx.emit('Split', [x!, ctx.int64s([half, half])], [x1, x2], { axis: int(-1) });
      const nx2 = ctx.tmp('rot_nx2');
      ctx.emit('Neg', [x2], [nx2]);
      const rot = ctx.tmp('rot_half');
      ctx.emit('Concat', [nx2, x1], [rot], { axis: int(-1) });
      const [xc, rs] = [ctx.tmp('rot_xc'), ctx.tmp('rot_rs')];
      ctx.emit('Mul', [x!, both(c!)], [xc]);
      ctx.emit('Mul', [rot, both(s!)], [rs]);
      ctx.emit('Add', [xc, rs], outs);
      return;
    }
    // [batch, 1, seq, half]: a small slice of x that gives the caches' broadcast shape
    const probe = ctx.tmp('rot_probe');
    ctx.emit('Slice', [x!, ctx.int64s([0, 0]), ctx.int64s([1, half]), ctx.int64s([1, 3])], [probe]);
    const probeShape = shapeOf(ctx, probe);
    const cache = (t: string, hint: string): string => {
      const e = ctx.tmp(`${hint}_full`);
      ctx.emit('Expand', [t, probeShape], [e]);
      return lowerReshape(ctx, e, [-1, half], hint);
    };
    const rows = ctx.tmp('rot_rows');
    ctx.emit('Size', [probe], [rows]);
    const count = ctx.tmp('rot_count');
    ctx.emit('Div', [rows, ctx.scalar(half, 'int64')], [count]);
    const ids = ctx.tmp('rot_ids');
    ctx.emit('Range', [ctx.scalar(0, 'int64'), count, ctx.scalar(1, 'int64')], [ids]);
    const seq = ctx.tmp('rot_seq');
    ctx.emit('Shape', [x!], [seq], { start: int(2), end: int(3) });
    const idsShape = ctx.tmp('rot_ids_shape');
    ctx.emit('Concat', [ctx.int64s([-1]), seq], [idsShape], { axis: int(0) });
    const pos = ctx.tmp('rot_pos');
    ctx.emit('Reshape', [ids, idsShape], [pos]);
    ctx.emit('RotaryEmbedding', [x!, pos, cache(c!, 'rot_cos'), cache(s!, 'rot_sin')], outs, {}, 'com.microsoft');
  },
  MatMul: as('MatMul'),
  // Lowered to com.microsoft FusedMatMul (transB) for float32, which MLAS prepacks like MatMul, so
  // no transposed copy of the weight is ever made.
  MatMulT: (ctx, ins, outs, _a, node) => {
    if (node.inputs[0]!.dtype === 'float32')
      return ctx.emit('FusedMatMul', ins, outs, { transB: int(1), alpha: float(1) }, 'com.microsoft');
    const t = ctx.tmp('wT');
    ctx.emit('Transpose', [ins[1]!], [t], { perm: ints([1, 0]) });
    ctx.emit('MatMul', [ins[0]!, t], outs);
  },
  // The dequantization is part of the lowering, gated on x, so ONNX Runtime rebuilds W right
  // before the product and frees it right after.
  QuantMatMul: (ctx, ins, outs, a, node) => {
    const x = ins[0]!;
    const dtype = node.inputs[0]!.dtype;
    const gate = lowerAfterGate(ctx, x);
    if (a.bnb4 !== undefined && dtype === 'float32') {
      const absmax = a.nested ? lowerNestedAbsmax(ctx, ins, a, gate) : ins[3]!;
      ctx.emit(
        'MatMulBnb4',
        [x, ins[1]!, absmax],
        outs,
        { K: int(a.shape[1]), N: int(a.shape[0]), block_size: int(a.blockSize), quant_type: int(a.bnb4) },
        'com.microsoft',
      );
      return;
    }
    const w = lowerDequant4(ctx, ins, a, gate, node.inputs[2]!.rank === 2);
    if (dtype === 'float32') {
      if (a.transB) ctx.emit('FusedMatMul', [x, w], outs, { transB: int(1), alpha: float(1) }, 'com.microsoft');
      else ctx.emit('MatMul', [x, w], outs);
      return;
    }
    // float64 graphs (gradient checks): the float32 weight is cast up.
    let wc = ctx.tmp('q_wcast');
    ctx.emit('Cast', [w], [wc], { to: int(onnxDtype(dtype)) });
    if (a.transB) {
      const t = ctx.tmp('q_wT');
      ctx.emit('Transpose', [wc], [t], { perm: ints([1, 0]) });
      wc = t;
    }
    ctx.emit('MatMul', [x, wc], outs);
  },
  // The frozen int8 base (src/quant/int8_base.ts): com.microsoft DynamicQuantizeMatMul quantizes x
  // to uint8 per tensor on the fly and runs a u8s8 GEMM against B with its per-column scales.
  Int8MatMul: (ctx, ins, outs, _a, node) => {
    const dtype = node.inputs[0]!.dtype;
    if (dtype === 'float32') return ctx.emit('DynamicQuantizeMatMul', [ins[0]!, ins[1]!, ins[2]!], outs, {}, 'com.microsoft');
    // other float types (float64 gradient checks): W dequantized, multiplied in that type
    const wf = ctx.tmp('i8_w');
    ctx.emit('Cast', [ins[1]!], [wf], { to: int(onnxDtype('float32')) });
    const ws = ctx.tmp('i8_scaled');
    ctx.emit('Mul', [wf, ins[2]!], [ws]);
    const wc = ctx.tmp('i8_wcast');
    ctx.emit('Cast', [ws], [wc], { to: int(onnxDtype(dtype)) });
    ctx.emit('MatMul', [ins[0]!, wc], outs);
  },
  Reshape: (ctx, ins, outs, { shape }) => ctx.emit('Reshape', [ins[0]!, ctx.int64s(shape)], outs),
  ReshapeLike: (ctx, ins, outs) => ctx.emit('Reshape', [ins[0]!, shapeOf(ctx, ins[1]!)], outs),
  Transpose: (ctx, ins, outs, { perm }) => ctx.emit('Transpose', ins, outs, { perm: ints(perm) }),
  Concat: (ctx, ins, outs, { axis }) => ctx.emit('Concat', ins, outs, { axis: int(axis) }),
  Slice: (ctx, ins, outs, { axis, start, end }) =>
    ctx.emit('Slice', [ins[0]!, ctx.int64s([start]), ctx.int64s([end]), ctx.int64s([axis])], outs),
  Chunk: (ctx, ins, outs, { axis, index, count }) => {
    const d = dimScalar(ctx, ins[0]!, axis);
    const bound = (i: number): string => {
      const m = ctx.tmp('chunk_m');
      ctx.emit('Mul', [d, ctx.scalar(i, 'int64')], [m]);
      const q = ctx.tmp('chunk_q');
      ctx.emit('Div', [m, ctx.scalar(count, 'int64')], [q]);
      const b = ctx.tmp('chunk_b');
      ctx.emit('Unsqueeze', [q, ctx.int64s([0])], [b]);
      return b;
    };
    ctx.emit('Slice', [ins[0]!, bound(index), bound(index + 1), ctx.int64s([axis])], outs);
  },
  Split: (ctx, ins, outs, { axis, sizes }) => ctx.emit('Split', [ins[0]!, ctx.int64s(sizes)], outs, { axis: int(axis) }),
  Pad: (ctx, ins, outs, { pads }) => ctx.emit('Pad', [ins[0]!, ctx.int64s(pads)], outs, { mode: str('constant') }),
  Gather: (ctx, ins, outs, { axis }) => ctx.emit('Gather', ins, outs, { axis: int(axis) }),
  Where: as('Where'),
  ExpandLike: (ctx, ins, outs) => ctx.emit('Expand', [ins[0]!, shapeOf(ctx, ins[1]!)], outs),
  Unsqueeze: (ctx, ins, outs, { axes }) => ctx.emit('Unsqueeze', [ins[0]!, ctx.int64s(axes)], outs),
  Squeeze: (ctx, ins, outs, { axes }) => ctx.emit('Squeeze', [ins[0]!, ctx.int64s(axes)], outs),
  Cast: (ctx, ins, outs, { to }) => ctx.emit('Cast', ins, outs, { to: int(onnxDtype(to)) }),
  Dropout: (ctx, [x, mask], outs, { ratio }, node) => {
    const dt = node.inputs[0]!.dtype;
    const m = ctx.tmp('keep');
    ctx.emit('Cast', [mask!], [m], { to: int(onnxDtype(dt)) });
    const kept = ctx.tmp('kept');
    ctx.emit('Mul', [x!, m], [kept]);
    ctx.emit('Mul', [kept, ctx.scalar(1 / (1 - ratio), dt)], outs);
  },
  // -log_softmax(logits)[label], 0 where label == ignoreIndex. Spelled out rather than ONNX's
  // SoftmaxCrossEntropyLoss, whose ORT function body runs LogSoftmax over axis 1 of an [N, C, 1]
  // view (a transposing kernel, ~40x slower than the last-axis one at LM-head sizes).
  SoftmaxCrossEntropy: (ctx, [logits, labels], outs, { ignoreIndex }, node) => {
    const dt = node.inputs[0]!.dtype;
    const logp = ctx.tmp('logp');
    ctx.emit('LogSoftmax', [logits!], [logp], { axis: int(1) });
    const ignored = ctx.tmp('ignored');
    ctx.emit('Equal', [labels!, ctx.scalar(ignoreIndex, 'int64')], [ignored]);
    const safe = ctx.tmp('label');
    ctx.emit('Where', [ignored, ctx.scalar(0, 'int64'), labels!], [safe]);
    const idx = ctx.tmp('label_col');
    ctx.emit('Unsqueeze', [safe, ctx.int64s([1])], [idx]);
    const picked = ctx.tmp('picked');
    ctx.emit('GatherElements', [logp, idx], [picked], { axis: int(1) });
    const row = ctx.tmp('picked_row');
    ctx.emit('Squeeze', [picked, ctx.int64s([1])], [row]);
    const nll = ctx.tmp('nll');
    ctx.emit('Neg', [row], [nll]);
    ctx.emit('Where', [ignored, ctx.scalar(0, dt), nll], outs);
  },
  // (softmax(logits) - onehot(labels)) * scale[:, None] without a one-hot matrix: the softmax is
  // scaled, then -scale is scattered into each row's label column (one [N, C] pass, not four).
  SoftmaxCrossEntropyGrad: (ctx, [logits, labels, scale], outs) => {
    const p = ctx.tmp('softmax');
    ctx.emit('Softmax', [logits!], [p], { axis: int(1) });
    const col = ctx.tmp('scale_col');
    ctx.emit('Unsqueeze', [scale!, ctx.int64s([1])], [col]);
    const scaled = ctx.tmp('scaled');
    ctx.emit('Mul', [p, col], [scaled]);
    const idx = ctx.tmp('label_col');
    ctx.emit('Unsqueeze', [labels!, ctx.int64s([1])], [idx]);
    const neg = ctx.tmp('neg_scale');
    ctx.emit('Neg', [col], [neg]);
    ctx.emit('ScatterElements', [scaled, idx, neg], outs, { axis: int(1), reduction: str('add') });
  },
  DimOf: (ctx, ins, outs, { axis }) => ctx.emit('Identity', [dimScalar(ctx, ins[0]!, axis)], outs),
  ArangeOfDim: (ctx, ins, outs, { axis }) =>
    ctx.emit('Range', [ctx.scalar(0, 'int64'), dimScalar(ctx, ins[0]!, axis), ctx.scalar(1, 'int64')], outs),
  Size: as('Size'),
  ZerosLike: (ctx, ins, outs, _a, node) =>
    ctx.emit('ConstantOfShape', [shapeOf(ctx, ins[0]!)], outs, {
      value: { type: 'tensor', dtype: node.inputs[0]!.dtype, dims: [1], values: [0] },
    }),
  ScatterAddRows: (ctx, [zeros, idx, upd], outs) => {
    const i = ctx.tmp('rows');
    ctx.emit('Unsqueeze', [idx!, ctx.int64s([-1])], [i]);
    ctx.emit('ScatterND', [zeros!, i, upd!], outs, { reduction: str('add') });
  },
  BitShift: (ctx, ins, outs, { direction }) => ctx.emit('BitShift', ins, outs, { direction: str(direction) }),
  BitwiseAnd: as('BitwiseAnd'),
  StopGradient: as('Identity'),
  // The forward pass is the region's own nodes; this is an Identity of their output (the other
  // inputs are only there for autodiff).
  Checkpoint: (ctx, ins, outs) => ctx.emit('Identity', [ins[0]!], outs),
};
