// The builder API: one function per op (and a few compositions such as gelu, rmsNorm and the
// causal-LM loss), each a thin call into Graph.op so shape checks and names happen in one place.

import type { Value } from './ir.js';
import { type DType, type Dim, type Shape, GraphShapeError, normalizeAxis } from './types.js';
import { INT_MAX } from './shape.js';
import type { QuantMatMulAttrs } from './attrs.js';

type Operand = Value | number;

function lift(a: Operand, like: Value): Value {
  return typeof a === 'number' ? like.graph.scalar(a, like.dtype) : a;
}
function pair(a: Operand, b: Operand): [Value, Value] {
  if (typeof a === 'number' && typeof b === 'number') throw new GraphShapeError('at least one operand must be a graph value');
  const va = typeof a === 'number' ? lift(a, b as Value) : a;
  const vb = typeof b === 'number' ? lift(b, va) : b;
  return [va, vb];
}
function one(v: Value, op: Parameters<Value['graph']['op']>[0], attrs: unknown = {}): Value {
  return v.graph.op(op, [v], attrs as never)[0]!;
}

export const add = (a: Operand, b: Operand): Value => {
  const [x, y] = pair(a, b);
  return x.graph.op('Add', [x, y], {})[0]!;
};
export const sub = (a: Operand, b: Operand): Value => {
  const [x, y] = pair(a, b);
  return x.graph.op('Sub', [x, y], {})[0]!;
};
export const mul = (a: Operand, b: Operand): Value => {
  const [x, y] = pair(a, b);
  return x.graph.op('Mul', [x, y], {})[0]!;
};
export const div = (a: Operand, b: Operand): Value => {
  const [x, y] = pair(a, b);
  return x.graph.op('Div', [x, y], {})[0]!;
};
export const pow = (a: Operand, b: Operand): Value => {
  const [x, y] = pair(a, b);
  return x.graph.op('Pow', [x, y], {})[0]!;
};
export const equal = (a: Operand, b: Operand): Value => {
  const [x, y] = pair(a, b);
  return x.graph.op('Equal', [x, y], {})[0]!;
};
export const less = (a: Operand, b: Operand): Value => {
  const [x, y] = pair(a, b);
  return x.graph.op('Less', [x, y], {})[0]!;
};
export const greater = (a: Operand, b: Operand): Value => {
  const [x, y] = pair(a, b);
  return x.graph.op('Greater', [x, y], {})[0]!;
};
export const and = (a: Value, b: Value): Value => a.graph.op('And', [a, b], {})[0]!;
export const or = (a: Value, b: Value): Value => a.graph.op('Or', [a, b], {})[0]!;
export const not = (a: Value): Value => one(a, 'Not');

export const neg = (x: Value): Value => one(x, 'Neg');
export const abs = (x: Value): Value => one(x, 'Abs');
export const sqrt = (x: Value): Value => one(x, 'Sqrt');
export const reciprocal = (x: Value): Value => one(x, 'Reciprocal');
export const exp = (x: Value): Value => one(x, 'Exp');
export const log = (x: Value): Value => one(x, 'Log');
export const tanh = (x: Value): Value => one(x, 'Tanh');
export const erf = (x: Value): Value => one(x, 'Erf');
export const sigmoid = (x: Value): Value => one(x, 'Sigmoid');
export const relu = (x: Value): Value => one(x, 'Relu');
export const cos = (x: Value): Value => one(x, 'Cos');
export const sin = (x: Value): Value => one(x, 'Sin');
export const identity = (x: Value): Value => one(x, 'Identity');
/** x, treated as a constant by autodiff (torch's `.detach()`). */
export const stopGradient = (x: Value): Value => one(x, 'StopGradient');

export const softmax = (x: Value, axis = -1): Value => one(x, 'Softmax', { axis });
export const logSoftmax = (x: Value, axis = -1): Value => one(x, 'LogSoftmax', { axis });

function axesOf(x: Value, axes: number | readonly number[] | undefined): number[] {
  const list = axes === undefined ? x.shape.map((_, i) => i) : typeof axes === 'number' ? [axes] : [...axes];
  return list.map((a) => normalizeAxis(a, x.rank)).sort((p, q) => p - q);
}
export const sum = (x: Value, axes?: number | readonly number[], keepdims = false): Value =>
  one(x, 'ReduceSum', { axes: axesOf(x, axes), keepdims });
export const mean = (x: Value, axes?: number | readonly number[], keepdims = false): Value =>
  one(x, 'ReduceMean', { axes: axesOf(x, axes), keepdims });
export const max = (x: Value, axes?: number | readonly number[], keepdims = false): Value =>
  one(x, 'ReduceMax', { axes: axesOf(x, axes), keepdims });

/**
 * LayerNorm over the last axis (ONNX LayerNormalization). The op's other outputs, the mean and
 * 1 / std (shape [..., 1]), are what its gradient reuses.
 */
export const layerNorm = (x: Value, weight: Value, bias: Value, epsilon: number): Value =>
  x.graph.op('LayerNorm', [x, weight, bias], { epsilon })[0]!;
/** The same LayerNorm spelled out in element-wise ops (the reference the fused op is tested against). */
export function layerNormComposed(x: Value, weight: Value, bias: Value, eps: number): Value {
  const xc = sub(x, mean(x, -1, true));
  const rstd = reciprocal(sqrt(add(mean(mul(xc, xc), -1, true), eps)));
  return add(mul(weight, mul(xc, rstd)), bias);
}
export const matmul = (a: Value, b: Value): Value => a.graph.op('MatMul', [a, b], {})[0]!;
/** a @ b^T for a weight b stored [out, in] (torch nn.Linear layout). */
export const matmulT = (a: Value, b: Value): Value => a.graph.op('MatMulT', [a, b], {})[0]!;

/**
 * x @ W^T (transB) or x @ W for a 4-bit quantized W given by its packed operands (see
 * QuantMatMulAttrs; src/quant/matmul.ts builds them from a Quantized4bit).
 */
export const quantMatmul = (x: Value, operands: readonly Value[], attrs: QuantMatMulAttrs): Value =>
  x.graph.op('QuantMatMul', [x, ...operands], attrs)[0]!;

/**
 * x @ W for a frozen W [K, N] held as int8: operands [B int8 [K, N], scales [N], Bt int8 [N, K],
 * scales [K]], or [B, scales, W^T float32 [N, K]] for a float32 backward product, or [B, scales,
 * Bt, scales, W^T float32]: a float32 backward product whose int8 copy Bt stays at hand for a
 * caller that builds the backward product itself (the chunked LM-head loss; see the Int8MatMul op
 * and src/quant/int8_base.ts).
 */
export const int8Matmul = (
  x: Value,
  operands: readonly [Value, Value, Value, Value] | readonly [Value, Value, Value] | readonly [Value, Value, Value, Value, Value],
): Value => x.graph.op('Int8MatMul', [x, ...operands], {})[0]!;

/** ONNX Reshape semantics: 0 copies the input dim at that position, -1 is inferred. */
export const reshape = (x: Value, shape: readonly number[]): Value => one(x, 'Reshape', { shape: [...shape] });
export const reshapeLike = (x: Value, like: Value): Value => x.graph.op('ReshapeLike', [x, like], {})[0]!;
export const transpose = (x: Value, perm: readonly number[]): Value => one(x, 'Transpose', { perm: [...perm] });
/** Swaps the last two axes (matrix transpose of a batch of matrices). */
export function transposeLast2(x: Value): Value {
  const perm = x.shape.map((_, i) => i);
  [perm[x.rank - 2], perm[x.rank - 1]] = [perm[x.rank - 1]!, perm[x.rank - 2]!];
  return transpose(x, perm);
}
export const concat = (xs: readonly Value[], axis: number): Value => {
  if (xs.length === 0) throw new GraphShapeError('concat of no values');
  return xs[0]!.graph.op('Concat', xs, { axis: normalizeAxis(axis, xs[0]!.rank) })[0]!;
};
/** x[start:end] along one axis, Python semantics, step 1; end defaults to the end of the axis. */
export const slice = (x: Value, axis: number, start: number, end: number = INT_MAX): Value =>
  one(x, 'Slice', { axis: normalizeAxis(axis, x.rank), start, end });
/** Part `index` of `count` near-equal parts of x along `axis` (the first parts are the shorter ones), sized at run time. */
export const chunk = (x: Value, axis: number, index: number, count: number): Value =>
  one(x, 'Chunk', { axis: normalizeAxis(axis, x.rank), index, count });
export const split = (x: Value, axis: number, sizes: readonly number[]): Value[] =>
  x.graph.op('Split', [x], { axis: normalizeAxis(axis, x.rank), sizes: [...sizes] });
export const pad = (x: Value, pads: readonly number[]): Value => one(x, 'Pad', { pads: [...pads] });
export const gather = (data: Value, indices: Value, axis = 0): Value =>
  data.graph.op('Gather', [data, indices], { axis: normalizeAxis(axis, data.rank) })[0]!;
/** Elementwise cond ? a : b; two plain numbers make float32 scalars. */
export const where = (cond: Value, a: Operand, b: Operand): Value => {
  const [x, y] = typeof a === 'number' && typeof b === 'number' ? [cond.graph.scalar(a), cond.graph.scalar(b)] : pair(a, b);
  return cond.graph.op('Where', [cond, x, y], {})[0]!;
};
export const expandLike = (x: Value, like: Value): Value => x.graph.op('ExpandLike', [x, like], {})[0]!;
export const unsqueeze = (x: Value, axes: number | readonly number[]): Value => {
  const list = typeof axes === 'number' ? [axes] : [...axes];
  const rank = x.rank + list.length;
  return one(x, 'Unsqueeze', { axes: list.map((a) => normalizeAxis(a, rank)).sort((p, q) => p - q) });
};
export const squeeze = (x: Value, axes: number | readonly number[]): Value => {
  const list = typeof axes === 'number' ? [axes] : [...axes];
  return one(x, 'Squeeze', { axes: list.map((a) => normalizeAxis(a, x.rank)).sort((p, q) => p - q) });
};
export const cast = (x: Value, to: DType): Value => (x.dtype === to ? x : one(x, 'Cast', { to }));
/** Inverted dropout with an explicit keep-mask input (bool, same shape as x), so runs are reproducible. */
export const dropout = (x: Value, keepMask: Value, ratio: number): Value => x.graph.op('Dropout', [x, keepMask], { ratio })[0]!;
/** Per-row cross-entropy of logits [N, C] against int64 labels [N]; rows labelled ignoreIndex give 0. */
export const softmaxCrossEntropy = (logits: Value, labels: Value, ignoreIndex = -100): Value =>
  logits.graph.op('SoftmaxCrossEntropy', [logits, labels], { ignoreIndex })[0]!;
/** (softmax(logits) - onehot(labels)) * scale[:, None]: the cross-entropy gradient; labels [N] must be valid class ids. */
export const softmaxCrossEntropyGrad = (logits: Value, labels: Value, scale: Value): Value =>
  logits.graph.op('SoftmaxCrossEntropyGrad', [logits, labels, scale], {})[0]!;

export const dimOf = (x: Value, axis: number): Value => one(x, 'DimOf', { axis: normalizeAxis(axis, x.rank) });
export const arangeOfDim = (x: Value, axis: number): Value => one(x, 'ArangeOfDim', { axis: normalizeAxis(axis, x.rank) });
export const sizeOf = (x: Value): Value => one(x, 'Size');
export const zerosLike = (x: Value): Value => one(x, 'ZerosLike');
export const scatterAddRows = (zeros: Value, indices: Value, updates: Value): Value =>
  zeros.graph.op('ScatterAddRows', [zeros, indices, updates], {})[0]!;
export const bitShift = (x: Value, amount: Value, direction: 'LEFT' | 'RIGHT'): Value =>
  x.graph.op('BitShift', [x, amount], { direction })[0]!;
export const bitwiseAnd = (a: Value, b: Value): Value => a.graph.op('BitwiseAnd', [a, b], {})[0]!;

// ---- compositions -------------------------------------------------------------------------

/** Exact (erf) GELU, as torch.nn.GELU() and BERT's "gelu". */
export function gelu(x: Value): Value {
  return mul(mul(x, 0.5), add(erf(mul(x, Math.SQRT1_2)), 1));
}
/**
 * The tanh approximation ("gelu_new", "gelu_pytorch_tanh") GPT-2 uses, as one op (ONNX Runtime's
 * com.microsoft FastGelu in float32; its gradient recomputes the tanh from x).
 */
export const geluTanh = (x: Value): Value => one(x, 'GeluTanh');
/** The same GELU spelled out in element-wise ops (the reference the fused op is tested against). */
export function geluTanhComposed(x: Value): Value {
  const inner = mul(add(x, mul(pow(x, 3), 0.044715)), Math.sqrt(2 / Math.PI));
  return mul(mul(x, 0.5), add(tanh(inner), 1));
}
/** x * sigmoid(x) as one op, whose gradient recomputes the sigmoid instead of keeping it from the forward. */
export const silu = (x: Value): Value => one(x, 'Silu');
/** The same SiLU spelled out (the reference the fused op is tested against). */
export function siluComposed(x: Value): Value {
  return mul(x, sigmoid(x));
}
/**
 * RMSNorm as Llama computes it, x * rsqrt(mean(x^2) + eps) * weight, as one op (ONNX Runtime's
 * SimplifiedLayerNormalization in float32) whose gradient reuses the forward's 1 / rms.
 */
export const rmsNorm = (x: Value, weight: Value, eps: number): Value => x.graph.op('RmsNorm', [x, weight], { epsilon: eps })[0]!;
/** The same RMSNorm spelled out in element-wise ops (the reference the fused op is tested against). */
export function rmsNormComposed(x: Value, weight: Value, eps: number): Value {
  const variance = mean(mul(x, x), -1, true);
  return mul(weight, mul(x, reciprocal(sqrt(add(variance, eps)))));
}
/**
 * Rotary position embedding of x [batch, heads, seq, dim] as transformers applies it,
 * x * [cos, cos] + rotate_half(x) * [sin, sin], with half tables cos, sin [batch or 1, 1, seq, dim / 2]
 * (one op: ONNX Runtime's RotaryEmbedding in float32, forward and backward).
 */
export const rotary = (x: Value, cosHalf: Value, sinHalf: Value): Value => x.graph.op('Rotary', [x, cosHalf, sinHalf], {})[0]!;
/** rotate_half(x) = [-x2, x1] over the last axis. */
export function rotateHalf(x: Value): Value {
  const half = (x.shape[x.rank - 1] as number) / 2;
  const [a, b] = split(x, -1, [half, half]) as [Value, Value];
  return concat([neg(b), a], -1);
}
/** The same rotation spelled out in element-wise ops (the reference the fused op is tested against). */
export function rotaryComposed(x: Value, cosHalf: Value, sinHalf: Value): Value {
  return add(mul(x, concat([cosHalf, cosHalf], -1)), mul(rotateHalf(x), concat([sinHalf, sinHalf], -1)));
}
/** x @ W^T + b with a torch nn.Linear weight [out, in] held as given. */
export function linear(x: Value, weight: Value, bias?: Value): Value {
  const y = matmulT(x, weight);
  return bias ? add(y, bias) : y;
}

/** Mean cross-entropy over positions whose label is not ignoreIndex, as transformers computes it. */
export function crossEntropyMean(logits2d: Value, labels1d: Value, ignoreIndex = -100): Value {
  const perRow = softmaxCrossEntropy(logits2d, labels1d, ignoreIndex);
  const valid = cast(not(equal(labels1d, labels1d.graph.scalar(ignoreIndex, labels1d.dtype))), logits2d.dtype);
  return div(sum(perRow), sum(valid));
}

/** Sum g over the axes along which `shape` was broadcast to g's shape (gradient of broadcasting). */
export function unbroadcast(g: Value, shape: Shape): Value {
  let out = g;
  const extra = g.rank - shape.length;
  if (extra > 0)
    out = sum(
      out,
      Array.from({ length: extra }, (_, i) => i),
      false,
    );
  const axes: number[] = [];
  shape.forEach((d: Dim, i) => {
    if (d === 1 && out.shape[i] !== 1) axes.push(i);
  });
  if (axes.length) out = sum(out, axes, true);
  return out;
}
