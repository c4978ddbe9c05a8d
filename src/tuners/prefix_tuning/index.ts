// Prefix tuning (peft PREFIX_TUNING): learned key/value prefixes for every attention layer,
// optionally reparameterized by a two-layer tanh MLP. Public surface and registry entry.

import type { PretrainedModel } from '../../models/types.js';
import type { PromptLearningOptions } from '../prompt_learning/model.js';
import { prefixTuningConfigFromDisk } from './config.js';
import { loadPrefixTuning } from './load.js';
import { PrefixTuningModel } from './model.js';

export {
  type PrefixTuningConfig,
  type PrefixTuningConfigInput,
  resolvePrefixTuningConfig,
  prefixTuningConfigFromDisk,
  prefixTuningConfigToDisk,
} from './config.js';
export { PrefixTuningModel } from './model.js';
export { PROMPT_EMBEDDINGS } from './save.js';
export { loadPrefixTuning } from './load.js';

/** The registry entry: a new adapter from adapter_config.json-style fields, or a saved one. */
export const prefixTuningTuner = {
  create: async (base: PretrainedModel, fields: Record<string, unknown>, opts: PromptLearningOptions = {}) =>
    PrefixTuningModel.create(base, prefixTuningConfigFromDisk(fields, 'prefix tuning config', { strict: true }), opts),
  fromPretrained: (base: PretrainedModel, dir: string, opts: PromptLearningOptions = {}) => loadPrefixTuning(base, dir, opts),
};
