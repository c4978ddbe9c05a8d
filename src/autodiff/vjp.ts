// Gradient rules: the vector-Jacobian product of every op, written with the graph builder so
// gradients are ordinary nodes of the same graph (grad.ts runs them in reverse). null marks an op
// that is not differentiated (integer or boolean results, StopGradient); grad()'s dependency sweep
// stops there. The table is an exhaustive mapped type over OpName (graph/attrs.ts), so an op without
// its rule, or an explicit null, does not compile.

import type { Node, Value } from '../graph/ir.js';
import type { NoAttrs, OpAttrs, OpName } from '../graph/attrs.js';
import * as o from '../graph/ops.js';
import { int8InputGrad } from '../quant/int8_base.js';
import { INT_MAX } from '../graph/shape.js';
import { type Dim, GraphShapeError, isFloat, staticSize } from '../graph/types.js';

export type Grads = (Value | undefined)[];
/** need[i] says whether input i's gradient is wanted; a rule returns one entry per input. */
export type VjpRule<A> = (node: Node & { attrs: A }, gOut: Grads, need: boolean[]) => Grads;

function fail(msg: string): never {
  throw new GraphShapeError(msg);
}

// ---- rule families --------------------------------------------------------------------------

/** A unary op's gradient from its input x, output y and incoming gradient g. */
function unary(rule: (x: Value, y: Value, g: Value) => Value): VjpRule<NoAttrs> {
  return (n, [g]) => [g && rule(n.inputs[0]!, n.outputs[0]!, g)];
}
/** g of a reduction, broadcast back to the input's shape. */
function expandReduced(g: Value, x: Value, axes: number[], keepdims: boolean): Value {
  return o.expandLike(keepdims ? g : o.unsqueeze(g, axes), x);
}
/**
 * g reshaped to x's shape. Where x's shape can be spelled from g's (static sizes, 0 for a symbolic
 * dim g has at the same position, -1 for at most one other), a static Reshape: it does not read x,
 * so x is not kept alive until the backward pass only for its shape (a ReshapeLike reads it, which
 * kept e.g. the q/k/v split outputs of every attention layer: bench/RESULTS.md, "Memory of a
 * training step").
 */
function reshapeBack(g: Value, x: Value): Value {
  const spec: number[] = [];
  let inferred = false;
  for (let i = 0; i < x.rank; i++) {
    const d = x.shape[i]!;
    if (typeof d === 'number') spec.push(d);
    else if (g.shape[i] === d) spec.push(0);
    else if (!inferred) {
      inferred = true;
      spec.push(-1);
    } else return o.reshapeLike(g, x);
  }
  // ONNX Reshape copies g's dim for a 0 only where both are symbolic and equal; a static 0-sized dim cannot be spelled
  if (x.shape.some((d) => d === 0)) return o.reshapeLike(g, x);
  return o.reshape(g, spec);
}
/** Reshape-like ops: the gradient takes the input's shape back. */
const view: VjpRule<unknown> = (n, [g]) => [g && reshapeBack(g, n.inputs[0]!)];
/** g for input 0, nothing for the shape-giving input 1. */
const firstUnbroadcast: VjpRule<NoAttrs> = (n, [g], need) => [need[0] ? o.unbroadcast(g!, n.inputs[0]!.shape) : undefined, undefined];

// ---- the table ------------------------------------------------------------------------------

export const VJP: { [K in OpName]: VjpRule<OpAttrs[K]> | null } = {
  Add: (n, [g], need) => [
    need[0] ? o.unbroadcast(g!, n.inputs[0]!.shape) : undefined,
    need[1] ? o.unbroadcast(g!, n.inputs[1]!.shape) : undefined,
  ],
  Sub: (n, [g], need) => [
    need[0] ? o.unbroadcast(g!, n.inputs[0]!.shape) : undefined,
    need[1] ? o.unbroadcast(o.neg(g!), n.inputs[1]!.shape) : undefined,
  ],
  Mul: (n, [g], need) => {
    const [a, b] = n.inputs as [Value, Value];
    return [need[0] ? o.unbroadcast(o.mul(g!, b), a.shape) : undefined, need[1] ? o.unbroadcast(o.mul(g!, a), b.shape) : undefined];
  },
  Div: (n, [g], need) => {
    const [a, b] = n.inputs as [Value, Value];
    const y = n.outputs[0]!;
    return [
      need[0] ? o.unbroadcast(o.div(g!, b), a.shape) : undefined,
      need[1] ? o.unbroadcast(o.neg(o.div(o.mul(g!, y), b)), b.shape) : undefined,
    ];
  },
  Pow: (n, [g], need) => {
    const [a, b] = n.inputs as [Value, Value];
    const y = n.outputs[0]!;
    return [
      need[0] ? o.unbroadcast(o.mul(g!, o.mul(b, o.pow(a, o.sub(b, 1)))), a.shape) : undefined,
      need[1] ? o.unbroadcast(o.mul(g!, o.mul(y, o.log(a))), b.shape) : undefined,
    ];
  },
  Equal: null,
  Less: null,
  Greater: null,
  And: null,
  Or: null,
  Not: null,
  Neg: unary((_x, _y, g) => o.neg(g)),
  // d|x|/dx = sign(x), taken as 1 at 0.
  Abs: unary((x, _y, g) => o.where(o.less(x, 0), o.neg(g), g)),
  Sqrt: unary((_x, y, g) => o.div(g, o.mul(y, 2))),
  Reciprocal: unary((_x, y, g) => o.neg(o.mul(g, o.mul(y, y)))),
  Exp: unary((_x, y, g) => o.mul(g, y)),
  Log: unary((x, _y, g) => o.div(g, x)),
  Tanh: unary((_x, y, g) => o.mul(g, o.sub(1, o.mul(y, y)))),
  Erf: unary((x, _y, g) => o.mul(g, o.mul(o.exp(o.neg(o.mul(x, x))), 2 / Math.sqrt(Math.PI)))),
  Sigmoid: unary((_x, y, g) => o.mul(g, o.mul(y, o.sub(1, y)))),
  Relu: unary((x, _y, g) => o.where(o.greater(x, 0), g, 0)),
  Cos: unary((x, _y, g) => o.neg(o.mul(g, o.sin(x)))),
  Sin: unary((x, _y, g) => o.mul(g, o.cos(x))),
  Identity: unary((_x, _y, g) => g),

  Softmax: (n, [g]) => {
    const y = n.outputs[0]!;
    const gy = o.mul(g!, y);
    return [o.sub(gy, o.mul(y, o.sum(gy, n.attrs.axis, true)))];
  },
  LogSoftmax: (n, [g]) => [o.sub(g!, o.mul(o.exp(n.outputs[0]!), o.sum(g!, n.attrs.axis, true)))],

  ReduceSum: (n, [g]) => [expandReduced(g!, n.inputs[0]!, n.attrs.axes, n.attrs.keepdims)],
  ReduceMean: (n, [g]) => {
    const x = n.inputs[0]!;
    const reduced = n.attrs.axes.map((a) => x.shape[a]!);
    const count = staticSize(reduced);
    const scale =
      count !== undefined
        ? x.graph.scalar(1 / count, x.dtype)
        : o.div(o.cast(o.sizeOf(n.outputs[0]!), x.dtype), o.cast(o.sizeOf(x), x.dtype));
    return [expandReduced(o.mul(g!, scale), x, n.attrs.axes, n.attrs.keepdims)];
  },
  ReduceMax: (n, [g]) => {
    const x = n.inputs[0]!;
    const { axes, keepdims } = n.attrs;
    const y = keepdims ? n.outputs[0]! : o.unsqueeze(n.outputs[0]!, axes);
    const hit = o.cast(o.equal(x, o.expandLike(y, x)), x.dtype);
    const share = o.div(hit, o.sum(hit, axes, true));
    return [o.mul(expandReduced(g!, x, axes, keepdims), share)];
  },

  // y = w * xhat + b, xhat = (x - mean) * r with the mean and r = 1 / std saved by the forward
  // (outputs 1 and 2): dx = r * (g*w - mean(g*w) - xhat * mean(g*w * xhat)); dw = sum of g * xhat.
  LayerNorm: (n, [g, gm, gr], need) => {
    if (gm || gr) fail('LayerNorm: its mean and 1/std outputs are not differentiable');
    const [x, w] = n.inputs as [Value, Value, Value];
    const r = n.outputs[2]!;
    const xhat = o.mul(o.sub(x, n.outputs[1]!), r);
    let dx: Value | undefined;
    if (need[0]) {
      const gw = o.mul(g!, w);
      dx = o.mul(o.sub(o.sub(gw, o.mean(gw, -1, true)), o.mul(xhat, o.mean(o.mul(gw, xhat), -1, true))), r);
    }
    return [dx, need[1] ? o.unbroadcast(o.mul(g!, xhat), w.shape) : undefined, need[2] ? o.unbroadcast(g!, n.inputs[2]!.shape) : undefined];
  },

  // y = x/2 (1 + t), t = tanh(k (x + c x^3)): dy/dx = (1 + t)/2 + x/2 (1 - t^2) k (1 + 3c x^2), with t
  // recomputed from x (the fused forward keeps no intermediate).
  GeluTanh: unary((x, _y, g) => {
    const k = Math.sqrt(2 / Math.PI);
    const c = 0.044715;
    const x2 = o.mul(x, x);
    const t = o.tanh(o.mul(x, o.add(o.mul(x2, k * c), k)));
    const slope = o.add(o.mul(x2, 1.5 * k * c), 0.5 * k);
    const dy = o.add(o.mul(o.mul(x, o.sub(1, o.mul(t, t))), slope), o.add(o.mul(t, 0.5), 0.5));
    return o.mul(g, dy);
  }),
  // y = x s, s = sigmoid(x): dy/dx = s + y (1 - s), s recomputed (the fused forward keeps only y).
  Silu: unary((x, y, g) => {
    const s = o.sigmoid(x);
    return o.mul(g, o.add(s, o.mul(y, o.sub(1, s))));
  }),
  // y = w * x * r with r = 1 / rms(x) saved by the forward (output 1):
  // dx = r * (g*w - xhat * mean(g*w * xhat)), xhat = x * r; dw = sum of g * xhat.
  RmsNorm: (n, [g, gr], need) => {
    if (gr) fail('RmsNorm: its 1/rms output is not differentiable');
    const [x, w] = n.inputs as [Value, Value];
    const r = n.outputs[1]!;
    const xhat = o.mul(x, r);
    let dx: Value | undefined;
    if (need[0]) {
      const gw = o.mul(g!, w);
      dx = o.mul(o.sub(gw, o.mul(xhat, o.mean(o.mul(gw, xhat), -1, true))), r);
    }
    return [dx, need[1] ? o.unbroadcast(o.mul(g!, xhat), w.shape) : undefined];
  },
  // A rotation: its transpose is the same rotation with -sin. The tables' gradients (they are
  // usually functions of the positions only) sum the two halves of g * x and g * rotate_half(x).
  Rotary: (n, [g], need) => {
    const [x, c, s] = n.inputs as [Value, Value, Value];
    const half = (x.shape[3] as number) / 2;
    const table = (t: Value, like: Value): Value => {
      const [a, b] = o.split(t, -1, [half, half]) as [Value, Value];
      return o.unbroadcast(o.add(a, b), like.shape);
    };
    return [
      need[0] ? o.rotary(g!, c, o.neg(s)) : undefined,
      need[1] ? table(o.mul(g!, x), c) : undefined,
      need[2] ? table(o.mul(g!, o.rotateHalf(x)), s) : undefined,
    ];
  },

  MatMul: (n, [g], need) => {
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
  MatMulT: (n, [g], need) => {
    const [a, b] = n.inputs as [Value, Value];
    let db: Value | undefined;
    if (need[1]) {
      const a2 = a.rank > 2 ? o.reshape(a, [-1, a.shape[a.rank - 1] as number]) : a;
      const g2 = g!.rank > 2 ? o.reshape(g!, [-1, g!.shape[g!.rank - 1] as number]) : g!;
      db = o.matmul(o.transposeLast2(g2), a2);
    }
    return [need[0] ? o.matmul(g!, b) : undefined, db];
  },
  // The gradient w.r.t. x is the same op on g with transB flipped: W is rebuilt again in the
  // backward pass, gated on g, instead of the forward's float32 copy being kept alive until then.
  QuantMatMul: (n, [g], need) => {
    const rest = n.inputs.slice(1).map(() => undefined);
    if (!need[0]) return [undefined, ...rest];
    const { bnb4: _kernel, ...attrs } = n.attrs;
    return [o.quantMatmul(g!, n.inputs.slice(1), { ...attrs, transB: !attrs.transB }), ...rest];
  },
  // The input gradient g @ W^T is the same op on g with the two int8 copies swapped (g scaled per
  // row first: int8InputGrad), or a float32 product with W^T when that is what the node holds for
  // the backward pass; W is frozen.
  Int8MatMul: (n, [g], need) => {
    const [, b, bScale, bt, btScale, wt] = n.inputs as [Value, Value, Value, Value, Value | undefined, Value | undefined];
    const none = n.inputs.slice(1).map(() => undefined);
    if (!need[0]) return [undefined, ...none];
    if (wt) return [o.matmul(g!, wt), ...none];
    return [btScale ? int8InputGrad(g!, [b, bScale, bt, btScale]) : o.matmul(g!, bt), ...none];
  },
  Reshape: view,
  ReshapeLike: (n, [g], need) => [need[0] ? reshapeBack(g!, n.inputs[0]!) : undefined, undefined],
  Transpose: (n, [g]) => {
    const inv = new Array<number>(n.attrs.perm.length);
    n.attrs.perm.forEach((p, i) => (inv[p] = i));
    return [o.transpose(g!, inv)];
  },
  Concat: (n, [g], need) => {
    const { axis } = n.attrs;
    const sizes = n.inputs.map((x) => x.shape[axis]!);
    const staticSum = (ds: Dim[]): number | undefined =>
      ds.every((d) => typeof d === 'number') ? (ds as number[]).reduce((p, q) => p + q, 0) : undefined;
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
  Slice: (n, [g]) => {
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
  // zeros shaped like the other parts around g, then x's (symbolic) shape back
  Chunk: (n, [g]) => {
    const x = n.inputs[0]!;
    const { axis, index, count } = n.attrs;
    const parts = Array.from({ length: count }, (_, i) => (i === index ? g! : o.zerosLike(o.chunk(x, axis, i, count))));
    return [o.reshapeLike(o.concat(parts, axis), x)];
  },
  Split: (n, gs) => [
    o.concat(
      n.outputs.map((y, i) => gs[i] ?? o.zerosLike(y)),
      n.attrs.axis,
    ),
  ],
  Pad: (n, [g]) => {
    let out = g!;
    const r = n.inputs[0]!.rank;
    for (let i = 0; i < r; i++) {
      const b = n.attrs.pads[i]!;
      const e = n.attrs.pads[r + i]!;
      if (b || e) out = o.slice(out, i, b, e ? -e : INT_MAX);
    }
    return [out];
  },
  Gather: (n, [g], need) => {
    if (!need[0]) return [undefined, undefined];
    if (n.attrs.axis !== 0) fail('Gather is differentiable along axis 0 only');
    const data = n.inputs[0]!;
    return [o.scatterAddRows(o.zerosLike(data), n.inputs[1]!, g!), undefined];
  },
  Where: (n, [g], need) => {
    const [c, a, b] = n.inputs as [Value, Value, Value];
    return [
      undefined,
      need[1] ? o.unbroadcast(o.where(c, g!, 0), a.shape) : undefined,
      need[2] ? o.unbroadcast(o.where(c, 0, g!), b.shape) : undefined,
    ];
  },
  ExpandLike: firstUnbroadcast,
  Unsqueeze: view,
  Squeeze: view,
  Cast: (n, [g]) => [isFloat(n.inputs[0]!.dtype) ? o.cast(g!, n.inputs[0]!.dtype) : undefined],
  Dropout: (n, [g]) => [o.dropout(g!, n.inputs[1]!, n.attrs.ratio), undefined],
  SoftmaxCrossEntropy: (n, [g]) => {
    const [logits, labels] = n.inputs as [Value, Value];
    const valid = o.not(o.equal(labels, labels.graph.scalar(n.attrs.ignoreIndex, 'int64')));
    const scale = o.mul(g!, o.cast(valid, logits.dtype));
    const safe = o.where(valid, labels, labels.graph.scalar(0, 'int64'));
    return [o.softmaxCrossEntropyGrad(logits, safe, scale), undefined];
  },
  SoftmaxCrossEntropyGrad: null,
  DimOf: null,
  ArangeOfDim: null,
  Size: null,
  ZerosLike: null,
  ScatterAddRows: null,
  BitShift: null,
  BitwiseAnd: null,
  // x in the forward pass, a constant to autodiff (torch's .detach()): null stops the dependency
  // sweep here, so nothing behind it gets a gradient through this path.
  StopGradient: null,
  // The replay that checkpoint() built (the region's saved forward values are never read).
  Checkpoint: (n, [g], need) => (g ? n.attrs.vjp(g, need) : n.inputs.map(() => undefined)),
};
