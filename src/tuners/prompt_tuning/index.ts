// Prompt tuning (peft PROMPT_TUNING): learned virtual tokens in front of the input, or the
// additive soft prompt option. Public surface of the method.

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
