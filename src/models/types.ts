// What every architecture file provides: its module names (as in the Hugging Face state dict),
// the weights it expects, and a forward pass that builds graph in a BuildContext.

import type { Value } from '../graph/ir.js';
import type { CommonConfig, Fields, ModelConfig } from '../io/hfconfig.js';
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

/** Builds the model of one transformers class from its normalized config and an (empty) weight store. */
export type ModelBuilder = (config: ModelConfig, weights: WeightStore, dir: string) => PretrainedModel;

/** Where bottleneck adapters (AdapterHub layout) sit in an architecture's state dict. */
export interface BottleneckLayout {
  /** the module holding the adapter after attention ('mh_adapter') or the feed-forward block ('output_adapter') of a layer */
  module(layer: number, location: 'mh_adapter' | 'output_adapter'): string;
  /** a saved tensor name (with or without the base prefix) to [layer, location module tail, adapter name, tensor] groups */
  pattern: RegExp;
  /** the location module tail (regex group 2) that means 'mh_adapter' */
  attentionTail: string;
}

/**
 * Everything the rest of the library needs to know about one architecture family, owned by its
 * file in src/models/ and listed once in models/registry.ts: which config.json model_types and
 * transformers classes it serves, names, capabilities and peft's per-model-type defaults.
 */
export interface ArchitectureDescriptor {
  /** PretrainedModel.family of the models it builds */
  family: PretrainedModel['family'];
  /** the name messages and docs use ("Gemma 3", "ModernBERT") */
  displayName: string;
  /** config.json model_types served */
  modelTypes: readonly string[];
  /**
   * config.json to ModelConfig for its model_types: the fields the architecture has, with its
   * transformers config class defaults (shared readers in io/hfconfig.ts: decoderFields, ropeScaling, ...)
   */
  readConfig(f: Fields, common: CommonConfig): ModelConfig;
  /** transformers class names (config.json "architectures") it builds */
  classes: Readonly<Record<string, ModelBuilder>>;
  /** per model_type, the class built when config.json lists no known class */
  defaultClass: Readonly<Record<string, string>>;
  /** prefix the task model puts in front of the base model's weight names ("model.", "transformer.") */
  basePrefix: string;
  /** 'absolute': a learned position table that virtual tokens and generation can run out of; 'rotary': none */
  positions: 'absolute' | 'rotary';
  /** capabilities, for documentation, `peft info` and checks */
  capabilities: {
    tiedEmbeddings: 'default' | 'optional' | 'never';
    slidingWindow?: boolean;
    /** module names whose output concatenates several projections (one LoRA covers all of it) */
    fusedProjections?: readonly string[];
  };
  /** peft's default LoRA target_modules, per model_type (absent: peft has none, target_modules is required) */
  loraTargets: Readonly<Record<string, readonly string[]>>;
  /** peft's default IA3 target_modules and feedforward_modules, per model_type */
  ia3Targets: Readonly<Record<string, { targets: readonly string[]; feedforward: readonly string[] }>>;
  /** bottleneck adapter locations (absent: bottleneck adapters are not implemented for it) */
  bottleneck?: BottleneckLayout;
}
