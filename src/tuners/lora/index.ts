// LoRA (with rsLoRA, DoRA, PiSSA init): the public surface of the method and its registry entry.
// getPeftModel/LoraModel.fromPretrained mirror peft; loraTuner is what src/tuners/registry.ts lists.

import type { PretrainedModel } from '../../models/types.js';
import { loraConfigFromJson } from './config.js';
import { LoraModel } from './model.js';
import type { Tuner } from '../registry.js';

export { type LoraConfig, loraConfig, loraConfigFromJson, UnsupportedLoraFeatureError } from './config.js';
export { type MergeAndUnloadOptions, type SaveLoraOptions, LoraModel, loraSharedDown } from './model.js';
export { COMPRESSION_METADATA_KEY, COMPRESSION_METHODS, compressionSpec, parseCompressionReport } from './compress.js';

export { TargetModulesNotFoundError, resolveTargetModules, findTargets } from './targets.js';

export { saveModelPretrained } from './merge.js';
export { TopSvd } from './init.js';

function loraScalingText(c: Record<string, unknown>): string | null {
  if (typeof c.r !== 'number' || typeof c.lora_alpha !== 'number') return null;
  const s = c.use_rslora === true ? c.lora_alpha / Math.sqrt(c.r) : c.lora_alpha / c.r;
  return `${Number(s.toPrecision(6))} (${c.use_rslora === true ? 'alpha / sqrt(r)' : 'alpha / r'})`;
}

const LORA_FIELDS = { peft_type: 'LORA', r: 8, lora_alpha: 16, lora_dropout: 0.05, target_modules: 'all-linear', task_type: 'CAUSAL_LM' };
const LORA_TRAIN_FIELDS = { peft_type: 'LORA', r: 8, lora_alpha: 16, lora_dropout: 0.05, task_type: 'CAUSAL_LM' };
const LORA_FLAGS = { r: 'r', alpha: 'lora_alpha', dropout: 'lora_dropout', target: 'target_modules' } as const;

/** The registry entry: a LoRA model from adapter_config.json-style fields, or from a saved folder. */
export const loraTuner = {
  peftType: 'LORA',
  label: 'LoRA',
  mergeable: true,
  saves: 'adapter (adapter_config.json, adapter_model.safetensors)',
  infoSettings: [
    'r',
    'lora_alpha',
    'lora_dropout',
    'use_rslora',
    'use_dora',
    'bias',
    'init_lora_weights',
    'target_modules',
    'modules_to_save',
    'rank_pattern',
    'alpha_pattern',
    'layers_to_transform',
    'fan_in_fan_out',
  ],
  infoExtras: (c: Record<string, unknown>) => {
    const s = loraScalingText(c);
    return s ? { scaling: s } : {};
  },
  presets: [
    {
      name: 'lora',
      label: 'LoRA',
      learningRate: 2e-3,
      trainLearningRate: 2e-4,
      fields: LORA_FIELDS,
      trainFields: LORA_TRAIN_FIELDS,
      flags: LORA_FLAGS,
      settings: 'r=8, alpha=16, dropout 0.05, every linear layer but the head (all-linear)',
      folklore: { parameter: 'High', compute: 'High', space: 'High', performance: 'High', flexibility: 'High' },
    },
    {
      name: 'qlora',
      label: 'QLoRA',
      learningRate: 2e-3,
      trainLearningRate: 2e-4,
      quantizedBase: true,
      fields: LORA_FIELDS,
      trainFields: LORA_TRAIN_FIELDS,
      flags: LORA_FLAGS,
      settings: 'LoRA as above over the base held 4-bit (NF4, double quantization, block 64; head kept float32)',
      folklore: { parameter: 'High', compute: 'Medium', space: 'High', performance: 'High', flexibility: 'High' },
    },
  ],
  create: (base: PretrainedModel, fields: Record<string, unknown>, opts: { adapterName?: string; seed?: number } = {}) =>
    LoraModel.create(base, loraConfigFromJson(fields, 'LoRA config'), opts),
  fromPretrained: (base: PretrainedModel, dir: string, opts: { adapterName?: string; isTrainable?: boolean } = {}) =>
    LoraModel.fromPretrained(base, dir, opts),
} satisfies Tuner;
