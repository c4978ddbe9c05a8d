// The browser build's public API (dist-browser/peft.js, built by `npm run build:browser`): the same
// engine as the Node package, with files in an in-memory storage the page fills (fetched or
// dropped files; a folder of it can be mirrored into the Origin Private File System: OpfsMirror)
// and sessions on onnxruntime-web. Node-only parts (CLI, Hub downloads, server, comparison,
// export) are not in it.

export { PeftError } from '../errors.js';
export { loadModel, supportedArchitectures } from '../models/load.js';
export { Tokenizer } from '../io/tokenizer.js';
export { SafetensorsFile, serializeSafetensors, deserializeSafetensors, writeSafetensors } from '../io/safetensors.js';
export { loadAdapter, createAdapter, getPeftModel, numParameters, PeftModel } from '../tuners/load.js';
export { methodNames, tuners } from '../tuners/registry.js';
export { Trainer } from '../train/trainer.js';
export { loadDataset, readJsonl, parseJsonl, IGNORE_INDEX } from '../train/data.js';
export { TrainStep, EvalStep } from '../train/step.js';
export { Rng } from '../train/rng.js';
export { Generator, generate } from '../generate/index.js';
export { RuntimeSession, availableProviders } from '../runtime/session.js';
export { runtimeBackend, setRuntimeBackend, type RuntimeBackend } from '../runtime/backend.js';
export { MemoryStorage } from '../storage/memory.js';
export { OpfsMirror, opfsRoot } from '../storage/opfs.js';
export { storage, setStorage, type Storage } from '../storage/index.js';

export {
  finetune,
  probeLogits,
  adapterConfig,
  FINETUNE_METHODS,
  FinetuneError,
  type FinetuneMethod,
  type FinetuneOptions,
  type FinetuneResult,
} from './finetune.js';
