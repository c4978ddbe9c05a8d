// The tensors of a P-tuning adapter_model.safetensors: 'prompt_embeddings' = the prompt encoder's
// OUTPUT [P, token_dim] (peft's get_prompt_embedding_to_save); the MLP/LSTM weights are not saved.

import type { TrainableTensor } from '../types.js';

export const PROMPT_EMBEDDINGS = 'prompt_embeddings';

export function savedPTuningTensors(prompt: TrainableTensor): Map<string, TrainableTensor> {
  return new Map([[PROMPT_EMBEDDINGS, prompt]]);
}
