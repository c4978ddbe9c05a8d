// The one error type of 4-bit quantization: bad options, weights that cannot be quantized, and
// checkpoints whose bitsandbytes tensors or quant_state disagree. Messages say what to change.

import { PeftError } from '../errors.js';

export class QuantizationError extends PeftError {
  constructor(message: string) {
    super(message);
    this.name = 'QuantizationError';
  }
}
