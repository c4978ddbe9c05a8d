// Folding IA3 vectors into the frozen base weights and taking them out again, as peft's
// IA3Linear.merge/unmerge do: in float32, respecting the weight layout ([out, in] for nn.Linear,
// [in, out] for GPT-2's Conv1D). The additive variant folds into the bias instead.

import type { WeightStore } from '../../nn/weights.js';
import { AdapterError } from '../types.js';
import type { IA3Variant } from './config.js';
import type { IA3Target } from './layer.js';

/** peft divides by (ia3_l + 1e-8) when unmerging, in float32. */
const UNMERGE_EPS = 1e-8;

function replace(weights: WeightStore, name: string, data: Float32Array): void {
  const w = weights.get(name);
  // The new tensor is no longer the bytes on disk: drop the file mapping.
  weights.set(name, { shape: [...w.shape], data });
}

function checkUntied(weights: WeightStore, name: string, module: string): void {
  if (weights.isAlias(name)) {
    throw new AdapterError(
      `cannot merge IA3 into ${module}: its weight is tied to ${weights.resolve(name)}, and merging would change both; use the adapter unmerged, or target another module`,
    );
  }
}

/**
 * Multiplies (merge) or divides (unmerge) the weight of `target` by its vector, and for
 * output-side targets the bias too. `vec` holds the [out, 1] or [1, in] vector's values.
 */
function scaleWeights(weights: WeightStore, t: IA3Target, vec: Float32Array, direction: 'merge' | 'unmerge'): void {
  const { spec, feedforward } = t;
  const wName = `${spec.name}.weight`;
  checkUntied(weights, wName, spec.name);
  const factor = new Float32Array(vec.length);
  for (let i = 0; i < vec.length; i++) factor[i] = direction === 'merge' ? vec[i]! : Math.fround(vec[i]! + UNMERGE_EPS);
  const w = weights.get(wName).data;
  const out = new Float32Array(w.length);
  const rows = spec.layout === 'conv1d' ? spec.inFeatures : spec.outFeatures;
  const cols = spec.layout === 'conv1d' ? spec.outFeatures : spec.inFeatures;
  // Which axis of the stored matrix the vector runs along.
  const alongRows = (spec.layout === 'conv1d') === feedforward;
  for (let r = 0; r < rows; r++) {
    for (let c = 0; c < cols; c++) {
      const f = factor[alongRows ? r : c]!;
      const i = r * cols + c;
      out[i] = direction === 'merge' ? w[i]! * f : w[i]! / f;
    }
  }
  replace(weights, wName, out);
  if (!feedforward && spec.bias) {
    const bName = `${spec.name}.bias`;
    const b = weights.get(bName).data;
    const nb = new Float32Array(b.length);
    for (let i = 0; i < b.length; i++) nb[i] = direction === 'merge' ? b[i]! * factor[i]! : b[i]! / factor[i]!;
    replace(weights, bName, nb);
  }
}

/** Adds (merge) or subtracts (unmerge) the additive vector's effect on the bias: m, or W m for input-side targets. */
function shiftBias(weights: WeightStore, t: IA3Target, vec: Float32Array, direction: 'merge' | 'unmerge'): void {
  const { spec, feedforward } = t;
  if (!spec.bias) {
    throw new AdapterError(
      `cannot merge the additive IA3 vector of ${spec.name}: the module has no bias to fold it into; use the adapter unmerged`,
    );
  }
  const bName = `${spec.name}.bias`;
  checkUntied(weights, bName, spec.name);
  const delta = new Float64Array(spec.outFeatures);
  if (!feedforward) {
    for (let o = 0; o < spec.outFeatures; o++) delta[o] = vec[o]!;
  } else {
    const w = weights.get(`${spec.name}.weight`).data;
    for (let o = 0; o < spec.outFeatures; o++) {
      let s = 0;
      for (let i = 0; i < spec.inFeatures; i++) {
        const wi = spec.layout === 'conv1d' ? w[i * spec.outFeatures + o]! : w[o * spec.inFeatures + i]!;
        s += wi * vec[i]!;
      }
      delta[o] = s;
    }
  }
  const b = weights.get(bName).data;
  const nb = new Float32Array(b.length);
  for (let o = 0; o < b.length; o++) nb[o] = direction === 'merge' ? b[o]! + delta[o]! : b[o]! - delta[o]!;
  replace(weights, bName, nb);
}

export function mergeTarget(weights: WeightStore, t: IA3Target, vec: Float32Array, variant: IA3Variant): void {
  if (variant === 'scale') scaleWeights(weights, t, vec, 'merge');
  else shiftBias(weights, t, vec, 'merge');
}

export function unmergeTarget(weights: WeightStore, t: IA3Target, vec: Float32Array, variant: IA3Variant): void {
  if (variant === 'scale') scaleWeights(weights, t, vec, 'unmerge');
  else shiftBias(weights, t, vec, 'unmerge');
}
