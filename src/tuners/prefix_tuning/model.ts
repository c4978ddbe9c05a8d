// Prefix tuning as an AdaptedModel: a learned prefix [P, num_layers * 2 * token_dim] becomes every
// layer's past keys and values (peft's get_prompt: view(B, P, 2L, heads, head_dim).permute(2, 0,
// 3, 1, 4).split(2)); the mask gets P leading ones and the real tokens take positions P..P+T-1.

import type { Value } from '../../graph/ir.js';
import * as o from '../../graph/ops.js';
import { type ForwardArgs, type ForwardResult, type KV, ModelError, type PretrainedModel } from '../../models/types.js';
import type { BuildContext } from '../../nn/context.js';
import type { TrainableTensor } from '../types.js';
import { normals } from '../../nn/random.js';
import { linearInit, promptRandom } from '../prompt_learning/init.js';
import {
  PromptLearningModel,
  type PromptLearningOptions,
  positionsFrom,
  prependOnes,
  repeatOverBatch,
  shiftPositions,
} from '../prompt_learning/model.js';
import type { PyJson } from '../../io/pyjson.js';
import { type PrefixTuningConfig, type PrefixTuningConfigInput, prefixTuningConfigToDisk, resolvePrefixTuningConfig } from './config.js';
import { savedPrefixTuningTensors } from './save.js';

export class PrefixTuningModel extends PromptLearningModel<PrefixTuningConfig> {
  readonly peftType = 'PREFIX_TUNING' as const;
  /** true while the projection MLP exists (a new adapter with prefix_projection); a loaded adapter holds the prefix itself */
  readonly projected: boolean;

  private constructor(
    base: PretrainedModel,
    config: PrefixTuningConfig,
    tensors: Map<string, TrainableTensor>,
    projected: boolean,
    adapterName?: string,
  ) {
    super(base, config, adapterName);
    this.projected = projected;
    for (const [k, t] of tensors) this.tensors.set(this.encoderName(k), t);
  }

  /** A new adapter (peft's get_peft_model), with torch's default initial values drawn from `seed`. */
  static create(base: PretrainedModel, input: PrefixTuningConfigInput, opts: PromptLearningOptions = {}): PrefixTuningModel {
    const cfg = resolvePrefixTuningConfig(base, input);
    const rng = promptRandom(opts.seed ?? 0);
    const P = cfg.numVirtualTokens;
    const width = cfg.numLayers * 2 * cfg.tokenDim;
    const t = new Map<string, TrainableTensor>();
    if (cfg.prefixProjection) {
      t.set('embedding.weight', { shape: [P, cfg.tokenDim], data: normals(rng, P * cfg.tokenDim) });
      const l0 = linearInit(rng, cfg.encoderHiddenSize, cfg.tokenDim);
      const l2 = linearInit(rng, width, cfg.encoderHiddenSize);
      t.set('transform.0.weight', l0.weight)
        .set('transform.0.bias', l0.bias)
        .set('transform.2.weight', l2.weight)
        .set('transform.2.bias', l2.bias);
    } else {
      t.set('embedding.weight', { shape: [P, width], data: normals(rng, P * width) });
    }
    return new PrefixTuningModel(base, cfg, t, cfg.prefixProjection, opts.adapterName);
  }

  /** An adapter from a saved prefix (the loader's entry point). */
  static fromState(
    base: PretrainedModel,
    config: PrefixTuningConfig,
    prefix: TrainableTensor,
    opts: PromptLearningOptions = {},
  ): PrefixTuningModel {
    return new PrefixTuningModel(base, config, new Map([['embedding.weight', prefix]]), false, opts.adapterName);
  }

  /** The prefix [P, num_layers * 2 * token_dim]: the embedding, or Linear -> Tanh -> Linear of it. */
  promptGraph(ctx: BuildContext): Value {
    const emb = this.param(ctx, this.encoderName('embedding.weight'));
    if (!this.projected) return emb;
    return ctx.graph.scope(this.encoderName('transform'), () => {
      const h = o.tanh(
        o.linear(emb, this.param(ctx, this.encoderName('transform.0.weight')), this.param(ctx, this.encoderName('transform.0.bias'))),
      );
      return o.linear(h, this.param(ctx, this.encoderName('transform.2.weight')), this.param(ctx, this.encoderName('transform.2.bias')));
    });
  }

  /** Per layer {key, value} [batch, kv_heads, P, head_dim], as peft's get_prompt lays the prefix out. */
  pastKeyValues(ctx: BuildContext, batchOf: Value): KV[] {
    const { numVirtualTokens: P, numLayers: L, numAttentionHeads: H, tokenDim: D } = this.config;
    const hd = D / H;
    const kv = o.transpose(o.reshape(this.promptGraph(ctx), [P, 2 * L, H, hd]), [1, 2, 0, 3]);
    const parts = o.split(kv, 0, new Array<number>(2 * L).fill(1)).map((x) => repeatOverBatch(x, batchOf));
    return Array.from({ length: L }, (_, i) => ({ key: parts[2 * i]!, value: parts[2 * i + 1]! }));
  }

  /**
   * Prefill (no `past`): the prefix is every layer's past and the mask gets P leading ones. Decode
   * steps (`past` given, already starting with the prefix) pass through; the caller's mask then
   * covers past (prefix included) + current tokens.
   */
  forward(ctx: BuildContext, args: ForwardArgs): ForwardResult {
    this.installClassifier(ctx);
    const tokens = args.inputIds ?? args.inputsEmbeds ?? fail('inputIds or inputsEmbeds is required');
    // BERT numbers positions from 0 whatever the past; transformers starts them after the past keys.
    const bertPositions = (offset: Value | number) =>
      this.base.family === 'bert' && !args.positionIds ? positionsFrom(tokens, offset) : args.positionIds;
    if (args.past && args.past.length) {
      return this.base.forward(ctx, { ...args, positionIds: bertPositions(o.dimOf(args.past[0]!.key, 2)) });
    }
    const P = this.config.numVirtualTokens;
    return this.base.forward(ctx, {
      ...args,
      past: this.pastKeyValues(ctx, tokens),
      attentionMask: prependOnes(args.attentionMask, P),
      positionIds: args.positionIds ? shiftPositions(args.positionIds, P) : bertPositions(P),
    });
  }

  configToDisk(): Record<string, PyJson> {
    return prefixTuningConfigToDisk(this.config);
  }

  protected savedPromptTensors(prompt: TrainableTensor): Map<string, TrainableTensor> {
    return savedPrefixTuningTensors(prompt);
  }
}

function fail(msg: string): never {
  throw new ModelError(msg);
}
