// What inference runs on: a base model or a model with adapters. Both build their forward pass in a
// BuildContext; an adapted model's trainable tensors become graph params, fed from their live host
// arrays at every run so a generation during training sees the current adapter values.

import type { Graph } from '../graph/ir.js';
import { BuildContext } from '../nn/context.js';
import type { HostTensor } from '../runtime/session.js';
import type { PretrainedModel } from '../models/types.js';
import type { AdaptedModel } from '../tuners/types.js';
import { GenerationError } from './config.js';

export type InferenceModel = PretrainedModel | AdaptedModel;

function isAdapted(m: InferenceModel): m is AdaptedModel {
  return 'base' in m && 'peftType' in m;
}

export function baseModel(m: InferenceModel): PretrainedModel {
  return isAdapted(m) ? m.base : m;
}

/**
 * A build context over the base weights, with the adapted model's trainable base weights as params.
 * `derivedFeeds` lets adapters feed tensors derived from their live ones (LoRA's scaling folded
 * into A or B; BuildOptions.derivedFeeds): the decoding sessions use it. `frozen` bakes every
 * param into the graph as a constant with its values now (BuildOptions.frozenParams): a session of
 * a frozen adapter is fed nothing of it; ctx.frozenParams() tells when the live values changed.
 */
export function inferenceContext(m: InferenceModel, graph: Graph, opts: { derivedFeeds?: boolean; frozen?: boolean } = {}): BuildContext {
  const base = baseModel(m);
  return new BuildContext(graph, base.weights, {
    trainable: isAdapted(m) ? m.trainableBaseWeights() : undefined,
    training: false,
    derivedFeeds: opts.derivedFeeds,
    frozenParams: opts.frozen ? () => liveTensors(m) : undefined,
  });
}

/** The model's live float32 tensors by name: its own parameters(), else the base's weights (as paramFeeds reads them). */
function liveTensors(m: InferenceModel): (name: string) => Float32Array | undefined {
  const own = isAdapted(m) ? m.parameters() : new Map<string, { data: Float32Array }>();
  const base = baseModel(m);
  return (name) => own.get(name)?.data ?? (base.weights.has(name) ? base.weights.get(name).data : undefined);
}

/** Host tensors for every graph param the forward pass created, by name. */
export function paramFeeds(m: InferenceModel, ctx: BuildContext): () => Record<string, HostTensor> {
  const names = [...ctx.params.keys()];
  const base = baseModel(m);
  // Copied, so the closure does not keep the context (and its graph's constants: a frozen adapter's copies) alive.
  const derivedFeeds = new Map(ctx.derived);
  return () => {
    const own = isAdapted(m) ? m.parameters() : new Map();
    const feeds: Record<string, HostTensor> = {};
    for (const name of names) {
      const derived = derivedFeeds.get(name);
      if (derived) {
        feeds[name] = derived();
        continue;
      }
      const t = own.get(name) ?? (base.weights.has(name) ? base.weights.get(name) : undefined);
      if (!t) throw new GenerationError(`the adapted model built a parameter "${name}" but parameters() does not hold it`);
      feeds[name] = { dtype: 'float32', shape: t.shape, data: t.data };
    }
    return feeds;
  };
}
