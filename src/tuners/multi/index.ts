// Mixed-adapter batches: one LoRA/IA3 adapter per batch row over one base (see model.ts).
export { BASE_ADAPTER, MixedBatchError, MultiAdapterModel, type MixedStrategy, type MultiAdapterOptions } from './model.js';
