// Prompt tuning (peft PROMPT_TUNING): learned virtual tokens in front of the input, or the
// additive soft prompt option. Public surface of the method and its registry entry.

import type { PretrainedModel } from '../../models/types.js';
import type { PromptLearningOptions } from '../prompt_learning/model.js';
import { promptTuningConfigFromDisk } from './config.js';
import { loadPromptTuning } from './load.js';
import { PromptTuningModel } from './model.js';

export {
  type PromptTuningConfig,
  type PromptTuningConfigInput,
  type PromptTuningInit,
  type PromptCombination,
  COMBINATION_KEY,
  resolvePromptTuningConfig,
  promptTuningConfigFromDisk,
  promptTuningConfigToDisk,
} from './config.js';
export { PromptTuningModel } from './model.js';
export { PROMPT_EMBEDDINGS, ADDITIVE_PROMPT_EMBEDDING } from './save.js';
export { loadPromptTuning } from './load.js';
export type { PromptLearningOptions } from '../prompt_learning/model.js';

/** The registry entry: a new adapter from adapter_config.json-style fields, or a saved one. */
export const promptTuningTuner = {
  create: (base: PretrainedModel, fields: Record<string, unknown>, opts: PromptLearningOptions = {}) =>
    PromptTuningModel.create(base, promptTuningConfigFromDisk(fields, 'prompt tuning config', { strict: true }), opts),
  fromPretrained: (base: PretrainedModel, dir: string, opts: PromptLearningOptions = {}) => loadPromptTuning(base, dir, opts),
};
