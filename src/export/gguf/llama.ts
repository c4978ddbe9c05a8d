// The llama.cpp view of a model this library loads: which GGUF architecture a config maps to, its
// hyperparameters as GGUF metadata, and each state-dict tensor's GGUF name and layout. Follows
// llama.cpp's converters (convert_hf_to_gguf.py, conversion/*.py) and its model loaders
// (src/models/<arch>.cpp of the llama.cpp node-llama-cpp bundles):
// - Llama, Mistral ("llama") and SmolLM3 ("smollm3") rotate interleaved pairs (rope type NORM), so
//   q_proj/k_proj rows are permuted from transformers' rotate-half order; Qwen2, Qwen3, Gemma 3 and
//   Phi-3 use the NEOX order and are kept as stored.
// - SmolLM3: llama.cpp hard-codes every 4th layer (1-based) as NoPE; other no_rope_layers are refused.
// - Gemma 3: llama.cpp multiplies norms by w (so 1 is added to every norm weight, as the converter
//   does), scales queries by head_dim ** -0.5 (query_pre_attn_scalar folded into q_norm's weight,
//   which is exact: the scale commutes with the rotation), and takes sliding layers by a period
//   (layer i slides iff i % p < p - 1) with their own rope base and no rope scaling.
// - Phi-3: fused attn_qkv and ffn_up ([gate | up]), partial rotary (rope.dimension_count), longrope
//   as rope_factors_short / rope_factors_long tensors with rope.scaling.attn_factor; llama.cpp picks
//   the long factors when its context size passes original_context_length (transformers: when the
//   sequence does).

import type { PretrainedModel } from '../../models/types.js';
import { ropeFrequencies } from '../../models/rope.js';
import { ExportError } from '../errors.js';
import { type MetaValue, f32, str, u32 } from './writer.js';

export type GgufArchName = 'llama' | 'qwen2' | 'qwen3' | 'smollm3' | 'gemma3' | 'phi3';

export interface GgufArch {
  /** general.architecture */
  name: GgufArchName;
  /** q/k rows permuted to llama.cpp's interleaved rotary order */
  permuteQK: boolean;
  /** layer tensors whose llama.cpp name differs from the Llama layout */
  layerNames?: Readonly<Record<string, string>>;
}

/** Architectures the GGUF export writes, by config.json model_type. */
const GGUF_ARCHITECTURES: Record<string, GgufArch> = {
  llama: { name: 'llama', permuteQK: true },
  mistral: { name: 'llama', permuteQK: true },
  qwen2: { name: 'qwen2', permuteQK: false },
  // per-head q/k RMSNorm before the rotary embedding (attn_q_norm / attn_k_norm)
  qwen3: { name: 'qwen3', permuteQK: false },
  smollm3: { name: 'smollm3', permuteQK: true },
  gemma3_text: {
    name: 'gemma3',
    permuteQK: false,
    layerNames: {
      'post_attention_layernorm.weight': 'post_attention_norm.weight',
      'pre_feedforward_layernorm.weight': 'ffn_norm.weight',
      'post_feedforward_layernorm.weight': 'post_ffw_norm.weight',
    },
  },
  phi3: {
    name: 'phi3',
    permuteQK: false,
    layerNames: { 'self_attn.qkv_proj.weight': 'attn_qkv.weight', 'mlp.gate_up_proj.weight': 'ffn_up.weight' },
  },
};

export function ggufArchOf(model: PretrainedModel, flag: string): GgufArch {
  const a = GGUF_ARCHITECTURES[model.config.modelType];
  if (!a || model.family !== 'llama' || model.task !== 'causal-lm') {
    throw new ExportError(
      `${flag} writes llama.cpp's Llama-family architectures (model_type ${Object.keys(GGUF_ARCHITECTURES).join(', ')}); ${model.dir} is model_type "${model.config.modelType}" (${model.family} ${model.task}): export it with --format transformers.js instead`,
    );
  }
  checkRunnable(model, a, flag);
  return a;
}

/** Rope scaling llama.cpp applies per architecture (llama3: the rope_freqs tensor only the llama loader reads). */
const ROPE_TYPES: Record<GgufArchName, readonly string[]> = {
  llama: ['default', 'linear', 'llama3'],
  qwen2: ['default', 'linear'],
  qwen3: ['default', 'linear'],
  smollm3: ['default', 'linear'],
  gemma3: ['default', 'linear'],
  phi3: ['default', 'longrope'],
};

/** llama.cpp's NoPE layers for SmolLM3: layer i skips RoPE iff (i + 1) % 4 == 0. */
const SMOLLM3_NOPE_STEP = 4;

/** Refuses, in one line, a configuration llama.cpp would run differently from transformers. */
function checkRunnable(model: PretrainedModel, arch: GgufArch, flag: string): void {
  const c = model.config;
  const instead = `; export it with --format transformers.js instead`;
  const rope = c.ropeScaling?.ropeType ?? 'default';
  if (!ROPE_TYPES[arch.name].includes(rope)) {
    throw new ExportError(
      `${model.dir} uses rope_scaling "${rope}", which llama.cpp's ${arch.name} architecture does not apply (${flag} writes ${ROPE_TYPES[arch.name].join(', ')})${instead}`,
    );
  }
  if (arch.name === 'smollm3' && c.ropeLayers) {
    const want = c.ropeLayers.map((_, i) => (i + 1) % SMOLLM3_NOPE_STEP !== 0);
    if (c.ropeLayers.some((r, i) => r !== want[i])) {
      throw new ExportError(
        `${model.dir} has no_rope_layers ${JSON.stringify(c.ropeLayers.map(Number))}, but llama.cpp's smollm3 skips RoPE on exactly every ${SMOLLM3_NOPE_STEP}th layer (${JSON.stringify(want.map(Number))})${instead}`,
      );
    }
  }
  if (arch.name === 'gemma3') gemmaSwaPeriod(model);
  if (arch.name === 'phi3' && c.numAttentionHeads * c.headDim !== c.hiddenSize) {
    throw new ExportError(
      `${model.dir} has ${c.numAttentionHeads} heads of ${c.headDim} for hidden size ${c.hiddenSize}; llama.cpp's phi3 needs heads x head_dim = hidden size${instead}`,
    );
  }
}

/**
 * Gemma 3's sliding-window period as llama.cpp reads it (layer i slides iff i % p < p - 1), or 0
 * when no layer slides; a layer_types list of another shape is refused.
 */
function gemmaSwaPeriod(model: PretrainedModel): number {
  const types = model.config.layerTypes ?? [];
  const sliding = types.map((t) => t === 'sliding_attention');
  if (!sliding.some(Boolean)) return 0;
  for (let p = 1; p <= sliding.length + 1; p++) {
    if (sliding.every((s, i) => s === i % p < p - 1)) return p;
  }
  throw new ExportError(
    `${model.dir} has layer_types ${JSON.stringify(types)}; llama.cpp's gemma3 takes sliding layers by a period (layer i slides iff i % p < p - 1), which this list does not follow; export it with --format transformers.js instead`,
  );
}

/** The rotated channels of each head (Phi-3's partial rotary factor). */
function rotaryDim(model: PretrainedModel): number {
  return Math.floor(model.config.headDim * (model.config.partialRotaryFactor ?? 1));
}

/** Hyperparameters as llama.cpp reads them for `arch`. */
export function archMetadata(model: PretrainedModel, arch: GgufArch): Map<string, MetaValue> {
  const c = model.config;
  const p = arch.name;
  const m = new Map<string, MetaValue>();
  m.set(`${p}.context_length`, u32(c.maxPositionEmbeddings));
  m.set(`${p}.embedding_length`, u32(c.hiddenSize));
  m.set(`${p}.block_count`, u32(c.numHiddenLayers));
  m.set(`${p}.feed_forward_length`, u32(c.intermediateSize));
  m.set(`${p}.attention.head_count`, u32(c.numAttentionHeads));
  m.set(`${p}.attention.head_count_kv`, u32(c.numKeyValueHeads));
  m.set(`${p}.rope.freq_base`, f32(c.ropeTheta ?? 10000));
  m.set(`${p}.attention.layer_norm_rms_epsilon`, f32(c.normEps));
  m.set(`${p}.rope.dimension_count`, u32(rotaryDim(model)));
  if (c.headDim * c.numAttentionHeads !== c.hiddenSize) {
    m.set(`${p}.attention.key_length`, u32(c.headDim));
    m.set(`${p}.attention.value_length`, u32(c.headDim));
  }
  m.set(`${p}.vocab_size`, u32(c.vocabSize));
  const sc = c.ropeScaling;
  if (sc && sc.ropeType === 'linear') {
    m.set(`${p}.rope.scaling.type`, str('linear'));
    m.set(`${p}.rope.scaling.factor`, f32(sc.factor ?? 1));
  }
  if (arch.name === 'gemma3') {
    const period = gemmaSwaPeriod(model);
    if (period > 0) {
      m.set(`${p}.attention.sliding_window`, u32(c.slidingWindow ?? 4096));
      m.set(`${p}.attention.sliding_window_pattern`, u32(period));
      m.set(`${p}.rope.freq_base_swa`, f32(c.ropeLocalTheta ?? 10000));
    }
  } else if (arch.name === 'phi3') {
    // as llama.cpp's converter: 0 marks "no window" (llama.cpp does not apply Phi-3's window either way)
    m.set(`${p}.attention.sliding_window`, u32(c.slidingWindow ?? 0));
    if (sc && sc.ropeType === 'longrope') {
      const f = ropeFrequencies(ropeSpec(model));
      m.set(`${p}.rope.scaling.attn_factor`, f32(f.attentionScaling));
      m.set(`${p}.rope.scaling.original_context_length`, u32(c.originalMaxPositionEmbeddings ?? c.maxPositionEmbeddings));
    }
  } else if (c.raw.sliding_window !== undefined && c.raw.sliding_window !== null && c.raw.use_sliding_window === true) {
    throw new ExportError(
      `${model.dir} uses sliding-window attention, which llama.cpp's ${p} architecture does not apply; export it with --format transformers.js instead`,
    );
  }
  return m;
}

function ropeSpec(model: PretrainedModel) {
  const c = model.config;
  return {
    theta: c.ropeTheta ?? 10000,
    rotaryDim: rotaryDim(model),
    maxPositionEmbeddings: c.maxPositionEmbeddings,
    originalMaxPositionEmbeddings: c.originalMaxPositionEmbeddings,
    scaling: c.ropeScaling,
  };
}

/**
 * Model-level tensors llama.cpp reads for rotary scaling: llama3 scaling as `rope_freqs` (per-frequency
 * divisors: original inverse frequency / scaled one); Phi-3 longrope as `rope_factors_short` /
 * `rope_factors_long` (rope_scaling's short_factor / long_factor).
 */
export function ropeTensors(model: PretrainedModel): { name: string; data: Float32Array }[] {
  const c = model.config;
  const sc = c.ropeScaling;
  if (!sc) return [];
  if (sc.ropeType === 'llama3') {
    const spec = { theta: c.ropeTheta ?? 10000, rotaryDim: c.headDim, maxPositionEmbeddings: c.maxPositionEmbeddings };
    const scaled = ropeFrequencies({ ...spec, scaling: sc }).invFreq;
    const plain = ropeFrequencies(spec).invFreq;
    return [{ name: 'rope_freqs.weight', data: Float32Array.from(plain, (f, i) => f / scaled[i]!) }];
  }
  if (sc.ropeType === 'longrope') {
    const half = rotaryDim(model) / 2;
    const list = (key: string) => {
      const v = sc.raw[key];
      if (!Array.isArray(v) || v.length !== half) throw new ExportError(`${model.dir}: rope_scaling.${key} must list ${half} numbers`);
      return Float32Array.from(v as number[]);
    };
    return [
      { name: 'rope_factors_long.weight', data: list('long_factor') },
      { name: 'rope_factors_short.weight', data: list('short_factor') },
    ];
  }
  return [];
}

/**
 * A tensor's values as llama.cpp's graph needs them: Gemma 3 norms + 1 (llama.cpp multiplies by w,
 * transformers by 1 + w), and its q_norm times the ratio of transformers' query scale
 * (query_pre_attn_scalar ** -0.5) to llama.cpp's (head_dim ** -0.5; hidden / heads for the 62-layer
 * 27B). Everything else unchanged.
 */
export function ggufValues(hf: string, data: Float32Array, model: PretrainedModel, arch: GgufArch): Float32Array {
  if (arch.name !== 'gemma3' || !hf.endsWith('norm.weight')) return data;
  const c = model.config;
  let mul = 1;
  if (hf.endsWith('.self_attn.q_norm.weight')) {
    const llamaCpp = c.numHiddenLayers === 62 ? 1 / Math.sqrt(c.hiddenSize / c.numAttentionHeads) : 1 / Math.sqrt(c.headDim);
    mul = 1 / Math.sqrt(c.queryPreAttnScalar ?? c.headDim) / llamaCpp;
  }
  return Float32Array.from(data, (w) => (1 + w) * mul);
}

const LAYER_TENSORS: Record<string, string> = {
  'input_layernorm.weight': 'attn_norm.weight',
  'post_attention_layernorm.weight': 'ffn_norm.weight',
  'self_attn.q_proj.weight': 'attn_q.weight',
  'self_attn.k_proj.weight': 'attn_k.weight',
  'self_attn.v_proj.weight': 'attn_v.weight',
  'self_attn.o_proj.weight': 'attn_output.weight',
  'self_attn.q_proj.bias': 'attn_q.bias',
  'self_attn.k_proj.bias': 'attn_k.bias',
  'self_attn.v_proj.bias': 'attn_v.bias',
  'self_attn.o_proj.bias': 'attn_output.bias',
  'self_attn.q_norm.weight': 'attn_q_norm.weight',
  'self_attn.k_norm.weight': 'attn_k_norm.weight',
  'mlp.gate_proj.weight': 'ffn_gate.weight',
  'mlp.up_proj.weight': 'ffn_up.weight',
  'mlp.down_proj.weight': 'ffn_down.weight',
  'mlp.gate_proj.bias': 'ffn_gate.bias',
  'mlp.up_proj.bias': 'ffn_up.bias',
  'mlp.down_proj.bias': 'ffn_down.bias',
};

/** GGUF name of a state-dict tensor ("model.layers.3.self_attn.q_proj.weight" -> "blk.3.attn_q.weight"), or undefined. */
export function ggufTensorName(hf: string, arch: GgufArch): string | undefined {
  if (hf === 'model.embed_tokens.weight') return 'token_embd.weight';
  if (hf === 'model.norm.weight') return 'output_norm.weight';
  if (hf === 'lm_head.weight') return 'output.weight';
  const m = /^model\.layers\.(\d+)\.(.+)$/.exec(hf);
  if (!m) return undefined;
  const t = arch.layerNames?.[m[2]!] ?? LAYER_TENSORS[m[2]!];
  return t ? `blk.${m[1]}.${t}` : undefined;
}

/** Which heads a q/k tensor's rows are grouped in (for the rotary permutation), else undefined. */
export function qkHeads(hf: string, model: PretrainedModel): number | undefined {
  if (/\.self_attn\.q_proj\.(weight|bias)$/.test(hf)) return model.config.numAttentionHeads;
  if (/\.self_attn\.k_proj\.(weight|bias)$/.test(hf)) return model.config.numKeyValueHeads;
  return undefined;
}

/**
 * Rows of a [heads * headDim, cols] matrix (or vector, cols 1) from rotate-half order (the two
 * halves of each head) to interleaved pairs: row h*D + 2j + k takes row h*D + k*D/2 + j.
 */
export function permuteRotaryRows(x: Float32Array, heads: number, cols: number): Float32Array {
  const rows = x.length / cols;
  const D = rows / heads;
  if (!Number.isInteger(D) || D % 2 !== 0) throw new ExportError(`cannot permute ${rows} rows into ${heads} heads of even size`);
  const out = new Float32Array(x.length);
  const half = D / 2;
  for (let h = 0; h < heads; h++) {
    for (let j = 0; j < half; j++) {
      for (let k = 0; k < 2; k++) {
        const to = (h * D + 2 * j + k) * cols;
        const from = (h * D + k * half + j) * cols;
        out.set(x.subarray(from, from + cols), to);
      }
    }
  }
  return out;
}
