// The bundled model's architecture (a Hugging Face LlamaConfig) and its random initialization as
// transformers' LlamaPreTrainedModel._init_weights does it: every linear and embedding weight
// N(0, initializer_range), RMSNorm weights 1; drawn from a seeded generator so reruns match.

import { fromTypedArray, type RawTensor } from '../../src/io/safetensors.js';
import { Rng } from '../../src/train/rng.js';

export interface TinyLlamaShape {
  hiddenSize: number;
  numHiddenLayers: number;
  numAttentionHeads: number;
  numKeyValueHeads: number;
  intermediateSize: number;
  vocabSize: number;
  maxPositionEmbeddings: number;
}

export interface SpecialTokenIds {
  pad: number;
  bos: number;
  eos: number;
}

const INITIALIZER_RANGE = 0.02;

/** config.json as transformers 4.44 writes it for LlamaForCausalLM (tied embeddings). */
export function llamaConfig(s: TinyLlamaShape, ids: SpecialTokenIds, torchDtype: 'float32' | 'float16'): Record<string, unknown> {
  return {
    architectures: ['LlamaForCausalLM'],
    attention_bias: false,
    attention_dropout: 0.0,
    bos_token_id: ids.bos,
    eos_token_id: ids.eos,
    head_dim: s.hiddenSize / s.numAttentionHeads,
    hidden_act: 'silu',
    hidden_size: s.hiddenSize,
    initializer_range: INITIALIZER_RANGE,
    intermediate_size: s.intermediateSize,
    max_position_embeddings: s.maxPositionEmbeddings,
    mlp_bias: false,
    model_type: 'llama',
    num_attention_heads: s.numAttentionHeads,
    num_hidden_layers: s.numHiddenLayers,
    num_key_value_heads: s.numKeyValueHeads,
    pad_token_id: ids.pad,
    pretraining_tp: 1,
    rms_norm_eps: 1e-5,
    rope_scaling: null,
    rope_theta: 10000.0,
    tie_word_embeddings: true,
    torch_dtype: torchDtype,
    transformers_version: '4.44.0',
    use_cache: true,
    vocab_size: s.vocabSize,
  };
}

/** Weight names and shapes of the state dict (lm_head is tied to the embedding, so not listed). */
export function llamaWeightShapes(s: TinyLlamaShape): [string, number[]][] {
  const C = s.hiddenSize;
  const D = C / s.numAttentionHeads;
  const KV = s.numKeyValueHeads * D;
  const F = s.intermediateSize;
  const out: [string, number[]][] = [['model.embed_tokens.weight', [s.vocabSize, C]]];
  for (let i = 0; i < s.numHiddenLayers; i++) {
    const p = `model.layers.${i}`;
    out.push(
      [`${p}.input_layernorm.weight`, [C]],
      [`${p}.self_attn.q_proj.weight`, [C, C]],
      [`${p}.self_attn.k_proj.weight`, [KV, C]],
      [`${p}.self_attn.v_proj.weight`, [KV, C]],
      [`${p}.self_attn.o_proj.weight`, [C, C]],
      [`${p}.post_attention_layernorm.weight`, [C]],
      [`${p}.mlp.gate_proj.weight`, [F, C]],
      [`${p}.mlp.up_proj.weight`, [F, C]],
      [`${p}.mlp.down_proj.weight`, [C, F]],
    );
  }
  out.push(['model.norm.weight', [C]]);
  return out;
}

/** Standard normal draws by Box-Muller from a seeded xoshiro stream. */
function gaussian(rng: Rng): () => number {
  let spare: number | undefined;
  return () => {
    if (spare !== undefined) {
      const s = spare;
      spare = undefined;
      return s;
    }
    const u = 1 - rng.nextFloat();
    const v = rng.nextFloat();
    const r = Math.sqrt(-2 * Math.log(u));
    spare = r * Math.sin(2 * Math.PI * v);
    return r * Math.cos(2 * Math.PI * v);
  };
}

/** The initial float32 state dict. */
export function initialWeights(s: TinyLlamaShape, seed: number): Map<string, RawTensor> {
  if (s.hiddenSize % s.numAttentionHeads !== 0)
    throw new Error(`hidden size ${s.hiddenSize} is not a multiple of ${s.numAttentionHeads} heads`);
  if (s.numAttentionHeads % s.numKeyValueHeads !== 0)
    throw new Error(`${s.numAttentionHeads} heads are not a multiple of ${s.numKeyValueHeads} KV heads`);
  const normal = gaussian(Rng.fromSeed(seed, 0x1417));
  const tensors = new Map<string, RawTensor>();
  for (const [name, shape] of llamaWeightShapes(s)) {
    const data = new Float32Array(shape.reduce((a, b) => a * b, 1));
    if (name.endsWith('norm.weight')) data.fill(1);
    else for (let i = 0; i < data.length; i++) data[i] = INITIALIZER_RANGE * normal();
    tensors.set(name, fromTypedArray(data, shape));
  }
  return tensors;
}
