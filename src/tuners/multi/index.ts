// Mixed-adapter batches: one LoRA/IA3 adapter per batch row over one base (see model.ts).
export {
  ADAPTER_INDEX_INPUT,
  BASE_ADAPTER,
  MixedBatchError,
  MultiAdapterModel,
  isMultiAdapter,
  type LoadedAdapterInfo,
  type MixedStrategy,
  type MultiAdapterOptions,
} from './model.js';
