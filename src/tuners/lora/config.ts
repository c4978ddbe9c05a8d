// LoRA's configuration: peft 0.13.2's LoraConfig fields and defaults, checked where peft checks
// them, and one table that maps the camelCase API to adapter_config.json (snake_case keys, sorted,
// two-space indent, Python's float spelling) in both directions, so saved files match peft's.

import { PyFloat, type PyJson, pythonJsonDumps } from '../../io/pyjson.js';
import { PeftConfigError } from '../types.js';
import { LORA_DEFAULT_TARGETS } from '../../models/registry.js';

export type InitLoraWeights =
  boolean | 'gaussian' | 'pissa' | `pissa_niter_${number}` | 'olora' | 'eva' | 'orthogonal' | 'corda' | 'loftq' | 'mica' | 'lora_ga';
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
  // peft 0.20 fields (written only when the config came from a peft 0.20 file or holds a non-default value)
  /** modules never wrapped: a regex full-matched against the module name, or names / '.'-suffixes */
  excludeModules: string[] | string | null;
  /** lora_B has a bias (saved as lora_B.bias) */
  loraBias: boolean;
  /** peft's TrainableTokens: embedding rows trained and saved alone (a list for the input embedding, or module name -> rows) */
  trainableTokenIndices: number[] | Record<string, number[]> | null;
  /** peft version that wrote the file (null: a peft 0.13-style file) */
  peftVersion: string | null;
  evaConfig: Record<string, unknown> | null;
  cordaConfig: Record<string, unknown> | null;
  loraGaConfig: Record<string, unknown> | null;
  veloraConfig: Record<string, unknown> | null;
  aloraInvocationTokens: number[] | null;
  useQalora: boolean;
  qaloraGroupSize: number;
  monteCloraConfig: Record<string, unknown> | null;
  targetParameters: string[] | null;
  useBdlora: Record<string, unknown> | null;
  arrowConfig: Record<string, unknown> | null;
  ensureWeightTying: boolean;
}

type Kind = 'int' | 'float' | 'number' | 'bool' | 'string' | 'any';

interface Field<K extends keyof LoraConfig = keyof LoraConfig> {
  key: K;
  json: string;
  default: LoraConfig[K];
  /** how a number is spelled on disk: peft stores lora_dropout as a Python float */
  kind: Kind;
  /** first written by peft 0.20 */
  v020?: boolean;
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
  { key: 'excludeModules', json: 'exclude_modules', default: null, kind: 'any', v020: true },
  { key: 'loraBias', json: 'lora_bias', default: false, kind: 'bool', v020: true },
  { key: 'trainableTokenIndices', json: 'trainable_token_indices', default: null, kind: 'any', v020: true },
  { key: 'peftVersion', json: 'peft_version', default: null, kind: 'string', v020: true },
  { key: 'evaConfig', json: 'eva_config', default: null, kind: 'any', v020: true },
  { key: 'cordaConfig', json: 'corda_config', default: null, kind: 'any', v020: true },
  { key: 'loraGaConfig', json: 'lora_ga_config', default: null, kind: 'any', v020: true },
  { key: 'veloraConfig', json: 'velora_config', default: null, kind: 'any', v020: true },
  { key: 'aloraInvocationTokens', json: 'alora_invocation_tokens', default: null, kind: 'any', v020: true },
  { key: 'useQalora', json: 'use_qalora', default: false, kind: 'bool', v020: true },
  { key: 'qaloraGroupSize', json: 'qalora_group_size', default: 16, kind: 'int', v020: true },
  { key: 'monteCloraConfig', json: 'monteclora_config', default: null, kind: 'any', v020: true },
  { key: 'targetParameters', json: 'target_parameters', default: null, kind: 'any', v020: true },
  { key: 'useBdlora', json: 'use_bdlora', default: null, kind: 'any', v020: true },
  { key: 'arrowConfig', json: 'arrow_config', default: null, kind: 'any', v020: true },
  { key: 'ensureWeightTying', json: 'ensure_weight_tying', default: false, kind: 'bool', v020: true },
];

/**
 * peft 0.20 settings that change what the adapter computes and that this library does not
 * implement: refused by name (UnsupportedLoraFeatureError) whenever they hold a non-default value.
 */
const UNIMPLEMENTED: readonly { key: keyof LoraConfig; what: string }[] = [
  { key: 'veloraConfig', what: 'VeLoRA (velora_config)' },
  { key: 'aloraInvocationTokens', what: 'activated LoRA (alora_invocation_tokens)' },
  { key: 'useQalora', what: 'QA-LoRA (use_qalora)' },
  { key: 'monteCloraConfig', what: 'MonteCLoRA (monteclora_config)' },
  { key: 'targetParameters', what: 'LoRA on parameters (target_parameters)' },
  { key: 'useBdlora', what: 'block-diagonal LoRA (use_bdlora)' },
  { key: 'arrowConfig', what: 'Arrow routing (arrow_config)' },
  { key: 'ensureWeightTying', what: 'tied LoRA on tied layers (ensure_weight_tying=true)' },
];

/** A LoRA setting that changes the adapter's math and is not implemented here; `field` is its adapter_config.json name. */
export class UnsupportedLoraFeatureError extends PeftConfigError {
  constructor(
    readonly field: string,
    message: string,
  ) {
    super(message);
    this.name = 'UnsupportedLoraFeatureError';
  }
}

/** Informational keys whose value never matters here (runtime_config is never saved by peft). */
const IGNORED_KEYS = new Set(['runtime_config']);

const INIT_STRINGS: readonly string[] = ['gaussian', 'pissa', 'olora', 'eva', 'orthogonal', 'corda', 'loftq', 'mica', 'lora_ga'];

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
  if (typeof c.loraAlpha !== 'number' || !Number.isFinite(c.loraAlpha))
    fail(`lora_alpha must be a number, got ${JSON.stringify(c.loraAlpha)}`);
  if (typeof c.loraDropout !== 'number' || !(c.loraDropout >= 0 && c.loraDropout < 1))
    fail(`lora_dropout must be in [0, 1), got ${JSON.stringify(c.loraDropout)}`);
  if (!['none', 'all', 'lora_only'].includes(c.bias)) fail(`bias must be "none", "all" or "lora_only", got ${JSON.stringify(c.bias)}`);
  const tm = c.targetModules;
  if (tm !== null && typeof tm !== 'string' && !(Array.isArray(tm) && tm.every((t) => typeof t === 'string'))) {
    fail(`target_modules must be a list of module names, a regex string, "all-linear" or null, got ${JSON.stringify(tm)}`);
  }
  if (typeof tm === 'string' && c.layersToTransform !== null)
    fail('`layers_to_transform` cannot be used when `target_modules` is a str; give target_modules as a list');
  if (typeof tm === 'string' && c.layersPattern !== null)
    fail('`layers_pattern` cannot be used when `target_modules` is a str; give target_modules as a list');
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
  for (const [name, pat] of [
    ['rank_pattern', c.rankPattern],
    ['alpha_pattern', c.alphaPattern],
  ] as const) {
    if (typeof pat !== 'object' || pat === null || Array.isArray(pat)) fail(`${name} must be an object, got ${JSON.stringify(pat)}`);
    for (const [k, v] of Object.entries(pat)) {
      if (typeof v !== 'number' || !Number.isFinite(v)) fail(`${name}["${k}"] must be a number, got ${JSON.stringify(v)}`);
      if (name === 'rank_pattern' && (!Number.isInteger(v) || v <= 0)) fail(`rank_pattern["${k}"] must be a positive integer, got ${v}`);
    }
  }
  const init = c.initLoraWeights;
  if (!(typeof init === 'boolean' || (typeof init === 'string' && (INIT_STRINGS.includes(init) || /^pissa_niter_\d+$/.test(init))))) {
    fail(
      `init_lora_weights must be true, false, ${INIT_STRINGS.map((x) => `"${x}"`).join(', ')} or "pissa_niter_<n>", got ${JSON.stringify(init)}`,
    );
  }
  if (init === 'loftq' || init === 'corda' || init === 'lora_ga' || init === 'mica') {
    throw new UnsupportedLoraFeatureError(
      'init_lora_weights',
      `init_lora_weights="${init}" is not implemented here (it needs ${init === 'loftq' ? 'LoftQ quantization' : init === 'mica' ? 'the MiCA variant (frozen B)' : 'data-driven preprocessing'}); use true, false, "gaussian", "pissa", "pissa_niter_<n>" or "olora"`,
    );
  }
  for (const u of UNIMPLEMENTED) {
    const f = FIELDS.find((x) => x.key === u.key)!;
    const v = c[u.key];
    if (v !== undefined && JSON.stringify(v) !== JSON.stringify(f.default)) {
      throw new UnsupportedLoraFeatureError(
        f.json,
        `${f.json}=${JSON.stringify(v)}: ${u.what} is not implemented here; remove it (or set it to ${JSON.stringify(f.default)}) to load this adapter`,
      );
    }
  }
  if (typeof c.loraBias !== 'boolean') fail(`lora_bias must be true or false, got ${JSON.stringify(c.loraBias)}`);
  if (c.loraBias && typeof init !== 'boolean')
    fail(`lora_bias=true is only supported with init_lora_weights=true or false, got ${JSON.stringify(init)}`);
  if (c.loraBias && c.useDora) fail('lora_bias=true is not supported for DoRA; set use_dora=false');
  const em = c.excludeModules;
  if (em !== null && typeof em !== 'string' && !(Array.isArray(em) && em.every((t) => typeof t === 'string')))
    fail(`exclude_modules must be a list of module names, a regex string or null, got ${JSON.stringify(em)}`);
  const tti = c.trainableTokenIndices;
  const isIdxList = (x: unknown) => Array.isArray(x) && x.every((i) => Number.isInteger(i) && i >= 0);
  if (tti !== null && !isIdxList(tti) && !(typeof tti === 'object' && !Array.isArray(tti) && Object.values(tti).every(isIdxList))) {
    fail(`trainable_token_indices must be a list of token ids, an object {module name: [token ids]} or null, got ${JSON.stringify(tti)}`);
  }
  if (c.layersPattern && (c.layersToTransform === null || (Array.isArray(c.layersToTransform) && c.layersToTransform.length === 0))) {
    fail('when layers_pattern is given, layers_to_transform must be given too');
  }
  if (c.useDora && c.megatronConfig) fail('DoRA does not support megatron_core; set use_dora=false or drop megatron_config');
  if (c.layerReplication !== null)
    throw new UnsupportedLoraFeatureError('layer_replication', 'layer_replication is not implemented here; remove it from the config');
  // peft drops loftq_config unless init_lora_weights is "loftq" (which is refused above).
  if (c.loftqConfig && Object.keys(c.loftqConfig).length > 0) c.loftqConfig = {};
  if (c.taskType !== null && !TASK_TYPES.includes(c.taskType))
    fail(`task_type must be one of ${TASK_TYPES.join(', ')} or null, got ${JSON.stringify(c.taskType)}`);
  if (
    typeof c.inferenceMode !== 'boolean' ||
    typeof c.useDora !== 'boolean' ||
    typeof c.useRslora !== 'boolean' ||
    typeof c.fanInFanOut !== 'boolean'
  ) {
    fail('inference_mode, use_dora, use_rslora and fan_in_fan_out must be true or false');
  }
}

function isNeutral(v: unknown): boolean {
  return (
    v === null ||
    v === false ||
    (Array.isArray(v) && v.length === 0) ||
    (typeof v === 'object' && v !== null && Object.keys(v).length === 0)
  );
}

/** Parses adapter_config.json's object (snake_case keys) into a validated LoraConfig. */
export function loraConfigFromJson(obj: Record<string, unknown>, source = 'adapter_config.json'): LoraConfig {
  if (obj.peft_type !== undefined && obj.peft_type !== 'LORA')
    throw new PeftConfigError(`${source}: peft_type is ${JSON.stringify(obj.peft_type)}, not "LORA"`);
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
    throw new PeftConfigError(
      `${source}: "${k}": ${JSON.stringify(v)} is a LoRA setting this library does not implement (peft 0.13.2 format); remove it or set it to its default`,
    );
  }
  try {
    return loraConfig(fields as Partial<LoraConfig>);
  } catch (e) {
    if (e instanceof UnsupportedLoraFeatureError) throw new UnsupportedLoraFeatureError(e.field, `${source}: ${e.message}`);
    if (e instanceof PeftConfigError) throw new PeftConfigError(`${source}: ${e.message}`);
    throw e;
  }
}

/**
 * The snake_case object peft writes, keys in peft's (sorted) order. A config read from a peft 0.20
 * file (peft_version set) writes every 0.20 key; otherwise the peft 0.13.2 key set, plus any 0.20
 * key that holds a non-default value.
 */
function loraConfigToJson(c: LoraConfig): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const f of [...FIELDS].sort((a, b) => (a.json < b.json ? -1 : 1))) {
    const v = c[f.key];
    if (f.v020 && c.peftVersion === null && (v === undefined || JSON.stringify(v) === JSON.stringify(f.default))) continue;
    out[f.json] = v === undefined ? f.default : v;
  }
  return out;
}

/** adapter_config.json text exactly as peft writes it: json.dumps(indent=2, sort_keys=True), no trailing newline. */
export function loraConfigFileText(c: LoraConfig): string {
  const kinds = new Map(FIELDS.map((f) => [f.json, f.kind]));
  const json: Record<string, PyJson> = {};
  for (const [k, v] of Object.entries(loraConfigToJson(c)))
    json[k] = kinds.get(k) === 'float' && typeof v === 'number' ? new PyFloat(v) : (v as PyJson);
  return pythonJsonDumps(json);
}

/** peft's constants table: default LoRA targets per model_type when target_modules is null. */
/** peft's default target_modules per model_type, from each architecture's descriptor (src/models/<family>.ts). */
export const DEFAULT_TARGET_MODULES: Readonly<Record<string, readonly string[]>> = LORA_DEFAULT_TARGETS;

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
