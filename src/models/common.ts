// Pieces shared by the architecture files: input embeddings, position ids, the key/value cache,
// losses, module-name listings, and DecoderModel, the frame of the Llama-like decoders.

import type { Value } from '../graph/ir.js';
import * as o from '../graph/ops.js';
import type { ModelConfig } from '../io/hfconfig.js';
import type { BuildContext, LinearSpec } from '../nn/context.js';
import { embedding, linear } from '../nn/layers.js';
import type { WeightStore } from '../nn/weights.js';
import { type ForwardArgs, type ForwardResult, type KV, ModelError, type PretrainedModel } from './types.js';

/** inputs_embeds when given, else the token embeddings of input_ids. */
export function inputEmbeddings(model: PretrainedModel, ctx: BuildContext, args: ForwardArgs): Value {
  if (args.inputsEmbeds != null) return args.inputsEmbeds;
  if (args.inputIds == null) throw new ModelError('inputIds or inputsEmbeds is required');
  return model.embedTokens(ctx, args.inputIds);
}

/** arange(past, past + seq) for every row, as transformers builds position ids without a mask. */
export function defaultPositions(tokens: Value, past?: KV[]): { positions: Value; pastLength?: Value } {
  const pastLength = past && past.length ? o.dimOf(past[0]!.key, 2) : undefined;
  let pos = o.arangeOfDim(tokens, 1);
  if (pastLength) pos = o.add(pos, pastLength);
  return { positions: o.unsqueeze(pos, 0), pastLength };
}

/**
 * One layer's keys and values [batch, heads, past + seq, headDim]: the cached `past` (if any) in
 * front of this step's `k` and `v`, recorded in `presents` for the next decode step.
 */
export function appendPast(past: KV | undefined, k: Value, v: Value, presents: KV[]): KV {
  const key = past ? o.concat([past.key, k], 2) : k;
  const value = past ? o.concat([past.value, v], 2) : v;
  presents.push({ key, value });
  return { key, value };
}

/**
 * Causal-LM loss: logits[:, :-1] against labels[:, 1:], mean over labels != -100. As transformers'
 * ForCausalLMLoss, the labels are shifted left and padded with -100 rather than the logits sliced,
 * so the largest tensor of a training step is never copied.
 */
export function causalLmLoss(logits: Value, labels: Value): Value {
  const vocab = logits.shape[2] as number;
  const shifted = o.sub(o.pad(o.add(o.slice(labels, 1, 1), 100), [0, 0, 0, 1]), 100);
  return o.crossEntropyMean(o.reshape(logits, [-1, vocab]), o.reshape(shifted, [-1]));
}

/** Masked-LM loss: every position, mean over labels != -100. */
export function maskedLmLoss(logits: Value, labels: Value): Value {
  const vocab = logits.shape[2] as number;
  return o.crossEntropyMean(o.reshape(logits, [-1, vocab]), o.reshape(labels, [-1]));
}

/** Sequence classification: cross-entropy for several labels, MSE for one (regression). */
export function sequenceClassificationLoss(logits: Value, labels: Value): Value {
  const n = logits.shape[1] as number;
  if (n === 1) {
    const d = o.sub(o.squeeze(logits, 1), o.cast(labels, logits.dtype));
    return o.mean(o.mul(d, d));
  }
  return o.crossEntropyMean(logits, labels);
}

/** All prefixes of dotted names: "a.b.c" gives "a", "a.b", "a.b.c" (named_modules order aside). */
export function modulePaths(weightNames: Iterable<string>): string[] {
  const out = new Set<string>();
  for (const w of weightNames) {
    const parts = w.split('.');
    for (let i = 1; i < parts.length; i++) out.add(parts.slice(0, i).join('.'));
  }
  return [...out];
}

/** residual + output, unless a tuner hooks this sub-layer (bottleneck adapters). */
export function applySublayer(
  ctx: BuildContext,
  key: string,
  layer: number,
  output: Value,
  residual: Value,
  norm?: (x: Value) => Value,
): Value {
  const hook = ctx.sublayerHooks.get(key);
  if (hook) return hook({ layer, output, residual, norm, ctx });
  return norm ? norm(o.add(output, residual)) : o.add(output, residual);
}

/**
 * What every architecture class shares: the config, weights and folder it was built from, the sizes
 * read from the config, its linear modules (each added once by the constructor with `addLinear`,
 * then found by name) and the token-embedding lookup. A subclass adds its layout and forward pass.
 */
export abstract class ModelBase {
  readonly numLayers: number;
  readonly numKVHeads: number;
  readonly headDim: number;
  readonly hiddenSize: number;
  readonly vocabSize: number;
  /** module path of the token embedding */
  abstract readonly embeddingName: string;
  private readonly specs: LinearSpec[] = [];
  private readonly byName = new Map<string, LinearSpec>();

  /** `numKVHeads`: the key/value heads (the attention heads, unless the model groups queries). */
  constructor(
    readonly config: ModelConfig,
    readonly weights: WeightStore,
    readonly dir: string,
    numKVHeads = config.numAttentionHeads,
  ) {
    this.numLayers = config.numHiddenLayers;
    this.numKVHeads = numKVHeads;
    this.headDim = config.headDim;
    this.hiddenSize = config.hiddenSize;
    this.vocabSize = config.vocabSize;
  }

  protected addLinear(name: string, inFeatures: number, outFeatures: number, bias: boolean, layout: LinearSpec['layout'] = 'linear'): void {
    const s: LinearSpec = { name, inFeatures, outFeatures, bias, layout };
    this.specs.push(s);
    this.byName.set(name, s);
  }

  linears(): LinearSpec[] {
    return this.specs;
  }

  protected spec(name: string): LinearSpec {
    return this.byName.get(name)!;
  }

  abstract expectedWeights(): string[];

  moduleNames(): string[] {
    return modulePaths(this.expectedWeights());
  }

  embedTokens(ctx: BuildContext, ids: Value): Value {
    return embedding(ctx, this.embeddingName, ids);
  }
}

/** The linears of a Llama-style layer `p`: q/k/v/o projections (grouped-query) and the gated MLP. */
export function llamaLayerLinears(p: string, config: ModelConfig, bias: { qkv: boolean; out: boolean; mlp: boolean }): LinearSpec[] {
  const C = config.hiddenSize;
  const H = config.numAttentionHeads;
  const D = config.headDim;
  const KVd = config.numKeyValueHeads * D;
  const F = config.intermediateSize;
  const lin = (name: string, inFeatures: number, outFeatures: number, b: boolean): LinearSpec => ({
    name: `${p}.${name}`,
    inFeatures,
    outFeatures,
    bias: b,
    layout: 'linear',
  });
  return [
    lin('self_attn.q_proj', C, H * D, bias.qkv),
    lin('self_attn.k_proj', C, KVd, bias.qkv),
    lin('self_attn.v_proj', C, KVd, bias.qkv),
    lin('self_attn.o_proj', H * D, C, bias.out),
    lin('mlp.gate_proj', C, F, bias.mlp),
    lin('mlp.up_proj', C, F, bias.mlp),
    lin('mlp.down_proj', F, C, bias.mlp),
  ];
}

/**
 * The frame the Llama-like decoders share (llama.ts, phi3.ts, gemma3.ts): token embeddings at
 * model.embed_tokens, layers at model.layers.<i>, a final model.norm and an lm_head, grouped-query
 * attention heads, the causal-LM loss. A subclass lists each layer's linears and norm weights and
 * writes the layer itself; `decode` runs the layers with the KV cache and checkpointing.
 */
export abstract class DecoderModel extends ModelBase implements PretrainedModel {
  readonly family = 'llama' as const;
  readonly task = 'causal-lm' as const;
  readonly causal = true;
  readonly embeddingName = 'model.embed_tokens';

  constructor(config: ModelConfig, weights: WeightStore, dir: string) {
    super(config, weights, dir, config.numKeyValueHeads);
    const H = config.numAttentionHeads;
    if (H % this.numKVHeads !== 0)
      throw new ModelError(`num_attention_heads ${H} is not a multiple of num_key_value_heads ${this.numKVHeads}`);
    for (let i = 0; i < this.numLayers; i++)
      for (const s of this.layerLinears(`model.layers.${i}`, config)) this.addLinear(s.name, s.inFeatures, s.outFeatures, s.bias, s.layout);
    this.addLinear('lm_head', this.hiddenSize, this.vocabSize, false);
  }

  /** The linear modules of one decoder layer (`prefix` = model.layers.<i>); called from the constructor, so it may read only `config`. */
  protected abstract layerLinears(prefix: string, config: ModelConfig): LinearSpec[];
  /** The weight names of one decoder layer's norms. */
  protected abstract layerNorms(prefix: string): string[];

  expectedWeights(): string[] {
    const names = ['model.embed_tokens.weight', 'model.norm.weight'];
    if (!this.config.tieWordEmbeddings) names.push('lm_head.weight');
    for (let i = 0; i < this.numLayers; i++) names.push(...this.layerNorms(`model.layers.${i}`));
    for (const s of this.linears()) {
      if (s.name === 'lm_head') continue;
      names.push(`${s.name}.weight`);
      if (s.bias) names.push(`${s.name}.bias`);
    }
    return names;
  }

  override moduleNames(): string[] {
    return modulePaths([...this.expectedWeights(), 'lm_head.weight']);
  }

  abstract forward(ctx: BuildContext, args: ForwardArgs): ForwardResult;

  /**
   * The decoder layers over the embeddings `h`, each `layer` run in its scope as a ctx.layer (so
   * gradient checkpointing recomputes it in the backward pass) and adding its keys and values to
   * `presents`; then `finalNorm` and the LM head.
   */
  protected decode(
    ctx: BuildContext,
    h: Value,
    layer: (h: Value, i: number, prefix: string, presents: KV[]) => Value,
    finalNorm: (h: Value) => Value,
  ): ForwardResult {
    const hidden: Value[] = [h];
    const presents: KV[] = [];
    for (let i = 0; i < this.numLayers; i++) {
      const p = `model.layers.${i}`;
      h = ctx.layer(i, h, (h) => ctx.graph.scope(p, () => layer(h, i, p, presents)));
      hidden.push(h);
    }
    h = finalNorm(h);
    hidden[hidden.length - 1] = h;
    return { logits: linear(ctx, this.spec('lm_head'), h), hiddenStates: hidden, presents };
  }

  loss(logits: Value, labels: Value): Value {
    return causalLmLoss(logits, labels);
  }
}
