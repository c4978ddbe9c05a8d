// 4-bit quantization (bitsandbytes NF4/FP4 with double quantization), the public surface: host
// quantize/dequantize, in-graph dequantization, the bitsandbytes on-disk layout, and the plan that
// loadModel uses to pick the weights it holds quantized.

export { QuantizationError } from './errors.js';

export { type QuantizationConfig } from './plan.js';
export { writeQuantizedCheckpoint } from './save.js';

export { dequantizeInt8, quantizeInt8 } from './int8.js';
