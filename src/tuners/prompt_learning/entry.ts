// What the registry entries of prompt tuning, prefix tuning and P-tuning share: what a saved folder
// holds, a new adapter from adapter_config.json-style fields (read strictly, so a misspelt field is
// refused rather than lost), a saved one by folder, and the sizes their parameter counts start from.

import type { PretrainedModel } from '../../models/types.js';
import type { AdaptedModel } from '../types.js';
import type { Tuner } from '../registry.js';
import type { PromptLearningOptions } from './model.js';

/** The `create` / `fromPretrained` members of a prompt-learning method's registry entry. */
export function promptLearningEntry<I>(
  label: string,
  fromDisk: (raw: Record<string, unknown>, file: string, opts: { strict?: boolean }) => I,
  create: (base: PretrainedModel, input: I, opts: PromptLearningOptions) => AdaptedModel | Promise<AdaptedModel>,
  load: (base: PretrainedModel, dir: string, opts: PromptLearningOptions) => Promise<AdaptedModel>,
): Pick<Tuner, 'saves' | 'create' | 'fromPretrained'> {
  return {
    saves: 'adapter (adapter_config.json, adapter_model.safetensors)',
    create: async (base, fields, opts = {}) => create(base, fromDisk(fields, `${label} config`, { strict: true }), opts),
    fromPretrained: (base, dir, opts = {}) => load(base, dir, opts),
  };
}

/**
 * A saved config's sizes (NaN where a field is missing): P virtual tokens over all transformer
 * submodules, token width D, prompt encoder width H, and `n` for any other numeric field.
 */
export function promptSizes(c: Record<string, unknown>): { P: number; D: number; H: number; n: (key: string) => number } {
  const n = (k: string): number => (typeof c[k] === 'number' ? (c[k] as number) : NaN);
  const submodules = typeof c.num_transformer_submodules === 'number' ? c.num_transformer_submodules : 1;
  return { P: n('num_virtual_tokens') * submodules, D: n('token_dim'), H: n('encoder_hidden_size'), n };
}
