// Gemma 3 text (Gemma3ForCausalLM, model_type gemma3_text): token embeddings scaled by
// sqrt(hidden_size); every RMSNorm multiplies by (1 + weight); per-head q_norm/k_norm before RoPE;
// sliding-window and global layers by layer_types, each with its own RoPE base (rope_scaling only
// on global layers); attention scaled by query_pre_attn_scalar ** -0.5; norms before and after
// both the attention and the feed-forward block; gelu_pytorch_tanh gated MLP; tied LM head.

import type { Value } from '../graph/ir.js';
import * as o from '../graph/ops.js';
import { type CommonConfig, ConfigError, type Fields, type ModelConfig, decoderFields } from '../io/hfconfig.js';
import type { BuildContext, LinearSpec } from '../nn/context.js';
import { attentionBias, embedding, linear, mergeHeads, repeatKV, splitHeads } from '../nn/layers.js';
import type { WeightStore } from '../nn/weights.js';
import { activation } from './activations.js';
import { DecoderModel, appendPast, llamaLayerLinears, applySublayer, defaultPositions, inputEmbeddings } from './common.js';
import { applyRotary, rotaryTables } from './rope.js';
import { DECODER_BOTTLENECK } from './llama.js';
import type { ArchitectureDescriptor, ForwardArgs, ForwardResult, KV } from './types.js';

/** Gemma3RMSNorm: x / sqrt(mean(x^2) + eps) * (1 + w), in float32. */
function gemmaNorm(ctx: BuildContext, name: string, x: Value, eps: number): Value {
  return ctx.graph.scope(name, () => {
    const variance = o.mean(o.mul(x, x), -1, true);
    return o.mul(o.mul(x, o.reciprocal(o.sqrt(o.add(variance, eps)))), o.add(ctx.weight(`${name}.weight`), 1));
  });
}

const LAYER_NORMS = ['input_layernorm', 'post_attention_layernorm', 'pre_feedforward_layernorm', 'post_feedforward_layernorm'];

class Gemma3Model extends DecoderModel {
  private readonly layerTypes: string[];

  constructor(config: ModelConfig, weights: WeightStore, dir: string) {
    super(config, weights, dir);
    this.layerTypes = config.layerTypes ?? Array<string>(this.numLayers).fill('full_attention');
  }

  protected layerLinears(p: string, config: ModelConfig): LinearSpec[] {
    return llamaLayerLinears(p, config, { qkv: config.attentionBias, out: config.attentionBias, mlp: false });
  }

  protected layerNorms(p: string): string[] {
    return [...LAYER_NORMS.map((n) => `${p}.${n}.weight`), `${p}.self_attn.q_norm.weight`, `${p}.self_attn.k_norm.weight`];
  }

  /** Gemma3TextScaledWordEmbedding: the lookup times sqrt(hidden_size) (a float32 constant). */
  override embedTokens(ctx: BuildContext, ids: Value): Value {
    return o.mul(embedding(ctx, 'model.embed_tokens', ids), Math.fround(Math.sqrt(this.hiddenSize)));
  }

  forward(ctx: BuildContext, args: ForwardArgs): ForwardResult {
    const cfg = this.config;
    const H = cfg.numAttentionHeads;
    const D = this.headDim;
    const KVH = this.numKVHeads;
    const eps = cfg.normEps;
    const h = inputEmbeddings(this, ctx, args);
    const { positions, pastLength } = defaultPositions(h, args.past);
    const pos = args.positionIds ?? positions;
    const base = { rotaryDim: D, maxPositionEmbeddings: cfg.maxPositionEmbeddings };
    const rope = {
      full_attention: rotaryTables(ctx, pos, { ...base, theta: cfg.ropeTheta ?? 1e6, scaling: cfg.ropeScaling }, 'rotary_emb'),
      sliding_attention: rotaryTables(ctx, pos, { ...base, theta: cfg.ropeLocalTheta ?? 10000 }, 'rotary_emb_local'),
    } as Record<string, { cos: Value; sin: Value }>;
    const bias = {
      full_attention: attentionBias(args.attentionMask, h, true, pastLength),
      sliding_attention: attentionBias(args.attentionMask, h, true, pastLength, cfg.slidingWindow ?? 4096),
    } as Record<string, Value>;
    const scale = 1 / Math.sqrt(cfg.queryPreAttnScalar ?? D);
    const layer = (h: Value, i: number, p: string, presents: KV[]): Value => {
      const type = this.layerTypes[i]!;
      const { cos, sin } = rope[type]!;
      const x = gemmaNorm(ctx, `${p}.input_layernorm`, h, eps);
      const q = applyRotary(
        gemmaNorm(ctx, `${p}.self_attn.q_norm`, splitHeads(linear(ctx, this.spec(`${p}.self_attn.q_proj`), x), H, D), eps),
        cos,
        sin,
        D,
        D,
      );
      const k = applyRotary(
        gemmaNorm(ctx, `${p}.self_attn.k_norm`, splitHeads(linear(ctx, this.spec(`${p}.self_attn.k_proj`), x), KVH, D), eps),
        cos,
        sin,
        D,
        D,
      );
      const v = splitHeads(linear(ctx, this.spec(`${p}.self_attn.v_proj`), x), KVH, D);
      const { key, value } = appendPast(args.past?.[i], k, v, presents);
      const scores = o.add(o.mul(o.matmul(q, o.transposeLast2(repeatKV(key, H / KVH))), scale), bias[type]!);
      const ctxOut = o.matmul(o.softmax(scores, -1), repeatKV(value, H / KVH));
      const attnOut = gemmaNorm(
        ctx,
        `${p}.post_attention_layernorm`,
        linear(ctx, this.spec(`${p}.self_attn.o_proj`), mergeHeads(ctxOut, H, D)),
        eps,
      );
      const afterAttn = applySublayer(ctx, `${i}.attn`, i, attnOut, h);
      const y = gemmaNorm(ctx, `${p}.pre_feedforward_layernorm`, afterAttn, eps);
      const gate = activation(cfg.hiddenAct, linear(ctx, this.spec(`${p}.mlp.gate_proj`), y));
      const m = linear(ctx, this.spec(`${p}.mlp.down_proj`), o.mul(gate, linear(ctx, this.spec(`${p}.mlp.up_proj`), y)));
      return applySublayer(ctx, `${i}.ffn`, i, gemmaNorm(ctx, `${p}.post_feedforward_layernorm`, m, eps), afterAttn);
    };
    return this.decode(ctx, h, layer, (h) => gemmaNorm(ctx, 'model.norm', h, eps));
  }
}

/** Gemma 3 text: layer types, the local RoPE base, the attention scale, its sliding window; softcapping is refused. */
function gemma3Fields(f: Fields, layers: number): Partial<ModelConfig> {
  for (const cap of ['attn_logit_softcapping', 'final_logit_softcapping']) {
    if (f.has(cap)) {
      throw new ConfigError(
        f.file,
        `${f.file}: ${cap} is set; logit softcapping (a Gemma 2 feature, off in Gemma 3) is not implemented. Set it to null.`,
        cap,
      );
    }
  }
  if (f.bool('use_bidirectional_attention', false)) {
    throw new ConfigError(
      f.file,
      `${f.file}: use_bidirectional_attention is true (an embedding model); only causal Gemma 3 is implemented.`,
      'use_bidirectional_attention',
    );
  }
  let layerTypes: string[];
  const raw = f.raw.layer_types;
  if (raw === undefined || raw === null) {
    // Gemma3TextConfig: every sliding_window_pattern-th layer (1-based) is global.
    const pattern = f.int('_sliding_window_pattern', f.int('sliding_window_pattern', 6));
    layerTypes = Array.from({ length: layers }, (_, i) => ((i + 1) % pattern !== 0 ? 'sliding_attention' : 'full_attention'));
  } else {
    if (!Array.isArray(raw) || raw.length !== layers || !raw.every((t) => t === 'sliding_attention' || t === 'full_attention')) {
      throw new ConfigError(
        f.file,
        `${f.file}: field "layer_types" must list "sliding_attention" or "full_attention" for each of the ${layers} layers.`,
        'layer_types',
      );
    }
    layerTypes = raw as string[];
  }
  return {
    layerTypes,
    slidingWindow: f.int('sliding_window', 4096),
    queryPreAttnScalar: f.num('query_pre_attn_scalar', 256),
    ropeLocalTheta: f.num('rope_local_base_freq', 10000),
  };
}

/** Gemma3TextConfig: head_dim 256 and tied embeddings by default, hidden_activation, then its own fields. */
function gemma3Config(f: Fields, common: CommonConfig): ModelConfig {
  // Gemma3TextConfig's head_dim defaults to 256 whatever the hidden size; config.json has no
  // tie_word_embeddings key (PretrainedConfig's default, true, applies).
  const c = decoderFields(f, common, {
    maxPositions: 131072,
    headDim: 256,
    activation: ['hidden_activation', 'gelu_pytorch_tanh'],
    tie: true,
  });
  return { ...c, ...gemma3Fields(f, c.numHiddenLayers) };
}

export const GEMMA3: ArchitectureDescriptor = {
  family: 'llama',
  displayName: 'Gemma 3',
  modelTypes: ['gemma3_text'],
  readConfig: gemma3Config,
  classes: { Gemma3ForCausalLM: (c, w, d) => new Gemma3Model(c, w, d) },
  defaultClass: { gemma3_text: 'Gemma3ForCausalLM' },
  basePrefix: 'model.',
  positions: 'rotary',
  capabilities: { tiedEmbeddings: 'default', slidingWindow: true },
  loraTargets: { gemma3_text: ['q_proj', 'v_proj'] },
  ia3Targets: {},
  bottleneck: DECODER_BOTTLENECK,
};
