// The models and methods of the training benchmarks: random-weight GPT-2-small- and
// SmolLM-135M-shaped models built in memory (shapes of peer_torch.py's SHAPES), and each method
// applied the way peer_torch.py applies it. Shared by train_methods.ts and profile_train_step.ts;
// model_throughput.ts builds its inference models here too.

import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { writeSafetensors } from '../src/io/safetensors.js';
import { parseConfig } from '../src/models/config.js';
import { GPT2Model } from '../src/models/gpt2.js';
import { LlamaModel } from '../src/models/llama.js';
import type { PretrainedModel } from '../src/models/types.js';
import { WeightStore } from '../src/nn/weights.js';
import { BottleneckModel, seqBnConfig } from '../src/tuners/bottleneck/index.js';
import { getFullFineTuneModel } from '../src/tuners/full/index.js';
import { createAdapter } from '../src/tuners/load.js';
import type { AdaptedModel } from '../src/tuners/types.js';

// Shapes of peer_torch.py's SHAPES (the Hugging Face checkpoints' configs); bench/model_throughput.ts uses gpt2, llama and tiny.
export const BENCH_CONFIGS: Record<string, Record<string, unknown>> = {
  gpt2: {
    model_type: 'gpt2',
    architectures: ['GPT2LMHeadModel'],
    vocab_size: 50257,
    n_embd: 768,
    n_layer: 12,
    n_head: 12,
    n_positions: 1024,
    activation_function: 'gelu_new',
    layer_norm_epsilon: 1e-5,
    tie_word_embeddings: true,
  },
  llama: {
    model_type: 'llama',
    architectures: ['LlamaForCausalLM'],
    vocab_size: 49152,
    hidden_size: 576,
    num_hidden_layers: 30,
    num_attention_heads: 9,
    num_key_value_heads: 3,
    intermediate_size: 1536,
    max_position_embeddings: 2048,
    rms_norm_eps: 1e-5,
    rope_theta: 10000,
    hidden_act: 'silu',
    tie_word_embeddings: true,
  },
  tiny: {
    model_type: 'gpt2',
    architectures: ['GPT2LMHeadModel'],
    vocab_size: 1000,
    n_embd: 64,
    n_layer: 2,
    n_head: 4,
    n_positions: 512,
    activation_function: 'gelu_new',
    layer_norm_epsilon: 1e-5,
    tie_word_embeddings: true,
  },
  'tiny-llama': {
    model_type: 'llama',
    architectures: ['LlamaForCausalLM'],
    vocab_size: 1000,
    hidden_size: 64,
    num_hidden_layers: 2,
    num_attention_heads: 4,
    num_key_value_heads: 2,
    intermediate_size: 172,
    max_position_embeddings: 512,
    rms_norm_eps: 1e-5,
    rope_theta: 10000,
    hidden_act: 'silu',
    tie_word_embeddings: true,
  },
};

/** Our method names; all but p-tuning are also peer_torch.py's. */
export const METHODS = ['lora-qv', 'lora-all', 'ia3', 'prompt', 'prefix', 'p-tuning', 'adapter', 'full'] as const;
export type Method = (typeof METHODS)[number];
export const PEER_METHODS: readonly string[] = ['lora-qv', 'lora-all', 'ia3', 'prompt', 'prefix', 'adapter', 'full'];
export const VIRTUAL_TOKENS = 20;

/** Uniform noise with standard deviation `std` (xorshift32), fast enough for 135M values. */
export function noise(n: number, std: number, seed: number): Float32Array {
  const out = new Float32Array(n);
  const scale = (std * Math.sqrt(12)) / 4294967296;
  let x = seed >>> 0 || 1;
  for (let i = 0; i < n; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    out[i] = ((x >>> 0) - 2147483648) * scale;
  }
  return out;
}

export function randomBenchModel(name: string): PretrainedModel {
  const config = parseConfig(BENCH_CONFIGS[name]!, `${name} (bench)`);
  const weights = new WeightStore();
  const model = config.family === 'gpt2' ? new GPT2Model(config, weights, '') : new LlamaModel(config, weights, '');
  const specs = new Map(model.linears().map((s) => [s.name, s]));
  const C = config.hiddenSize;
  let seed = 1;
  for (const w of model.expectedWeights()) {
    const module = w.slice(0, w.lastIndexOf('.'));
    const spec = specs.get(module);
    let shape: number[];
    if (spec)
      shape = w.endsWith('.bias')
        ? [spec.outFeatures]
        : spec.layout === 'conv1d'
          ? [spec.inFeatures, spec.outFeatures]
          : [spec.outFeatures, spec.inFeatures];
    else if (w === `${model.embeddingName}.weight`) shape = [config.vocabSize, C];
    else if (w === 'transformer.wpe.weight') shape = [config.maxPositionEmbeddings, C];
    else shape = [C];
    const n = shape.reduce((p, q) => p * q, 1);
    // Norm weights 1, biases 0, matrices N(0, 0.02)-sized noise, as a fresh transformers init.
    const data =
      spec || shape.length === 2 ? noise(n, 0.02, seed++) : w.endsWith('.bias') ? new Float32Array(n) : new Float32Array(n).fill(1);
    weights.set(w, { shape, data });
  }
  if (config.tieWordEmbeddings) weights.alias('lm_head.weight', `${model.embeddingName}.weight`);
  return model;
}

/** Writes randomBenchModel(name) to `dir` as a model folder: config.json and a float32 model.safetensors. */
export async function writeRandomModel(name: string, dir: string): Promise<void> {
  const base = randomBenchModel(name);
  const tensors: Record<string, { dtype: 'F32'; shape: number[]; data: Uint8Array }> = {};
  for (const n of base.weights.names())
    if (!base.weights.isAlias(n)) {
      const w = base.weights.get(n);
      tensors[n] = { dtype: 'F32', shape: w.shape, data: new Uint8Array(w.data.buffer, w.data.byteOffset, w.data.byteLength) };
    }
  await writeSafetensors(path.join(dir, 'model.safetensors'), tensors);
  fs.writeFileSync(path.join(dir, 'config.json'), JSON.stringify(BENCH_CONFIGS[name]));
}

/**
 * A fresh temporary folder holding randomBenchModel(name) (writeRandomModel), written by a child
 * process so that none of the random model's arrays count in this process's peak RSS; a benchmark
 * then loads it as `peft train` loads a model. The caller removes the folder.
 */
export function randomModelFolder(name: string): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), `peft-bench-${name}-`));
  const script = `import { writeRandomModel } from ${JSON.stringify(import.meta.url)}; await writeRandomModel(${JSON.stringify(name)}, ${JSON.stringify(dir)});`;
  const r = spawnSync(process.execPath, ['--input-type=module', '-e', script], { stdio: ['ignore', 'ignore', 'inherit'] });
  if (r.status !== 0) {
    fs.rmSync(dir, { recursive: true, force: true });
    throw new Error(`writing the random ${name} model to ${dir} failed (exit ${r.status})`);
  }
  return dir;
}

/** The linear layers 'lora-all' adapts (every attention and MLP projection, as peer_torch.py). */
export function allLinearTargets(base: PretrainedModel): string[] {
  return base.family === 'llama'
    ? ['q_proj', 'k_proj', 'v_proj', 'o_proj', 'gate_proj', 'up_proj', 'down_proj']
    : ['c_attn', 'c_proj', 'c_fc'];
}

/** The method applied the way peer_torch.py applies it (same targets, r 8 / alpha 16, 20 virtual tokens, d/16 bottleneck). */
export async function adaptForBench(base: PretrainedModel, method: string): Promise<AdaptedModel> {
  const llama = base.family === 'llama';
  switch (method) {
    case 'lora-qv':
    case 'lora-all': {
      const targets = method === 'lora-qv' ? (llama ? ['q_proj', 'v_proj'] : ['c_attn']) : allLinearTargets(base);
      return createAdapter(base, {
        peft_type: 'LORA',
        r: 8,
        lora_alpha: 16,
        lora_dropout: 0,
        target_modules: targets,
        task_type: 'CAUSAL_LM',
      });
    }
    case 'ia3':
      return createAdapter(base, { peft_type: 'IA3', task_type: 'CAUSAL_LM' });
    case 'prompt':
      return createAdapter(base, { peft_type: 'PROMPT_TUNING', num_virtual_tokens: VIRTUAL_TOKENS, task_type: 'CAUSAL_LM' });
    case 'prefix':
      return createAdapter(base, { peft_type: 'PREFIX_TUNING', num_virtual_tokens: VIRTUAL_TOKENS, task_type: 'CAUSAL_LM' });
    case 'p-tuning':
      return createAdapter(base, {
        peft_type: 'P_TUNING',
        num_virtual_tokens: VIRTUAL_TOKENS,
        task_type: 'CAUSAL_LM',
        encoder_reparameterization_type: 'MLP',
      });
    case 'adapter':
      return BottleneckModel.create(base, { config: seqBnConfig({ reductionFactor: 16 }), zeroUp: false });
    case 'full':
      return getFullFineTuneModel(base);
    default:
      throw new Error(`unknown method ${method}; choose from ${METHODS.join(', ')}`);
  }
}
