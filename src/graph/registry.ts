// The op registry: every op is declared once with its shape rule, its ONNX lowering and its
// gradient rule (a vector-Jacobian product written with the same builder). The table is an
// exhaustive mapped type, so an op without one of its rules does not compile.

import type { Node, Value } from './ir.js';
import * as o from './ops.js';
import { divideDims, productOf, sliceLength, INT_MAX } from './shape.js';
import {
  type DType,
  type Dim,
  GraphShapeError,
  addDims,
  broadcastShapes,
  isFloat,
  normalizeAxis,
  shapeToString,
  shapesEqual,
  staticSize,
} from './types.js';

export interface OpAttrs {
  Add: {}; Sub: {}; Mul: {}; Div: {}; Pow: {};
  Equal: {}; Less: {}; Greater: {}; And: {}; Or: {}; Not: {};
  Neg: {}; Sqrt: {}; Reciprocal: {}; Exp: {}; Log: {}; Tanh: {}; Erf: {}; Sigmoid: {}; Relu: {}; Cos: {}; Sin: {}; Identity: {};
  Softmax: { axis: number }; LogSoftmax: { axis: number };
  ReduceSum: { axes: number[]; keepdims: boolean }; ReduceMean: { axes: number[]; keepdims: boolean }; ReduceMax: { axes: number[]; keepdims: boolean };
  LayerNorm: { epsilon: number };
  MatMul: {}; MatMulT: {};
  QuantMatMul: QuantMatMulAttrs;
  Int8MatMul: {};
  Reshape: { shape: number[] }; ReshapeLike: {};
  Transpose: { perm: number[] };
  Concat: { axis: number };
  Slice: { axis: number; start: number; end: number };
  Split: { axis: number; sizes: number[] };
  Pad: { pads: number[] };
  Gather: { axis: number };
  Where: {};
  ExpandLike: {};
  Unsqueeze: { axes: number[] }; Squeeze: { axes: number[] };
  Cast: { to: DType };
  Dropout: { ratio: number };
  SoftmaxCrossEntropy: { ignoreIndex: number }; SoftmaxCrossEntropyGrad: {};
  DimOf: { axis: number }; ArangeOfDim: { axis: number }; Size: {}; ZerosLike: {};
  ScatterAddRows: {};
  BitShift: { direction: 'LEFT' | 'RIGHT' }; BitwiseAnd: {};
  StopGradient: {};
  Checkpoint: CheckpointAttrs;
}

/**
 * Activation checkpointing (src/autodiff/checkpoint.ts): input 0 is a region's output, passed
 * through; the other inputs are the values the region reads, listed so autodiff routes their
 * gradients here. `vjp` replays the region after the incoming gradient and differentiates it.
 */
export interface CheckpointAttrs {
  vjp: (gOut: Value, need: readonly boolean[]) => (Value | undefined)[];
}
export type OpName = keyof OpAttrs;

/**
 * A matmul against a 4-bit blockwise-quantized matrix W [rows, cols] (bitsandbytes NF4/FP4 layout,
 * see src/quant). Inputs: x, packed codes uint8 [ceil(n/2)] (element 2k in the high nibble), the
 * code table (float32 [256, 2] pair table or [16]), the absmax (float32 [blocks], or uint8 codes
 * [blocks] with `nested`), and with `nested` the nested absmax float32 [ceil(blocks/nbs), 1] and the
 * nested code table float32 [256]. W is rebuilt from the packed data inside the op, after x exists,
 * and dies with it: a backward pass rebuilds it again (after the incoming gradient) instead of
 * keeping the forward's float32 copy alive.
 */
export interface QuantMatMulAttrs {
  /** true: x @ W^T (torch Linear, W [out, in]); false: x @ W */
  transB: boolean;
  /** W's shape [rows, cols] */
  shape: [number, number];
  blockSize: number;
  /** double quantization: absmax = nested_code[codes] * nested_absmax + offset */
  nested?: { blockSize: number; offset: number };
  /**
   * With transB, lower the product to ONNX Runtime's com.microsoft.MatMulBnb4 kernel (0: FP4,
   * 1: NF4), which dequantizes into a transient buffer itself; only valid when the code table is
   * bitsandbytes' own. Without it (or without transB) the dequantization is a chain of ONNX ops.
   */
  bnb4?: 0 | 1;
}

export type OnnxAttr =
  | { type: 'int'; value: number }
  | { type: 'float'; value: number }
  | { type: 'ints'; value: number[] }
  | { type: 'floats'; value: number[] }
  | { type: 'string'; value: string }
  | { type: 'tensor'; dtype: DType; dims: number[]; values: number[] };

/** What a lowering may do: emit ONNX nodes and ask for small constant initializers. */
export interface LowerContext {
  emit(opType: string, inputs: string[], outputs: string[], attrs?: Record<string, OnnxAttr>, domain?: string): void;
  int64s(values: readonly number[]): string;
  scalar(value: number, dtype: DType): string;
  tmp(hint: string): string;
}

type Info = { dtype: DType; shape: Dim[] };
type Grads = (Value | undefined)[];

export interface OpDef<A> {
  infer(inputs: readonly Value[], attrs: A): Info[];
  lower(ctx: LowerContext, ins: string[], outs: string[], attrs: A, node: Node): void;
  /** null: not differentiable (integer or boolean results). need[i] says which input grads are wanted. */
  grad: null | ((node: Node & { attrs: A }, gOut: Grads, need: boolean[]) => Grads);
}

const ONNX_DTYPE: Record<DType, number> = { float32: 1, uint8: 2, int8: 3, int32: 6, int64: 7, bool: 9, float16: 10, float64: 11 };
export function onnxDtype(d: DType): number {
  return ONNX_DTYPE[d];
}

const int = (value: number): OnnxAttr => ({ type: 'int', value });
const float = (value: number): OnnxAttr => ({ type: 'float', value });
const ints = (value: number[]): OnnxAttr => ({ type: 'ints', value });

function fail(msg: string): never {
  throw new GraphShapeError(msg);
}
function sameDtype(a: Value, b: Value): void {
  if (a.dtype !== b.dtype) fail(`dtypes differ: ${a.dtype} vs ${b.dtype}`);
}
function bcast(a: Value, b: Value): Dim[] {
  return broadcastShapes(a.shape, b.shape) ?? fail(`shapes ${shapeToString(a.shape)} and ${shapeToString(b.shape)} do not broadcast`);
}
function needFloat(v: Value): void {
  if (!isFloat(v.dtype)) fail(`needs a float tensor, got ${v.dtype}`);
}

// ---- rule families --------------------------------------------------------------------------

function binary(onnx: string, grad: OpDef<{}>['grad'], out?: (a: Value) => DType): OpDef<{}> {
  return {
    infer: ([a, b]) => {
      sameDtype(a!, b!);
      return [{ dtype: out ? out(a!) : a!.dtype, shape: bcast(a!, b!) }];
    },
    lower: (ctx, ins, outs) => ctx.emit(onnx, ins, outs),
    grad,
  };
}
function compare(onnx: string, boolIn = false): OpDef<{}> {
  return binary(onnx, null, (a) => {
    if (boolIn && a.dtype !== 'bool') fail(`needs bool inputs, got ${a.dtype}`);
    return 'bool';
  });
}
function unary(onnx: string, grad: (x: Value, y: Value, g: Value) => Value, floatOnly = true): OpDef<{}> {
  return {
    infer: ([x]) => {
      if (floatOnly) needFloat(x!);
      return [{ dtype: x!.dtype, shape: [...x!.shape] }];
    },
    lower: (ctx, ins, outs) => ctx.emit(onnx, ins, outs),
    grad: (n, [g]) => [g && grad(n.inputs[0]!, n.outputs[0]!, g)],
  };
}
function reduce(onnx: string, grad: OpDef<OpAttrs['ReduceSum']>['grad']): OpDef<OpAttrs['ReduceSum']> {
  return {
    infer: ([x], { axes, keepdims }) => {
      for (const a of axes) if (a < 0 || a >= x!.rank) fail(`axis ${a} out of range`);
      const shape: Dim[] = [];
      x!.shape.forEach((d, i) => {
        if (!axes.includes(i)) shape.push(d);
        else if (keepdims) shape.push(1);
      });
      return [{ dtype: x!.dtype, shape }];
    },
    lower: (ctx, ins, outs, { axes, keepdims }) => ctx.emit(onnx, [ins[0]!, ctx.int64s(axes)], outs, { keepdims: int(keepdims ? 1 : 0) }),
    grad,
  };
}
/** g of a reduction, broadcast back to the input's shape. */
function expandReduced(g: Value, x: Value, axes: number[], keepdims: boolean): Value {
  return o.expandLike(keepdims ? g : o.unsqueeze(g, axes), x);
}
function viewGrad(n: Node, [g]: Grads): Grads {
  return [g && o.reshapeLike(g, n.inputs[0]!)];
}
function passThroughLower(onnx: string) {
  return (ctx: LowerContext, ins: string[], outs: string[]) => ctx.emit(onnx, ins, outs);
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
  ctx.emit('Pad', [x, ctx.int64s([0, extra])], [y], { mode: { type: 'string', value: 'constant' } });
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
    ctx.emit('BitShift', [packed, ctx.scalar(4, 'uint8')], [hi], { direction: { type: 'string', value: 'RIGHT' } });
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

export const OPS: { [K in OpName]: OpDef<OpAttrs[K]> } = {
  Add: binary('Add', (n, [g], need) => [need[0] ? o.unbroadcast(g!, n.inputs[0]!.shape) : undefined, need[1] ? o.unbroadcast(g!, n.inputs[1]!.shape) : undefined]),
  Sub: binary('Sub', (n, [g], need) => [need[0] ? o.unbroadcast(g!, n.inputs[0]!.shape) : undefined, need[1] ? o.unbroadcast(o.neg(g!), n.inputs[1]!.shape) : undefined]),
  Mul: binary('Mul', (n, [g], need) => {
    const [a, b] = n.inputs as [Value, Value];
    return [need[0] ? o.unbroadcast(o.mul(g!, b), a.shape) : undefined, need[1] ? o.unbroadcast(o.mul(g!, a), b.shape) : undefined];
  }),
  Div: binary('Div', (n, [g], need) => {
    const [a, b] = n.inputs as [Value, Value];
    const y = n.outputs[0]!;
    return [need[0] ? o.unbroadcast(o.div(g!, b), a.shape) : undefined, need[1] ? o.unbroadcast(o.neg(o.div(o.mul(g!, y), b)), b.shape) : undefined];
  }),
  Pow: binary('Pow', (n, [g], need) => {
    const [a, b] = n.inputs as [Value, Value];
    const y = n.outputs[0]!;
    return [
      need[0] ? o.unbroadcast(o.mul(g!, o.mul(b, o.pow(a, o.sub(b, 1)))), a.shape) : undefined,
      need[1] ? o.unbroadcast(o.mul(g!, o.mul(y, o.log(a))), b.shape) : undefined,
    ];
  }),
  Equal: compare('Equal'),
  Less: compare('Less'),
  Greater: compare('Greater'),
  And: compare('And', true),
  Or: compare('Or', true),
  Not: {
    infer: ([x]) => (x!.dtype === 'bool' ? [{ dtype: 'bool', shape: [...x!.shape] }] : fail(`needs bool, got ${x!.dtype}`)),
    lower: passThroughLower('Not'),
    grad: null,
  },
  Neg: unary('Neg', (_x, _y, g) => o.neg(g), false),
  Sqrt: unary('Sqrt', (_x, y, g) => o.div(g, o.mul(y, 2))),
  Reciprocal: unary('Reciprocal', (_x, y, g) => o.neg(o.mul(g, o.mul(y, y)))),
  Exp: unary('Exp', (_x, y, g) => o.mul(g, y)),
  Log: unary('Log', (x, _y, g) => o.div(g, x)),
  Tanh: unary('Tanh', (_x, y, g) => o.mul(g, o.sub(1, o.mul(y, y)))),
  Erf: {
    ...unary('Erf', (x, _y, g) => o.mul(g, o.mul(o.exp(o.neg(o.mul(x, x))), 2 / Math.sqrt(Math.PI)))),
    // ONNX Runtime's CPU Erf is float32-only; float64 graphs (gradient checks) round-trip through it.
    lower: (ctx, ins, outs, _a, node) => {
      if (node.inputs[0]!.dtype === 'float32') return ctx.emit('Erf', ins, outs);
      const f = ctx.tmp('erf_in');
      const e = ctx.tmp('erf_out');
      ctx.emit('Cast', ins, [f], { to: int(onnxDtype('float32')) });
      ctx.emit('Erf', [f], [e]);
      ctx.emit('Cast', [e], outs, { to: int(onnxDtype(node.inputs[0]!.dtype)) });
    },
  },
  Sigmoid: unary('Sigmoid', (_x, y, g) => o.mul(g, o.mul(y, o.sub(1, y)))),
  Relu: unary('Relu', (x, _y, g) => o.where(o.greater(x, 0), g, 0)),
  Cos: unary('Cos', (x, _y, g) => o.neg(o.mul(g, o.sin(x)))),
  Sin: unary('Sin', (x, _y, g) => o.mul(g, o.cos(x))),
  Identity: unary('Identity', (_x, _y, g) => g, false),

  Softmax: {
    infer: ([x], { axis }) => (needFloat(x!), normalizeAxis(axis, x!.rank), [{ dtype: x!.dtype, shape: [...x!.shape] }]),
    lower: (ctx, ins, outs, { axis }) => ctx.emit('Softmax', ins, outs, { axis: int(axis) }),
    grad: (n, [g]) => {
      const y = n.outputs[0]!;
      const gy = o.mul(g!, y);
      return [o.sub(gy, o.mul(y, o.sum(gy, n.attrs.axis, true)))];
    },
  },
  LogSoftmax: {
    infer: ([x], { axis }) => (needFloat(x!), normalizeAxis(axis, x!.rank), [{ dtype: x!.dtype, shape: [...x!.shape] }]),
    lower: (ctx, ins, outs, { axis }) => ctx.emit('LogSoftmax', ins, outs, { axis: int(axis) }),
    grad: (n, [g]) => [o.sub(g!, o.mul(o.exp(n.outputs[0]!), o.sum(g!, n.attrs.axis, true)))],
  },

  ReduceSum: reduce('ReduceSum', (n, [g]) => [expandReduced(g!, n.inputs[0]!, n.attrs.axes, n.attrs.keepdims)]),
  ReduceMean: reduce('ReduceMean', (n, [g]) => {
    const x = n.inputs[0]!;
    const reduced = n.attrs.axes.map((a) => x.shape[a]!);
    const count = staticSize(reduced);
    const scale = count !== undefined ? x.graph.scalar(1 / count, x.dtype) : o.div(o.cast(o.sizeOf(n.outputs[0]!), x.dtype), o.cast(o.sizeOf(x), x.dtype));
    return [expandReduced(o.mul(g!, scale), x, n.attrs.axes, n.attrs.keepdims)];
  }),
  ReduceMax: reduce('ReduceMax', (n, [g]) => {
    const x = n.inputs[0]!;
    const { axes, keepdims } = n.attrs;
    const y = keepdims ? n.outputs[0]! : o.unsqueeze(n.outputs[0]!, axes);
    const hit = o.cast(o.equal(x, o.expandLike(y, x)), x.dtype);
    const share = o.div(hit, o.sum(hit, axes, true));
    return [o.mul(expandReduced(g!, x, axes, keepdims), share)];
  }),

  LayerNorm: {
    infer: ([x, w, b]) => {
      needFloat(x!);
      const c = x!.shape[x!.rank - 1]!;
      for (const p of [w!, b!]) {
        sameDtype(x!, p);
        if (p.rank !== 1 || p.shape[0] !== c) fail(`weight and bias must have shape [${c}], got ${shapeToString(p.shape)}`);
      }
      return [{ dtype: x!.dtype, shape: [...x!.shape] }];
    },
    lower: (ctx, ins, outs, { epsilon }) => ctx.emit('LayerNormalization', ins, outs, { axis: int(-1), epsilon: float(epsilon) }),
    grad: (n, [g], need) => {
      const [x, w] = n.inputs as [Value, Value, Value];
      const xc = o.sub(x, o.mean(x, -1, true));
      const rstd = o.reciprocal(o.sqrt(o.add(o.mean(o.mul(xc, xc), -1, true), n.attrs.epsilon)));
      const xhat = o.mul(xc, rstd);
      let dx: Value | undefined;
      if (need[0]) {
        const gw = o.mul(g!, w);
        dx = o.mul(rstd, o.sub(o.sub(gw, o.mean(gw, -1, true)), o.mul(xhat, o.mean(o.mul(gw, xhat), -1, true))));
      }
      return [dx, need[1] ? o.unbroadcast(o.mul(g!, xhat), w.shape) : undefined, need[2] ? o.unbroadcast(g!, n.inputs[2]!.shape) : undefined];
    },
  },

  MatMul: {
    infer: ([a, b]) => {
      sameDtype(a!, b!);
      if (a!.rank < 2 || b!.rank < 2) fail('both operands need rank >= 2');
      const k1 = a!.shape[a!.rank - 1]!;
      const k2 = b!.shape[b!.rank - 2]!;
      if (k1 !== k2) fail(`inner dimensions differ: ${k1} vs ${k2}`);
      const batch = broadcastShapes(a!.shape.slice(0, -2), b!.shape.slice(0, -2)) ?? fail('batch dimensions do not broadcast');
      return [{ dtype: a!.dtype, shape: [...batch, a!.shape[a!.rank - 2]!, b!.shape[b!.rank - 1]!] }];
    },
    lower: passThroughLower('MatMul'),
    grad: (n, [g], need) => {
      const [a, b] = n.inputs as [Value, Value];
      const da = need[0] ? o.unbroadcast(o.matmul(g!, o.transposeLast2(b)), a.shape) : undefined;
      let db: Value | undefined;
      if (need[1]) {
        if (b.rank === 2 && a.rank > 2) {
          // A weight shared across the batch: one [K, M] @ [M, N] product instead of a batch of them.
          const a2 = o.reshape(a, [-1, a.shape[a.rank - 1] as number]);
          const g2 = o.reshape(g!, [-1, g!.shape[g!.rank - 1] as number]);
          db = o.matmul(o.transposeLast2(a2), g2);
        } else db = o.unbroadcast(o.matmul(o.transposeLast2(a), g!), b.shape);
      }
      return [da, db];
    },
  },

  // a @ b^T with b a torch nn.Linear weight [out, in]: lowered to com.microsoft FusedMatMul
  // (transB) for float32, which MLAS prepacks like MatMul, so no transposed copy is ever made.
  MatMulT: {
    infer: ([a, b]) => {
      sameDtype(a!, b!);
      if (a!.rank < 2 || b!.rank !== 2) fail('needs a of rank >= 2 and a weight b of rank 2');
      if (a!.shape[a!.rank - 1] !== b!.shape[1]) fail(`inner dimensions differ: ${a!.shape[a!.rank - 1]} vs ${b!.shape[1]}`);
      return [{ dtype: a!.dtype, shape: [...a!.shape.slice(0, -1), b!.shape[0]!] }];
    },
    lower: (ctx, ins, outs, _a, node) => {
      if (node.inputs[0]!.dtype === 'float32') return ctx.emit('FusedMatMul', ins, outs, { transB: int(1), alpha: float(1) }, 'com.microsoft');
      const t = ctx.tmp('wT');
      ctx.emit('Transpose', [ins[1]!], [t], { perm: ints([1, 0]) });
      ctx.emit('MatMul', [ins[0]!, t], outs);
    },
    grad: (n, [g], need) => {
      const [a, b] = n.inputs as [Value, Value];
      let db: Value | undefined;
      if (need[1]) {
        const a2 = a.rank > 2 ? o.reshape(a, [-1, a.shape[a.rank - 1] as number]) : a;
        const g2 = g!.rank > 2 ? o.reshape(g!, [-1, g!.shape[g!.rank - 1] as number]) : g!;
        db = o.matmul(o.transposeLast2(g2), a2);
      }
      return [need[0] ? o.matmul(g!, b) : undefined, db];
    },
  },
  // x @ W (or x @ W^T) with W held 4-bit: the dequantization is part of the op's lowering, gated
  // on x, so ONNX Runtime rebuilds W right before the product and frees it right after. The
  // gradient w.r.t. x is the same op on g with transB flipped: W is rebuilt again in the backward
  // pass, gated on g, instead of the forward's float32 copy being kept alive until then.
  QuantMatMul: {
    infer: (ins, a) => {
      const [x, packed, code, absmax, nestedAbsmax, nestedCode] = ins;
      needFloat(x!);
      const [rows, cols] = a.shape;
      if (!(Number.isInteger(rows) && Number.isInteger(cols) && rows > 0 && cols > 0)) fail(`weight shape [${a.shape}] must be two positive integers`);
      if (!(Number.isInteger(a.blockSize) && a.blockSize > 0 && a.blockSize % 2 === 0)) fail(`block size ${a.blockSize} must be a positive even integer`);
      if (x!.rank < 2) fail('x needs rank >= 2');
      const n = rows * cols;
      const blocks = Math.ceil(n / a.blockSize);
      const k = a.transB ? cols : rows;
      if (x!.shape[x!.rank - 1] !== k) fail(`inner dimensions differ: ${x!.shape[x!.rank - 1]} vs ${k}`);
      const want = (v: Value | undefined, what: string, dtype: DType, shape: Dim[]): void => {
        if (!v || v.dtype !== dtype || !shapesEqual(v.shape, shape)) fail(`${what} must be ${dtype}${shapeToString(shape)}, got ${v ? `${v.dtype}${shapeToString(v.shape)}` : 'nothing'}`);
      };
      want(packed, 'packed codes', 'uint8', [Math.ceil(n / 2)]);
      if (!code || code.dtype !== 'float32' || !(shapesEqual(code.shape, [256, 2]) || shapesEqual(code.shape, [16]))) fail('the code table must be float32 [256, 2] (pairs) or [16]');
      if (a.nested) {
        if (ins.length !== 6) fail(`needs 6 inputs with double quantization, got ${ins.length}`);
        want(absmax, 'absmax codes', 'uint8', [blocks]);
        want(nestedAbsmax, 'nested absmax', 'float32', [Math.ceil(blocks / a.nested.blockSize), 1]);
        want(nestedCode, 'nested code table', 'float32', [256]);
        if (!Number.isFinite(a.nested.offset)) fail(`nested offset ${a.nested.offset} is not finite`);
      } else {
        if (ins.length !== 4) fail(`needs 4 inputs without double quantization, got ${ins.length}`);
        want(absmax, 'absmax', 'float32', [blocks]);
      }
      if (a.bnb4 !== undefined && !a.transB) fail('the MatMulBnb4 kernel computes x @ W^T only (transB)');
      return [{ dtype: x!.dtype, shape: [...x!.shape.slice(0, -1), a.transB ? rows : cols] }];
    },
    lower: (ctx, ins, outs, a, node) => {
      const x = ins[0]!;
      const dtype = node.inputs[0]!.dtype;
      const gate = lowerAfterGate(ctx, x);
      if (a.bnb4 !== undefined && dtype === 'float32') {
        const absmax = a.nested ? lowerNestedAbsmax(ctx, ins, a, gate) : ins[3]!;
        ctx.emit('MatMulBnb4', [x, ins[1]!, absmax], outs, { K: int(a.shape[1]), N: int(a.shape[0]), block_size: int(a.blockSize), quant_type: int(a.bnb4) }, 'com.microsoft');
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
    grad: (n, [g], need) => {
      const rest = n.inputs.slice(1).map(() => undefined);
      if (!need[0]) return [undefined, ...rest];
      const { bnb4: _kernel, ...attrs } = n.attrs;
      return [o.quantMatmul(g!, n.inputs.slice(1), { ...attrs, transB: !attrs.transB }), ...rest];
    },
  },
  // x @ W for a frozen W [K, N] held as int8 twice (src/quant/int8_base.ts): inputs x, B = int8 codes
  // [K, N] with one scale per column [N], and Bt = int8 codes of W^T [N, K] with one scale per
  // column [K]. The forward product runs in com.microsoft DynamicQuantizeMatMul (x quantized to uint8
  // per tensor on the fly, u8s8 GEMM); the gradient w.r.t. x is the same op on g with the two copies
  // swapped, so the backward pass never needs a float32 W either. W gets no gradient (frozen).
  Int8MatMul: {
    infer: ([x, b, bScale, bt, btScale]) => {
      if (!x || x.dtype === 'int8' || !isFloat(x.dtype)) fail('x must be a float tensor');
      if (x.rank < 2) fail('x needs rank >= 2');
      if (!b || b.dtype !== 'int8' || b.rank !== 2 || !bt || bt.dtype !== 'int8' || bt.rank !== 2) fail('B and Bt must be int8 matrices');
      const [k, n] = b.shape as [Dim, Dim];
      if (bt.shape[0] !== n || bt.shape[1] !== k) fail(`Bt must be B transposed: B ${shapeToString(b.shape)}, Bt ${shapeToString(bt.shape)}`);
      if (!bScale || bScale.dtype !== 'float32' || !shapesEqual(bScale.shape, [n])) fail(`B's scales must be float32 [${n}]`);
      if (!btScale || btScale.dtype !== 'float32' || !shapesEqual(btScale.shape, [k])) fail(`Bt's scales must be float32 [${k}]`);
      if (x.shape[x.rank - 1] !== k) fail(`inner dimensions differ: ${x.shape[x.rank - 1]} vs ${k}`);
      return [{ dtype: x.dtype, shape: [...x.shape.slice(0, -1), n] }];
    },
    lower: (ctx, ins, outs, _a, node) => {
      const dtype = node.inputs[0]!.dtype;
      if (dtype === 'float32') return ctx.emit('DynamicQuantizeMatMul', [ins[0]!, ins[1]!, ins[2]!], outs, {}, 'com.microsoft');
      // other float types (float64 gradient checks): dequantize W and multiply in that type
      const wf = ctx.tmp('i8_w');
      ctx.emit('Cast', [ins[1]!], [wf], { to: int(onnxDtype('float32')) });
      const ws = ctx.tmp('i8_scaled');
      ctx.emit('Mul', [wf, ins[2]!], [ws]);
      const wc = ctx.tmp('i8_wcast');
      ctx.emit('Cast', [ws], [wc], { to: int(onnxDtype(dtype)) });
      ctx.emit('MatMul', [ins[0]!, wc], outs);
    },
    grad: (n, [g], need) => {
      const [, b, bScale, bt, btScale] = n.inputs as [Value, Value, Value, Value, Value];
      return [need[0] ? o.int8Matmul(g!, [bt, btScale, b, bScale]) : undefined, undefined, undefined, undefined, undefined];
    },
  },
  Reshape: {
    infer: ([x], { shape }) => {
      const out: Dim[] = shape.map((s, i) => {
        if (s === 0) return i < x!.rank ? x!.shape[i]! : fail(`0 at position ${i} has no input dim to copy`);
        if (s === -1 || s > 0) return s;
        return fail(`invalid target dim ${s}`);
      });
      const inf = out.indexOf(-1);
      if (inf >= 0) {
        if (out.indexOf(-1, inf + 1) >= 0) fail('at most one -1 in a reshape');
        const known = productOf(out.filter((_, i) => i !== inf));
        out[inf] = divideDims(productOf(x!.shape), known) ?? fail(`cannot infer -1: ${shapeToString(x!.shape)} does not divide by ${known}`);
      } else {
        const a = productOf(x!.shape);
        const b = productOf(out);
        if (a !== b && typeof a === 'number' && typeof b === 'number') fail(`element count ${a} != ${b}`);
      }
      return [{ dtype: x!.dtype, shape: out }];
    },
    lower: (ctx, ins, outs, { shape }) => ctx.emit('Reshape', [ins[0]!, ctx.int64s(shape)], outs),
    grad: viewGrad,
  },
  ReshapeLike: {
    infer: ([x, like]) => [{ dtype: x!.dtype, shape: [...like!.shape] }],
    lower: (ctx, ins, outs) => ctx.emit('Reshape', [ins[0]!, shapeOf(ctx, ins[1]!)], outs),
    grad: (n, [g], need) => [need[0] ? o.reshapeLike(g!, n.inputs[0]!) : undefined, undefined],
  },
  Transpose: {
    infer: ([x], { perm }) => {
      if (perm.length !== x!.rank || [...perm].sort().some((p, i) => p !== i)) fail(`perm ${shapeToString(perm)} is not a permutation of rank ${x!.rank}`);
      return [{ dtype: x!.dtype, shape: perm.map((p) => x!.shape[p]!) }];
    },
    lower: (ctx, ins, outs, { perm }) => ctx.emit('Transpose', ins, outs, { perm: ints(perm) }),
    grad: (n, [g]) => {
      const inv = new Array<number>(n.attrs.perm.length);
      n.attrs.perm.forEach((p, i) => (inv[p] = i));
      return [o.transpose(g!, inv)];
    },
  },
  Concat: {
    infer: (xs, { axis }) => {
      const first = xs[0]!;
      let len: Dim = 0;
      for (const x of xs) {
        sameDtype(first, x);
        if (x.rank !== first.rank) fail('ranks differ');
        x.shape.forEach((d, i) => {
          if (i !== axis && d !== first.shape[i]) fail(`dim ${i} differs: ${shapeToString(x.shape)} vs ${shapeToString(first.shape)}`);
        });
        len = addDims(len, x.shape[axis]!);
      }
      const shape = [...first.shape];
      shape[axis] = len;
      return [{ dtype: first.dtype, shape }];
    },
    lower: (ctx, ins, outs, { axis }) => ctx.emit('Concat', ins, outs, { axis: int(axis) }),
    grad: (n, [g], need) => {
      const { axis } = n.attrs;
      const sizes = n.inputs.map((x) => x.shape[axis]!);
      const staticSum = (ds: Dim[]): number | undefined => (ds.every((d) => typeof d === 'number') ? (ds as number[]).reduce((p, q) => p + q, 0) : undefined);
      return n.inputs.map((_, i) => {
        if (!need[i]) return undefined;
        // Offsets count from the start while sizes before are static, else from the end.
        const before = staticSum(sizes.slice(0, i));
        const after = staticSum(sizes.slice(i + 1));
        const own = sizes[i]!;
        if (before !== undefined && typeof own === 'number') return o.slice(g!, axis, before, before + own);
        if (before !== undefined && after !== undefined) return o.slice(g!, axis, before, after === 0 ? INT_MAX : -after);
        if (after !== undefined && typeof own === 'number') return o.slice(g!, axis, -(after + own), after === 0 ? INT_MAX : -after);
        return fail('cannot differentiate Concat with more than one symbolic size');
      });
    },
  },
  Slice: {
    infer: ([x], { axis, start, end }) => {
      const shape = [...x!.shape];
      shape[axis] = sliceLength(x!.shape[axis]!, start, end);
      return [{ dtype: x!.dtype, shape }];
    },
    lower: (ctx, ins, outs, { axis, start, end }) => ctx.emit('Slice', [ins[0]!, ctx.int64s([start]), ctx.int64s([end]), ctx.int64s([axis])], outs),
    grad: (n, [g]) => {
      const x = n.inputs[0]!;
      const { axis, start, end } = n.attrs;
      const d = x.shape[axis]!;
      const before = start >= 0 ? start : typeof d === 'number' ? Math.max(0, d + start) : undefined;
      const after = end >= INT_MAX ? 0 : end < 0 ? -end : typeof d === 'number' ? Math.max(0, d - end) : undefined;
      if (before === undefined || after === undefined) {
        // A symbolic dim with a run-time-sized remainder (x[:, :1] of a [batch, seq] value): zeros
        // shaped like the untouched parts, concatenated around g.
        const parts: Value[] = [];
        if (start !== 0) parts.push(o.zerosLike(o.slice(x, axis, 0, start)));
        parts.push(g!);
        if (end < INT_MAX) parts.push(o.zerosLike(o.slice(x, axis, end)));
        return [o.concat(parts, axis)];
      }
      const pads = new Array<number>(2 * x.rank).fill(0);
      pads[axis] = before;
      pads[x.rank + axis] = after;
      return [o.pad(g!, pads)];
    },
  },
  Split: {
    infer: ([x], { axis, sizes }) => {
      const d = x!.shape[axis]!;
      const total = sizes.reduce((p, q) => p + q, 0);
      if (typeof d === 'number' && d !== total) fail(`split sizes sum to ${total} but the axis has ${d}`);
      return sizes.map((s) => {
        const shape = [...x!.shape];
        shape[axis] = s;
        return { dtype: x!.dtype, shape };
      });
    },
    lower: (ctx, ins, outs, { axis, sizes }) => ctx.emit('Split', [ins[0]!, ctx.int64s(sizes)], outs, { axis: int(axis) }),
    grad: (n, gs) => [o.concat(n.outputs.map((y, i) => gs[i] ?? o.zerosLike(y)), n.attrs.axis)],
  },
  Pad: {
    infer: ([x], { pads }) => {
      if (pads.length !== 2 * x!.rank) fail(`pads needs ${2 * x!.rank} entries`);
      return [{ dtype: x!.dtype, shape: x!.shape.map((d, i) => addDims(addDims(d, pads[i]!), pads[x!.rank + i]!)) }];
    },
    lower: (ctx, ins, outs, { pads }) => ctx.emit('Pad', [ins[0]!, ctx.int64s(pads)], outs, { mode: { type: 'string', value: 'constant' } }),
    grad: (n, [g]) => {
      let out = g!;
      const r = n.inputs[0]!.rank;
      for (let i = 0; i < r; i++) {
        const b = n.attrs.pads[i]!;
        const e = n.attrs.pads[r + i]!;
        if (b || e) out = o.slice(out, i, b, e ? -e : INT_MAX);
      }
      return [out];
    },
  },
  Gather: {
    infer: ([data, idx], { axis }) => {
      if (idx!.dtype !== 'int64' && idx!.dtype !== 'int32') fail(`indices must be int64 or int32, got ${idx!.dtype}`);
      return [{ dtype: data!.dtype, shape: [...data!.shape.slice(0, axis), ...idx!.shape, ...data!.shape.slice(axis + 1)] }];
    },
    lower: (ctx, ins, outs, { axis }) => ctx.emit('Gather', ins, outs, { axis: int(axis) }),
    grad: (n, [g], need) => {
      if (!need[0]) return [undefined, undefined];
      if (n.attrs.axis !== 0) fail('Gather is differentiable along axis 0 only');
      const data = n.inputs[0]!;
      return [o.scatterAddRows(o.zerosLike(data), n.inputs[1]!, g!), undefined];
    },
  },
  Where: {
    infer: ([c, a, b]) => {
      if (c!.dtype !== 'bool') fail(`condition must be bool, got ${c!.dtype}`);
      sameDtype(a!, b!);
      const ab = bcast(a!, b!);
      return [{ dtype: a!.dtype, shape: broadcastShapes(c!.shape, ab) ?? fail('condition does not broadcast') }];
    },
    lower: passThroughLower('Where'),
    grad: (n, [g], need) => {
      const [c, a, b] = n.inputs as [Value, Value, Value];
      return [undefined, need[1] ? o.unbroadcast(o.where(c, g!, 0), a.shape) : undefined, need[2] ? o.unbroadcast(o.where(c, 0, g!), b.shape) : undefined];
    },
  },
  ExpandLike: {
    infer: ([x, like]) => [{ dtype: x!.dtype, shape: broadcastShapes(x!.shape, like!.shape) ?? fail('shapes do not broadcast') }],
    lower: (ctx, ins, outs) => ctx.emit('Expand', [ins[0]!, shapeOf(ctx, ins[1]!)], outs),
    grad: (n, [g], need) => [need[0] ? o.unbroadcast(g!, n.inputs[0]!.shape) : undefined, undefined],
  },
  Unsqueeze: {
    infer: ([x], { axes }) => {
      const shape: Dim[] = [...x!.shape];
      for (const a of axes) shape.splice(a, 0, 1);
      return [{ dtype: x!.dtype, shape }];
    },
    lower: (ctx, ins, outs, { axes }) => ctx.emit('Unsqueeze', [ins[0]!, ctx.int64s(axes)], outs),
    grad: viewGrad,
  },
  Squeeze: {
    infer: ([x], { axes }) => {
      for (const a of axes) if (x!.shape[a] !== 1) fail(`cannot squeeze axis ${a} of size ${x!.shape[a]}`);
      return [{ dtype: x!.dtype, shape: x!.shape.filter((_, i) => !axes.includes(i)) }];
    },
    lower: (ctx, ins, outs, { axes }) => ctx.emit('Squeeze', [ins[0]!, ctx.int64s(axes)], outs),
    grad: viewGrad,
  },
  Cast: {
    infer: ([x], { to }) => [{ dtype: to, shape: [...x!.shape] }],
    lower: (ctx, ins, outs, { to }) => ctx.emit('Cast', ins, outs, { to: int(onnxDtype(to)) }),
    grad: (n, [g]) => [isFloat(n.inputs[0]!.dtype) ? o.cast(g!, n.inputs[0]!.dtype) : undefined],
  },
  Dropout: {
    infer: ([x, mask], { ratio }) => {
      needFloat(x!);
      if (mask!.dtype !== 'bool') fail(`keep mask must be bool, got ${mask!.dtype}`);
      if (!(ratio >= 0 && ratio < 1)) fail(`ratio must be in [0, 1), got ${ratio}`);
      return [{ dtype: x!.dtype, shape: bcast(x!, mask!) }];
    },
    lower: (ctx, [x, mask], outs, { ratio }, node) => {
      const dt = node.inputs[0]!.dtype;
      const m = ctx.tmp('keep');
      ctx.emit('Cast', [mask!], [m], { to: int(onnxDtype(dt)) });
      const kept = ctx.tmp('kept');
      ctx.emit('Mul', [x!, m], [kept]);
      ctx.emit('Mul', [kept, ctx.scalar(1 / (1 - ratio), dt)], outs);
    },
    grad: (n, [g]) => [o.dropout(g!, n.inputs[1]!, n.attrs.ratio), undefined],
  },
  SoftmaxCrossEntropy: {
    infer: ([logits, labels]) => {
      needFloat(logits!);
      if (logits!.rank !== 2 || labels!.rank !== 1) fail('expects logits [N, C] and labels [N]');
      if (labels!.dtype !== 'int64') fail(`labels must be int64, got ${labels!.dtype}`);
      if (logits!.shape[0] !== labels!.shape[0]) fail('logits and labels disagree on N');
      return [{ dtype: logits!.dtype, shape: [logits!.shape[0]!] }];
    },
    // -log_softmax(logits)[label], 0 where label == ignoreIndex. Spelled out rather than ONNX's
    // SoftmaxCrossEntropyLoss, whose ORT function body runs LogSoftmax over axis 1 of an [N, C, 1]
    // view (a transposing kernel, ~40x slower than the last-axis one at LM-head sizes).
    lower: (ctx, [logits, labels], outs, { ignoreIndex }, node) => {
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
    grad: (n, [g]) => {
      const [logits, labels] = n.inputs as [Value, Value];
      const valid = o.not(o.equal(labels, labels.graph.scalar(n.attrs.ignoreIndex, 'int64')));
      const scale = o.mul(g!, o.cast(valid, logits.dtype));
      const safe = o.where(valid, labels, labels.graph.scalar(0, 'int64'));
      return [o.softmaxCrossEntropyGrad(logits, safe, scale), undefined];
    },
  },
  // (softmax(logits) - onehot(labels)) * scale[:, None] without a one-hot matrix: the softmax is
  // scaled, then -scale is scattered into each row's label column (one [N, C] pass, not four).
  SoftmaxCrossEntropyGrad: {
    infer: ([logits, labels, scale]) => {
      needFloat(logits!);
      if (logits!.rank !== 2 || labels!.rank !== 1 || scale!.rank !== 1) fail('expects logits [N, C], labels [N] and scale [N]');
      if (labels!.dtype !== 'int64') fail(`labels must be int64, got ${labels!.dtype}`);
      sameDtype(logits!, scale!);
      return [{ dtype: logits!.dtype, shape: [...logits!.shape] }];
    },
    lower: (ctx, [logits, labels, scale], outs) => {
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
      ctx.emit('ScatterElements', [scaled, idx, neg], outs, { axis: int(1), reduction: { type: 'string', value: 'add' } });
    },
    grad: null,
  },
  DimOf: {
    infer: () => [{ dtype: 'int64', shape: [] }],
    lower: (ctx, ins, outs, { axis }) => ctx.emit('Identity', [dimScalar(ctx, ins[0]!, axis)], outs),
    grad: null,
  },
  ArangeOfDim: {
    infer: ([x], { axis }) => [{ dtype: 'int64', shape: [x!.shape[axis]!] }],
    lower: (ctx, ins, outs, { axis }) => ctx.emit('Range', [ctx.scalar(0, 'int64'), dimScalar(ctx, ins[0]!, axis), ctx.scalar(1, 'int64')], outs),
    grad: null,
  },
  Size: {
    infer: () => [{ dtype: 'int64', shape: [] }],
    lower: passThroughLower('Size'),
    grad: null,
  },
  ZerosLike: {
    infer: ([x]) => [{ dtype: x!.dtype, shape: [...x!.shape] }],
    lower: (ctx, ins, outs, _a, node) =>
      ctx.emit('ConstantOfShape', [shapeOf(ctx, ins[0]!)], outs, { value: { type: 'tensor', dtype: node.inputs[0]!.dtype, dims: [1], values: [0] } }),
    grad: null,
  },
  ScatterAddRows: {
    infer: ([zeros, idx, upd]) => {
      sameDtype(zeros!, upd!);
      const want = [...idx!.shape, ...zeros!.shape.slice(1)];
      if (!shapesEqual(want, upd!.shape)) fail(`updates must have shape ${shapeToString(want)}`);
      return [{ dtype: zeros!.dtype, shape: [...zeros!.shape] }];
    },
    lower: (ctx, [zeros, idx, upd], outs) => {
      const i = ctx.tmp('rows');
      ctx.emit('Unsqueeze', [idx!, ctx.int64s([-1])], [i]);
      ctx.emit('ScatterND', [zeros!, i, upd!], outs, { reduction: { type: 'string', value: 'add' } });
    },
    grad: null,
  },
  BitShift: {
    infer: ([x, s]) => {
      sameDtype(x!, s!);
      if (x!.dtype !== 'uint8') fail(`BitShift works on uint8 here, got ${x!.dtype}`);
      return [{ dtype: x!.dtype, shape: bcast(x!, s!) }];
    },
    lower: (ctx, ins, outs, { direction }) => ctx.emit('BitShift', ins, outs, { direction: { type: 'string', value: direction } }),
    grad: null,
  },
  BitwiseAnd: binary('BitwiseAnd', null),
  // x in the forward pass, a constant to autodiff (torch's .detach()): grad null stops the
  // dependency sweep here, so nothing behind it gets a gradient through this path.
  StopGradient: {
    infer: ([x]) => [{ dtype: x!.dtype, shape: [...x!.shape] }],
    lower: passThroughLower('Identity'),
    grad: null,
  },
  // The forward pass is the region's own nodes; this is an Identity of their output, and its
  // gradient is the replay that checkpoint() built (the region's saved values are never read).
  Checkpoint: {
    infer: ([x]) => [{ dtype: x!.dtype, shape: [...x!.shape] }],
    lower: (ctx, ins, outs) => ctx.emit('Identity', [ins[0]!], outs),
    grad: (n, [g], need) => (g ? n.attrs.vjp(g, need) : n.inputs.map(() => undefined)),
  },
};
