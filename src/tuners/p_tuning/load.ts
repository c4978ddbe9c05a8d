// Loading a saved P-tuning adapter (PeftModel.from_pretrained for P_TUNING): the saved prompt
// embeddings are the encoder's output and are used as they are, as peft does in inference mode.

import type { PretrainedModel } from '../../models/types.js';
import { readAdapterFolder, rejectUnused, takeTensor } from '../prompt_learning/load.js';
import type { PromptLearningOptions } from '../prompt_learning/model.js';
import { promptEncoderConfigFromDisk, resolvePromptEncoderConfig } from './config.js';
import { PTuningModel } from './model.js';
import { PROMPT_EMBEDDINGS } from './save.js';

export async function loadPTuning(base: PretrainedModel, dir: string, opts: PromptLearningOptions = {}): Promise<PTuningModel> {
  const folder = await readAdapterFolder(dir, 'P_TUNING');
  const config = resolvePromptEncoderConfig(base, promptEncoderConfigFromDisk(folder.config, `${dir}/adapter_config.json`));
  const prompt = takeTensor(folder, PROMPT_EMBEDDINGS, [config.numVirtualTokens * config.numTransformerSubmodules, config.tokenDim]);
  const model = PTuningModel.fromState(base, config, prompt, opts);
  const used = model.loadSavedClassifier(folder);
  rejectUnused(folder, new Set([PROMPT_EMBEDDINGS, ...used]));
  return model;
}
