// Prompt tuning (peft PROMPT_TUNING): learned virtual tokens in front of the input, or the
// additive soft prompt option. Public surface of the method and its registry entry.

import { promptLearningEntry } from '../prompt_learning/entry.js';
import { promptTuningConfigFromDisk } from './config.js';
import { loadPromptTuning } from './load.js';
import { PromptTuningModel } from './model.js';
import type { Tuner } from '../registry.js';

export { promptTuningConfigFromDisk } from './config.js';
export { PromptTuningModel } from './model.js';
export { ADDITIVE_PROMPT_EMBEDDING } from './save.js';
export { loadPromptTuning } from './load.js';

/** The registry entry: a new adapter from adapter_config.json-style fields, or a saved one. */
export const promptTuningTuner = {
  peftType: 'PROMPT_TUNING',
  label: 'prompt tuning',
  mergeable: { why: 'prompt tuning learns virtual input tokens, not a change of the weights' },
  infoSettings: [
    'num_virtual_tokens',
    'token_dim',
    'num_transformer_submodules',
    'prompt_tuning_init',
    'prompt_tuning_init_text',
    'prompt_tuning_combination',
  ],
  presets: [
    {
      name: 'prompt',
      label: 'Prompt tuning',
      learningRate: 3e-2,
      fields: { peft_type: 'PROMPT_TUNING', num_virtual_tokens: 20, prompt_tuning_init: 'SAMPLE_VOCAB', task_type: 'CAUSAL_LM' },
      settings: '20 virtual tokens, initialized from sampled vocabulary embeddings',
      folklore: { parameter: 'High', compute: 'High', space: 'High', performance: 'Low', flexibility: 'Low' },
    },
  ],
  ...promptLearningEntry('prompt tuning', promptTuningConfigFromDisk, PromptTuningModel.create, loadPromptTuning),
} satisfies Tuner;
