// Full fine-tuning: every (or each selected) base weight trains. The baseline the parameter-
// efficient methods are compared with, and the simplest AdaptedModel the trainer runs.

import type { PretrainedModel } from '../../models/types.js';
import { type FullConfig, fullConfig } from './config.js';
import { FullFineTuneModel } from './model.js';

export { type FullConfig, fullConfig, moduleMatches } from './config.js';
export { FullFineTuneModel } from './model.js';

/** Wraps a model for full fine-tuning (peft's get_peft_model counterpart for the FULL method). */
export function getFullFineTuneModel(model: PretrainedModel, config: FullConfig = fullConfig()): FullFineTuneModel {
  return new FullFineTuneModel(model, config);
}
