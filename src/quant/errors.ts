// The one error type of 4-bit quantization: bad options, weights that cannot be quantized, and
// checkpoints whose bitsandbytes tensors or quant_state disagree. Messages say what to change.

export class QuantizationError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'QuantizationError';
  }
}
