// Phi-3 / Phi-4-mini (Phi3ForCausalLM, model_type phi3): fused qkv_proj ([q | k | v] rows) and
// gate_up_proj ([gate | up] rows, down(up * silu(gate))), rotary embedding on the first
// head_dim * partial_rotary_factor channels of each head, longrope scaling with its attention
// factor, an optional sliding window over every layer, untied LM head by default.

import type { Value } from '../graph/ir.js';
import * as o from '../graph/ops.js';
import { type CommonConfig, ConfigError, type Fields, type ModelConfig, decoderFields } from '../io/hfconfig.js';
import type { BuildContext, LinearSpec } from '../nn/context.js';
import { attention, attentionBias, embedding, linear, mergeHeads, repeatKV, rmsNorm, splitHeads } from '../nn/layers.js';
import type { WeightStore } from '../nn/weights.js';
import { activation } from './activations.js';
import { appendPast, applySublayer, causalLmLoss, defaultPositions, inputEmbeddings, modulePaths } from './common.js';
import { applyRotary, rotaryTables } from './rope.js';
import { DECODER_BOTTLENECK } from './llama.js';
import { type ArchitectureDescriptor, type ForwardArgs, type ForwardResult, type KV, ModelError, type PretrainedModel } from './types.js';

export class Phi3Model implements PretrainedModel {
  readonly family = 'llama' as const;
  readonly task = 'causal-lm' as const;
  readonly causal = true;
  readonly numLayers: number;
  readonly numKVHeads: number;
  readonly headDim: number;
  readonly hiddenSize: number;
  readonly vocabSize: number;
  readonly embeddingName = 'model.embed_tokens';
  private readonly specs: LinearSpec[] = [];
  private readonly byName = new Map<string, LinearSpec>();

  constructor(readonly config: ModelConfig, readonly weights: WeightStore, readonly dir: string) {
    this.numLayers = config.numHiddenLayers;
    this.numKVHeads = config.numKeyValueHeads;
    this.headDim = config.headDim;
    this.hiddenSize = config.hiddenSize;
    this.vocabSize = config.vocabSize;
    const C = this.hiddenSize;
    const H = config.numAttentionHeads;
    const D = this.headDim;
    const F = config.intermediateSize;
    if (H % this.numKVHeads !== 0) throw new ModelError(`num_attention_heads ${H} is not a multiple of num_key_value_heads ${this.numKVHeads}`);
    for (let i = 0; i < this.numLayers; i++) {
      const p = `model.layers.${i}`;
      this.specs.push(
        { name: `${p}.self_attn.qkv_proj`, inFeatures: C, outFeatures: (H + 2 * this.numKVHeads) * D, bias: false, layout: 'linear' },
        { name: `${p}.self_attn.o_proj`, inFeatures: H * D, outFeatures: C, bias: false, layout: 'linear' },
        { name: `${p}.mlp.gate_up_proj`, inFeatures: C, outFeatures: 2 * F, bias: false, layout: 'linear' },
        { name: `${p}.mlp.down_proj`, inFeatures: F, outFeatures: C, bias: false, layout: 'linear' },
      );
    }
    this.specs.push({ name: 'lm_head', inFeatures: C, outFeatures: this.vocabSize, bias: false, layout: 'linear' });
    for (const s of this.specs) this.byName.set(s.name, s);
  }

  linears(): LinearSpec[] {
    return this.specs;
  }

  expectedWeights(): string[] {
    const names = ['model.embed_tokens.weight', 'model.norm.weight'];
    if (!this.config.tieWordEmbeddings) names.push('lm_head.weight');
    for (let i = 0; i < this.numLayers; i++) names.push(`model.layers.${i}.input_layernorm.weight`, `model.layers.${i}.post_attention_layernorm.weight`);
    for (const s of this.specs) if (s.name !== 'lm_head') names.push(`${s.name}.weight`);
    return names;
  }

  moduleNames(): string[] {
    return modulePaths([...this.expectedWeights(), 'lm_head.weight']);
  }

  embedTokens(ctx: BuildContext, ids: Value): Value {
    return embedding(ctx, 'model.embed_tokens', ids);
  }

  forward(ctx: BuildContext, args: ForwardArgs): ForwardResult {
    const cfg = this.config;
    const H = cfg.numAttentionHeads;
    const D = this.headDim;
    const KVH = this.numKVHeads;
    const F = cfg.intermediateSize;
    const eps = cfg.normEps;
    const rotaryDim = Math.floor(D * (cfg.partialRotaryFactor ?? 1));
    const spec = (n: string) => this.byName.get(n)!;
    let h = inputEmbeddings(this, ctx, args);
    const { positions, pastLength } = defaultPositions(h, args.past);
    const { cos, sin } = rotaryTables(ctx, args.positionIds ?? positions, {
      theta: cfg.ropeTheta ?? 10000,
      rotaryDim,
      scaling: cfg.ropeScaling,
      maxPositionEmbeddings: cfg.maxPositionEmbeddings,
      originalMaxPositionEmbeddings: cfg.originalMaxPositionEmbeddings,
    });
    const bias = attentionBias(args.attentionMask, h, true, pastLength, cfg.slidingWindow);
    const hidden: Value[] = [h];
    const presents: KV[] = [];
    for (let i = 0; i < this.numLayers; i++) {
      const p = `model.layers.${i}`;
      h = ctx.layer(h, (h) => ctx.graph.scope(p, () => {
        const x = rmsNorm(ctx, `${p}.input_layernorm`, h, eps);
        // one projection, one LoRA over its whole output (peft wraps the fused module)
        const [qf, kf, vf] = o.split(linear(ctx, spec(`${p}.self_attn.qkv_proj`), x), -1, [H * D, KVH * D, KVH * D]) as [Value, Value, Value];
        const q = applyRotary(splitHeads(qf, H, D), cos, sin, rotaryDim, D);
        const k = applyRotary(splitHeads(kf, KVH, D), cos, sin, rotaryDim, D);
        const { key, value } = appendPast(args.past?.[i], k, splitHeads(vf, KVH, D), presents);
        const ctxOut = attention(q, repeatKV(key, H / KVH), repeatKV(value, H / KVH), bias, D);
        const attnOut = linear(ctx, spec(`${p}.self_attn.o_proj`), mergeHeads(ctxOut, H, D));
        const afterAttn = applySublayer(ctx, `${i}.attn`, i, attnOut, h);
        const y = rmsNorm(ctx, `${p}.post_attention_layernorm`, afterAttn, eps);
        const [gate, up] = o.split(linear(ctx, spec(`${p}.mlp.gate_up_proj`), y), -1, [F, F]) as [Value, Value];
        const m = linear(ctx, spec(`${p}.mlp.down_proj`), o.mul(up, activation(cfg.hiddenAct, gate)));
        return applySublayer(ctx, `${i}.ffn`, i, m, afterAttn);
      }));
      hidden.push(h);
    }
    h = rmsNorm(ctx, 'model.norm', h, eps);
    hidden[hidden.length - 1] = h;
    return { logits: linear(ctx, spec('lm_head'), h), hiddenStates: hidden, presents };
  }

  loss(logits: Value, labels: Value): Value {
    return causalLmLoss(logits, labels);
  }
}

/** Phi-3: partial rotary, the pre-extension context for longrope, an optional sliding window over every layer. */
function phi3Fields(f: Fields, headDim: number): Partial<ModelConfig> {
  const factor = f.has("partial_rotary_factor") ? f.num("partial_rotary_factor", 1) : 1;
  const rotary = Math.floor(headDim * factor);
  if (factor > 1 || rotary < 2 || rotary % 2 !== 0) {
    throw new ConfigError(f.file, `${f.file}: partial_rotary_factor ${factor} gives ${rotary} rotary channels of head_dim ${headDim}; it must be an even number between 2 and head_dim.`, "partial_rotary_factor");
  }
  const window = f.optionalInt("sliding_window");
  return {
    partialRotaryFactor: factor,
    originalMaxPositionEmbeddings: f.int("original_max_position_embeddings", 4096),
    ...(window === undefined ? {} : { slidingWindow: window }),
  };
}

/** Phi3Config: no head_dim field (hidden / heads), max_position_embeddings 4096, then its own fields. */
function phi3Config(f: Fields, common: CommonConfig): ModelConfig {
  const c = decoderFields(f, common, { maxPositions: 4096, headDim: "derived" });
  return { ...c, ...phi3Fields(f, c.headDim) };
}

export const PHI3: ArchitectureDescriptor = {
  family: 'llama',
  displayName: 'Phi-3',
  modelTypes: ['phi3'],
  readConfig: phi3Config,
  classes: { Phi3ForCausalLM: (c, w, d) => new Phi3Model(c, w, d) },
  defaultClass: { phi3: 'Phi3ForCausalLM' },
  basePrefix: 'model.',
  positions: 'rotary',
  capabilities: { tiedEmbeddings: 'optional', slidingWindow: true, fusedProjections: ['qkv_proj', 'gate_up_proj'] },
  // peft has no default mapping for phi3: target_modules is required
  loraTargets: {},
  ia3Targets: {},
  bottleneck: DECODER_BOTTLENECK,
};
