// Bottleneck adapters (Houlsby et al. 2019, Pfeiffer et al. 2020, He et al. 2022) in AdapterHub
// `adapters` 0.2.2's format and semantics: the public surface. docs/ADAPTERS.md has the details.

export {
  type BnConfig,
  type ResidualBeforeLn,
  BN_PRESETS,
  SUPPORTED_NON_LINEARITIES,
  bnConfigFromJson,
  bnConfigToJson,
  bottleneckSize,
  doubleSeqBnConfig,
  parBnConfig,
  seqBnConfig,
  validateBnConfig,
} from './config.js';
export { type BottleneckWeights, type LocationArgs, adapterFunction, bottleneckLocation } from './layer.js';
export { type AdapterHubMeta, type BnSite, type CreateBottleneckOptions, BottleneckModel, headWeightNames, modelClassOf } from './model.js';
export { type BnLocation, type BnTensor, BN_LOCATIONS, bnTensorName, parseBnTensorName } from './names.js';
export { type SaveBottleneckOptions, adapterHubConfigJson, bottleneckStateDict, saveBottleneck } from './save.js';
export { type AdapterHubConfigFile, type LoadBottleneckOptions, AdapterFormatError, isAdapterHubFolder, loadBottleneck, readAdapterHubConfig } from './load.js';
export { PyFloat, pythonFloatRepr, pythonJsonDumps } from '../../io/pyjson.js';
