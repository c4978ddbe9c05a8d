// Phi-3 / Phi-4-mini (Phi3ForCausalLM, model_type phi3): fused qkv_proj ([q | k | v] rows) and
// gate_up_proj ([gate | up] rows, down(up * silu(gate))), rotary embedding on the first
// head_dim * partial_rotary_factor channels of each head, longrope scaling with its attention
// factor, an optional sliding window over every layer, untied LM head by default.

import type { Value } from '../graph/ir.js';
import * as o from '../graph/ops.js';
import { type CommonConfig, ConfigError, type Fields, type ModelConfig, decoderFields } from '../io/hfconfig.js';
import type { BuildContext, LinearSpec } from '../nn/context.js';
import { attentionBias, attentionOf, linear, mergeHeads, rmsNorm, splitHeads } from '../nn/layers.js';
import { activation } from './activations.js';
import { DecoderModel, appendPast, applySublayer, defaultPositions, inputEmbeddings } from './common.js';
import { applyRotary, rotaryTables } from './rope.js';
import { DECODER_BOTTLENECK } from './llama.js';
import type { ArchitectureDescriptor, ForwardArgs, ForwardResult, KV } from './types.js';

class Phi3Model extends DecoderModel {
  protected layerLinears(p: string, config: ModelConfig): LinearSpec[] {
    const C = config.hiddenSize;
    const H = config.numAttentionHeads;
    const D = config.headDim;
    const F = config.intermediateSize;
    return [
      { name: `${p}.self_attn.qkv_proj`, inFeatures: C, outFeatures: (H + 2 * config.numKeyValueHeads) * D, bias: false, layout: 'linear' },
      { name: `${p}.self_attn.o_proj`, inFeatures: H * D, outFeatures: C, bias: false, layout: 'linear' },
      { name: `${p}.mlp.gate_up_proj`, inFeatures: C, outFeatures: 2 * F, bias: false, layout: 'linear' },
      { name: `${p}.mlp.down_proj`, inFeatures: F, outFeatures: C, bias: false, layout: 'linear' },
    ];
  }

  protected layerNorms(p: string): string[] {
    return [`${p}.input_layernorm.weight`, `${p}.post_attention_layernorm.weight`];
  }

  forward(ctx: BuildContext, args: ForwardArgs): ForwardResult {
    const cfg = this.config;
    const H = cfg.numAttentionHeads;
    const D = this.headDim;
    const KVH = this.numKVHeads;
    const F = cfg.intermediateSize;
    const eps = cfg.normEps;
    const rotaryDim = Math.floor(D * (cfg.partialRotaryFactor ?? 1));
    const h = inputEmbeddings(this, ctx, args);
    const { positions, pastLength } = defaultPositions(h, args.past);
    const { cos, sin } = rotaryTables(ctx, args.positionIds ?? positions, {
      theta: cfg.ropeTheta ?? 10000,
      rotaryDim,
      scaling: cfg.ropeScaling,
      maxPositionEmbeddings: cfg.maxPositionEmbeddings,
      originalMaxPositionEmbeddings: cfg.originalMaxPositionEmbeddings,
    });
    const bias = attentionBias(args.attentionMask, h, true, pastLength, cfg.slidingWindow);
    const layer = (h: Value, i: number, p: string, presents: KV[]): Value => {
      const x = rmsNorm(ctx, `${p}.input_layernorm`, h, eps);
      // one projection, one LoRA over its whole output (peft wraps the fused module)
      const [qf, kf, vf] = o.split(linear(ctx, this.spec(`${p}.self_attn.qkv_proj`), x), -1, [H * D, KVH * D, KVH * D]) as [
        Value,
        Value,
        Value,
      ];
      const q = applyRotary(splitHeads(qf, H, D), cos, sin, rotaryDim, D);
      const k = applyRotary(splitHeads(kf, KVH, D), cos, sin, rotaryDim, D);
      const { key, value } = appendPast(args.past?.[i], k, splitHeads(vf, KVH, D), presents);
      const ctxOut = attentionOf(ctx, q, key, value, bias, D, H / KVH);
      const attnOut = linear(ctx, this.spec(`${p}.self_attn.o_proj`), mergeHeads(ctxOut, H, D));
      const afterAttn = applySublayer(ctx, `${i}.attn`, i, attnOut, h);
      const y = rmsNorm(ctx, `${p}.post_attention_layernorm`, afterAttn, eps);
      const [gate, up] = o.split(linear(ctx, this.spec(`${p}.mlp.gate_up_proj`), y), -1, [F, F]) as [Value, Value];
      const gated = ctx.recomputed([gate, up], ([g, u]) => o.mul(u!, activation(cfg.hiddenAct, g!)));
      const m = linear(ctx, this.spec(`${p}.mlp.down_proj`), gated);
      return applySublayer(ctx, `${i}.ffn`, i, m, afterAttn);
    };
    return this.decode(ctx, h, layer, (h) => rmsNorm(ctx, 'model.norm', h, eps));
  }
}

/** Phi-3: partial rotary, the pre-extension context for longrope, an optional sliding window over every layer. */
function phi3Fields(f: Fields, headDim: number): Partial<ModelConfig> {
  const factor = f.has('partial_rotary_factor') ? f.num('partial_rotary_factor', 1) : 1;
  const rotary = Math.floor(headDim * factor);
  if (factor > 1 || rotary < 2 || rotary % 2 !== 0) {
    throw new ConfigError(
      f.file,
      `${f.file}: partial_rotary_factor ${factor} gives ${rotary} rotary channels of head_dim ${headDim}; it must be an even number between 2 and head_dim.`,
      'partial_rotary_factor',
    );
  }
  const window = f.optionalInt('sliding_window');
  return {
    partialRotaryFactor: factor,
    originalMaxPositionEmbeddings: f.int('original_max_position_embeddings', 4096),
    ...(window === undefined ? {} : { slidingWindow: window }),
  };
}

/** Phi3Config: no head_dim field (hidden / heads), max_position_embeddings 4096, then its own fields. */
function phi3Config(f: Fields, common: CommonConfig): ModelConfig {
  const c = decoderFields(f, common, { maxPositions: 4096, headDim: 'derived' });
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
