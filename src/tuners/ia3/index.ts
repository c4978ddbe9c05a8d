// IA3 (Liu et al. 2022, "Few-Shot Parameter-Efficient Fine-Tuning is Better and Cheaper than
// In-Context Learning") as peft implements it, plus the additive variant: the public surface.

import type { PretrainedModel } from '../../models/types.js';
import { ia3OptionsFromFields } from './config.js';
import { loadIA3 } from './load.js';
import { IA3Model } from './model.js';
import type { Tuner } from '../registry.js';

export { IA3Model } from './model.js';

export { loadIA3 } from './load.js';

/** The registry entry (src/tuners/registry.ts): a new IA3 model from adapter_config.json-style fields, or a saved one. */
export const ia3Tuner = {
  peftType: 'IA3',
  label: 'IA3',
  mergeable: true,
  saves: 'adapter (adapter_config.json, adapter_model.safetensors)',
  infoSettings: ['target_modules', 'feedforward_modules', 'modules_to_save', 'init_ia3_weights', 'fan_in_fan_out'],
  presets: [
    {
      name: 'ia3',
      label: 'IA3',
      learningRate: 3e-2,
      fields: { peft_type: 'IA3', task_type: 'CAUSAL_LM' },
      settings: "peft's defaults: scaling vectors on k_proj, v_proj and down_proj (feed-forward)",
      folklore: { parameter: 'High', compute: 'High', space: 'High', performance: 'Medium', flexibility: 'Medium' },
    },
  ],
  create: async (
    base: PretrainedModel,
    fields: Record<string, unknown>,
    opts: { adapterName?: string; seed?: number } = {},
  ): Promise<IA3Model> => IA3Model.create(base, { ...ia3OptionsFromFields(fields), seed: opts.seed, adapterName: opts.adapterName }),
  fromPretrained: (base: PretrainedModel, dir: string, opts: { adapterName?: string; isTrainable?: boolean } = {}): Promise<IA3Model> =>
    loadIA3(base, dir, opts),
} satisfies Tuner;
