// Prefix tuning (peft PREFIX_TUNING): learned key/value prefixes for every attention layer,
// optionally reparameterized by a two-layer tanh MLP. Public surface of the method.

export {
  type PrefixTuningConfig,
  type PrefixTuningConfigInput,
  resolvePrefixTuningConfig,
  prefixTuningConfigFromDisk,
  prefixTuningConfigToDisk,
} from './config.js';
export { PrefixTuningModel } from './model.js';
export { PROMPT_EMBEDDINGS } from './save.js';
export { loadPrefixTuning } from './load.js';
