// Prefix tuning (peft PREFIX_TUNING): learned key/value prefixes for every attention layer,
// optionally reparameterized by a two-layer tanh MLP. Public surface and registry entry.

import { promptLearningEntry, promptSizes } from '../prompt_learning/entry.js';
import { prefixTuningConfigFromDisk } from './config.js';
import { loadPrefixTuning } from './load.js';
import { PrefixTuningModel } from './model.js';
import type { Tuner } from '../registry.js';

export { prefixTuningConfigFromDisk } from './config.js';
export { PrefixTuningModel } from './model.js';

export { loadPrefixTuning } from './load.js';

/** Parameters prefix tuning trains: the saved prefixes, or with prefix_projection its embedding and two-layer MLP (not saved). */
function prefixTrainableParameters(c: Record<string, unknown>, stored: number | null): number | null {
  if (c.prefix_projection !== true) return stored;
  const { P, D, H, n } = promptSizes(c);
  const out = n('num_layers') * 2 * D;
  const total = P * D + (D * H + H) + (H * out + out);
  return Number.isFinite(total) ? total : stored;
}

/** The registry entry: a new adapter from adapter_config.json-style fields, or a saved one. */
export const prefixTuningTuner = {
  peftType: 'PREFIX_TUNING',
  label: 'prefix tuning',
  mergeable: { why: 'prefix tuning learns extra keys and values for every attention layer, not a change of the weights' },
  infoSettings: ['num_virtual_tokens', 'num_layers', 'num_attention_heads', 'token_dim', 'prefix_projection', 'encoder_hidden_size'],
  trainableParameters: prefixTrainableParameters,
  presets: [
    {
      name: 'prefix',
      label: 'Prefix tuning',
      learningRate: 1e-2,
      fields: { peft_type: 'PREFIX_TUNING', num_virtual_tokens: 20, task_type: 'CAUSAL_LM' },
      settings: '20 virtual key/value tokens per layer, no reparameterization',
      folklore: { parameter: 'High', compute: 'High', space: 'High', performance: 'Medium', flexibility: 'Medium' },
    },
  ],
  ...promptLearningEntry('prefix tuning', prefixTuningConfigFromDisk, PrefixTuningModel.create, loadPrefixTuning),
} satisfies Tuner;
