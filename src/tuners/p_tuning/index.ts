// P-tuning (peft P_TUNING, PromptEncoderConfig): virtual tokens produced by an MLP or LSTM prompt
// encoder. Public surface of the method and its registry entry.

import type { PretrainedModel } from '../../models/types.js';
import type { PromptLearningOptions } from '../prompt_learning/model.js';
import { promptEncoderConfigFromDisk } from './config.js';
import { loadPTuning } from './load.js';
import { PTuningModel } from './model.js';

export {
  type PromptEncoderConfig,
  type PromptEncoderConfigInput,
  type EncoderReparameterizationType,
  resolvePromptEncoderConfig,
  promptEncoderConfigFromDisk,
  promptEncoderConfigToDisk,
} from './config.js';
export { PTuningModel } from './model.js';
export { encoderShapes } from './encoder.js';
export { PROMPT_EMBEDDINGS } from './save.js';
export { loadPTuning } from './load.js';

/** The registry entry: a new adapter from adapter_config.json-style fields, or a saved one. */
export const pTuningTuner = {
  create: async (base: PretrainedModel, fields: Record<string, unknown>, opts: PromptLearningOptions = {}) =>
    PTuningModel.create(base, promptEncoderConfigFromDisk(fields, 'P-tuning config', { strict: true }), opts),
  fromPretrained: (base: PretrainedModel, dir: string, opts: PromptLearningOptions = {}) => loadPTuning(base, dir, opts),
};
