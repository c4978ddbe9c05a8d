// What every architecture file provides: its module names (as in the Hugging Face state dict),
// the weights it expects, and a forward pass that builds graph in a BuildContext.

import type { Value } from '../graph/ir.js';
import type { ModelConfig } from '../io/hfconfig.js';
import type { BuildContext, LinearSpec } from '../nn/context.js';
import type { WeightStore } from '../nn/weights.js';
import { PeftError } from '../errors.js';

export type ModelTask = 'causal-lm' | 'seq-cls' | 'masked-lm' | 'base';

/** One layer's attention keys and values, [batch, kvHeads, seq, headDim]. */
export interface KV {
  key: Value;
  value: Value;
}

export interface ForwardArgs {
  /** [batch, seq] int64 */
  inputIds?: Value;
  /** [batch, seq, hidden]: replaces the token embedding lookup (prompt tuning) */
  inputsEmbeds?: Value;
  /** [batch, past + seq] int64, 1 = token, 0 = padding */
  attentionMask: Value;
  /** [batch, seq] int64; default arange(past, past + seq) as transformers does */
  positionIds?: Value;
  /** per layer, keys/values of earlier positions (KV cache, prefix tuning) */
  past?: KV[];
  /** BERT segment ids [batch, seq]; default all zeros */
  tokenTypeIds?: Value;
}

export interface ForwardResult {
  /** causal/masked LM: [batch, seq, vocab]; sequence classification: [batch, numLabels] */
  logits: Value;
  /** embeddings output, then every layer's output (the last one after the final norm), as output_hidden_states */
  hiddenStates: Value[];
  /** per layer, keys/values including this call's positions */
  presents: KV[];
}

export class ModelError extends PeftError {
  constructor(message: string) {
    super(message);
    this.name = 'ModelError';
  }
}

export interface PretrainedModel {
  readonly family: 'gpt2' | 'llama' | 'bert' | 'modernbert';
  readonly task: ModelTask;
  readonly config: ModelConfig;
  readonly weights: WeightStore;
  /** the folder it was loaded from */
  readonly dir: string;
  readonly numLayers: number;
  readonly numKVHeads: number;
  readonly headDim: number;
  readonly hiddenSize: number;
  readonly vocabSize: number;
  /** state-dict name of the token embedding module ("transformer.wte", "model.embed_tokens", ...) */
  readonly embeddingName: string;
  /** every linear-like module, for target_modules matching */
  linears(): LinearSpec[];
  /** every module name of the model (nested paths), as named_modules() lists them */
  moduleNames(): string[];
  /** weight names the architecture needs */
  expectedWeights(): string[];
  /** true for decoders (causal attention, KV cache) */
  readonly causal: boolean;
  embedTokens(ctx: BuildContext, ids: Value): Value;
  forward(ctx: BuildContext, args: ForwardArgs): ForwardResult;
  /** the loss transformers computes for this task (labels as in the batch files) */
  loss(logits: Value, labels: Value): Value;
}
