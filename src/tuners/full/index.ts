// Full fine-tuning: every (or each selected) base weight trains. The baseline the parameter-
// efficient methods are compared with, and the simplest AdaptedModel the trainer runs.

import type { PretrainedModel } from '../../models/types.js';
import { type FullConfig, fullConfig } from './config.js';
import { FullFineTuneModel } from './model.js';
import type { Tuner } from '../registry.js';

export { fullConfig } from './config.js';
export { FullFineTuneModel } from './model.js';

/** Wraps a model for full fine-tuning (peft's get_peft_model counterpart for the FULL method). */
export function getFullFineTuneModel(model: PretrainedModel, config: FullConfig = fullConfig()): FullFineTuneModel {
  return new FullFineTuneModel(model, config);
}

/** The registry entry: full fine-tuning trains (and saves) the whole model, so there is no adapter folder to load. */
export const fullTuner = {
  peftType: 'FULL',
  label: 'full fine-tuning',
  mergeable: { why: 'full fine-tuning saves the whole trained model, not an adapter' },
  saves: 'model (config.json, model.safetensors)',
  presets: [
    {
      name: 'full',
      label: 'Full fine-tuning',
      learningRate: 2e-4,
      trainLearningRate: 5e-5,
      fields: { peft_type: 'FULL' },
      flags: { target: 'target_modules' },
      settings: 'every weight trains (the reference)',
      folklore: { parameter: 'Low', compute: 'Low', space: 'Low', performance: 'High', flexibility: 'High' },
    },
  ],
  create: async (base: PretrainedModel, fields: Record<string, unknown>): Promise<FullFineTuneModel> => {
    const list = (k: string): string[] | string | undefined => {
      const v = fields[k];
      return v === undefined || v === null ? undefined : (v as string[] | string);
    };
    return getFullFineTuneModel(base, fullConfig({ targetModules: list('target_modules'), excludeModules: list('exclude_modules') }));
  },
} satisfies Tuner;
