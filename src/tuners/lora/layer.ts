// The LoRA layer: what a wrapped linear module computes, as graph. y = base(x) + B(A(dropout(x))) * s,
// with variants (plain LoRA, DoRA) as strategy objects that say what extra tensors they train, how
// they change the forward pass, and how they fold into the base weight when merged.

import type { Value } from '../../graph/ir.js';
import * as o from '../../graph/ops.js';
import type { LinearSpec } from '../../nn/context.js';
import type { TrainableTensor } from '../types.js';

/** One wrapped module of one adapter: its rank, scaling and tensors (host copies, updated in place by training). */
export interface LoraModuleState {
  spec: LinearSpec;
  r: number;
  alpha: number;
  scaling: number;
  dropout: number;
  variant: LoraVariant;
  /** lora_A.weight [r, in] */
  A: TrainableTensor;
  /** lora_B.weight [out, r] */
  B: TrainableTensor;
  /** DoRA's lora_magnitude_vector [out] */
  magnitude?: TrainableTensor;
  /** lora_bias=true: lora_B.bias [out] */
  bias?: TrainableTensor;
}

/** The graph values of one module's adapter tensors. */
export interface LoraValues {
  A: Value;
  B: Value;
  magnitude?: Value;
  /** lora_B.bias (lora_bias=true) */
  bias?: Value;
}

export interface VariantForwardArgs {
  /** the module's output so far (base output plus earlier adapters) */
  result: Value;
  /** the module input, and after this adapter's dropout */
  x: Value;
  xDropped: Value;
  /** x @ W (no bias), the base layer's matmul on the un-dropped input; built on first use */
  baseMatmul: () => Value;
  /** inp @ W (no bias) for another input; a 4-bit base weight goes through QuantMatMul (default: baseMatmul(inp, weight())) */
  product?: (inp: Value) => Value;
  /** the base weight as stored (Conv1D: [in, out]); built on first use, so a variant that does not
   * need it works over any base layer (e.g. a quantized one another hook computes) */
  weight: () => Value;
  spec: LinearSpec;
  t: LoraValues;
  scaling: number;
  /** plain LoRA: x @ A^T already computed (a slice of one product shared by modules with the same input; LoraModel.sharedDown) */
  xA?: Value;
}

/** A LoRA variant (peft's LoraVariant): plain LoRA or DoRA. */
export interface LoraVariant {
  readonly name: 'lora' | 'dora';
  /** whether the module trains lora_magnitude_vector */
  readonly hasMagnitude: boolean;
  forward(a: VariantForwardArgs): Value;
  /** The merged weight, in the stored layout. */
  merge(weight: Value, spec: LinearSpec, t: LoraValues, scaling: number): Value;
}

/** x @ W for a base weight in its stored layout. */
export function baseMatmul(x: Value, weight: Value, spec: LinearSpec): Value {
  return spec.layout === 'conv1d' ? o.matmul(x, weight) : o.matmulT(x, weight);
}

/** lora_B(lora_A(x)): two thin matmuls, never the [out, in] product (plus lora_B's bias with lora_bias). */
function loraPath(x: Value, t: LoraValues, xA?: Value): Value {
  const y = o.matmulT(xA ?? o.matmulT(x, t.A), t.B);
  return t.bias ? o.add(y, t.bias) : y;
}

/** scaling * B @ A in the stored layout of the base weight (peft's get_delta_weight). */
function deltaWeight(spec: LinearSpec, t: LoraValues, scaling: number): Value {
  const d = o.mul(o.matmul(t.B, t.A), scaling);
  return spec.layout === 'conv1d' ? o.transpose(d, [1, 0]) : d;
}

/** Row norms of W + scaling * B @ A per output feature (peft DoraLinearLayer.get_weight_norm), shape [out]. */
export function doraWeightNorm(weight: Value, spec: LinearSpec, loraWeight: Value, scaling: number): Value {
  // In the stored layout: Conv1D keeps outputs in columns, so reduce over rows instead of transposing W.
  const lw = spec.layout === 'conv1d' ? o.transpose(loraWeight, [1, 0]) : loraWeight;
  const w = o.add(weight, o.mul(lw, scaling));
  return o.sqrt(o.sum(o.mul(w, w), spec.layout === 'conv1d' ? 0 : 1));
}

const PLAIN_LORA: LoraVariant = {
  name: 'lora',
  hasMagnitude: false,
  // scaling 1: none in the graph (decoding folds it into A or B; see LoraModel.linearForward)
  forward: ({ result, xDropped, t, scaling, xA }) =>
    o.add(result, scaling === 1 ? loraPath(xDropped, t, xA) : o.mul(loraPath(xDropped, t, xA), scaling)),
  merge: (weight, spec, t, scaling) => o.add(weight, deltaWeight(spec, t, scaling)),
};

/**
 * DoRA (peft 0.13.2): result + (m/||W + sBA|| - 1) * (x W) + (m/||W + sBA||) * s B(A(x)).
 * The norm is detached (DoRA paper, section 4.3): a constant to autodiff, so A and B get no
 * gradient through it while it still follows their current values in the forward pass.
 */
const DORA: LoraVariant = {
  name: 'dora',
  hasMagnitude: true,
  forward: ({ result, x, xDropped, baseMatmul: xw, product, weight: w, spec, t, scaling }) => {
    const weight = w();
    const norm = o.stopGradient(doraWeightNorm(weight, spec, o.matmul(t.B, t.A), scaling));
    const mag = o.div(t.magnitude!, norm);
    // With dropout active peft recomputes the base matmul on the dropped input.
    const base = xDropped === x ? xw() : product ? product(xDropped) : baseMatmul(xDropped, weight, spec);
    const lora = o.mul(o.mul(mag, loraPath(xDropped, t)), scaling);
    return o.add(result, o.add(o.mul(o.sub(mag, 1), base), lora));
  },
  merge: (weight, spec, t, scaling) => {
    const delta = deltaWeight(spec, t, scaling);
    const merged = o.add(weight, delta);
    // delta already carries the scaling: the norm of W + delta (peft passes scaling=1 here).
    const w2 = o.mul(merged, merged);
    const norm = o.sqrt(o.sum(w2, spec.layout === 'conv1d' ? 0 : 1, true));
    return o.mul(o.div(spec.layout === 'conv1d' ? o.reshape(t.magnitude!, [1, -1]) : o.reshape(t.magnitude!, [-1, 1]), norm), merged);
  },
};

export function variantFor(useDora: boolean): LoraVariant {
  return useDora ? DORA : PLAIN_LORA;
}

/** One LoRA on an nn.Embedding of one adapter (peft lora.Embedding). */
export interface LoraEmbeddingState {
  /** module name of the embedding (e.g. model.embed_tokens) */
  name: string;
  numEmbeddings: number;
  embeddingDim: number;
  r: number;
  alpha: number;
  scaling: number;
  /** lora_embedding_A [r, num_embeddings] */
  A: TrainableTensor;
  /** lora_embedding_B [embedding_dim, r] */
  B: TrainableTensor;
  /** DoRA: lora_magnitude_vector [embedding_dim] (one magnitude per embedding column) */
  magnitude?: TrainableTensor;
}

/** scaling * (B @ A)^T: the embedding LoRA's delta in the weight's [num_embeddings, dim] layout. */
function embeddingDelta(A: Value, B: Value, scaling: number): Value {
  return o.mul(o.transpose(o.matmul(B, A), [1, 0]), scaling);
}

/**
 * peft's Embedding forward for one adapter: `result` is the lookup so far (base rows), `ids` the
 * token ids, `weight()` the base matrix [V, H]. Plain: result + (A^T[ids] @ B^T) * s (no dropout, as
 * peft). DoRA (DoraEmbeddingVariant): m/||E^T + s (BA)||_row (detached) scales the base lookup and the
 * LoRA path; the magnitude is per embedding column.
 */
export function embeddingForward(
  result: Value,
  ids: Value,
  weight: () => Value,
  t: { A: Value; B: Value; magnitude?: Value },
  scaling: number,
): Value {
  const afterA = o.gather(o.transpose(t.A, [1, 0]), ids, 0);
  const lora = o.mul(o.matmulT(afterA, t.B), scaling);
  if (!t.magnitude) return o.add(result, lora);
  const merged = o.add(weight(), embeddingDelta(t.A, t.B, scaling));
  const norm = o.stopGradient(o.sqrt(o.sum(o.mul(merged, merged), 0)));
  const scale = o.div(t.magnitude, norm);
  return o.add(o.mul(scale, result), o.mul(scale, lora));
}

/** The merged embedding matrix: E + s(BA)^T, DoRA: (m/||E + s(BA)^T||_col) * (E + s(BA)^T). */
export function embeddingMerge(weight: Value, t: { A: Value; B: Value; magnitude?: Value }, scaling: number): Value {
  const merged = o.add(weight, embeddingDelta(t.A, t.B, scaling));
  if (!t.magnitude) return merged;
  const norm = o.sqrt(o.sum(o.mul(merged, merged), 0, true));
  return o.mul(o.div(o.reshape(t.magnitude, [1, -1]), norm), merged);
}

/** DoRA's initial embedding magnitude: column norms of E + s(BA)^T, [dim]. */
export function embeddingDoraNorm(weight: Value, t: { A: Value; B: Value }, scaling: number): Value {
  const merged = o.add(weight, embeddingDelta(t.A, t.B, scaling));
  return o.sqrt(o.sum(o.mul(merged, merged), 0));
}

/**
 * peft's TrainableTokens: the rows `indices` of a [V, H] matrix replaced by `delta` (which holds the
 * replacement rows, despite its name). For a lookup: result + onehot(ids ∈ indices) @ (delta - W[indices]);
 * `baseRows` is W[indices] as a constant.
 */
export function tokensLookup(result: Value, ids: Value, indices: Value, delta: Value, baseRows: Value): Value {
  const hit = o.cast(o.equal(o.unsqueeze(ids, [-1]), indices), 'float32');
  return o.add(result, o.matmul(hit, o.sub(delta, baseRows)));
}

/** The same replacement for an output projection x @ W^T: result + (x @ (delta - W[indices])^T) @ onehot [n, V]. */
export function tokensProjection(result: Value, x: Value, delta: Value, baseRows: Value, onehot: Value): Value {
  return o.add(result, o.matmul(o.matmulT(x, o.sub(delta, baseRows)), onehot));
}
