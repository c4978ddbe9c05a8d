// The pieces every architecture's config normalization is built from: the normalized ModelConfig
// shape, typed field access that names the file and field in every error, reading config.json
// (bounded), the fields every model_type shares (labels, special token ids, dtype), the Llama-style
// decoder fields several architectures share, rope settings, and the size limits. Which fields a
// model_type has, and their transformers defaults, is read by its architecture file
// (src/models/<family>.ts, `readConfig` of its descriptor); src/models/config.ts dispatches.

import { readFile, stat, path } from '../storage/index.js';
import { regularFileSize } from './files.js';

/** config.json files are a few KB (with large id2label maps, a few MB). */
const MAX_CONFIG_BYTES = 64 * 1024 * 1024;
import { PeftError } from '../errors.js';

export class ConfigError extends PeftError {
  readonly file: string;
  readonly field?: string;
  constructor(file: string, message: string, field?: string) {
    super(message);
    this.name = 'ConfigError';
    this.file = file;
    this.field = field;
  }
}

export type ModelFamily = 'gpt2' | 'llama' | 'bert' | 'modernbert';
export type NormType = 'layernorm' | 'rmsnorm';

export interface RopeScaling {
  /** 'linear', 'dynamic', 'yarn', 'longrope', 'llama3', ... (config key rope_type, or the older type). */
  ropeType: string;
  factor?: number;
  /** llama3 only. */
  lowFreqFactor?: number;
  /** llama3 only. */
  highFreqFactor?: number;
  originalMaxPositionEmbeddings?: number;
  raw: Record<string, unknown>;
}

export interface ModelConfig {
  /** config.json's model_type, e.g. 'gpt2', 'llama', 'qwen2', 'mistral', 'bert'. */
  modelType: string;
  /** Which architecture family the model builders implement this with. */
  family: ModelFamily;
  architectures: string[];
  vocabSize: number;
  hiddenSize: number;
  numHiddenLayers: number;
  numAttentionHeads: number;
  /** Equal to numAttentionHeads unless the model uses grouped-query attention. */
  numKeyValueHeads: number;
  headDim: number;
  intermediateSize: number;
  maxPositionEmbeddings: number;
  /** Activation name as transformers' ACT2FN spells it ('gelu_new', 'silu', 'gelu', ...). */
  hiddenAct: string;
  normType: NormType;
  normEps: number;
  /** Whether lm_head shares the input embedding matrix. */
  tieWordEmbeddings: boolean;
  /** Bias on the q/k/v projections (GPT-2's fused c_attn, Qwen2's q/k/v_proj, Llama's attention_bias). */
  qkvBias: boolean;
  /** Bias on the attention output projection. */
  attnOutputBias: boolean;
  /** Bias on the MLP projections. */
  mlpBias: boolean;
  /** Raw attention_bias of Llama-style configs (false when the config has none). */
  attentionBias: boolean;
  ropeTheta?: number;
  ropeScaling?: RopeScaling;
  /** Qwen3: RMSNorms q_norm/k_norm over head_dim applied per head to queries and keys before RoPE. */
  qkNorm?: boolean;
  /** SmolLM3: per layer, whether it applies RoPE (no_rope_layers[i] == 1) or is a NoPE layer (0). */
  ropeLayers?: boolean[];
  /** Per layer 'full_attention' or 'sliding_attention' (Gemma 3), when the model mixes them. */
  layerTypes?: string[];
  /** Gemma 3: attention scores are scaled by query_pre_attn_scalar ** -0.5 instead of head_dim ** -0.5. */
  queryPreAttnScalar?: number;
  /** Gemma 3: the RoPE base of sliding-window layers (no rope_scaling there). */
  ropeLocalTheta?: number;
  /** Phi-3: fraction of each head's channels that are rotated. */
  partialRotaryFactor?: number;
  /** Phi-3: the pre-extension context (top-level original_max_position_embeddings), for longrope. */
  originalMaxPositionEmbeddings?: number;
  /** Mistral/Qwen2 sliding-window attention size, when enabled. */
  slidingWindow?: number;
  /** BERT token type (segment) vocabulary. */
  typeVocabSize?: number;
  /** BERT position embedding kind ('absolute' is the only one most checkpoints use). */
  positionEmbeddingType?: string;
  numLabels: number;
  id2label: Record<number, string>;
  label2id: Record<string, number>;
  problemType?: string;
  bosTokenId?: number | number[];
  eosTokenId?: number | number[];
  padTokenId?: number;
  torchDtype?: string;
  /** The parsed config.json as written. */
  raw: Record<string, unknown>;
}

export type Raw = Record<string, unknown>;

const isPositiveInt = (v: unknown): v is number => typeof v === 'number' && Number.isInteger(v) && v > 0;
const isPositiveNumber = (v: unknown): v is number => typeof v === 'number' && Number.isFinite(v) && v > 0;
const isTokenId = (v: unknown): v is number => typeof v === 'number' && Number.isInteger(v) && v >= 0;

/** Field access that names the file and field in every error. */
export class Fields {
  constructor(
    readonly raw: Raw,
    readonly file: string,
    readonly modelType: string,
  ) {}

  fail(field: string, what: string): never {
    throw new ConfigError(this.file, `${this.file}: field "${field}" ${what}`, field);
  }

  has(field: string): boolean {
    return this.raw[field] !== undefined && this.raw[field] !== null;
  }

  requiredInt(field: string): number {
    if (!this.has(field)) {
      this.fail(
        field,
        `is required for model_type "${this.modelType}" but missing; re-save the config with transformers' ` +
          `save_pretrained or add the value by hand.`,
      );
    }
    return this.checked(field, this.raw[field], isPositiveInt, 'a positive integer');
  }

  int(field: string, fallback: number): number {
    return this.optional(field, fallback, isPositiveInt, 'a positive integer');
  }

  optionalInt(field: string): number | undefined {
    return this.optional(field, undefined, isPositiveInt, 'a positive integer');
  }

  num(field: string, fallback: number): number {
    return this.optional(field, fallback, isPositiveNumber, 'a positive number');
  }

  bool(field: string, fallback: boolean): boolean {
    return this.optional(field, fallback, (v): v is boolean => typeof v === 'boolean', 'true or false');
  }

  str(field: string, fallback: string): string {
    return this.optional(field, fallback, (v): v is string => typeof v === 'string', 'a string');
  }

  tokenId(field: string): number | undefined {
    return this.optional(field, undefined, isTokenId, 'a non-negative integer token id');
  }

  /** Some models (e.g. Llama 3 instruct) list several end-of-sequence ids. */
  tokenIds(field: string): number | number[] | undefined {
    const v = this.raw[field];
    if (Array.isArray(v)) {
      if (!v.every(isTokenId)) {
        this.fail(field, `must be a token id or a list of token ids, found ${JSON.stringify(v)}.`);
      }
      return v as number[];
    }
    return this.tokenId(field);
  }

  /** `v` when `ok` accepts it, else an error naming the field, what it `must` be and what was found. */
  private checked<T>(field: string, v: unknown, ok: (v: unknown) => v is T, must: string): T {
    if (!ok(v)) this.fail(field, `must be ${must}, found ${JSON.stringify(v)}.`);
    return v;
  }

  /** The field's checked value, or `fallback` when it is absent (or null). */
  private optional<T, F>(field: string, fallback: F, ok: (v: unknown) => v is T, must: string): T | F {
    return this.has(field) ? this.checked(field, this.raw[field], ok, must) : fallback;
  }
}

/** Reads `<dir>/config.json` as JSON (bounded, regular file); models/config.ts normalizes it. */
export async function readConfigJson(dir: string): Promise<{ raw: unknown; file: string }> {
  const file = path.join(dir, 'config.json');
  let text: string;
  try {
    // A FIFO, device or folder named config.json is refused before it is opened (it would block or never end).
    await regularFileSize(file, (reason) => new ConfigError(file, `${reason}; config.json must be a regular file.`), true);
    const size = (await stat(file)).size;
    if (size > MAX_CONFIG_BYTES)
      throw new ConfigError(
        file,
        `${file} is ${size} bytes, above the ${MAX_CONFIG_BYTES}-byte limit for a config.json; it is not a model config.`,
      );
    text = await readFile(file, 'utf8');
  } catch (err) {
    if (err instanceof ConfigError) throw err;
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOENT' || code === 'ENOTDIR') {
      throw new ConfigError(
        file,
        `no config.json at ${file}: pass the model folder that save_pretrained wrote (it holds config.json next ` +
          `to the weights), or a Hub repo id through resolveModelDir to download one.`,
      );
    }
    throw new ConfigError(file, `cannot read ${file}: ${(err as Error).message}`);
  }
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (err) {
    throw new ConfigError(
      file,
      `${file} is not valid JSON (${(err as Error).message}); the download may be truncated, fetch the file again.`,
    );
  }
  return { raw, file };
}

/**
 * Upper bounds on the sizes a config.json may declare, checked before anything is built from it
 * (a config is untrusted input: `num_hidden_layers: 1e9` must be an error, not a hang). Each is far
 * above any published model (the largest have ~128 layers, 32k hidden, 262k vocabulary); the real
 * check is against the weight files (models/validate.ts), these keep even a config without weights
 * (`peft info`) bounded.
 */
const CONFIG_LIMITS = {
  num_hidden_layers: 4096,
  hidden_size: 1 << 18,
  num_attention_heads: 1 << 14,
  num_key_value_heads: 1 << 14,
  head_dim: 1 << 14,
  intermediate_size: 1 << 21,
  vocab_size: 1 << 24,
  max_position_embeddings: 1 << 30,
  num_labels: 1 << 20,
  type_vocab_size: 1 << 20,
  sliding_window: 1 << 30,
} as const;

/** Refuses a normalized config whose sizes pass CONFIG_LIMITS. */
export function checkConfigLimits(c: ModelConfig, file: string): ModelConfig {
  const sizes: [keyof typeof CONFIG_LIMITS, number | undefined][] = [
    ['num_hidden_layers', c.numHiddenLayers],
    ['hidden_size', c.hiddenSize],
    ['num_attention_heads', c.numAttentionHeads],
    ['num_key_value_heads', c.numKeyValueHeads],
    ['head_dim', c.headDim],
    ['intermediate_size', c.intermediateSize],
    ['vocab_size', c.vocabSize],
    ['max_position_embeddings', c.maxPositionEmbeddings],
    ['num_labels', c.numLabels],
    ['type_vocab_size', c.typeVocabSize],
    ['sliding_window', c.slidingWindow],
  ];
  for (const [field, v] of sizes) {
    if (v !== undefined && !(v <= CONFIG_LIMITS[field])) {
      throw new ConfigError(
        file,
        `${file}: ${field} is ${v}, above the limit of ${CONFIG_LIMITS[field]} (no published model comes near it); the file is corrupt or not a model config.`,
        field,
      );
    }
  }
  return c;
}

/** What config.json holds for every model_type; an architecture's `readConfig` adds the rest. */
export type CommonConfig = Pick<
  ModelConfig,
  | 'modelType'
  | 'family'
  | 'architectures'
  | 'numLabels'
  | 'id2label'
  | 'label2id'
  | 'problemType'
  | 'bosTokenId'
  | 'eosTokenId'
  | 'padTokenId'
  | 'torchDtype'
  | 'raw'
>;

/** The model_type of a parsed config.json (a ConfigError when absent), and its field reader. */
export function configFields(raw: unknown, file: string): Fields {
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) {
    throw new ConfigError(file, `${file} must hold a JSON object.`);
  }
  const json = raw as Raw;
  const modelType = json.model_type;
  if (typeof modelType !== 'string' || modelType.length === 0) {
    throw new ConfigError(
      file,
      `${file}: field "model_type" is missing; it tells which architecture to build (e.g. "llama"). Add it, ` +
        `or re-save the config with a recent transformers.`,
      'model_type',
    );
  }
  return new Fields(json, file, modelType);
}

/** The fields every model_type shares: architectures, labels, special token ids, dtype. */
export function commonFields(f: Fields, family: ModelFamily): CommonConfig {
  const architectures = f.raw.architectures;
  if (
    architectures !== undefined &&
    architectures !== null &&
    (!Array.isArray(architectures) || !architectures.every((a) => typeof a === 'string'))
  ) {
    throw new ConfigError(f.file, `${f.file}: field "architectures" must be a list of class names.`, 'architectures');
  }
  const { id2label, label2id, numLabels } = labels(f);
  return {
    modelType: f.modelType,
    family,
    architectures: (architectures as string[] | undefined | null) ?? [],
    numLabels,
    id2label,
    label2id,
    problemType: f.has('problem_type') ? f.str('problem_type', '') : undefined,
    bosTokenId: f.tokenIds('bos_token_id'),
    eosTokenId: f.tokenIds('eos_token_id'),
    padTokenId: f.tokenId('pad_token_id'),
    torchDtype: f.has('torch_dtype') ? f.str('torch_dtype', '') : f.has('dtype') ? f.str('dtype', '') : undefined,
    raw: f.raw,
  };
}

/** How a Llama-style decoder's config class fills what config.json leaves out. */
export interface DecoderDefaults {
  /** max_position_embeddings when absent */
  maxPositions: number;
  /** head_dim when absent (else hidden_size / num_attention_heads); "derived": always hidden / heads (no head_dim field) */
  headDim?: number | 'derived';
  /** the activation field and its default (default hidden_act, "silu") */
  activation?: [field: string, fallback: string];
  /** tie_word_embeddings when absent (default false) */
  tie?: boolean;
}

/**
 * The fields of Llama-style decoders (hidden_size, heads with grouped-query key/value heads,
 * head_dim, intermediate_size, RMSNorm eps, attention/MLP biases, rope_theta and rope_scaling), with
 * the config class defaults `d`; architecture files add their own fields.
 */
export function decoderFields(f: Fields, common: CommonConfig, d: DecoderDefaults): ModelConfig {
  const hidden = f.requiredInt('hidden_size');
  const heads = f.requiredInt('num_attention_heads');
  const kvHeads = f.int('num_key_value_heads', heads);
  if (heads % kvHeads !== 0) {
    throw new ConfigError(
      f.file,
      `${f.file}: num_attention_heads (${heads}) must be a multiple of num_key_value_heads (${kvHeads}) for grouped-query attention.`,
      'num_key_value_heads',
    );
  }
  const derived = d.headDim === 'derived' || (!f.has('head_dim') && d.headDim === undefined);
  if (derived) checkDivisible(f, hidden, heads, 'hidden_size', 'num_attention_heads');
  const headDim = d.headDim === 'derived' ? hidden / heads : f.int('head_dim', d.headDim ?? hidden / heads);
  const attentionBias = f.bool('attention_bias', false);
  const [actField, actDefault] = d.activation ?? ['hidden_act', 'silu'];
  return {
    ...common,
    ...sizeFields(f, hidden, heads, kvHeads, headDim, d.maxPositions, [actField, actDefault]),
    normType: 'rmsnorm',
    normEps: f.num('rms_norm_eps', 1e-6),
    tieWordEmbeddings: f.bool('tie_word_embeddings', d.tie ?? false),
    qkvBias: attentionBias,
    attnOutputBias: attentionBias,
    mlpBias: f.bool('mlp_bias', false),
    attentionBias,
    ropeTheta: ropeTheta(f),
    ropeScaling: ropeScaling(f),
  };
}

/**
 * The size fields of BERT-style encoders (every head attends with its own keys, head_dim is
 * hidden_size / num_attention_heads, LayerNorm, tied embeddings by default); `maxPositions` and the
 * activation field are the config class's. Architecture files add pad id, eps, biases and their own fields.
 */
export function encoderFields(
  f: Fields,
  common: CommonConfig,
  maxPositions: number,
  activation: [field: string, fallback: string],
): Omit<ModelConfig, 'normEps' | 'qkvBias' | 'attnOutputBias' | 'mlpBias' | 'attentionBias'> {
  const hidden = f.requiredInt('hidden_size');
  const heads = f.requiredInt('num_attention_heads');
  checkDivisible(f, hidden, heads, 'hidden_size', 'num_attention_heads');
  return {
    ...common,
    ...sizeFields(f, hidden, heads, heads, hidden / heads, maxPositions, activation),
    normType: 'layernorm',
    tieWordEmbeddings: f.bool('tie_word_embeddings', true),
  };
}

/** The size fields decoders and encoders share, read in this order (the first bad one is the error). */
function sizeFields(
  f: Fields,
  hidden: number,
  heads: number,
  kvHeads: number,
  headDim: number,
  maxPositions: number,
  [actField, actDefault]: [field: string, fallback: string],
): Pick<
  ModelConfig,
  | 'vocabSize'
  | 'hiddenSize'
  | 'numHiddenLayers'
  | 'numAttentionHeads'
  | 'numKeyValueHeads'
  | 'headDim'
  | 'intermediateSize'
  | 'maxPositionEmbeddings'
  | 'hiddenAct'
> {
  return {
    vocabSize: f.requiredInt('vocab_size'),
    hiddenSize: hidden,
    numHiddenLayers: f.requiredInt('num_hidden_layers'),
    numAttentionHeads: heads,
    numKeyValueHeads: kvHeads,
    headDim,
    intermediateSize: f.requiredInt('intermediate_size'),
    maxPositionEmbeddings: f.int('max_position_embeddings', maxPositions),
    hiddenAct: f.str(actField, actDefault),
  };
}

export function checkDivisible(f: Fields, hidden: number, heads: number, hiddenField: string, headsField: string): void {
  if (hidden % heads !== 0) {
    throw new ConfigError(
      f.file,
      `${f.file}: ${hiddenField} (${hidden}) must be divisible by ${headsField} (${heads}); set head_dim explicitly if the model uses another size.`,
      hiddenField,
    );
  }
}

/** transformers stores labels as id2label with string keys; num_labels is derived from it. */
function labels(f: Fields): { id2label: Record<number, string>; label2id: Record<string, number>; numLabels: number } {
  const id2label: Record<number, string> = {};
  const raw = f.raw.id2label;
  if (raw !== undefined && raw !== null) {
    if (typeof raw !== 'object' || Array.isArray(raw)) {
      throw new ConfigError(f.file, `${f.file}: field "id2label" must map class ids to names, e.g. {"0": "NEGATIVE"}.`, 'id2label');
    }
    for (const [k, v] of Object.entries(raw as Raw)) {
      const id = Number(k);
      if (!Number.isInteger(id) || id < 0 || id > CONFIG_LIMITS.num_labels || typeof v !== 'string') {
        throw new ConfigError(
          f.file,
          `${f.file}: id2label entry ${JSON.stringify(k)}: ${JSON.stringify(v)} must map an integer id to a name.`,
          'id2label',
        );
      }
      id2label[id] = v;
    }
  } else {
    // PretrainedConfig's default: num_labels (2 unless given) generic labels.
    const n = f.int('num_labels', 2);
    if (n > CONFIG_LIMITS.num_labels) {
      throw new ConfigError(
        f.file,
        `${f.file}: num_labels is ${n}, above the limit of ${CONFIG_LIMITS.num_labels}; the file is corrupt or not a model config.`,
        'num_labels',
      );
    }
    for (let i = 0; i < n; i++) id2label[i] = `LABEL_${i}`;
  }
  const numLabels = Object.keys(id2label).length;
  const label2id: Record<string, number> = {};
  for (const [id, name] of Object.entries(id2label)) label2id[name] = Number(id);
  return { id2label, label2id, numLabels };
}

function ropeTheta(f: Fields): number {
  if (f.has('rope_theta')) return f.num('rope_theta', 10000);
  // transformers 5 moved RoPE settings into rope_parameters.
  const params = f.raw.rope_parameters;
  if (typeof params === 'object' && params !== null && typeof (params as Raw).rope_theta === 'number') {
    return (params as Raw).rope_theta as number;
  }
  return 10000;
}

function ropeScaling(f: Fields): RopeScaling | undefined {
  let raw = f.raw.rope_scaling;
  if (raw === undefined || raw === null) {
    const params = f.raw.rope_parameters;
    const t = typeof params === 'object' && params !== null ? (params as Raw).rope_type : undefined;
    if (t === undefined || t === 'default') return undefined;
    raw = params;
  }
  if (typeof raw !== 'object' || Array.isArray(raw)) {
    throw new ConfigError(f.file, `${f.file}: field "rope_scaling" must be null or an object with "rope_type".`, 'rope_scaling');
  }
  const r = raw as Raw;
  const ropeType = typeof r.rope_type === 'string' ? r.rope_type : typeof r.type === 'string' ? r.type : undefined;
  if (ropeType === undefined) {
    throw new ConfigError(
      f.file,
      `${f.file}: rope_scaling needs "rope_type" (or the older "type"), e.g. "linear" or "llama3".`,
      'rope_scaling.rope_type',
    );
  }
  const num = (key: string): number | undefined => {
    const v = r[key];
    if (v === undefined || v === null) return undefined;
    if (typeof v !== 'number' || !Number.isFinite(v) || v <= 0) {
      throw new ConfigError(
        f.file,
        `${f.file}: rope_scaling.${key} must be a positive number, found ${JSON.stringify(v)}.`,
        `rope_scaling.${key}`,
      );
    }
    return v;
  };
  const need = (key: string): number => {
    const v = num(key);
    if (v === undefined) {
      throw new ConfigError(
        f.file,
        `${f.file}: rope_scaling of type "${ropeType}" needs "${key}"; copy the rope_scaling block from the original model's config.json.`,
        `rope_scaling.${key}`,
      );
    }
    return v;
  };
  const scaling: RopeScaling = { ropeType, raw: r };
  if (ropeType === 'default') return undefined;
  if (ropeType === 'llama3') {
    scaling.factor = need('factor');
    scaling.lowFreqFactor = need('low_freq_factor');
    scaling.highFreqFactor = need('high_freq_factor');
    scaling.originalMaxPositionEmbeddings = need('original_max_position_embeddings');
  } else if (ropeType === 'linear' || ropeType === 'dynamic' || ropeType === 'yarn') {
    scaling.factor = need('factor');
    scaling.originalMaxPositionEmbeddings = num('original_max_position_embeddings');
  } else {
    scaling.factor = num('factor');
    scaling.originalMaxPositionEmbeddings = num('original_max_position_embeddings');
  }
  return scaling;
}

/**
 * Records the dtype a model folder's weights are written in: config.json's "dtype" (transformers
 * >= 4.56) and "torch_dtype" (older) keys, whichever it has, else "torch_dtype" (read by both).
 * Returns whether anything changed.
 */
export function setConfigDtype(config: Record<string, unknown>, dtype: string): boolean {
  const keys = ['dtype', 'torch_dtype'].filter((k) => config[k] !== undefined && config[k] !== null);
  if (keys.length === 0) keys.push('torch_dtype');
  let changed = false;
  for (const k of keys) {
    if (config[k] !== dtype) {
      config[k] = dtype;
      changed = true;
    }
  }
  return changed;
}
