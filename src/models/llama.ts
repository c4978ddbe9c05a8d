// Llama family (LlamaForCausalLM; also Qwen2 with q/k/v biases, Mistral, SmolLM): RMSNorm,
// rotary position embeddings (default, linear and llama3 scaling), SwiGLU MLP, grouped-query
// attention, tied or untied LM head.

import type { Value } from '../graph/ir.js';
import * as o from '../graph/ops.js';
import { type CommonConfig, ConfigError, type Fields, type ModelConfig, decoderFields } from '../io/hfconfig.js';
import type { BuildContext, LinearSpec } from '../nn/context.js';
import { attentionBias, attentionOf, groupedAttentionBias, linear, mergeHeads, rmsNorm, splitHeads } from '../nn/layers.js';
import type { WeightStore } from '../nn/weights.js';
import { activation } from './activations.js';
import { DecoderModel, appendPast, llamaLayerLinears, applySublayer, defaultPositions, inputEmbeddings } from './common.js';
import { applyRotary, rotaryTables } from './rope.js';
import {
  type ArchitectureDescriptor,
  type BottleneckLayout,
  type ForwardArgs,
  type ForwardResult,
  type KV,
  type PretrainedModel,
} from './types.js';

export class LlamaModel extends DecoderModel {
  protected layerLinears(p: string, config: ModelConfig): LinearSpec[] {
    return llamaLayerLinears(p, config, { qkv: config.qkvBias, out: config.attnOutputBias, mlp: config.mlpBias });
  }

  protected layerNorms(p: string): string[] {
    const names = [`${p}.input_layernorm.weight`, `${p}.post_attention_layernorm.weight`];
    if (this.config.qkNorm) names.push(`${p}.self_attn.q_norm.weight`, `${p}.self_attn.k_norm.weight`);
    return names;
  }

  forward(ctx: BuildContext, args: ForwardArgs): ForwardResult {
    const cfg = this.config;
    const H = cfg.numAttentionHeads;
    const D = this.headDim;
    const KVH = this.numKVHeads;
    const eps = cfg.normEps;
    const h = inputEmbeddings(this, ctx, args);
    const { positions, pastLength } = defaultPositions(h, args.past);
    const { cos, sin } = rotaryTables(ctx, args.positionIds ?? positions, {
      theta: cfg.ropeTheta ?? 10000,
      rotaryDim: D,
      scaling: cfg.ropeScaling,
      maxPositionEmbeddings: cfg.maxPositionEmbeddings,
    });
    const rotate = (x: Value) => applyRotary(x, cos, sin, D, D);
    const bias = attentionBias(args.attentionMask, h, true, pastLength);
    // grouped-query attention reads k and v unrepeated (groupedAttention): the bias's rows once per query head of a group
    const groupedBias = KVH < H ? groupedAttentionBias(bias, H / KVH) : undefined;
    const layer = (h: Value, i: number, p: string, presents: KV[]): Value => {
      const residual = h;
      // SmolLM3's NoPE layers attend without rotary positions.
      const rope = cfg.ropeLayers && !cfg.ropeLayers[i] ? (t: Value) => t : rotate;
      const x = rmsNorm(ctx, `${p}.input_layernorm`, h, eps);
      // Qwen3 normalizes each head of q and k over head_dim before the rotation.
      const qkNorm = (t: Value, n: string) => (cfg.qkNorm ? rmsNorm(ctx, `${p}.self_attn.${n}`, t, eps) : t);
      const q = rope(qkNorm(splitHeads(linear(ctx, this.spec(`${p}.self_attn.q_proj`), x), H, D), 'q_norm'));
      const k = rope(qkNorm(splitHeads(linear(ctx, this.spec(`${p}.self_attn.k_proj`), x), KVH, D), 'k_norm'));
      const v = splitHeads(linear(ctx, this.spec(`${p}.self_attn.v_proj`), x), KVH, D);
      const { key, value } = appendPast(args.past?.[i], k, v, presents);
      const ctxOut = attentionOf(ctx, q, key, value, bias, D, H / KVH, groupedBias);
      const attnOut = linear(ctx, this.spec(`${p}.self_attn.o_proj`), mergeHeads(ctxOut, H, D));
      const afterAttn = applySublayer(ctx, `${i}.attn`, i, attnOut, residual);
      const y = rmsNorm(ctx, `${p}.post_attention_layernorm`, afterAttn, eps);
      const gate = linear(ctx, this.spec(`${p}.mlp.gate_proj`), y);
      const up = linear(ctx, this.spec(`${p}.mlp.up_proj`), y);
      const gated = ctx.recomputed([gate, up], ([g, u]) => o.mul(activation(cfg.hiddenAct, g!), u!));
      const m = linear(ctx, this.spec(`${p}.mlp.down_proj`), gated);
      return applySublayer(ctx, `${i}.ffn`, i, m, afterAttn);
    };
    return this.decode(ctx, h, layer, (h) => rmsNorm(ctx, 'model.norm', h, eps));
  }
}

/** AdapterHub's layout for decoders whose layers are model.layers.<i> (shared by the Llama-like files). */
export const DECODER_BOTTLENECK: BottleneckLayout = {
  module: (layer, location) => `model.layers.${layer}.${location === 'mh_adapter' ? 'attention_adapters' : 'output_adapters'}`,
  pattern:
    /^(?:model\.)?layers\.(\d+)\.(attention_adapters|output_adapters)\.adapters\.(.+)\.(adapter_down\.0\.weight|adapter_down\.0\.bias|adapter_up\.weight|adapter_up\.bias)$/,
  attentionTail: 'attention_adapters',
};

const build = (c: ModelConfig, w: WeightStore, d: string): PretrainedModel => new LlamaModel(c, w, d);

function slidingWindowOf(f: Fields, modelType: string): number | undefined {
  if (modelType === 'qwen2' && !f.bool('use_sliding_window', false)) return undefined;
  if (modelType !== 'qwen2' && modelType !== 'mistral') return undefined;
  // An absent key means the config class default (4096); an explicit null turns the window off.
  if (!Object.prototype.hasOwnProperty.call(f.raw, 'sliding_window')) return 4096;
  return f.optionalInt('sliding_window');
}

/** SmolLM3's no_rope_layers (1 = the layer uses RoPE, 0 = NoPE); the config class default is every
 * no_rope_layer_interval-th layer (1-based) without RoPE. */
function ropeLayersOf(f: Fields, layers: number): boolean[] {
  const raw = f.raw.no_rope_layers;
  if (raw === undefined || raw === null) {
    const interval = f.int('no_rope_layer_interval', 4);
    return Array.from({ length: layers }, (_, i) => (i + 1) % interval !== 0);
  }
  if (!Array.isArray(raw) || raw.length !== layers || !raw.every((v) => v === 0 || v === 1)) {
    throw new ConfigError(
      f.file,
      `${f.file}: field "no_rope_layers" must list 0 or 1 for each of the ${layers} layers (1 = RoPE, 0 = NoPE), found ${JSON.stringify(raw)}.`,
      'no_rope_layers',
    );
  }
  return raw.map((v) => v === 1);
}

/** max_position_embeddings of each model_type's config class when config.json has none. */
const MAX_POSITIONS: Record<string, number> = { llama: 2048, mistral: 4096 * 32, qwen2: 32768, qwen3: 32768, smollm3: 32768 };

/** LlamaConfig and the configs of the decoders this file builds (Mistral, Qwen2, Qwen3, SmolLM3). */
function llamaConfig(f: Fields, common: CommonConfig): ModelConfig {
  const t = common.modelType;
  const c = decoderFields(f, common, { maxPositions: MAX_POSITIONS[t] ?? 2048 });
  const slidingWindow = slidingWindowOf(f, t);
  return {
    ...c,
    // Qwen2 always has q/k/v biases and no o_proj bias; its config has no attention_bias field for it.
    ...(t === 'qwen2' ? { qkvBias: true, attnOutputBias: false } : {}),
    ...(t === 'qwen3' ? { qkNorm: true } : {}),
    ...(t === 'smollm3' ? { ropeLayers: ropeLayersOf(f, c.numHiddenLayers) } : {}),
    ...(slidingWindow === undefined ? {} : { slidingWindow }),
  };
}

/**
 * Llama and the decoders that differ from it only by config: Mistral, Qwen2 (q/k/v biases), Qwen3
 * (q_norm/k_norm), SmolLM3 (NoPE layers); Llama 3.x rope scaling and tied embeddings by config.
 */
export const LLAMA: ArchitectureDescriptor = {
  family: 'llama',
  displayName: 'Llama',
  modelTypes: ['llama', 'mistral', 'qwen2', 'qwen3', 'smollm3'],
  readConfig: llamaConfig,
  classes: {
    LlamaForCausalLM: build,
    MistralForCausalLM: build,
    Qwen2ForCausalLM: build,
    Qwen3ForCausalLM: build,
    SmolLM3ForCausalLM: build,
  },
  defaultClass: {
    llama: 'LlamaForCausalLM',
    mistral: 'MistralForCausalLM',
    qwen2: 'Qwen2ForCausalLM',
    qwen3: 'Qwen3ForCausalLM',
    smollm3: 'SmolLM3ForCausalLM',
  },
  basePrefix: 'model.',
  positions: 'rotary',
  capabilities: { tiedEmbeddings: 'optional' },
  // peft's mappings; smollm3 has none (target_modules required)
  loraTargets: { llama: ['q_proj', 'v_proj'], mistral: ['q_proj', 'v_proj'], qwen2: ['q_proj', 'v_proj'], qwen3: ['q_proj', 'v_proj'] },
  ia3Targets: {
    llama: { targets: ['k_proj', 'v_proj', 'down_proj'], feedforward: ['down_proj'] },
    mistral: { targets: ['k_proj', 'v_proj', 'down_proj'], feedforward: ['down_proj'] },
    qwen2: { targets: ['k_proj', 'v_proj', 'down_proj'], feedforward: ['down_proj'] },
    // peft 0.20's mapping (qwen3 postdates 0.13): queries, not keys
    qwen3: { targets: ['q_proj', 'v_proj', 'down_proj'], feedforward: ['down_proj'] },
  },
  bottleneck: DECODER_BOTTLENECK,
};
