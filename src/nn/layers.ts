// The building blocks models share: linear layers (with tuner hooks), embeddings, norms, rotary
// embeddings and attention with transformers' masking rules.

import type { Value } from '../graph/ir.js';
import * as o from '../graph/ops.js';
import { quantLinear } from '../quant/matmul.js';
import type { BuildContext, LinearSpec } from './context.js';

/**
 * x @ W of a linear module's frozen base weight, without the bias. A 4-bit weight is held [out, in]
 * whatever the module's layout (as bitsandbytes' Linear4bit) and multiplied through QuantMatMul, so
 * its float32 matrix exists only while the product runs, in the forward and again in the backward.
 */
export function baseProduct(ctx: BuildContext, spec: LinearSpec, x: Value): Value {
  const name = `${spec.name}.weight`;
  if (ctx.weights.isQuantized(name)) {
    return ctx.quantKernel === 'dequantize' ? o.matmulT(x, ctx.quantizedWeight(name, x)) : quantLinear(x, ctx.quantizedOperands(name));
  }
  const int8 = ctx.int8Weight(name, spec.layout, spec.name === 'lm_head');
  if (int8) return o.int8Matmul(x, int8);
  return spec.layout === 'conv1d' ? o.matmul(x, ctx.weight(name)) : o.matmulT(x, ctx.weight(name));
}

/** Runs a linear module, through its tuner hook when one is installed. */
export function linear(ctx: BuildContext, spec: LinearSpec, x: Value): Value {
  const narrow = ctx.linearInputs.get(spec.name);
  if (narrow) x = narrow(x);
  const base = (inp: Value): Value => {
    const y = baseProduct(ctx, spec, inp);
    return spec.bias ? o.add(y, ctx.weight(`${spec.name}.bias`)) : y;
  };
  const hook = ctx.linearHooks.get(spec.name);
  return ctx.graph.scope(spec.name, () => (hook ? hook(x, base, spec, ctx) : base(x)));
}

/** An embedding lookup, through the module's tuner hook when one is installed. */
export function embedding(ctx: BuildContext, name: string, ids: Value): Value {
  const base = (): Value => ctx.halfEmbedding(`${name}.weight`, ids) ?? o.gather(ctx.weight(`${name}.weight`), ids, 0);
  const hook = ctx.embeddingHooks.get(name);
  return ctx.graph.scope(name, () => (hook ? hook(ids, base, ctx) : base()));
}

export function layerNorm(ctx: BuildContext, name: string, x: Value, eps: number): Value {
  return ctx.graph.scope(name, () => o.layerNorm(x, ctx.weight(`${name}.weight`), ctx.weight(`${name}.bias`), eps));
}

export function rmsNorm(ctx: BuildContext, name: string, x: Value, eps: number): Value {
  return ctx.graph.scope(name, () => o.rmsNorm(x, ctx.weight(`${name}.weight`), eps));
}

/** float32's most negative finite value: what transformers adds at masked attention positions. */
export const MASK_MIN = -3.4028234663852886e38;

/**
 * Additive attention bias [batch, 1, q, k]: 0 where query i may attend to key j, MASK_MIN elsewhere.
 * `attentionMask` is [batch, k] (1 = token, 0 = padding) over past + current keys; with `causal`,
 * key j is visible to query i when j <= i + past.
 */
export function attentionBias(attentionMask: Value, queries: Value, causal: boolean, pastLength?: Value, slidingWindow?: number): Value {
  const keyOk = o.unsqueeze(o.equal(attentionMask, o.cast(attentionMask.graph.scalar(1, 'int64'), attentionMask.dtype)), [1, 2]);
  let ok = keyOk;
  if (causal) {
    let qPos = o.arangeOfDim(queries, 1);
    if (pastLength) qPos = o.add(qPos, pastLength);
    const kPos = o.unsqueeze(o.arangeOfDim(attentionMask, 1), 0);
    const q = o.unsqueeze(qPos, 1);
    ok = o.and(keyOk, o.not(o.greater(kPos, q)));
    // transformers' sliding window: key j is visible to query i iff i - window < j <= i (cache positions)
    if (slidingWindow !== undefined) ok = o.and(ok, o.greater(kPos, o.sub(q, slidingWindow)));
  }
  return o.where(ok, 0, MASK_MIN);
}

/** [batch, seq, heads*dim] -> [batch, heads, seq, dim] */
export function splitHeads(x: Value, heads: number, dim: number): Value {
  return o.transpose(o.reshape(x, [0, 0, heads, dim]), [0, 2, 1, 3]);
}
/** [batch, heads, seq, dim] -> [batch, seq, heads*dim] */
export function mergeHeads(x: Value, heads: number, dim: number): Value {
  return o.reshape(o.transpose(x, [0, 2, 1, 3]), [0, 0, heads * dim]);
}

/** Repeats each key/value head for grouped-query attention: [b, kv, s, d] -> [b, kv*n, s, d]. */
export function repeatKV(x: Value, nRep: number): Value {
  if (nRep === 1) return x;
  const kv = x.shape[1] as number;
  const d = x.shape[3] as number;
  const copies = o.concat(
    Array.from({ length: nRep }, () => o.unsqueeze(x, 2)),
    2,
  );
  return o.reshape(copies, [0, kv * nRep, -1, d]);
}

/** Eager attention as transformers computes it: (q k^T) / sqrt(d) + bias, softmax, @ v. */
export function attention(q: Value, k: Value, v: Value, bias: Value, headDim: number): Value {
  const scores = o.add(o.div(o.matmul(q, o.transposeLast2(k)), Math.sqrt(headDim)), bias);
  return o.matmul(o.softmax(scores, -1), v);
}

/** Whether attentionOf uses groupedAttention; PEFT_GQA_GROUPED=0 in the environment turns it off (A/B timing). */
const GROUPED_QUERY_ATTENTION =
  (globalThis as { process?: { env?: Record<string, string | undefined> } }).process?.env?.PEFT_GQA_GROUPED !== '0';

/**
 * attention() of q with keys and values of `kvRep`-times fewer heads (grouped-query; 1: as many),
 * through ctx.recomputed: training with selectiveRecompute, the backward pass recomputes the
 * scores and probabilities from q, k and v instead of keeping them. With `groupedBias`
 * (groupedAttentionBias) the heads that share k and v are one matrix (groupedAttention); without
 * it, k and v are repeated per head.
 */
export function attentionOf(
  ctx: BuildContext,
  q: Value,
  k: Value,
  v: Value,
  bias: Value,
  headDim: number,
  kvRep = 1,
  groupedBias?: Value,
): Value {
  if (kvRep > 1 && groupedBias && GROUPED_QUERY_ATTENTION)
    return ctx.recomputed([q, k, v], ([q, k, v]) => groupedAttention(q!, k!, v!, groupedBias, headDim, kvRep));
  return ctx.recomputed([q, k, v], ([q, k, v]) => attention(q!, repeatKV(k!, kvRep), repeatKV(v!, kvRep), bias, headDim));
}

/**
 * An attention bias [batch, 1, q, k] for groupedAttention: its rows repeated nRep times,
 * [batch, 1, nRep*q, k] (row r*q + i is row i), or the bias itself when it has one row (it then
 * broadcasts over every row). Build it once per graph, outside the layers.
 */
export function groupedAttentionBias(bias: Value, nRep: number): Value {
  if (nRep === 1 || bias.shape[2] === 1) return bias;
  return o.concat(
    Array.from({ length: nRep }, () => bias),
    2,
  );
}

/**
 * attention() of q [b, kv*nRep, s, d] with keys and values of kv heads [b, kv, t, d], without
 * repeating them: the nRep query heads that share a key/value head are one matrix of nRep*s rows
 * ([b, kv, nRep*s, d], a reshape), so the products read k and v as they are and the backward pass
 * gets their gradients straight from the products (no copies, slices and sums over the repeats).
 * `groupedBias` as groupedAttentionBias returns it. The same values as attention() with repeatKV.
 */
function groupedAttention(q: Value, k: Value, v: Value, groupedBias: Value, headDim: number, nRep: number): Value {
  const heads = q.shape[1] as number;
  const qg = o.reshape(q, [0, heads / nRep, -1, headDim]);
  const out = attention(qg, k, v, groupedBias, headDim);
  return o.reshape(out, [0, heads, -1, headDim]);
}
