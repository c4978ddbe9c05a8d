// The op set: every op's name and its attributes, the one list the per-transformation rule tables
// are keyed by (shape inference in graph/infer.ts, ONNX lowering in onnx/lower.ts, gradients in
// autodiff/vjp.ts). Each table is an exhaustive mapped type over OpName, so an op added here
// without all of its rules does not compile.

import type { Value } from './ir.js';
import type { DType } from './types.js';

/** The attributes of an op that has none. */
export type NoAttrs = Record<string, never>;
/** An op along one axis (Softmax, Concat, Gather, DimOf, ...). */
export interface AxisAttrs {
  axis: number;
}
/** Unsqueeze / Squeeze: the axes added or removed. */
export interface AxesAttrs {
  axes: number[];
}
/** LayerNorm / RmsNorm: the epsilon added to the variance. */
export interface NormAttrs {
  epsilon: number;
}

export interface OpAttrs {
  Add: NoAttrs;
  Sub: NoAttrs;
  Mul: NoAttrs;
  Div: NoAttrs;
  Pow: NoAttrs;
  Equal: NoAttrs;
  Less: NoAttrs;
  Greater: NoAttrs;
  And: NoAttrs;
  Or: NoAttrs;
  Not: NoAttrs;
  Neg: NoAttrs;
  Abs: NoAttrs;
  Sqrt: NoAttrs;
  Reciprocal: NoAttrs;
  Exp: NoAttrs;
  Log: NoAttrs;
  Tanh: NoAttrs;
  Erf: NoAttrs;
  Sigmoid: NoAttrs;
  Relu: NoAttrs;
  Cos: NoAttrs;
  Sin: NoAttrs;
  Identity: NoAttrs;
  Softmax: AxisAttrs;
  LogSoftmax: AxisAttrs;
  ReduceSum: ReduceAttrs;
  ReduceMean: ReduceAttrs;
  ReduceMax: ReduceAttrs;
  LayerNorm: NormAttrs;
  RmsNorm: NormAttrs;
  Rotary: NoAttrs;
  GeluTanh: NoAttrs;
  Silu: NoAttrs;
  MatMul: NoAttrs;
  MatMulT: NoAttrs;
  QuantMatMul: QuantMatMulAttrs;
  Int8MatMul: NoAttrs;
  Reshape: { shape: number[] };
  ReshapeLike: NoAttrs;
  Transpose: { perm: number[] };
  Concat: AxisAttrs;
  Slice: { axis: number; start: number; end: number };
  Split: { axis: number; sizes: number[] };
  /** part `index` of `count` near-equal parts of x along `axis` (rows floor(d*index/count) to floor(d*(index+1)/count)), d known only at run time */
  Chunk: { axis: number; index: number; count: number };
  Pad: { pads: number[] };
  Gather: AxisAttrs;
  Where: NoAttrs;
  ExpandLike: NoAttrs;
  Unsqueeze: AxesAttrs;
  Squeeze: AxesAttrs;
  Cast: { to: DType };
  Dropout: { ratio: number };
  SoftmaxCrossEntropy: { ignoreIndex: number };
  SoftmaxCrossEntropyGrad: NoAttrs;
  DimOf: AxisAttrs;
  ArangeOfDim: AxisAttrs;
  Size: NoAttrs;
  ZerosLike: NoAttrs;
  ScatterAddRows: NoAttrs;
  BitShift: { direction: 'LEFT' | 'RIGHT' };
  BitwiseAnd: NoAttrs;
  StopGradient: NoAttrs;
  Checkpoint: CheckpointAttrs;
}
export type OpName = keyof OpAttrs;

/** ReduceSum / ReduceMean / ReduceMax: sorted, non-negative axes. */
export interface ReduceAttrs {
  axes: number[];
  keepdims: boolean;
}

/**
 * Activation checkpointing (src/autodiff/checkpoint.ts): input 0 is a region's output, passed
 * through; the other inputs are the values the region reads, listed so autodiff routes their
 * gradients here. `vjp` replays the region after the incoming gradient and differentiates it.
 */
export interface CheckpointAttrs {
  vjp: (gOut: Value, need: readonly boolean[]) => (Value | undefined)[];
}

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
