// Loading a saved prompt-tuning adapter (peft's PeftModel.from_pretrained for PROMPT_TUNING):
// the config from adapter_config.json, the prompt from 'prompt_embeddings' (or the additive
// vector), and for SEQ_CLS the trained classifier copy.

import type { PretrainedModel } from '../../models/types.js';
import { readAdapterFolder, rejectUnused, takeTensor } from '../prompt_learning/load.js';
import type { PromptLearningOptions } from '../prompt_learning/model.js';
import { promptTuningConfigFromDisk, resolvePromptTuningConfig } from './config.js';
import { PromptTuningModel } from './model.js';
import { promptTensorName } from './save.js';

export async function loadPromptTuning(base: PretrainedModel, dir: string, opts: PromptLearningOptions = {}): Promise<PromptTuningModel> {
  const folder = await readAdapterFolder(dir, 'PROMPT_TUNING');
  const config = resolvePromptTuningConfig(base, promptTuningConfigFromDisk(folder.config, `${dir}/adapter_config.json`));
  const name = promptTensorName(config);
  const rows = config.promptCombination === 'ADD' ? 1 : config.numVirtualTokens * config.numTransformerSubmodules;
  const prompt = takeTensor(folder, name, [rows, config.tokenDim]);
  const model = PromptTuningModel.fromState(base, config, prompt, opts);
  const used = model.loadSavedClassifier(folder);
  rejectUnused(folder, new Set([name, ...used]));
  return model;
}
