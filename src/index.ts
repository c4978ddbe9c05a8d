// The package's public API (`import { loadModel, getPeftModel, Trainer } from 'peft-ts'`): loading
// models and adapters, every tuner, training, generation, quantization, comparison and the I/O
// underneath. Deeper modules stay importable by path (dist/src/...), but what is listed here is
// what the README and docs/ use.

export { PeftError } from './errors.js';
// models and Hugging Face I/O
export { type LoadModelOptions, loadModel, supportedArchitectures } from './models/load.js';
export { type ModelTask, type PretrainedModel, ModelError } from './models/types.js';
export {
  Tokenizer,
  TokenizerError,
  TokenizerLoadError,
  ChatTemplateError,
  MissingChatTemplateError,
  type ChatMessage,
} from './io/tokenizer.js';
export {
  type HubOptions,
  HubError,
  HubOfflineError,
  HubNotFoundError,
  HubAuthError,
  HubHttpError,
  HubUnsafePathError,
  HubTimeoutError,
  HubSizeError,
  ModelPathError,
  resolveModelDir,
  snapshotDownload,
  hubCacheDir,
} from './io/hub.js';
export {
  SafetensorsError,
  SafetensorsFile,
  readSafetensors,
  deserializeSafetensors,
  serializeSafetensors,
  writeSafetensors,
} from './io/safetensors.js';

// adapters: any peft folder, and each method
export {
  type AdaptedModel,
  type TrainableTensor,
  PeftConfigError,
  AdapterError,
  UnknownPeftTypeError,
  AdapterMismatchError,
} from './tuners/types.js';
export {
  loadAdapter,
  createAdapter,
  getPeftModel,
  printTrainableParameters,
  numParameters,
  PeftModel,
  type PeftConfig,
} from './tuners/load.js';
export { registerTuner, tuners, methodNames, type Tuner, type MethodPreset } from './tuners/registry.js';
export { LoraModel, TargetModulesNotFoundError, type MergeAndUnloadOptions, type SaveLoraOptions } from './tuners/lora/index.js';
export { IA3Model, loadIA3 } from './tuners/ia3/index.js';
export { BASE_ADAPTER, MixedBatchError, MultiAdapterModel, type MixedStrategy, type MultiAdapterOptions } from './tuners/multi/index.js';
// serving many adapters over one base (the engine, its request/result types, the OpenAI-compatible server)
export * from './serve/index.js';
export { PromptTuningModel, loadPromptTuning } from './tuners/prompt_tuning/index.js';
export { PrefixTuningModel, loadPrefixTuning } from './tuners/prefix_tuning/index.js';
export { PTuningModel, loadPTuning } from './tuners/p_tuning/index.js';
export { BottleneckModel, loadBottleneck, isAdapterHubFolder, AdapterFormatError } from './tuners/bottleneck/index.js';
export { FullFineTuneModel, getFullFineTuneModel } from './tuners/full/index.js';

// training
export { Trainer, type TrainerOptions, type TrainResult, type EvalResult, METRICS_FILE, PLOT_FILE, BEST_DIR } from './train/trainer.js';
export { loadDataset, loadClassificationDataset, readJsonl, IGNORE_INDEX } from './train/data.js';
export { AdamW, type AdamWOptions, clipGradNorm } from './train/adamw.js';
export { LrSchedule, type ScheduleName, SCHEDULES } from './train/schedule.js';
export { TrainStep, EvalStep, type StepOptions } from './train/step.js';
export { DatasetError, TrainError, CheckpointError } from './train/errors.js';
export { Rng } from './train/rng.js';

// generation
export {
  Generator,
  generate,
  GenerationError,
  type GenerateOptions,
  type GeneratorOptions,
  type GenerationResult,
  ForwardSession,
} from './generate/index.js';

// quantization (bitsandbytes NF4/FP4, int8)
export { QuantizationError, type QuantizationConfig, writeQuantizedCheckpoint, quantizeInt8, dequantizeInt8 } from './quant/index.js';
export { quantize4bit, dequantize4bit, type Quantized4bit, type QuantizeOptions } from './quant/blockwise.js';

// bundled tasks, quickstart and method comparison
export {
  runQuickstart,
  type QuickstartOptions,
  type QuickstartResult,
  evaluateTask,
  type TaskEvalOptions,
  type TaskEvaluation,
  bundledModelDir,
  taskDataDir,
  TASK_NAMES,
  TaskError,
} from './tasks/index.js';
export {
  runComparison,
  type CompareOptions,
  type ComparisonResult,
  type ComparisonReport,
  CompareError,
  compareMethods,
} from './compare/index.js';

// export for other runtimes (transformers.js ONNX folders, GGUF models and LoRA adapters)
export {
  loadExportSource,
  type ExportSource,
  writeTransformersJs,
  type ExportedFile,
  buildTransformersJsGraph,
  ggufModel,
  ggufLora,
  modelfile,
  encodeGguf,
  GgmlType,
  ValueType,
  type GgufTensor,
  type MetaValue,
  ExportError,
  type OnnxDtype,
  type GgufType,
} from './export/index.js';

// the engine underneath (graph IR, autodiff, ONNX Runtime sessions)
export { Graph, type Value } from './graph/ir.js';
export * as ops from './graph/ops.js';
export { grad } from './autodiff/grad.js';
export { RuntimeSession, RuntimeError, type RuntimeOptions, availableProviders } from './runtime/session.js';

// where files and sessions live: node:fs and onnxruntime-node by default; an in-memory storage and
// onnxruntime-web in the browser build (src/browser/index.ts)
export { storage, setStorage, type Storage, StorageError } from './storage/index.js';
export { MemoryStorage } from './storage/memory.js';
export { runtimeBackend, setRuntimeBackend, type RuntimeBackend } from './runtime/backend.js';
