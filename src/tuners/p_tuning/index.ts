// P-tuning (peft P_TUNING, PromptEncoderConfig): virtual tokens produced by an MLP or LSTM prompt
// encoder. Public surface of the method and its registry entry.

import { promptLearningEntry, promptSizes } from '../prompt_learning/entry.js';
import { promptEncoderConfigFromDisk } from './config.js';
import { loadPTuning } from './load.js';
import { PTuningModel } from './model.js';
import type { Tuner } from '../registry.js';

export { promptEncoderConfigFromDisk } from './config.js';
export { PTuningModel } from './model.js';
export { encoderShapes } from './encoder.js';

export { loadPTuning } from './load.js';

/**
 * Parameters P-tuning trains: the virtual-token embedding and the prompt encoder (an MLP, or a
 * bidirectional LSTM with an MLP head), of which peft saves only the encoder's output.
 */
function pTuningTrainableParameters(c: Record<string, unknown>, stored: number | null): number | null {
  const { P, D, H, n } = promptSizes(c);
  let total: number;
  if (c.encoder_reparameterization_type !== 'LSTM') total = P * D + (D * H + H) + (H * H + H) + (H * D + D);
  else {
    // torch.nn.LSTM(bidirectional): per layer and direction 4H x input, 4H x H and two 4H biases.
    let lstm = 0;
    const layers = n('encoder_num_layers');
    for (let l = 0; l < layers; l++) lstm += 2 * (4 * H * (l === 0 ? D : 2 * H) + 4 * H * H + 8 * H);
    total = P * D + lstm + (2 * H * 2 * H + 2 * H) + (2 * H * D + D);
  }
  return Number.isFinite(total) ? total : stored;
}

/** The registry entry: a new adapter from adapter_config.json-style fields, or a saved one. */
export const pTuningTuner = {
  peftType: 'P_TUNING',
  label: 'P-tuning',
  mergeable: { why: 'P-tuning learns virtual input tokens (through its prompt encoder), not a change of the weights' },
  infoSettings: [
    'num_virtual_tokens',
    'token_dim',
    'encoder_reparameterization_type',
    'encoder_hidden_size',
    'encoder_num_layers',
    'encoder_dropout',
  ],
  trainableParameters: pTuningTrainableParameters,
  presets: [
    {
      name: 'ptuning',
      label: 'P-tuning',
      learningRate: 3e-3,
      fields: { peft_type: 'P_TUNING', num_virtual_tokens: 20, encoder_reparameterization_type: 'MLP', task_type: 'CAUSAL_LM' },
      settings: '20 virtual tokens from an MLP prompt encoder (hidden = model width)',
      folklore: { parameter: 'High', compute: 'High', space: 'High', performance: 'Medium', flexibility: 'Medium' },
    },
  ],
  ...promptLearningEntry('P-tuning', promptEncoderConfigFromDisk, PTuningModel.create, loadPTuning),
} satisfies Tuner;
