// Loading a saved prefix-tuning adapter (PeftModel.from_pretrained for PREFIX_TUNING): the prefix
// is used as saved; with prefix_projection the saved prefix is the projection's output, so the
// loaded adapter trains that prefix directly (the MLP is not in the file).

import type { PretrainedModel } from '../../models/types.js';
import { readAdapterFolder, rejectUnused, takeTensor } from '../prompt_learning/load.js';
import type { PromptLearningOptions } from '../prompt_learning/model.js';
import { prefixTuningConfigFromDisk, resolvePrefixTuningConfig } from './config.js';
import { PrefixTuningModel } from './model.js';
import { PROMPT_EMBEDDINGS } from './save.js';

export async function loadPrefixTuning(base: PretrainedModel, dir: string, opts: PromptLearningOptions = {}): Promise<PrefixTuningModel> {
  const folder = await readAdapterFolder(dir, 'PREFIX_TUNING');
  const config = resolvePrefixTuningConfig(base, prefixTuningConfigFromDisk(folder.config, `${dir}/adapter_config.json`));
  const prefix = takeTensor(folder, PROMPT_EMBEDDINGS, [config.numVirtualTokens, config.numLayers * 2 * config.tokenDim]);
  const model = PrefixTuningModel.fromState(base, config, prefix, opts);
  const used = model.loadSavedClassifier(folder);
  rejectUnused(folder, new Set([PROMPT_EMBEDDINGS, ...used]));
  return model;
}
