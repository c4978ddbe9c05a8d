// The tensors of a prefix-tuning adapter_model.safetensors: 'prompt_embeddings' holds the key/value
// prefix [P, num_layers * 2 * token_dim] as the model uses it, i.e. the projection's OUTPUT when
// prefix_projection is on (the MLP weights are not saved, as in peft).

import type { TrainableTensor } from '../types.js';

export const PROMPT_EMBEDDINGS = 'prompt_embeddings';

export function savedPrefixTuningTensors(prefix: TrainableTensor): Map<string, TrainableTensor> {
  return new Map([[PROMPT_EMBEDDINGS, prefix]]);
}
