// Reads a Hugging Face model folder's config.json into one normalized shape, so model builders do not
// need to know that GPT-2 says n_embd where Llama says hidden_size. Missing optional fields get the
// defaults of the matching transformers config class; fields that fix tensor shapes must be present.

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
    this.name = "ConfigError";
    this.file = file;
    this.field = field;
  }
}

export type ModelFamily = "gpt2" | "llama" | "bert" | "modernbert";
export type NormType = "layernorm" | "rmsnorm";

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

const FAMILY_OF: Record<string, ModelFamily> = {
  gpt2: "gpt2",
  llama: "llama",
  mistral: "llama",
  qwen2: "llama",
  qwen3: "llama",
  smollm3: "llama",
  gemma3_text: "llama",
  phi3: "llama",
  bert: "bert",
  roberta: "bert",
  modernbert: "modernbert",
};

type Raw = Record<string, unknown>;

/** Field access that names the file and field in every error. */
class Fields {
  constructor(
    readonly raw: Raw,
    readonly file: string,
    readonly modelType: string,
  ) {}

  private fail(field: string, what: string): never {
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
    return this.positiveInt(field, this.raw[field]);
  }

  int(field: string, fallback: number): number {
    return this.has(field) ? this.positiveInt(field, this.raw[field]) : fallback;
  }

  optionalInt(field: string): number | undefined {
    return this.has(field) ? this.positiveInt(field, this.raw[field]) : undefined;
  }

  private positiveInt(field: string, v: unknown): number {
    if (typeof v !== "number" || !Number.isInteger(v) || v <= 0) {
      this.fail(field, `must be a positive integer, found ${JSON.stringify(v)}.`);
    }
    return v;
  }

  num(field: string, fallback: number): number {
    if (!this.has(field)) return fallback;
    const v = this.raw[field];
    if (typeof v !== "number" || !Number.isFinite(v) || v <= 0) {
      this.fail(field, `must be a positive number, found ${JSON.stringify(v)}.`);
    }
    return v;
  }

  bool(field: string, fallback: boolean): boolean {
    if (!this.has(field)) return fallback;
    const v = this.raw[field];
    if (typeof v !== "boolean") this.fail(field, `must be true or false, found ${JSON.stringify(v)}.`);
    return v;
  }

  str(field: string, fallback: string): string {
    if (!this.has(field)) return fallback;
    const v = this.raw[field];
    if (typeof v !== "string") this.fail(field, `must be a string, found ${JSON.stringify(v)}.`);
    return v;
  }

  tokenId(field: string): number | undefined {
    if (!this.has(field)) return undefined;
    const v = this.raw[field];
    if (typeof v !== "number" || !Number.isInteger(v) || v < 0) {
      this.fail(field, `must be a non-negative integer token id, found ${JSON.stringify(v)}.`);
    }
    return v;
  }

  /** Some models (e.g. Llama 3 instruct) list several end-of-sequence ids. */
  tokenIds(field: string): number | number[] | undefined {
    const v = this.raw[field];
    if (Array.isArray(v)) {
      if (!v.every((x) => typeof x === "number" && Number.isInteger(x) && x >= 0)) {
        this.fail(field, `must be a token id or a list of token ids, found ${JSON.stringify(v)}.`);
      }
      return v as number[];
    }
    return this.tokenId(field);
  }
}

/** Reads and normalizes `<dir>/config.json`. */
export async function loadConfig(dir: string): Promise<ModelConfig> {
  const file = path.join(dir, "config.json");
  let text: string;
  try {
    // A FIFO, device or folder named config.json is refused before it is opened (it would block or never end).
    await regularFileSize(file, (reason) => new ConfigError(file, `${reason}; config.json must be a regular file.`), true);
    const size = (await stat(file)).size;
    if (size > MAX_CONFIG_BYTES) throw new ConfigError(file, `${file} is ${size} bytes, above the ${MAX_CONFIG_BYTES}-byte limit for a config.json; it is not a model config.`);
    text = await readFile(file, "utf8");
  } catch (err) {
    if (err instanceof ConfigError) throw err;
    const code = (err as NodeJS.ErrnoException).code;
    if (code === "ENOENT" || code === "ENOTDIR") {
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
  return parseConfig(raw, file);
}

/**
 * Upper bounds on the sizes a config.json may declare, checked before anything is built from it
 * (a config is untrusted input: `num_hidden_layers: 1e9` must be an error, not a hang). Each is far
 * above any published model (the largest have ~128 layers, 32k hidden, 262k vocabulary); the real
 * check is against the weight files (models/validate.ts), these keep even a config without weights
 * (`peft info`) bounded.
 */
export const CONFIG_LIMITS = {
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

/** Normalizes an already parsed config.json; `file` only labels error messages. */
export function parseConfig(raw: unknown, file = "config.json"): ModelConfig {
  return checkConfigLimits(parseConfigFields(raw, file), file);
}

function checkConfigLimits(c: ModelConfig, file: string): ModelConfig {
  const sizes: [keyof typeof CONFIG_LIMITS, number | undefined][] = [
    ["num_hidden_layers", c.numHiddenLayers],
    ["hidden_size", c.hiddenSize],
    ["num_attention_heads", c.numAttentionHeads],
    ["num_key_value_heads", c.numKeyValueHeads],
    ["head_dim", c.headDim],
    ["intermediate_size", c.intermediateSize],
    ["vocab_size", c.vocabSize],
    ["max_position_embeddings", c.maxPositionEmbeddings],
    ["num_labels", c.numLabels],
    ["type_vocab_size", c.typeVocabSize],
    ["sliding_window", c.slidingWindow],
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

function parseConfigFields(raw: unknown, file: string): ModelConfig {
  if (typeof raw !== "object" || raw === null || Array.isArray(raw)) {
    throw new ConfigError(file, `${file} must hold a JSON object.`);
  }
  const json = raw as Raw;
  const modelType = json.model_type;
  if (typeof modelType !== "string" || modelType.length === 0) {
    throw new ConfigError(
      file,
      `${file}: field "model_type" is missing; it tells which architecture to build (e.g. "llama"). Add it, ` +
        `or re-save the config with a recent transformers.`,
      "model_type",
    );
  }
  const family = FAMILY_OF[modelType];
  if (family === undefined) {
    throw new ConfigError(
      file,
      `${file}: model_type "${modelType}" is not supported; supported: ${Object.keys(FAMILY_OF).join(", ")}.`,
      "model_type",
    );
  }
  const f = new Fields(json, file, modelType);
  const architectures = json.architectures;
  if (architectures !== undefined && architectures !== null && (!Array.isArray(architectures) || !architectures.every((a) => typeof a === "string"))) {
    throw new ConfigError(file, `${file}: field "architectures" must be a list of class names.`, "architectures");
  }
  const { id2label, label2id, numLabels } = labels(f);

  const common = {
    modelType,
    family,
    architectures: (architectures as string[] | undefined | null) ?? [],
    numLabels,
    id2label,
    label2id,
    problemType: f.has("problem_type") ? f.str("problem_type", "") : undefined,
    bosTokenId: f.tokenIds("bos_token_id"),
    eosTokenId: f.tokenIds("eos_token_id"),
    padTokenId: f.tokenId("pad_token_id"),
    torchDtype: f.has("torch_dtype") ? f.str("torch_dtype", "") : f.has("dtype") ? f.str("dtype", "") : undefined,
    raw: json,
  };

  switch (family) {
    case "gpt2": {
      const hidden = f.requiredInt("n_embd");
      const heads = f.requiredInt("n_head");
      checkDivisible(f, hidden, heads, "n_embd", "n_head");
      return {
        ...common,
        vocabSize: f.requiredInt("vocab_size"),
        hiddenSize: hidden,
        numHiddenLayers: f.requiredInt("n_layer"),
        numAttentionHeads: heads,
        numKeyValueHeads: heads,
        headDim: hidden / heads,
        // n_inner: null means 4 * n_embd in GPT2MLP.
        intermediateSize: f.int("n_inner", 4 * hidden),
        maxPositionEmbeddings: f.requiredInt("n_positions"),
        hiddenAct: f.str("activation_function", "gelu_new"),
        normType: "layernorm",
        normEps: f.num("layer_norm_epsilon", 1e-5),
        tieWordEmbeddings: f.bool("tie_word_embeddings", true),
        qkvBias: true,
        attnOutputBias: true,
        mlpBias: true,
        attentionBias: true,
      };
    }
    case "llama": {
      const hidden = f.requiredInt("hidden_size");
      const heads = f.requiredInt("num_attention_heads");
      const kvHeads = f.int("num_key_value_heads", heads);
      if (heads % kvHeads !== 0) {
        throw new ConfigError(
          file,
          `${file}: num_attention_heads (${heads}) must be a multiple of num_key_value_heads (${kvHeads}) for grouped-query attention.`,
          "num_key_value_heads",
        );
      }
      const isGemma3 = modelType === "gemma3_text";
      const isPhi3 = modelType === "phi3";
      // Gemma3TextConfig's head_dim defaults to 256 whatever the hidden size; Phi3Config has no head_dim.
      if (!f.has("head_dim") && !isGemma3) checkDivisible(f, hidden, heads, "hidden_size", "num_attention_heads");
      const headDim = isPhi3 ? hidden / heads : f.int("head_dim", isGemma3 ? 256 : hidden / heads);
      const attentionBias = f.bool("attention_bias", false);
      // Qwen2 always has q/k/v biases and no o_proj bias; its config has no attention_bias field for it.
      const isQwen2 = modelType === "qwen2";
      const slidingWindow = slidingWindowOf(f, modelType);
      const layers = f.requiredInt("num_hidden_layers");
      const defaultMaxPos: Record<string, number> = { mistral: 4096 * 32, qwen2: 32768, qwen3: 32768, smollm3: 32768, gemma3_text: 131072, phi3: 4096 };
      const extra = isGemma3 ? gemma3Fields(f, layers) : isPhi3 ? phi3Fields(f, headDim) : {};
      return {
        ...common,
        vocabSize: f.requiredInt("vocab_size"),
        hiddenSize: hidden,
        numHiddenLayers: layers,
        numAttentionHeads: heads,
        numKeyValueHeads: kvHeads,
        headDim,
        intermediateSize: f.requiredInt("intermediate_size"),
        maxPositionEmbeddings: f.int("max_position_embeddings", defaultMaxPos[modelType] ?? 2048),
        // Gemma 3 names its activation hidden_activation.
        hiddenAct: isGemma3 ? f.str("hidden_activation", "gelu_pytorch_tanh") : f.str("hidden_act", "silu"),
        normType: "rmsnorm",
        normEps: f.num("rms_norm_eps", 1e-6),
        // Gemma 3's config.json has no tie_word_embeddings key: PretrainedConfig's default (true) applies.
        tieWordEmbeddings: f.bool("tie_word_embeddings", isGemma3),
        qkvBias: isQwen2 ? true : attentionBias,
        attnOutputBias: isQwen2 ? false : attentionBias,
        mlpBias: f.bool("mlp_bias", false),
        attentionBias,
        ropeTheta: ropeTheta(f),
        ropeScaling: ropeScaling(f),
        ...(modelType === "qwen3" ? { qkNorm: true } : {}),
        ...(modelType === "smollm3" ? { ropeLayers: ropeLayersOf(f, f.requiredInt("num_hidden_layers")) } : {}),
        ...(slidingWindow === undefined ? {} : { slidingWindow }),
        ...extra,
      };
    }
    case "bert": {
      const hidden = f.requiredInt("hidden_size");
      const heads = f.requiredInt("num_attention_heads");
      checkDivisible(f, hidden, heads, "hidden_size", "num_attention_heads");
      return {
        ...common,
        // Config class defaults: BERT's [PAD] is id 0, RoBERTa's <pad> id 1.
        padTokenId: common.padTokenId ?? (modelType === "roberta" ? 1 : 0),
        vocabSize: f.requiredInt("vocab_size"),
        hiddenSize: hidden,
        numHiddenLayers: f.requiredInt("num_hidden_layers"),
        numAttentionHeads: heads,
        numKeyValueHeads: heads,
        headDim: hidden / heads,
        intermediateSize: f.requiredInt("intermediate_size"),
        maxPositionEmbeddings: f.int("max_position_embeddings", 512),
        hiddenAct: f.str("hidden_act", "gelu"),
        normType: "layernorm",
        normEps: f.num("layer_norm_eps", 1e-12),
        tieWordEmbeddings: f.bool("tie_word_embeddings", true),
        qkvBias: true,
        attnOutputBias: true,
        mlpBias: true,
        attentionBias: true,
        typeVocabSize: f.int("type_vocab_size", 2),
        positionEmbeddingType: f.str("position_embedding_type", "absolute"),
      };
    }
    case "modernbert": {
      // ModernBertConfig (transformers 4.57); its own fields (local_attention, rope bases,
      // norm_bias, classifier_*) are read by src/models/modernbert.ts.
      const hidden = f.requiredInt("hidden_size");
      const heads = f.requiredInt("num_attention_heads");
      checkDivisible(f, hidden, heads, "hidden_size", "num_attention_heads");
      const attentionBias = f.bool("attention_bias", false);
      return {
        ...common,
        padTokenId: common.padTokenId ?? 50283,
        vocabSize: f.requiredInt("vocab_size"),
        hiddenSize: hidden,
        numHiddenLayers: f.requiredInt("num_hidden_layers"),
        numAttentionHeads: heads,
        numKeyValueHeads: heads,
        headDim: hidden / heads,
        intermediateSize: f.requiredInt("intermediate_size"),
        maxPositionEmbeddings: f.int("max_position_embeddings", 8192),
        hiddenAct: f.str("hidden_activation", "gelu"),
        normType: "layernorm",
        normEps: f.num("norm_eps", 1e-5),
        tieWordEmbeddings: f.bool("tie_word_embeddings", true),
        qkvBias: attentionBias,
        attnOutputBias: attentionBias,
        mlpBias: f.bool("mlp_bias", false),
        attentionBias,
      };
    }
  }
}

function checkDivisible(f: Fields, hidden: number, heads: number, hiddenField: string, headsField: string): void {
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
    if (typeof raw !== "object" || Array.isArray(raw)) {
      throw new ConfigError(f.file, `${f.file}: field "id2label" must map class ids to names, e.g. {"0": "NEGATIVE"}.`, "id2label");
    }
    for (const [k, v] of Object.entries(raw as Raw)) {
      const id = Number(k);
      if (!Number.isInteger(id) || id < 0 || id > CONFIG_LIMITS.num_labels || typeof v !== "string") {
        throw new ConfigError(f.file, `${f.file}: id2label entry ${JSON.stringify(k)}: ${JSON.stringify(v)} must map an integer id to a name.`, "id2label");
      }
      id2label[id] = v;
    }
  } else {
    // PretrainedConfig's default: num_labels (2 unless given) generic labels.
    const n = f.int("num_labels", 2);
    if (n > CONFIG_LIMITS.num_labels) {
      throw new ConfigError(f.file, `${f.file}: num_labels is ${n}, above the limit of ${CONFIG_LIMITS.num_labels}; the file is corrupt or not a model config.`, "num_labels");
    }
    for (let i = 0; i < n; i++) id2label[i] = `LABEL_${i}`;
  }
  const numLabels = Object.keys(id2label).length;
  const label2id: Record<string, number> = {};
  for (const [id, name] of Object.entries(id2label)) label2id[name] = Number(id);
  return { id2label, label2id, numLabels };
}

function ropeTheta(f: Fields): number {
  if (f.has("rope_theta")) return f.num("rope_theta", 10000);
  // transformers 5 moved RoPE settings into rope_parameters.
  const params = f.raw.rope_parameters;
  if (typeof params === "object" && params !== null && typeof (params as Raw).rope_theta === "number") {
    return (params as Raw).rope_theta as number;
  }
  return 10000;
}

function ropeScaling(f: Fields): RopeScaling | undefined {
  let raw = f.raw.rope_scaling;
  if (raw === undefined || raw === null) {
    const params = f.raw.rope_parameters;
    const t = typeof params === "object" && params !== null ? (params as Raw).rope_type : undefined;
    if (t === undefined || t === "default") return undefined;
    raw = params;
  }
  if (typeof raw !== "object" || Array.isArray(raw)) {
    throw new ConfigError(f.file, `${f.file}: field "rope_scaling" must be null or an object with "rope_type".`, "rope_scaling");
  }
  const r = raw as Raw;
  const ropeType = typeof r.rope_type === "string" ? r.rope_type : typeof r.type === "string" ? r.type : undefined;
  if (ropeType === undefined) {
    throw new ConfigError(f.file, `${f.file}: rope_scaling needs "rope_type" (or the older "type"), e.g. "linear" or "llama3".`, "rope_scaling.rope_type");
  }
  const num = (key: string): number | undefined => {
    const v = r[key];
    if (v === undefined || v === null) return undefined;
    if (typeof v !== "number" || !Number.isFinite(v) || v <= 0) {
      throw new ConfigError(f.file, `${f.file}: rope_scaling.${key} must be a positive number, found ${JSON.stringify(v)}.`, `rope_scaling.${key}`);
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
  if (ropeType === "default") return undefined;
  if (ropeType === "llama3") {
    scaling.factor = need("factor");
    scaling.lowFreqFactor = need("low_freq_factor");
    scaling.highFreqFactor = need("high_freq_factor");
    scaling.originalMaxPositionEmbeddings = need("original_max_position_embeddings");
  } else if (ropeType === "linear" || ropeType === "dynamic" || ropeType === "yarn") {
    scaling.factor = need("factor");
    scaling.originalMaxPositionEmbeddings = num("original_max_position_embeddings");
  } else {
    scaling.factor = num("factor");
    scaling.originalMaxPositionEmbeddings = num("original_max_position_embeddings");
  }
  return scaling;
}

function slidingWindowOf(f: Fields, modelType: string): number | undefined {
  if (modelType === "qwen2" && !f.bool("use_sliding_window", false)) return undefined;
  if (modelType !== "qwen2" && modelType !== "mistral") return undefined;
  // An absent key means the config class default (4096); an explicit null turns the window off.
  if (!(Object.prototype.hasOwnProperty.call(f.raw, "sliding_window"))) return 4096;
  return f.optionalInt("sliding_window");
}

/** SmolLM3's no_rope_layers (1 = the layer uses RoPE, 0 = NoPE); the config class default is every
 * no_rope_layer_interval-th layer (1-based) without RoPE. */
function ropeLayersOf(f: Fields, layers: number): boolean[] {
  const raw = f.raw.no_rope_layers;
  if (raw === undefined || raw === null) {
    const interval = f.int("no_rope_layer_interval", 4);
    return Array.from({ length: layers }, (_, i) => (i + 1) % interval !== 0);
  }
  if (!Array.isArray(raw) || raw.length !== layers || !raw.every((v) => v === 0 || v === 1)) {
    throw new ConfigError(
      f.file,
      `${f.file}: field "no_rope_layers" must list 0 or 1 for each of the ${layers} layers (1 = RoPE, 0 = NoPE), found ${JSON.stringify(raw)}.`,
      "no_rope_layers",
    );
  }
  return raw.map((v) => v === 1);
}

/** Gemma 3 text: layer types, the local RoPE base, the attention scale, its sliding window; softcapping is refused. */
function gemma3Fields(f: Fields, layers: number): Partial<ModelConfig> {
  for (const cap of ["attn_logit_softcapping", "final_logit_softcapping"]) {
    if (f.has(cap)) {
      throw new ConfigError(f.file, `${f.file}: ${cap} is set; logit softcapping (a Gemma 2 feature, off in Gemma 3) is not implemented. Set it to null.`, cap);
    }
  }
  if (f.bool("use_bidirectional_attention", false)) {
    throw new ConfigError(f.file, `${f.file}: use_bidirectional_attention is true (an embedding model); only causal Gemma 3 is implemented.`, "use_bidirectional_attention");
  }
  let layerTypes: string[];
  const raw = f.raw.layer_types;
  if (raw === undefined || raw === null) {
    // Gemma3TextConfig: every sliding_window_pattern-th layer (1-based) is global.
    const pattern = f.int("_sliding_window_pattern", f.int("sliding_window_pattern", 6));
    layerTypes = Array.from({ length: layers }, (_, i) => ((i + 1) % pattern !== 0 ? "sliding_attention" : "full_attention"));
  } else {
    if (!Array.isArray(raw) || raw.length !== layers || !raw.every((t) => t === "sliding_attention" || t === "full_attention")) {
      throw new ConfigError(f.file, `${f.file}: field "layer_types" must list "sliding_attention" or "full_attention" for each of the ${layers} layers.`, "layer_types");
    }
    layerTypes = raw as string[];
  }
  return {
    layerTypes,
    slidingWindow: f.int("sliding_window", 4096),
    queryPreAttnScalar: f.num("query_pre_attn_scalar", 256),
    ropeLocalTheta: f.num("rope_local_base_freq", 10000),
  };
}

/** Phi-3: partial rotary, the pre-extension context for longrope, an optional sliding window over every layer. */
function phi3Fields(f: Fields, headDim: number): Partial<ModelConfig> {
  const factor = f.has("partial_rotary_factor") ? f.num("partial_rotary_factor", 1) : 1;
  const rotary = Math.floor(headDim * factor);
  if (factor > 1 || rotary < 2 || rotary % 2 !== 0) {
    throw new ConfigError(f.file, `${f.file}: partial_rotary_factor ${factor} gives ${rotary} rotary channels of head_dim ${headDim}; it must be an even number between 2 and head_dim.`, "partial_rotary_factor");
  }
  const window = f.optionalInt("sliding_window");
  return {
    partialRotaryFactor: factor,
    originalMaxPositionEmbeddings: f.int("original_max_position_embeddings", 4096),
    ...(window === undefined ? {} : { slidingWindow: window }),
  };
}

/**
 * Records the dtype a model folder's weights are written in: config.json's "dtype" (transformers
 * >= 4.56) and "torch_dtype" (older) keys, whichever it has, else "torch_dtype" (read by both).
 * Returns whether anything changed.
 */
export function setConfigDtype(config: Record<string, unknown>, dtype: string): boolean {
  const keys = ["dtype", "torch_dtype"].filter((k) => config[k] !== undefined && config[k] !== null);
  if (keys.length === 0) keys.push("torch_dtype");
  let changed = false;
  for (const k of keys) {
    if (config[k] !== dtype) {
      config[k] = dtype;
      changed = true;
    }
  }
  return changed;
}
