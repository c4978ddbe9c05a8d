// Shape and dtype inference: one rule per op, run by Graph.op() the moment a node is made, so a
// mismatch fails where model code builds it and not in a session. The table is an exhaustive
// mapped type over OpName (graph/attrs.ts): an op without its rule does not compile.

import type { Value } from './ir.js';
import type { NoAttrs, OpAttrs, OpName, ReduceAttrs } from './attrs.js';
import { divideDims, productOf, sliceLength } from './shape.js';
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
} from './types.js';

/** What inference says of one output. */
export interface ValueInfo {
  dtype: DType;
  shape: Dim[];
}
export type InferRule<A> = (inputs: readonly Value[], attrs: A) => ValueInfo[];

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

/** Input 0's dtype and shape. */
const likeFirst: InferRule<unknown> = ([x]) => [{ dtype: x!.dtype, shape: [...x!.shape] }];

function binary(out?: (a: Value) => DType): InferRule<NoAttrs> {
  return ([a, b]) => {
    sameDtype(a!, b!);
    return [{ dtype: out ? out(a!) : a!.dtype, shape: bcast(a!, b!) }];
  };
}
function compare(boolIn = false): InferRule<NoAttrs> {
  return binary((a) => {
    if (boolIn && a.dtype !== 'bool') fail(`needs bool inputs, got ${a.dtype}`);
    return 'bool';
  });
}
function unary(floatOnly = true): InferRule<NoAttrs> {
  return ([x]) => {
    if (floatOnly) needFloat(x!);
    return [{ dtype: x!.dtype, shape: [...x!.shape] }];
  };
}
const reduce: InferRule<ReduceAttrs> = ([x], { axes, keepdims }) => {
  for (const a of axes) if (a < 0 || a >= x!.rank) fail(`axis ${a} out of range`);
  const shape: Dim[] = [];
  x!.shape.forEach((d, i) => {
    if (!axes.includes(i)) shape.push(d);
    else if (keepdims) shape.push(1);
  });
  return [{ dtype: x!.dtype, shape }];
};
const softmaxLike: InferRule<{ axis: number }> = ([x], { axis }) => {
  needFloat(x!);
  normalizeAxis(axis, x!.rank);
  return [{ dtype: x!.dtype, shape: [...x!.shape] }];
};
const int64Scalar: InferRule<unknown> = () => [{ dtype: 'int64', shape: [] }];

// ---- the table ------------------------------------------------------------------------------

export const INFER: { [K in OpName]: InferRule<OpAttrs[K]> } = {
  Add: binary(),
  Sub: binary(),
  Mul: binary(),
  Div: binary(),
  Pow: binary(),
  Equal: compare(),
  Less: compare(),
  Greater: compare(),
  And: compare(true),
  Or: compare(true),
  Not: ([x]) => (x!.dtype === 'bool' ? [{ dtype: 'bool', shape: [...x!.shape] }] : fail(`needs bool, got ${x!.dtype}`)),
  Neg: unary(false),
  Abs: unary(false),
  Sqrt: unary(),
  Reciprocal: unary(),
  Exp: unary(),
  Log: unary(),
  Tanh: unary(),
  Erf: unary(),
  Sigmoid: unary(),
  Relu: unary(),
  Cos: unary(),
  Sin: unary(),
  Identity: unary(false),

  Softmax: softmaxLike,
  LogSoftmax: softmaxLike,

  ReduceSum: reduce,
  ReduceMean: reduce,
  ReduceMax: reduce,

  LayerNorm: ([x, w, b]) => {
    needFloat(x!);
    const c = x!.shape[x!.rank - 1]!;
    for (const p of [w!, b!]) {
      sameDtype(x!, p);
      if (p.rank !== 1 || p.shape[0] !== c) fail(`weight and bias must have shape [${c}], got ${shapeToString(p.shape)}`);
    }
    // [y, mean, 1 / std]: the last two (shape [..., 1]) are what the gradient reuses.
    const stat = { dtype: x!.dtype, shape: [...x!.shape.slice(0, -1), 1] };
    return [{ dtype: x!.dtype, shape: [...x!.shape] }, stat, { ...stat, shape: [...stat.shape] }];
  },
  // [y, 1 / rms]: the second output (shape [..., 1]) is what the gradient reuses.
  RmsNorm: ([x, w]) => {
    needFloat(x!);
    sameDtype(x!, w!);
    const c = x!.shape[x!.rank - 1]!;
    if (w!.rank !== 1 || w!.shape[0] !== c) fail(`weight must have shape [${c}], got ${shapeToString(w!.shape)}`);
    return [
      { dtype: x!.dtype, shape: [...x!.shape] },
      { dtype: x!.dtype, shape: [...x!.shape.slice(0, -1), 1] },
    ];
  },
  GeluTanh: unary(),
  Silu: unary(),
  // x [batch, heads, seq, dim] rotated by half tables cos, sin [batch or 1, 1, seq, dim / 2].
  Rotary: ([x, c, s]) => {
    needFloat(x!);
    if (x!.rank !== 4) fail(`needs x [batch, heads, seq, dim], got ${shapeToString(x!.shape)}`);
    const d = x!.shape[3]!;
    if (typeof d !== 'number' || d % 2) fail(`needs an even static head dim, got ${String(d)}`);
    for (const t of [c!, s!]) {
      sameDtype(x!, t);
      if (t.rank !== 4 || t.shape[1] !== 1 || t.shape[3] !== d / 2)
        fail(`cos and sin must be [batch, 1, seq, ${d / 2}], got ${shapeToString(t.shape)}`);
    }
    return [{ dtype: x!.dtype, shape: [...x!.shape] }];
  },

  MatMul: ([a, b]) => {
    sameDtype(a!, b!);
    if (a!.rank < 2 || b!.rank < 2) fail('both operands need rank >= 2');
    const k1 = a!.shape[a!.rank - 1]!;
    const k2 = b!.shape[b!.rank - 2]!;
    if (k1 !== k2) fail(`inner dimensions differ: ${k1} vs ${k2}`);
    const batch = broadcastShapes(a!.shape.slice(0, -2), b!.shape.slice(0, -2)) ?? fail('batch dimensions do not broadcast');
    return [{ dtype: a!.dtype, shape: [...batch, a!.shape[a!.rank - 2]!, b!.shape[b!.rank - 1]!] }];
  },
  // a @ b^T with b a torch nn.Linear weight [out, in]
  MatMulT: ([a, b]) => {
    sameDtype(a!, b!);
    if (a!.rank < 2 || b!.rank !== 2) fail('needs a of rank >= 2 and a weight b of rank 2');
    if (a!.shape[a!.rank - 1] !== b!.shape[1]) fail(`inner dimensions differ: ${a!.shape[a!.rank - 1]} vs ${b!.shape[1]}`);
    return [{ dtype: a!.dtype, shape: [...a!.shape.slice(0, -1), b!.shape[0]!] }];
  },
  QuantMatMul: (ins, a) => {
    const [x, packed, code, absmax, nestedAbsmax, nestedCode] = ins;
    needFloat(x!);
    const [rows, cols] = a.shape;
    if (!(Number.isInteger(rows) && Number.isInteger(cols) && rows > 0 && cols > 0))
      fail(`weight shape [${a.shape}] must be two positive integers`);
    if (!(Number.isInteger(a.blockSize) && a.blockSize > 0 && a.blockSize % 2 === 0))
      fail(`block size ${a.blockSize} must be a positive even integer`);
    if (x!.rank < 2) fail('x needs rank >= 2');
    const n = rows * cols;
    const blocks = Math.ceil(n / a.blockSize);
    const k = a.transB ? cols : rows;
    if (x!.shape[x!.rank - 1] !== k) fail(`inner dimensions differ: ${x!.shape[x!.rank - 1]} vs ${k}`);
    const want = (v: Value | undefined, what: string, dtype: DType, shape: Dim[]): void => {
      if (!v || v.dtype !== dtype || !shapesEqual(v.shape, shape))
        fail(`${what} must be ${dtype}${shapeToString(shape)}, got ${v ? `${v.dtype}${shapeToString(v.shape)}` : 'nothing'}`);
    };
    want(packed, 'packed codes', 'uint8', [Math.ceil(n / 2)]);
    if (!code || code.dtype !== 'float32' || !(shapesEqual(code.shape, [256, 2]) || shapesEqual(code.shape, [16])))
      fail('the code table must be float32 [256, 2] (pairs) or [16]');
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
  // x @ W for a frozen W [K, N] held as int8: B [K, N] with scales [N], then for the backward
  // product either Bt [N, K] int8 with scales [K] (and optionally W^T [N, K] in float32, which the
  // backward product then uses), or W^T [N, K] in float32 alone
  Int8MatMul: ([x, b, bScale, bt, btScale, wt]) => {
    if (!x || !isFloat(x.dtype)) fail('x must be a float tensor');
    if (x.rank < 2) fail('x needs rank >= 2');
    if (!b || b.dtype !== 'int8' || b.rank !== 2) fail('B must be an int8 matrix');
    const [k, n] = b.shape as [Dim, Dim];
    if (!bScale || bScale.dtype !== 'float32' || !shapesEqual(bScale.shape, [n])) fail(`B's scales must be float32 [${n}]`);
    if (!bt || bt.rank !== 2 || bt.shape[0] !== n || bt.shape[1] !== k)
      fail(`the backward operand must be [${n}, ${k}] (B transposed), got ${bt ? shapeToString(bt.shape) : 'nothing'}`);
    if (bt.dtype === 'int8') {
      if (!btScale || btScale.dtype !== 'float32' || !shapesEqual(btScale.shape, [k])) fail(`Bt's scales must be float32 [${k}]`);
      if (wt && (wt.dtype !== 'float32' || wt.rank !== 2 || wt.shape[0] !== n || wt.shape[1] !== k))
        fail(`the float backward operand must be float32 [${n}, ${k}], got ${wt.dtype} ${shapeToString(wt.shape)}`);
    } else if (bt.dtype !== 'float32' || btScale) fail('a float backward operand is float32 and comes without scales');
    if (x.shape[x.rank - 1] !== k) fail(`inner dimensions differ: ${x.shape[x.rank - 1]} vs ${k}`);
    return [{ dtype: x.dtype, shape: [...x.shape.slice(0, -1), n] }];
  },
  Reshape: ([x], { shape }) => {
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
  ReshapeLike: ([x, like]) => [{ dtype: x!.dtype, shape: [...like!.shape] }],
  Transpose: ([x], { perm }) => {
    if (perm.length !== x!.rank || [...perm].sort().some((p, i) => p !== i))
      fail(`perm ${shapeToString(perm)} is not a permutation of rank ${x!.rank}`);
    return [{ dtype: x!.dtype, shape: perm.map((p) => x!.shape[p]!) }];
  },
  Concat: (xs, { axis }) => {
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
  Slice: ([x], { axis, start, end }) => {
    const shape = [...x!.shape];
    shape[axis] = sliceLength(x!.shape[axis]!, start, end);
    return [{ dtype: x!.dtype, shape }];
  },
  Chunk: ([x], { axis, index, count }) => {
    if (!(Number.isInteger(count) && count >= 1 && Number.isInteger(index) && index >= 0 && index < count))
      fail(`chunk ${index} of ${count} is not a part of the axis`);
    const d = x!.shape[axis]!;
    const shape = [...x!.shape];
    shape[axis] =
      typeof d === 'number' ? Math.floor((d * (index + 1)) / count) - Math.floor((d * index) / count) : `chunk${index}of${count}(${d})`;
    return [{ dtype: x!.dtype, shape }];
  },
  Split: ([x], { axis, sizes }) => {
    const d = x!.shape[axis]!;
    const total = sizes.reduce((p, q) => p + q, 0);
    if (typeof d === 'number' && d !== total) fail(`split sizes sum to ${total} but the axis has ${d}`);
    return sizes.map((s) => {
      const shape = [...x!.shape];
      shape[axis] = s;
      return { dtype: x!.dtype, shape };
    });
  },
  Pad: ([x], { pads }) => {
    if (pads.length !== 2 * x!.rank) fail(`pads needs ${2 * x!.rank} entries`);
    return [{ dtype: x!.dtype, shape: x!.shape.map((d, i) => addDims(addDims(d, pads[i]!), pads[x!.rank + i]!)) }];
  },
  Gather: ([data, idx], { axis }) => {
    if (idx!.dtype !== 'int64' && idx!.dtype !== 'int32') fail(`indices must be int64 or int32, got ${idx!.dtype}`);
    return [{ dtype: data!.dtype, shape: [...data!.shape.slice(0, axis), ...idx!.shape, ...data!.shape.slice(axis + 1)] }];
  },
  Where: ([c, a, b]) => {
    if (c!.dtype !== 'bool') fail(`condition must be bool, got ${c!.dtype}`);
    sameDtype(a!, b!);
    const ab = bcast(a!, b!);
    return [{ dtype: a!.dtype, shape: broadcastShapes(c!.shape, ab) ?? fail('condition does not broadcast') }];
  },
  ExpandLike: ([x, like]) => [{ dtype: x!.dtype, shape: broadcastShapes(x!.shape, like!.shape) ?? fail('shapes do not broadcast') }],
  Unsqueeze: ([x], { axes }) => {
    const shape: Dim[] = [...x!.shape];
    for (const a of axes) shape.splice(a, 0, 1);
    return [{ dtype: x!.dtype, shape }];
  },
  Squeeze: ([x], { axes }) => {
    for (const a of axes) if (x!.shape[a] !== 1) fail(`cannot squeeze axis ${a} of size ${x!.shape[a]}`);
    return [{ dtype: x!.dtype, shape: x!.shape.filter((_, i) => !axes.includes(i)) }];
  },
  Cast: ([x], { to }) => [{ dtype: to, shape: [...x!.shape] }],
  Dropout: ([x, mask], { ratio }) => {
    needFloat(x!);
    if (mask!.dtype !== 'bool') fail(`keep mask must be bool, got ${mask!.dtype}`);
    if (!(ratio >= 0 && ratio < 1)) fail(`ratio must be in [0, 1), got ${ratio}`);
    return [{ dtype: x!.dtype, shape: bcast(x!, mask!) }];
  },
  SoftmaxCrossEntropy: ([logits, labels]) => {
    needFloat(logits!);
    if (logits!.rank !== 2 || labels!.rank !== 1) fail('expects logits [N, C] and labels [N]');
    if (labels!.dtype !== 'int64') fail(`labels must be int64, got ${labels!.dtype}`);
    if (logits!.shape[0] !== labels!.shape[0]) fail('logits and labels disagree on N');
    return [{ dtype: logits!.dtype, shape: [logits!.shape[0]!] }];
  },
  SoftmaxCrossEntropyGrad: ([logits, labels, scale]) => {
    needFloat(logits!);
    if (logits!.rank !== 2 || labels!.rank !== 1 || scale!.rank !== 1) fail('expects logits [N, C], labels [N] and scale [N]');
    if (labels!.dtype !== 'int64') fail(`labels must be int64, got ${labels!.dtype}`);
    sameDtype(logits!, scale!);
    return [{ dtype: logits!.dtype, shape: [...logits!.shape] }];
  },
  DimOf: int64Scalar,
  ArangeOfDim: ([x], { axis }) => [{ dtype: 'int64', shape: [x!.shape[axis]!] }],
  Size: int64Scalar,
  ZerosLike: likeFirst,
  ScatterAddRows: ([zeros, idx, upd]) => {
    sameDtype(zeros!, upd!);
    const want = [...idx!.shape, ...zeros!.shape.slice(1)];
    if (!shapesEqual(want, upd!.shape)) fail(`updates must have shape ${shapeToString(want)}`);
    return [{ dtype: zeros!.dtype, shape: [...zeros!.shape] }];
  },
  BitShift: ([x, s]) => {
    sameDtype(x!, s!);
    if (x!.dtype !== 'uint8') fail(`BitShift works on uint8 here, got ${x!.dtype}`);
    return [{ dtype: x!.dtype, shape: bcast(x!, s!) }];
  },
  BitwiseAnd: binary(),
  StopGradient: likeFirst,
  Checkpoint: likeFirst,
};
