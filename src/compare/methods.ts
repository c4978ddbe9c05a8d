// The methods a comparison trains and the settings each gets by default: one table (rank, virtual
// tokens, reduction factor, learning rate) so every run of every method is set up the same way,
// and the functions that load the base (NF4 for QLoRA) and wrap it for the method.

import type { PretrainedModel } from '../models/types.js';
import { loadModel } from '../models/load.js';
import { BottleneckModel, seqBnConfig } from '../tuners/bottleneck/index.js';
import { fullConfig, getFullFineTuneModel } from '../tuners/full/index.js';
import { createAdapter } from '../tuners/load.js';
import type { AdaptedModel } from '../tuners/types.js';
import { CompareError } from './errors.js';

/** Method names as `--methods` takes them, in the order tables list them (full fine-tuning, the reference, last). */
export const COMPARE_METHODS = ['lora', 'qlora', 'ia3', 'prompt', 'prefix', 'ptuning', 'adapter', 'full'] as const;
export type CompareMethod = (typeof COMPARE_METHODS)[number];

/** The method every ratio of training cost is taken against; a comparison always runs it. */
export const REFERENCE_METHOD: CompareMethod = 'full';

/** Virtual tokens of prompt tuning, prefix tuning and P-tuning. */
export const VIRTUAL_TOKENS = 20;

export interface MethodSpec {
  name: CompareMethod;
  /** how tables name it */
  label: string;
  /** peak learning rate (linear decay after 5% warmup) */
  learningRate: number;
  /** the settings in words, for the report */
  settings: string;
  /** the base is held 4-bit (NF4, double quantization) */
  quantizedBase: boolean;
  /** adapter_config.json-style fields (for the tuners in src/tuners/registry.ts) */
  fields?: Record<string, unknown>;
}

const LORA_FIELDS = { peft_type: 'LORA', r: 8, lora_alpha: 16, lora_dropout: 0.05, target_modules: 'all-linear', task_type: 'CAUSAL_LM' };

/**
 * Defaults per method. Shapes follow each method's paper/peft defaults; the learning rates are the
 * usual order of magnitude for each method (soft prompts train fastest, full fine-tuning slowest),
 * set for short runs on the bundled tiny model. `--lr METHOD=RATE` overrides one.
 */
export const METHOD_SPECS: Readonly<Record<CompareMethod, MethodSpec>> = {
  lora: {
    name: 'lora', label: 'LoRA', learningRate: 2e-3, quantizedBase: false, fields: LORA_FIELDS,
    settings: 'r=8, alpha=16, dropout 0.05, every linear layer but the head (all-linear)',
  },
  qlora: {
    name: 'qlora', label: 'QLoRA', learningRate: 2e-3, quantizedBase: true, fields: LORA_FIELDS,
    settings: 'LoRA as above over the base held 4-bit (NF4, double quantization, block 64; head kept float32)',
  },
  ia3: {
    name: 'ia3', label: 'IA3', learningRate: 3e-2, quantizedBase: false, fields: { peft_type: 'IA3', task_type: 'CAUSAL_LM' },
    settings: "peft's defaults: scaling vectors on k_proj, v_proj and down_proj (feed-forward)",
  },
  prompt: {
    name: 'prompt', label: 'Prompt tuning', learningRate: 3e-2, quantizedBase: false,
    fields: { peft_type: 'PROMPT_TUNING', num_virtual_tokens: VIRTUAL_TOKENS, prompt_tuning_init: 'SAMPLE_VOCAB', task_type: 'CAUSAL_LM' },
    settings: `${VIRTUAL_TOKENS} virtual tokens, initialized from sampled vocabulary embeddings`,
  },
  prefix: {
    name: 'prefix', label: 'Prefix tuning', learningRate: 1e-2, quantizedBase: false,
    fields: { peft_type: 'PREFIX_TUNING', num_virtual_tokens: VIRTUAL_TOKENS, task_type: 'CAUSAL_LM' },
    settings: `${VIRTUAL_TOKENS} virtual key/value tokens per layer, no reparameterization`,
  },
  ptuning: {
    name: 'ptuning', label: 'P-tuning', learningRate: 3e-3, quantizedBase: false,
    fields: { peft_type: 'P_TUNING', num_virtual_tokens: VIRTUAL_TOKENS, encoder_reparameterization_type: 'MLP', task_type: 'CAUSAL_LM' },
    settings: `${VIRTUAL_TOKENS} virtual tokens from an MLP prompt encoder (hidden = model width)`,
  },
  adapter: {
    name: 'adapter', label: 'Bottleneck adapter', learningRate: 3e-3, quantizedBase: false,
    settings: 'Pfeiffer (seq_bn) after each feed-forward block, reduction factor 16',
  },
  full: {
    name: 'full', label: 'Full fine-tuning', learningRate: 2e-4, quantizedBase: false,
    settings: 'every weight trains (the reference)',
  },
};

/** Prompt tuning, prefix tuning and P-tuning put VIRTUAL_TOKENS positions in front of every row. */
export function usesVirtualTokens(method: CompareMethod): boolean {
  return METHOD_SPECS[method].fields?.num_virtual_tokens !== undefined;
}

/** Parses and checks a list of method names (`--methods lora,ia3`), in table order, without repeats. */
export function parseMethods(names: readonly string[]): CompareMethod[] {
  const known = new Set<string>(COMPARE_METHODS);
  const bad = names.filter((n) => !known.has(n));
  if (bad.length) throw new CompareError(`unknown method${bad.length > 1 ? 's' : ''} ${bad.join(', ')}; choose from ${COMPARE_METHODS.join(', ')}`);
  if (names.length === 0) throw new CompareError(`no methods given; choose from ${COMPARE_METHODS.join(', ')}`);
  const chosen = new Set(names);
  return COMPARE_METHODS.filter((m) => chosen.has(m));
}

/** The base model as the method trains on it: QLoRA holds its linear layers NF4. */
export async function loadBaseFor(method: CompareMethod | 'base', modelDir: string): Promise<PretrainedModel> {
  if (method !== 'base' && METHOD_SPECS[method].quantizedBase) {
    return loadModel(modelDir, { quantization: { bits: 4, type: 'nf4', doubleQuant: true, blockSize: 64 } });
  }
  return loadModel(modelDir);
}

/** Wraps `base` for `method` with the defaults of METHOD_SPECS (task type SEQ_CLS for a sequence classifier). */
export async function adaptForComparison(base: PretrainedModel, method: CompareMethod, seed: number, baseName: string): Promise<AdaptedModel> {
  const spec = METHOD_SPECS[method];
  switch (method) {
    case 'full':
      return getFullFineTuneModel(base, fullConfig());
    case 'adapter':
      return BottleneckModel.create(base, { config: seqBnConfig({ reductionFactor: 16 }), seed, modelName: baseName });
    default:
      // The table's task type is CAUSAL_LM; a sequence classifier gets SEQ_CLS (its classifier then trains too, as peft's modules_to_save).
      return createAdapter(base, { ...spec.fields, ...(base.task === 'seq-cls' ? { task_type: 'SEQ_CLS' } : {}), base_model_name_or_path: baseName }, { seed });
  }
}
