// LoRA's configuration: peft 0.13.2's LoraConfig fields and defaults, checked where peft checks
// them, and one table that maps the camelCase API to adapter_config.json (snake_case keys, sorted,
// two-space indent, Python's float spelling) in both directions, so saved files match peft's.

import { PyFloat, type PyJson, pythonJsonDumps } from '../../io/pyjson.js';
import { PeftConfigError } from '../types.js';

export type InitLoraWeights = boolean | 'gaussian' | 'pissa' | `pissa_niter_${number}`;
export type LoraBias = 'none' | 'all' | 'lora_only';
export type TaskType = 'SEQ_CLS' | 'SEQ_2_SEQ_LM' | 'CAUSAL_LM' | 'TOKEN_CLS' | 'QUESTION_ANS' | 'FEATURE_EXTRACTION';

export interface LoraConfig {
  peftType: 'LORA';
  /** LoRA rank */
  r: number;
  /** module names (full name or a '.'-suffix), a regex matched against the full name, or "all-linear"; null: peft's default for the model type */
  targetModules: string[] | string | null;
  loraAlpha: number;
  loraDropout: number;
  /** true for weights stored [in, out] (GPT-2's Conv1D); corrected per module as peft does */
  fanInFanOut: boolean;
  bias: LoraBias;
  /** scaling alpha / sqrt(r) instead of alpha / r */
  useRslora: boolean;
  /** modules trained and saved in full (a module matches when its name ends with the entry) */
  modulesToSave: string[] | null;
  initLoraWeights: InitLoraWeights;
  layersToTransform: number[] | number | null;
  layersPattern: string[] | string | null;
  /** module-name pattern -> rank (peft: matched as `.*\.<key>$`) */
  rankPattern: Record<string, number>;
  alphaPattern: Record<string, number>;
  megatronConfig: Record<string, unknown> | null;
  megatronCore: string | null;
  loftqConfig: Record<string, unknown>;
  useDora: boolean;
  layerReplication: [number, number][] | null;
  taskType: TaskType | null;
  baseModelNameOrPath: string | null;
  revision: string | null;
  inferenceMode: boolean;
  autoMapping: Record<string, unknown> | null;
}

type Kind = 'int' | 'float' | 'number' | 'bool' | 'string' | 'any';

interface Field<K extends keyof LoraConfig = keyof LoraConfig> {
  key: K;
  json: string;
  default: LoraConfig[K];
  /** how a number is spelled on disk: peft stores lora_dropout as a Python float */
  kind: Kind;
}

// The one table: API name, adapter_config.json name, peft 0.13.2 default, on-disk kind.
const FIELDS: Field[] = [
  { key: 'alphaPattern', json: 'alpha_pattern', default: {}, kind: 'any' },
  { key: 'autoMapping', json: 'auto_mapping', default: null, kind: 'any' },
  { key: 'baseModelNameOrPath', json: 'base_model_name_or_path', default: null, kind: 'string' },
  { key: 'bias', json: 'bias', default: 'none', kind: 'string' },
  { key: 'fanInFanOut', json: 'fan_in_fan_out', default: false, kind: 'bool' },
  { key: 'inferenceMode', json: 'inference_mode', default: false, kind: 'bool' },
  { key: 'initLoraWeights', json: 'init_lora_weights', default: true, kind: 'any' },
  { key: 'layerReplication', json: 'layer_replication', default: null, kind: 'any' },
  { key: 'layersPattern', json: 'layers_pattern', default: null, kind: 'any' },
  { key: 'layersToTransform', json: 'layers_to_transform', default: null, kind: 'any' },
  { key: 'loftqConfig', json: 'loftq_config', default: {}, kind: 'any' },
  { key: 'loraAlpha', json: 'lora_alpha', default: 8, kind: 'number' },
  { key: 'loraDropout', json: 'lora_dropout', default: 0, kind: 'float' },
  { key: 'megatronConfig', json: 'megatron_config', default: null, kind: 'any' },
  { key: 'megatronCore', json: 'megatron_core', default: 'megatron.core', kind: 'string' },
  { key: 'modulesToSave', json: 'modules_to_save', default: null, kind: 'any' },
  { key: 'peftType', json: 'peft_type', default: 'LORA', kind: 'string' },
  { key: 'r', json: 'r', default: 8, kind: 'int' },
  { key: 'rankPattern', json: 'rank_pattern', default: {}, kind: 'any' },
  { key: 'revision', json: 'revision', default: null, kind: 'string' },
  { key: 'targetModules', json: 'target_modules', default: null, kind: 'any' },
  { key: 'taskType', json: 'task_type', default: null, kind: 'string' },
  { key: 'useDora', json: 'use_dora', default: false, kind: 'bool' },
  { key: 'useRslora', json: 'use_rslora', default: false, kind: 'bool' },
];

/** Informational keys whose value never matters here. */
const IGNORED_KEYS = new Set(['peft_version', 'qalora_group_size', 'runtime_config']);

const TASK_TYPES: readonly TaskType[] = ['SEQ_CLS', 'SEQ_2_SEQ_LM', 'CAUSAL_LM', 'TOKEN_CLS', 'QUESTION_ANS', 'FEATURE_EXTRACTION'];

function defaults(): LoraConfig {
  const c: Record<string, unknown> = {};
  for (const f of FIELDS) c[f.key] = structuredClone(f.default);
  return c as unknown as LoraConfig;
}

/** A LoraConfig with peft's defaults for every field not given; validated as peft's __post_init__ does. */
export function loraConfig(fields: Partial<LoraConfig> = {}): LoraConfig {
  const c = { ...defaults(), ...structuredClone(fields), peftType: 'LORA' as const };
  // peft turns a list into a set: duplicates go, order is the first occurrence here.
  if (Array.isArray(c.targetModules)) c.targetModules = [...new Set(c.targetModules)];
  validate(c);
  return c;
}

function fail(msg: string): never {
  throw new PeftConfigError(msg);
}

function validate(c: LoraConfig): void {
  if (!Number.isInteger(c.r) || c.r <= 0) fail(`LoRA r must be a positive integer, got ${JSON.stringify(c.r)}`);
  if (typeof c.loraAlpha !== 'number' || !Number.isFinite(c.loraAlpha)) fail(`lora_alpha must be a number, got ${JSON.stringify(c.loraAlpha)}`);
  if (typeof c.loraDropout !== 'number' || !(c.loraDropout >= 0 && c.loraDropout < 1)) fail(`lora_dropout must be in [0, 1), got ${JSON.stringify(c.loraDropout)}`);
  if (!['none', 'all', 'lora_only'].includes(c.bias)) fail(`bias must be "none", "all" or "lora_only", got ${JSON.stringify(c.bias)}`);
  const tm = c.targetModules;
  if (tm !== null && typeof tm !== 'string' && !(Array.isArray(tm) && tm.every((t) => typeof t === 'string'))) {
    fail(`target_modules must be a list of module names, a regex string, "all-linear" or null, got ${JSON.stringify(tm)}`);
  }
  if (typeof tm === 'string' && c.layersToTransform !== null) fail('`layers_to_transform` cannot be used when `target_modules` is a str; give target_modules as a list');
  if (typeof tm === 'string' && c.layersPattern !== null) fail('`layers_pattern` cannot be used when `target_modules` is a str; give target_modules as a list');
  const ltt = c.layersToTransform;
  if (ltt !== null && !Number.isInteger(ltt) && !(Array.isArray(ltt) && ltt.every((x) => Number.isInteger(x)))) {
    fail(`layers_to_transform must be an integer, a list of integers or null, got ${JSON.stringify(ltt)}`);
  }
  const lp = c.layersPattern;
  if (lp !== null && typeof lp !== 'string' && !(Array.isArray(lp) && lp.every((x) => typeof x === 'string'))) {
    fail(`layers_pattern must be a string, a list of strings or null, got ${JSON.stringify(lp)}`);
  }
  if (c.modulesToSave !== null && !(Array.isArray(c.modulesToSave) && c.modulesToSave.every((x) => typeof x === 'string'))) {
    fail(`modules_to_save must be a list of module names or null, got ${JSON.stringify(c.modulesToSave)}`);
  }
  for (const [name, pat] of [['rank_pattern', c.rankPattern], ['alpha_pattern', c.alphaPattern]] as const) {
    if (typeof pat !== 'object' || pat === null || Array.isArray(pat)) fail(`${name} must be an object, got ${JSON.stringify(pat)}`);
    for (const [k, v] of Object.entries(pat)) {
      if (typeof v !== 'number' || !Number.isFinite(v)) fail(`${name}["${k}"] must be a number, got ${JSON.stringify(v)}`);
      if (name === 'rank_pattern' && (!Number.isInteger(v) || v <= 0)) fail(`rank_pattern["${k}"] must be a positive integer, got ${v}`);
    }
  }
  const init = c.initLoraWeights;
  if (init === 'loftq' as unknown || init === 'olora' as unknown) {
    fail(`init_lora_weights="${String(init)}" is not supported here; use true, false, "gaussian", "pissa" or "pissa_niter_<n>"`);
  }
  if (!(typeof init === 'boolean' || init === 'gaussian' || init === 'pissa' || (typeof init === 'string' && /^pissa_niter_\d+$/.test(init)))) {
    fail(`init_lora_weights must be true, false, "gaussian", "pissa" or "pissa_niter_<n>", got ${JSON.stringify(init)}`);
  }
  if (c.useDora && c.megatronConfig) fail('DoRA does not support megatron_core; set use_dora=false or drop megatron_config');
  if (c.layerReplication !== null) fail('layer_replication is not supported; remove it from the config');
  if (c.loftqConfig && Object.keys(c.loftqConfig).length > 0) fail('LoftQ (loftq_config) is not supported; remove it from the config');
  if (c.taskType !== null && !TASK_TYPES.includes(c.taskType)) fail(`task_type must be one of ${TASK_TYPES.join(', ')} or null, got ${JSON.stringify(c.taskType)}`);
  if (typeof c.inferenceMode !== 'boolean' || typeof c.useDora !== 'boolean' || typeof c.useRslora !== 'boolean' || typeof c.fanInFanOut !== 'boolean') {
    fail('inference_mode, use_dora, use_rslora and fan_in_fan_out must be true or false');
  }
}

function isNeutral(v: unknown): boolean {
  return v === null || v === false || (Array.isArray(v) && v.length === 0) || (typeof v === 'object' && v !== null && Object.keys(v).length === 0);
}

/** Parses adapter_config.json's object (snake_case keys) into a validated LoraConfig. */
export function loraConfigFromJson(obj: Record<string, unknown>, source = 'adapter_config.json'): LoraConfig {
  if (obj.peft_type !== undefined && obj.peft_type !== 'LORA') throw new PeftConfigError(`${source}: peft_type is ${JSON.stringify(obj.peft_type)}, not "LORA"`);
  const byJson = new Map(FIELDS.map((f) => [f.json, f]));
  const fields: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(obj)) {
    const f = byJson.get(k);
    if (f) {
      fields[f.key] = v;
      continue;
    }
    // Newer peft versions add keys (lora_bias, exclude_modules, eva_config, ...): harmless while
    // they hold their neutral value, a different model otherwise.
    if (IGNORED_KEYS.has(k) || isNeutral(v)) continue;
    throw new PeftConfigError(`${source}: "${k}": ${JSON.stringify(v)} is a LoRA setting this library does not implement (peft 0.13.2 format); remove it or set it to its default`);
  }
  try {
    return loraConfig(fields as Partial<LoraConfig>);
  } catch (e) {
    if (e instanceof PeftConfigError) throw new PeftConfigError(`${source}: ${e.message}`);
    throw e;
  }
}

/** The snake_case object peft writes, keys in peft's (sorted) order. */
export function loraConfigToJson(c: LoraConfig): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const f of [...FIELDS].sort((a, b) => (a.json < b.json ? -1 : 1))) out[f.json] = c[f.key];
  return out;
}

/** adapter_config.json text exactly as peft writes it: json.dumps(indent=2, sort_keys=True), no trailing newline. */
export function loraConfigFileText(c: LoraConfig): string {
  const kinds = new Map(FIELDS.map((f) => [f.json, f.kind]));
  const json: Record<string, PyJson> = {};
  for (const [k, v] of Object.entries(loraConfigToJson(c))) json[k] = kinds.get(k) === 'float' && typeof v === 'number' ? new PyFloat(v) : (v as PyJson);
  return pythonJsonDumps(json);
}

/** peft's constants table: default LoRA targets per model_type when target_modules is null. */
export const DEFAULT_TARGET_MODULES: Readonly<Record<string, readonly string[]>> = {
  gpt2: ['c_attn'],
  llama: ['q_proj', 'v_proj'],
  mistral: ['q_proj', 'v_proj'],
  qwen2: ['q_proj', 'v_proj'],
  qwen3: ['q_proj', 'v_proj'],
  bert: ['query', 'value'],
};

/** The modules peft adds to modules_to_save for classification task types (PeftModelForSequenceClassification). */
export const TASK_MODULES_TO_SAVE: Readonly<Partial<Record<TaskType, readonly string[]>>> = {
  SEQ_CLS: ['classifier', 'score'],
  TOKEN_CLS: ['classifier', 'score'],
  QUESTION_ANS: ['qa_outputs'],
};

/** LoRA's scaling factor for one module. */
export function loraScaling(alpha: number, r: number, useRslora: boolean): number {
  return useRslora ? alpha / Math.sqrt(r) : alpha / r;
}
