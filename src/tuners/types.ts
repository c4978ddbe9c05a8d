// The contract between tuners (LoRA, IA3, prompt methods, adapters, full fine-tuning) and the
// rest of the library: an adapted model builds its forward pass and loss in a BuildContext,
// owns its trainable tensors by name, and saves/loads them in the Hugging Face layout.

import type { Value } from '../graph/ir.js';
import type { BuildContext } from '../nn/context.js';
import type { ForwardArgs, ForwardResult, PretrainedModel } from '../models/types.js';
import { PeftError } from '../errors.js';

/** A trainable tensor held on the host between steps (the optimizer updates it in place). */
export interface TrainableTensor {
  shape: number[];
  data: Float32Array;
}

export interface AdaptedModel {
  readonly base: PretrainedModel;
  /** "LORA", "IA3", "PROMPT_TUNING", ... or "FULL" */
  readonly peftType: string;
  /** Builds the forward pass with the active adapter(s); creates a graph param per trainable tensor via ctx.param/ctx.weight. */
  forward(ctx: BuildContext, args: ForwardArgs): ForwardResult;
  /** The task loss, adjusting labels where the method changes the sequence (virtual tokens). */
  loss(logits: Value, labels: Value): Value;
  /**
   * Causal LMs: how many -100 labels loss() puts in front of the caller's labels to line them up
   * with virtual-token positions in the logits (prompt tuning and P-tuning, one per virtual token,
   * as peft does); absent means none. The trainer counts the label tokens a loss averages over with it.
   */
  readonly prependedLabels?: number;
  /** Trainable tensors by their graph param names (the in-memory peft names). */
  parameters(): Map<string, TrainableTensor>;
  /** Parameter names AdamW applies weight decay to (transformers: not biases, not norm weights). */
  decayParameters(): Set<string>;
  /** Base-model weights that become trainable params in the graph (modules_to_save, full fine-tuning). */
  trainableBaseWeights(): Set<string>;
  /** Writes the adapter folder in the Hugging Face layout (atomically, file by file). */
  savePretrained(dir: string): Promise<void>;
  /**
   * Methods whose adapters fold into the base weights (peft's merge_and_unload): a plain model
   * computing what the adapted one computes. Absent for methods that cannot merge (the registry
   * says why).
   */
  mergeAndUnload?(opts?: { requantize?: boolean }): PretrainedModel | Promise<PretrainedModel>;
  /**
   * Called by the trainer after every optimizer step with the 0-based step and the (clipped)
   * gradients by param name, the parameters already updated: AdaLoRA's rank allocator runs here
   * (peft's update_and_allocate(global_step)).
   */
  afterOptimizerStep?(step: number, grads: ReadonlyMap<string, Float32Array>): void;
  /** peft's get_nb_trainable_parameters where the generic count (parameters() over the base) would be wrong. */
  numParameters?(): { trainable: number; all: number };
}

export class PeftConfigError extends PeftError {
  constructor(message: string) {
    super(message);
    this.name = 'PeftConfigError';
  }
}

export class AdapterError extends PeftError {
  constructor(message: string) {
    super(message);
    this.name = 'AdapterError';
  }
}

/** adapter_config.json names a peft_type no registered tuner implements. */
export class UnknownPeftTypeError extends AdapterError {
  constructor(
    readonly peftType: string,
    readonly known: string[],
    source: string,
  ) {
    super(`${source}: peft_type ${JSON.stringify(peftType)} is not supported; supported types: ${known.join(', ')}`);
    this.name = 'UnknownPeftTypeError';
  }
}

/** An adapter whose tensors or target modules do not fit the model it is loaded into. */
export class AdapterMismatchError extends AdapterError {
  constructor(message: string) {
    super(message);
    this.name = 'AdapterMismatchError';
  }
}
