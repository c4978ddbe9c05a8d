// loadModel: a local Hugging Face model folder (config.json, model.safetensors or a sharded
// index) to a PretrainedModel, choosing the architecture from config.json and checking that the
// checkpoint has exactly the weights it needs, as transformers reports missing/unexpected keys.

import { existsSync, join } from '../storage/index.js';
import type { ModelConfig } from '../io/hfconfig.js';
import { loadConfig, parseConfig } from './config.js';
import { ShardedSafetensors, openCheckpoint } from '../io/safetensors.js';
import { WeightStore } from '../nn/weights.js';
import { type QuantizationConfig, quantizationPlan } from '../quant/plan.js';
import { DEFAULT_CLASS, MODEL_CLASSES, descriptorOf } from './registry.js';
import { ModelError, type PretrainedModel } from './types.js';
import { validateCheckpointAgainstConfig } from './validate.js';

/** Buffers some checkpoints carry that are not parameters (transformers ignores them too). */
const IGNORED = [/\.attn\.bias$/, /\.attn\.masked_bias$/, /\.rotary_emb\.inv_freq$/, /position_ids$/];
export interface LoadModelOptions {
  /** override the architecture (e.g. "BertForSequenceClassification" for a BertModel checkpoint) */
  architecture?: string;
  /**
   * Hold the linear layers' weights 4-bit quantized (bitsandbytes NF4/FP4, double quantization),
   * all but the output head, as transformers' load_in_4bit does; quantized while reading, tensor by
   * tensor. Checkpoints saved 4-bit (config.json quantization_config) load quantized without it.
   */
  quantization?: QuantizationConfig;
  /**
   * Leave the linear layers' weight matrices (all but a tied output head, which is the embedding)
   * on disk until something asks for them (WeightLoadOptions.defer): training on the int8 base
   * quantizes each from the file and never holds its float32 array. Anything that reads one as
   * float32 (merging, generation, full fine-tuning) reads it then, and keeps it.
   */
  deferLinearWeights?: boolean;
}

/** Architecture class names of task heads other than language modelling. */
const TASK_HEAD = /For(SequenceClassification|TokenClassification|QuestionAnswering|MultipleChoice)$/;
/** Fallback classes that would put a language-model head on such a checkpoint. */
const LM_HEAD = /(ForCausalLM|LMHeadModel)$/;

export function supportedArchitectures(): string[] {
  return Object.keys(MODEL_CLASSES);
}

/**
 * The architecture class loadModel builds for a config.json: `override`, else the first listed
 * class this library implements, else the model_type's default class; a ModelError when none
 * applies, or when the checkpoint carries a task head that the default would silently replace.
 */
export function architectureOf(config: ModelConfig, dir: string, override?: string): string {
  const listed = config.architectures.find((a) => a in MODEL_CLASSES);
  // Falling back on model_type loads the family's default (language-model) head: fine for an
  // unlisted LM class name, wrong for a task head this library does not build, whose checkpoint
  // would then silently train and save as a causal LM.
  const otherHead = config.architectures.find((a) => TASK_HEAD.test(a));
  const fallback = DEFAULT_CLASS[config.modelType];
  if (!override && !listed && otherHead && fallback && LM_HEAD.test(fallback)) {
    throw new ModelError(
      `${dir} is a ${otherHead} checkpoint; that task head is not implemented (supported: ${supportedArchitectures().join(', ')}). ` +
        `To use its backbone as a language model anyway, load it with { architecture: "<one of those>" }.`,
    );
  }
  const arch = override ?? listed ?? fallback;
  if (!arch || !(arch in MODEL_CLASSES)) {
    throw new ModelError(
      `unsupported architecture ${JSON.stringify(config.architectures)} (model_type "${config.modelType}") in ${dir}; supported: ${supportedArchitectures().join(', ')}`,
    );
  }
  return arch;
}

/** The architecture class of `config` (architectureOf) over a weight store, without reading any file (benchmarks, tests). */
export function buildModel(config: ModelConfig, weights: WeightStore, dir: string, architecture?: string): PretrainedModel {
  return MODEL_CLASSES[architectureOf(config, dir, architecture)]!(config, weights, dir);
}

export async function loadModel(dir: string, opts: LoadModelOptions = {}): Promise<PretrainedModel> {
  if (!existsSync(join(dir, 'config.json'))) throw new ModelError(`${dir} is not a model folder: config.json is missing`);
  const config = await loadConfig(dir);
  const arch = architectureOf(config, dir, opts.architecture);
  const hasSingle = existsSync(join(dir, 'model.safetensors'));
  if (!hasSingle && !existsSync(join(dir, 'model.safetensors.index.json'))) {
    throw new ModelError(
      `${dir} has no model.safetensors or model.safetensors.index.json (PyTorch .bin checkpoints are not read; convert with safetensors' convert script)`,
    );
  }
  await validateCheckpointAgainstConfig(config, dir); // config.json vs header shapes, before anything is built (models/validate.ts)
  // The model is built first (constructors only read config.json) so its linear modules decide
  // which tensors are quantized as they are read.
  const weights = new WeightStore();
  const model = MODEL_CLASSES[arch]!(config, weights, dir);
  const plan = quantizationPlan(model.linears(), descriptorOf(model).basePrefix, opts.quantization, config.raw.quantization_config);
  const source = await openCheckpoint(dir);
  const prefix = descriptorOf(model).basePrefix;
  const linear = new Set(model.linears().map((s) => `${s.name}.weight`));
  const defer = opts.deferLinearWeights
    ? (name: string, shape: readonly number[]) => shape.length === 2 && (linear.has(name) || linear.has(prefix + name))
    : undefined;
  try {
    await weights.load(
      source,
      (name) => {
        if (source instanceof ShardedSafetensors) return source.shardOf(name);
        return hasSingle ? join(dir, 'model.safetensors') : undefined;
      },
      { ...plan, defer },
    );
  } finally {
    await source.close();
  }
  reconcileWeights(model, weights, arch);
  return model;
}

/**
 * The model with `length` token rows (transformers' resize_token_embeddings(length), growing only):
 * the input embedding and an untied output head get new rows, each the mean of the old rows.
 * transformers >= 4.46 samples them from a normal around that mean with 1e-9 times the old rows'
 * covariance (the plain mean when that is not positive definite); the plain mean is used here
 * always, so that training, `peft merge` and loading the adapter again all rebuild the same rows
 * (the noise it leaves out is ~3e-5 of the rows' spread). The weights are taken over: `model` must
 * not be used afterwards. config.vocab_size of the returned model (and a merged model's
 * config.json) is `length`.
 */
export function resizeTokenEmbeddings(model: PretrainedModel, length: number): PretrainedModel {
  const old = model.vocabSize;
  if (!Number.isInteger(length) || length < old)
    throw new ModelError(`resizeTokenEmbeddings(${length}): ${model.dir} has ${old} token rows; only growing the vocabulary is supported`);
  if (length === old) return model;
  const arch = architectureOf(model.config, model.dir);
  const raw = { ...model.config.raw };
  const text = raw.text_config;
  if (raw.vocab_size === undefined && text && typeof text === 'object')
    raw.text_config = { ...(text as Record<string, unknown>), vocab_size: length };
  else raw.vocab_size = length;
  const config = parseConfig(raw, join(model.dir, 'config.json'));
  const w = model.weights;
  const grow = (name: string): void => {
    if (w.isQuantized(name))
      throw new ModelError(`cannot add tokens: ${name} is held 4-bit quantized; add tokens to the unquantized model`);
    const t = w.get(name);
    const [rows, cols] = t.shape as [number, number];
    if (rows !== old) throw new ModelError(`cannot add tokens: ${name} has ${rows} rows, not the ${old} of vocab_size`);
    const data = new Float32Array(length * cols);
    data.set(t.data.subarray(0, rows * cols));
    const mean = new Float64Array(cols);
    for (let r = 0; r < rows; r++) for (let c = 0; c < cols; c++) mean[c]! += t.data[r * cols + c]!;
    for (let c = 0; c < cols; c++) mean[c]! /= rows;
    for (let r = rows; r < length; r++) data.set(mean, r * cols);
    w.set(name, { shape: [length, cols], data });
  };
  grow(`${model.embeddingName}.weight`);
  for (const head of ['lm_head.weight', 'cls.predictions.decoder.weight']) if (w.has(head) && !w.isAlias(head)) grow(head);
  if (w.has('cls.predictions.decoder.bias')) {
    const b = w.get('cls.predictions.decoder.bias');
    const data = new Float32Array(length);
    data.set(b.data);
    data.fill(b.data.reduce((a, x) => a + x, 0) / b.data.length, b.data.length); // transformers: the mean of the old bias
    w.set('cls.predictions.decoder.bias', { shape: [length], data });
  }
  return MODEL_CLASSES[arch]!(config, w, model.dir);
}

function reconcileWeights(model: PretrainedModel, weights: WeightStore, arch: string): void {
  const prefix = descriptorOf(model).basePrefix;
  // A base-model checkpoint (GPT2Model, LlamaModel, BertModel) names weights without the prefix.
  const expected = model.expectedWeights();
  for (const name of weights.names()) {
    if (!name.startsWith(prefix) && expected.includes(prefix + name) && !weights.has(prefix + name)) {
      weights.rename(name, prefix + name);
    }
  }
  for (const name of weights.names()) if (IGNORED.some((r) => r.test(name))) weights.delete(name);
  // Tied output embeddings are saved once; point the head at the embedding matrix.
  const tied: [string, string][] = [
    ['lm_head.weight', `${model.embeddingName}.weight`],
    ['cls.predictions.decoder.weight', `${model.embeddingName}.weight`],
  ];
  for (const [head, emb] of tied) {
    if (!weights.has(head) && weights.has(emb) && model.linears().some((s) => `${s.name}.weight` === head)) weights.alias(head, emb);
  }
  const have = new Set(weights.names());
  const missing = expected.filter((n) => !have.has(n) && !weights.isAlias(n));
  const known = new Set([...expected, ...model.linears().map((s) => `${s.name}.weight`)]);
  const unexpected = [...have].filter((n) => !known.has(n) && n !== 'cls.predictions.decoder.bias');
  if (missing.length || unexpected.length) {
    const list = (xs: string[]) => xs.slice(0, 20).join(', ') + (xs.length > 20 ? `, ... (${xs.length} in all)` : '');
    throw new ModelError(
      `weights of ${model.dir} do not match ${arch}:` +
        (missing.length ? ` missing keys: ${list(missing)};` : '') +
        (unexpected.length ? ` unexpected keys: ${list(unexpected)};` : '') +
        ' check that config.json belongs to these weights, or pass the right architecture',
    );
  }
  for (const name of expected) {
    const got = weights.shapeOf(name);
    const shape = expectedShape(model, name);
    if (shape && (shape.length !== got.length || shape.some((d, i) => d !== got[i]))) {
      throw new ModelError(`weight ${name} has shape [${got}] but config.json implies [${shape}]`);
    }
  }
}

function expectedShape(model: PretrainedModel, name: string): number[] | undefined {
  const spec = model.linears().find((s) => name === `${s.name}.weight` || name === `${s.name}.bias`);
  if (!spec) return undefined;
  if (name.endsWith('.bias')) return [spec.outFeatures];
  return spec.layout === 'conv1d' ? [spec.inFeatures, spec.outFeatures] : [spec.outFeatures, spec.inFeatures];
}
