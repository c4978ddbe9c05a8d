// 4-bit quantization (bitsandbytes NF4/FP4 with double quantization), the public surface: host
// quantize/dequantize, in-graph dequantization, the bitsandbytes on-disk layout, and the plan that
// loadModel uses to pick the weights it holds quantized.

export { QuantizationError } from './errors.js';
export { DYNAMIC_MAP_SIGNED, FP4_CODE, NF4_CODE, type QuantType, type Rounding, codeTable } from './codes.js';
export {
  type AbsmaxState,
  type QuantizeOptions,
  type Quantized4bit,
  NESTED_BLOCK_SIZE,
  blockAbsmax,
  dequantize4bit,
  quantize4bit,
  quantizedBytes,
  validateQuantized,
} from './blockwise.js';
export { type DequantizeInGraphOptions, type UnpackMode, dequantizeInGraph, orderAfter } from './graph.js';
export {
  type BnbConfigOptions,
  type QuantStateJson,
  bnbQuantizationConfig,
  decodeQuantState,
  encodeQuantState,
  fromBnbTensors,
  parseBnbQuantizationConfig,
  toBnbTensors,
} from './bnb.js';
export { type QuantizationConfig, type QuantizationPlan, HEAD_MODULES, quantizationPlan } from './plan.js';
export { type WriteQuantizedOptions, type WriteQuantizedResult, writeQuantizedCheckpoint } from './save.js';
export {
  type QuantKernel,
  type QuantOperandOptions,
  type QuantOperands,
  bnb4QuantType,
  quantLinear,
  quantMatmul,
  quantOperands,
} from './matmul.js';
export { type Int8Granularity, type Int8Quantized, dequantizeInt8, quantizeInt8 } from './int8.js';
