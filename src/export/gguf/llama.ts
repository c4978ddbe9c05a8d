// The llama.cpp view of a model this library loads: which GGUF architecture a config maps to, its
// hyperparameters as GGUF metadata, and each state-dict tensor's GGUF name and layout. Follows
// llama.cpp's convert_hf_to_gguf.py: Llama and Mistral are the "llama" architecture, whose
// rotary embedding pairs interleaved dims (rope type NORM), so q_proj/k_proj rows are permuted
// from transformers' rotate-half order; Qwen2 and Qwen3 use the NEOX order and are kept as stored.

import type { PretrainedModel } from '../../models/types.js';
import { ropeFrequencies } from '../../models/rope.js';
import { ExportError } from '../errors.js';
import { type MetaValue, f32, str, u32 } from './writer.js';

export interface GgufArch {
  /** general.architecture */
  name: 'llama' | 'qwen2' | 'qwen3';
  /** q/k rows permuted to llama.cpp's interleaved rotary order */
  permuteQK: boolean;
}

/** Architectures the GGUF export writes, by config.json model_type. */
export const GGUF_ARCHITECTURES: Record<string, GgufArch> = {
  llama: { name: 'llama', permuteQK: true },
  mistral: { name: 'llama', permuteQK: true },
  qwen2: { name: 'qwen2', permuteQK: false },
  // per-head q/k RMSNorm before the rotary embedding (attn_q_norm / attn_k_norm)
  qwen3: { name: 'qwen3', permuteQK: false },
};

export function ggufArchOf(model: PretrainedModel, flag: string): GgufArch {
  const a = GGUF_ARCHITECTURES[model.config.modelType];
  if (!a || model.family !== 'llama' || model.task !== 'causal-lm') {
    throw new ExportError(
      `${flag} writes llama.cpp's Llama-family architectures (model_type ${Object.keys(GGUF_ARCHITECTURES).join(', ')}); ${model.dir} is model_type "${model.config.modelType}" (${model.family} ${model.task}): export it with --format transformers.js instead`,
    );
  }
  return a;
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
  m.set(`${p}.rope.dimension_count`, u32(c.headDim));
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
  if (c.raw.sliding_window !== undefined && c.raw.sliding_window !== null && c.raw.use_sliding_window === true) {
    throw new ExportError(`${model.dir} uses sliding-window attention, which this export does not write; export it with --format transformers.js`);
  }
  return m;
}

/**
 * llama3 rope scaling as llama.cpp applies it: a rope_freqs tensor of per-frequency divisors
 * (original inverse frequency / scaled one), or undefined when the rotary frequencies are plain.
 */
export function ropeFreqs(model: PretrainedModel): Float32Array | undefined {
  const c = model.config;
  if (!c.ropeScaling || c.ropeScaling.ropeType !== 'llama3') return undefined;
  const spec = { theta: c.ropeTheta ?? 10000, rotaryDim: c.headDim, maxPositionEmbeddings: c.maxPositionEmbeddings };
  const scaled = ropeFrequencies({ ...spec, scaling: c.ropeScaling }).invFreq;
  const plain = ropeFrequencies(spec).invFreq;
  return Float32Array.from(plain, (f, i) => f / scaled[i]!);
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
export function ggufTensorName(hf: string): string | undefined {
  if (hf === 'model.embed_tokens.weight') return 'token_embd.weight';
  if (hf === 'model.norm.weight') return 'output_norm.weight';
  if (hf === 'lm_head.weight') return 'output.weight';
  const m = /^model\.layers\.(\d+)\.(.+)$/.exec(hf);
  if (!m) return undefined;
  const t = LAYER_TENSORS[m[2]!];
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
