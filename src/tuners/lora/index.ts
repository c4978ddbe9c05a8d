// LoRA (with rsLoRA, DoRA, PiSSA init): the public surface of the method and its registry entry.
// getPeftModel/LoraModel.fromPretrained mirror peft; loraTuner is what src/tuners/registry.ts lists.

import type { PretrainedModel } from '../../models/types.js';
import { type LoraConfig, loraConfigFromJson } from './config.js';
import { type CreateLoraOptions, LoraModel } from './model.js';

export {
  type LoraConfig,
  type LoraBias,
  type InitLoraWeights,
  type TaskType,
  DEFAULT_TARGET_MODULES,
  TASK_MODULES_TO_SAVE,
  loraConfig,
  loraConfigFromJson,
  loraConfigToJson,
  loraConfigFileText,
  loraScaling,
} from './config.js';
export { type LoraAdapter, type CreateLoraOptions, type LoadLoraOptions, type MergeAndUnloadOptions, type SaveLoraOptions, LoraModel } from './model.js';
export {
  type AdapterCompression,
  type CompressionReport,
  type CompressionSpec,
  BASE_QUANTIZATION_METADATA_KEY,
  COMPRESSION_CONFIG_KEY,
  COMPRESSION_METADATA_KEY,
  COMPRESSION_METHODS,
  compressionSpec,
  parseCompressionReport,
} from './compress.js';
export { type LoraModuleState, type LoraVariant, PLAIN_LORA, DORA, variantFor } from './layer.js';
export { TargetModulesNotFoundError, targetModuleMatches, isModuleToSave, resolveTargetModules, findTargets } from './targets.js';
export { PEFT_PREFIX, type TensorSlot, tensorNames } from './save.js';
export { type SaveModelOptions, saveModelPretrained, savedDtype } from './merge.js';
export { TopSvd } from './init.js';

/** peft's get_peft_model(model, LoraConfig(...), adapter_name) for LoRA; the third argument is the adapter name or options. */
export function getPeftModel(model: PretrainedModel, config: Partial<LoraConfig> = {}, opts: CreateLoraOptions | string = {}): Promise<LoraModel> {
  return LoraModel.create(model, config, typeof opts === 'string' ? { adapterName: opts } : opts);
}

/** The registry entry: a LoRA model from adapter_config.json-style fields, or from a saved folder. */
export const loraTuner = {
  create: (base: PretrainedModel, fields: Record<string, unknown>, opts: { adapterName?: string; seed?: number } = {}) =>
    LoraModel.create(base, loraConfigFromJson(fields, 'LoRA config'), opts),
  fromPretrained: (base: PretrainedModel, dir: string, opts: { adapterName?: string; isTrainable?: boolean } = {}) => LoraModel.fromPretrained(base, dir, opts),
};
