// Activation functions by their transformers config names (ACT2FN).

import type { Value } from '../graph/ir.js';
import * as o from '../graph/ops.js';
import { ModelError } from './types.js';

export function activation(name: string, x: Value): Value {
  switch (name) {
    case 'gelu':
      return o.gelu(x);
    case 'gelu_new':
    case 'gelu_pytorch_tanh':
    case 'gelu_fast':
      return o.geluTanh(x);
    case 'relu':
      return o.relu(x);
    case 'silu':
    case 'swish':
      return o.silu(x);
    case 'tanh':
      return o.tanh(x);
    default:
      throw new ModelError(`activation "${name}" is not supported (supported: gelu, gelu_new, gelu_pytorch_tanh, relu, silu, swish, tanh)`);
  }
}
