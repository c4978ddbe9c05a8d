// The tensors of a prompt-tuning adapter_model.safetensors: peft's single 'prompt_embeddings'
// [P, token_dim]; the additive soft prompt saves its vector under its own name instead, so peft
// (which ignores the prompt_tuning_combination key) refuses the file rather than misusing it.

import type { TrainableTensor } from '../types.js';
import type { PromptTuningConfig } from './config.js';

const PROMPT_EMBEDDINGS = 'prompt_embeddings';
export const ADDITIVE_PROMPT_EMBEDDING = 'additive_prompt_embedding';

/** Saved name of the prompt tensor for a config. */
export function promptTensorName(cfg: PromptTuningConfig): string {
  return cfg.promptCombination === 'ADD' ? ADDITIVE_PROMPT_EMBEDDING : PROMPT_EMBEDDINGS;
}

export function savedPromptTuningTensors(cfg: PromptTuningConfig, prompt: TrainableTensor): Map<string, TrainableTensor> {
  return new Map([[promptTensorName(cfg), prompt]]);
}
