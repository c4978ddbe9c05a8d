// The fields every prompt-learning config shares (peft's PromptLearningConfig), one table that
// maps them between camelCase and the snake_case keys of adapter_config.json in both directions,
// and the defaults peft derives from the base model (_prepare_prompt_learning_config).

import type { PretrainedModel } from '../../models/types.js';
import { PeftConfigError } from '../types.js';
import { PyFloat, type PyJson } from '../../io/pyjson.js';
import { descriptorOf } from '../../models/registry.js';

export type PromptPeftType = 'PROMPT_TUNING' | 'PREFIX_TUNING' | 'P_TUNING';
/** The peft task types prompt learning supports here: decoders and BERT sequence classification. */
export type PromptTaskType = 'CAUSAL_LM' | 'SEQ_CLS';

export interface PromptLearningConfig {
  peftType: PromptPeftType;
  taskType: PromptTaskType;
  /** virtual tokens (prompt/P-tuning) or prefix length (prefix tuning) */
  numVirtualTokens: number;
  /** width of one virtual token: the hidden size (prefix tuning: head_dim * key/value heads) */
  tokenDim: number;
  /** 1 for decoder-only and encoder-only models (2 is for encoder-decoder models) */
  numTransformerSubmodules: number;
  numAttentionHeads: number;
  numLayers: number;
  baseModelNameOrPath: string | null;
  revision: string | null;
  /** always written true, as peft's save_pretrained does */
  inferenceMode: boolean;
  autoMapping: Record<string, unknown> | null;
}

export type FieldKind = 'int' | 'float' | 'bool' | 'string' | 'dict';

/** One config field: its key in adapter_config.json, its property here, and its Python type. */
export interface FieldSpec<C> {
  key: string;
  prop: keyof C & string;
  kind: FieldKind;
  nullable?: boolean;
  /** allowed values of an enum-like string field */
  values?: readonly string[];
}

const PROMPT_LEARNING_FIELDS: readonly FieldSpec<PromptLearningConfig>[] = [
  { key: 'auto_mapping', prop: 'autoMapping', kind: 'dict', nullable: true },
  { key: 'base_model_name_or_path', prop: 'baseModelNameOrPath', kind: 'string', nullable: true },
  { key: 'inference_mode', prop: 'inferenceMode', kind: 'bool' },
  { key: 'num_attention_heads', prop: 'numAttentionHeads', kind: 'int', nullable: true },
  { key: 'num_layers', prop: 'numLayers', kind: 'int', nullable: true },
  { key: 'num_transformer_submodules', prop: 'numTransformerSubmodules', kind: 'int', nullable: true },
  { key: 'num_virtual_tokens', prop: 'numVirtualTokens', kind: 'int' },
  { key: 'peft_type', prop: 'peftType', kind: 'string', values: ['PROMPT_TUNING', 'PREFIX_TUNING', 'P_TUNING'] },
  { key: 'revision', prop: 'revision', kind: 'string', nullable: true },
  { key: 'task_type', prop: 'taskType', kind: 'string', nullable: true },
  { key: 'token_dim', prop: 'tokenDim', kind: 'int', nullable: true },
];

/** The config as adapter_config.json holds it (inference_mode true, as peft saves). */
function configToDisk<C>(config: C, fields: readonly FieldSpec<C>[]): Record<string, PyJson> {
  const out: Record<string, PyJson> = {};
  for (const f of fields) {
    const v = (config as Record<string, unknown>)[f.prop];
    if (v === undefined || v === null) out[f.key] = null;
    else if (f.kind === 'float') out[f.key] = new PyFloat(v as number);
    else out[f.key] = v as PyJson;
  }
  if ('inference_mode' in out) out.inference_mode = true;
  return out;
}

/**
 * Reads the known keys of an adapter_config.json object, checking their types; keys a later peft
 * added are ignored, as peft itself ignores them when loading a newer config. `strict` (a config a
 * user writes for a new adapter) rejects unknown keys instead, so a misspelt field is not lost.
 */
function configFromDisk<C>(
  raw: Record<string, unknown>,
  fields: readonly FieldSpec<C>[],
  file: string,
  opts: { strict?: boolean } = {},
): Partial<C> {
  if (opts.strict) {
    const known = new Set(fields.map((f) => f.key));
    const unknown = Object.keys(raw).filter((k) => !known.has(k));
    if (unknown.length)
      throw new PeftConfigError(
        `${file}: unknown field${unknown.length > 1 ? 's' : ''} ${unknown.join(', ')}; known fields: ${[...known].sort().join(', ')}`,
      );
  }
  const out: Record<string, unknown> = {};
  for (const f of fields) {
    if (!(f.key in raw)) continue;
    const v = raw[f.key];
    if (v === null) {
      if (!f.nullable) throw new PeftConfigError(`${file}: "${f.key}" must not be null`);
      out[f.prop] = null;
      continue;
    }
    const ok =
      f.kind === 'int'
        ? Number.isInteger(v)
        : f.kind === 'float'
          ? typeof v === 'number'
          : f.kind === 'bool'
            ? typeof v === 'boolean'
            : f.kind === 'string'
              ? typeof v === 'string'
              : typeof v === 'object' && !Array.isArray(v);
    if (!ok)
      throw new PeftConfigError(
        `${file}: "${f.key}" must be ${f.kind === 'dict' ? 'an object' : `a${f.kind === 'int' ? 'n' : ''} ${f.kind}`}${f.nullable ? ' or null' : ''}, got ${JSON.stringify(v)}`,
      );
    if (f.values && !f.values.includes(v as string)) {
      throw new PeftConfigError(`${file}: "${f.key}" is ${JSON.stringify(v)}; expected one of ${f.values.join(', ')}`);
    }
    out[f.prop] = v;
  }
  return out as Partial<C>;
}

/** One method's fields (the shared ones first) and its two directions over adapter_config.json. */
export interface PromptConfigCodec<C extends PromptLearningConfig> {
  readonly fields: readonly FieldSpec<C>[];
  /** the config as adapter_config.json holds it */
  toDisk(config: C): Record<string, PyJson>;
  /** an adapter_config.json object as a config input (peft_type checked, left to the method) */
  fromDisk(raw: Record<string, unknown>, file?: string, opts?: { strict?: boolean }): Partial<Omit<C, 'peftType'>>;
}

/** The codec of a method whose fields are the shared ones plus `own`. */
export function promptConfigCodec<C extends PromptLearningConfig>(own: readonly FieldSpec<C>[]): PromptConfigCodec<C> {
  const fields = [...(PROMPT_LEARNING_FIELDS as readonly FieldSpec<C>[]), ...own];
  return {
    fields,
    toDisk: (config) => configToDisk(config, fields),
    fromDisk(raw, file = 'adapter_config.json', opts = {}) {
      const { peftType: _ignored, ...rest } = configFromDisk(raw, fields, file, opts);
      return rest;
    },
  };
}

/** The task type a base model implies, or a typed error naming what prompt learning supports. */
function taskTypeOf(base: PretrainedModel, requested: string | null | undefined, method: string): PromptTaskType {
  const implied: PromptTaskType | undefined = base.task === 'causal-lm' ? 'CAUSAL_LM' : base.task === 'seq-cls' ? 'SEQ_CLS' : undefined;
  if (!implied) {
    throw new PeftConfigError(
      `${method} needs a causal language model (GPT-2, Llama) or a sequence classifier (BertForSequenceClassification); ` +
        `the ${base.family} model in ${base.dir} was loaded as '${base.task}', for which peft has no prompt-learning task type. ` +
        `Load it with architecture "BertForSequenceClassification", or use LoRA/IA3 for this model.`,
    );
  }
  if (requested != null && requested !== implied) {
    throw new PeftConfigError(
      `task_type ${requested} does not fit the ${base.family} model in ${base.dir}, which is a ${implied === 'CAUSAL_LM' ? 'causal language model' : 'sequence classifier'}; ` +
        `use task_type ${implied} (or leave it out)`,
    );
  }
  return implied;
}

/** The model-derived dimensions of a prompt-learning config; null/undefined means "from the model". */
interface ModelDims {
  numLayers?: number | null;
  tokenDim?: number | null;
  numAttentionHeads?: number | null;
  numTransformerSubmodules?: number | null;
}

/**
 * peft's _prepare_prompt_learning_config: num_layers, token_dim and num_attention_heads default to
 * the model's; prefix tuning on a model whose config has num_key_value_heads uses the key/value heads
 * (token_dim = token_dim / heads * kv_heads), since the prefix is concatenated with keys and values.
 */
function fillFromModel(base: PretrainedModel, peftType: PromptPeftType, given: ModelDims): Required<{ [K in keyof ModelDims]: number }> {
  const numLayers = given.numLayers ?? base.numLayers;
  let tokenDim = given.tokenDim ?? base.hiddenSize;
  let numAttentionHeads = given.numAttentionHeads ?? base.config.numAttentionHeads;
  if (peftType === 'PREFIX_TUNING' && 'num_key_value_heads' in base.config.raw) {
    const kvHeads = base.config.numKeyValueHeads;
    tokenDim = Math.floor(tokenDim / numAttentionHeads) * kvHeads;
    numAttentionHeads = kvHeads;
  }
  return { numLayers, tokenDim, numAttentionHeads, numTransformerSubmodules: given.numTransformerSubmodules ?? 1 };
}

/** The fields every method fills the same way from a user's input and the model. */
export function resolveCommon(
  base: PretrainedModel,
  peftType: PromptPeftType,
  input: Partial<PromptLearningConfig>,
  method: string,
): PromptLearningConfig {
  if (input.numVirtualTokens === undefined || input.numVirtualTokens === null) {
    throw new PeftConfigError(`${method}: num_virtual_tokens is required (e.g. 20)`);
  }
  return {
    peftType,
    taskType: taskTypeOf(base, input.taskType, method),
    numVirtualTokens: input.numVirtualTokens,
    ...fillFromModel(base, peftType, input),
    baseModelNameOrPath: input.baseModelNameOrPath ?? base.dir,
    revision: input.revision ?? null,
    inferenceMode: input.inferenceMode ?? false,
    autoMapping: input.autoMapping ?? null,
  };
}

/** Checks shared by every method: positive sizes, one transformer stack, a model that matches. */
export function validateCommon(base: PretrainedModel, cfg: PromptLearningConfig, method: string): void {
  if (!Number.isInteger(cfg.numVirtualTokens) || cfg.numVirtualTokens < 1) {
    throw new PeftConfigError(`${method}: num_virtual_tokens must be a positive integer, got ${cfg.numVirtualTokens}`);
  }
  if (cfg.numTransformerSubmodules !== 1) {
    throw new PeftConfigError(
      `${method}: num_transformer_submodules is ${cfg.numTransformerSubmodules}, but only 1 is supported (2 is for encoder-decoder models, which this library does not load); set it to 1 or leave it out`,
    );
  }
  if (cfg.numLayers !== base.numLayers) {
    throw new PeftConfigError(
      `${method}: num_layers is ${cfg.numLayers} but the model in ${base.dir} has ${base.numLayers} layers; the adapter was made for another model`,
    );
  }
  const maxPos = base.config.maxPositionEmbeddings;
  if (descriptorOf(base).positions === 'absolute' && maxPos && cfg.numVirtualTokens >= maxPos) {
    throw new PeftConfigError(
      `${method}: ${cfg.numVirtualTokens} virtual tokens leave no room in the model's ${maxPos} learned positions; use fewer virtual tokens`,
    );
  }
}
