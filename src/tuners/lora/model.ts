// LoraModel: peft's PeftModel + LoraModel for LoRA adapters over one frozen base model. It holds
// named adapters (host tensors), installs the active ones as linear hooks when a graph is built,
// saves and loads peft's folder layout, and merges into / restores the base weights.

import { host, join } from '../../storage/index.js';
import type { Value } from '../../graph/ir.js';
import * as o from '../../graph/ops.js';
import type { ForwardArgs, ForwardResult, PretrainedModel } from '../../models/types.js';
import type { DerivedFeed, LinearHook, LinearSpec } from '../../nn/context.js';
import type { QuantizedWeightTensor, WeightTensor } from '../../nn/weights.js';
import { baseProduct } from '../../nn/layers.js';
import { AdapterError, AdapterMismatchError, PeftConfigError, type AdaptedModel, type TrainableTensor } from '../types.js';
import {
  type LoraConfig,
  TASK_MODULES_TO_SAVE,
  UnsupportedLoraFeatureError,
  loraConfig,
  loraConfigFromJson,
  loraScaling,
} from './config.js';
import { SeededRandom, normals } from '../../nn/random.js';
import { TopSvd, kaimingUniform, oloraFactors, pissaFactors, randomLoraInit } from './init.js';
import {
  type LoraEmbeddingState,
  type LoraModuleState,
  baseMatmul,
  embeddingForward,
  tokensLookup,
  tokensProjection,
  variantFor,
} from './layer.js';
import {
  copyWeightStore,
  doraInitialMagnitudes,
  embeddingDoraMagnitudes,
  mergeEmbeddings,
  mergeWeights,
  requantizeLike,
  withWeights,
} from './merge.js';
import {
  PEFT_PREFIX,
  type TensorKind,
  type TensorSlot,
  type WriteAdapterOptions,
  checkOutputDir,
  compressionReport,
  isCompressible,
  readAdapterConfigFile,
  readAdapterTensors,
  tensorNames,
  writeAdapterFolder,
} from './save.js';
import {
  type AdapterCompression,
  BASE_QUANTIZATION_METADATA_KEY,
  COMPRESSION_CONFIG_KEY,
  type CompressionSpec,
  compressionSpec,
  roundTrip,
} from './compress.js';
import { Graph } from '../../graph/ir.js';
import { BuildContext } from '../../nn/context.js';
import { type HostTensor, RuntimeSession } from '../../runtime/session.js';
import { TargetModulesNotFoundError, findTargets, resolveTargetModules } from './targets.js';
import { TorchCpuGenerator } from '../../nn/torch_rng.js';
import { COMBINATION_TYPES, type CombinationType, type WeightedAdapterOptions, combiner, svdFactors } from './weighted.js';

/** One named adapter: its config (as it will be saved) and its tensors. */
export interface LoraAdapter {
  readonly name: string;
  readonly config: LoraConfig;
  /** wrapped linear modules, by module name, in model order */
  readonly modules: Map<string, LoraModuleState>;
  /** base-model weights this adapter replaces (modules_to_save copies, trained biases), by weight name */
  readonly overrides: Map<string, TrainableTensor>;
  /** modules trained and saved in full */
  readonly modulesToSave: string[];
  /** false for adapters loaded for inference (peft's is_trainable=False) */
  readonly trainable: boolean;
  /** LoRA on embedding modules, by module name */
  readonly embeddings: Map<string, LoraEmbeddingState>;
  /** peft's TrainableTokens, by module name (the input embedding, or a linear output projection) */
  readonly tokens: Map<string, TokenState>;
  /**
   * PiSSA/OLoRA: lora_A/lora_B as initialised (A0, B0), by module; what
   * savePretrained's pathInitialModelForWeightConversion folder is checked against.
   */
  readonly initial?: Map<string, { A: Float32Array; B: Float32Array }>;
}

/** Rows of an embedding matrix an adapter replaces (peft TrainableTokensLayer). */
export interface TokenState {
  /** the module holding the tensor (the embedding) */
  module: string;
  /** token ids, in the order of trainable_token_indices */
  indices: number[];
  /** the replacement rows [n, dim] (peft's trainable_tokens_delta) */
  delta: TrainableTensor;
  /** linear modules whose weight is tied to this embedding: their rows follow (tied lm_head) */
  tiedLinears: string[];
}

export interface CreateLoraOptions {
  adapterName?: string;
  /** seed of the generator that draws initial A (and B) */
  seed?: number;
}

export interface SaveLoraOptions {
  selectedAdapters?: string[];
  /**
   * Store lora_A/lora_B quantized ('int8-row', 'int8-block', 'nf4'; block size 64 by default).
   * The folder then needs this library (or `peft decompress`) to load; see compress.ts.
   */
  compression?: AdapterCompression | { method: AdapterCompression; blockSize?: number };
  /** token ids the output drift of a compressed adapter is measured on (default: 2 x 32 fixed ids) */
  driftSample?: readonly (readonly number[])[];
  /**
   * peft's path_initial_model_for_weight_conversion: the folder holding this PiSSA/OLoRA adapter as
   * initialised (saved right after creation). The adapter is written as a plain LoRA for the ORIGINAL
   * base: lora_A = cat([A, A0]), lora_B = cat([B, -B0]), r and lora_alpha doubled (alpha x sqrt(2)
   * with rsLoRA), init_lora_weights=true. Unlike peft, the initial folder is only read, never rewritten.
   */
  pathInitialModelForWeightConversion?: string;
  /** write the one selected adapter into `dir` itself, whatever its name (default: non-default names go to dir/<name>) */
  flat?: boolean;
}

export interface MergeAndUnloadOptions {
  /** over a 4-bit base: quantize the merged weights again (default false: a full-precision model) */
  requantize?: boolean;
}

export interface LoadLoraOptions {
  adapterName?: string;
  /** peft's is_trainable: false (default) loads the adapter for inference */
  isTrainable?: boolean;
}

function warn(message: string): void {
  host.warn(message, 'PeftWarning');
}

/** Every weight name of the model, tied aliases included. */
function allWeightNames(model: PretrainedModel): string[] {
  const names = new Set(model.expectedWeights());
  for (const s of model.linears()) {
    names.add(`${s.name}.weight`);
    if (s.bias) names.add(`${s.name}.bias`);
  }
  return [...names].filter((n) => model.weights.has(n));
}

type Source = { kind: 'create'; rng: SeededRandom } | { kind: 'load'; tensors: Map<string, TrainableTensor>; dir: string };

/** peft's trainable_token_indices resolved to modules: a list is for the input embedding; object keys match module names by suffix. */
function tokenTargets(base: PretrainedModel, config: LoraConfig): Map<string, number[]> {
  const out = new Map<string, number[]>();
  const tti = config.trainableTokenIndices;
  if (tti === null) return out;
  const entries: [string, number[]][] = Array.isArray(tti) ? [[base.embeddingName, tti]] : Object.entries(tti);
  const linears = new Set(base.linears().map((s) => s.name));
  for (const [key, indices] of entries) {
    const module = key === base.embeddingName || linears.has(key) ? key : [base.embeddingName, ...linears].find((m) => m.endsWith(key));
    if (!module)
      throw new PeftConfigError(
        `trainable_token_indices: no embedding or linear module of ${base.dir} is named ${JSON.stringify(key)} (the input embedding is ${base.embeddingName})`,
      );
    const rows =
      module === base.embeddingName
        ? base.weights.shapeOf(`${module}.weight`)[0]!
        : base.linears().find((s) => s.name === module)!.outFeatures;
    const bad = indices.find((i) => i >= rows);
    if (bad !== undefined)
      throw new PeftConfigError(
        `trainable_token_indices: token ${bad} is out of range for ${module} (${rows} rows); an adapter trained with added tokens (peft train --add-tokens) needs the base grown to its tokenizer first: resizeTokenEmbeddings(base, length of the adapter folder's tokenizer), or peft merge`,
      );
    if (new Set(indices).size !== indices.length)
      throw new PeftConfigError(`trainable_token_indices for ${module} lists a token twice; give each token once`);
    out.set(module, [...indices]);
  }
  return out;
}

/** Linear modules whose weight is the same stored tensor as `module`'s (a tied lm_head). */
function tiedLinears(base: PretrainedModel, module: string): string[] {
  const w = base.weights.resolve(`${module}.weight`);
  return base
    .linears()
    .filter((s) => s.name !== module && base.weights.has(`${s.name}.weight`) && base.weights.resolve(`${s.name}.weight`) === w)
    .map((s) => s.name);
}

/** Rows `indices` of a [rows, cols] matrix, as a new [n, cols] array. */
function gatherRows(w: WeightTensor, indices: readonly number[]): Float32Array {
  const cols = w.shape[1]!;
  const out = new Float32Array(indices.length * cols);
  indices.forEach((r, i) => out.set(w.data.subarray(r * cols, (r + 1) * cols), i * cols));
  return out;
}

/**
 * Builds one adapter for `base`. With `create`, tensors are initialised as peft does (and PiSSA /
 * OLoRA rewrite the base weights to the residual, as peft does); with `load` every tensor comes from
 * the file, all of it checked against the model before the base is touched.
 */
/** The adapter's LoRA layers in the model's module order (peft's named_modules order). */
function injectionOrder(base: PretrainedModel, a: LoraAdapter): { module: string; embedding: boolean }[] {
  const order = new Map(base.moduleNames().map((n, i) => [n, i]));
  const at = (n: string) => order.get(n) ?? Number.MAX_SAFE_INTEGER;
  const all = [
    ...[...a.modules.keys()].map((module) => ({ module, embedding: false })),
    ...[...a.embeddings.keys()].map((module) => ({ module, embedding: true })),
  ];
  return all
    .map((x, i) => ({ ...x, i }))
    .sort((x, y) => at(x.module) - at(y.module) || x.i - y.i)
    .map(({ module, embedding }) => ({ module, embedding }));
}

/**
 * What peft's inject_adapter draws from torch's generator while add_weighted_adapter creates the new
 * adapter's layers, module by module: a linear layer builds nn.Linear(in, r) and nn.Linear(r, out,
 * bias=lora_bias) (each initialised uniform: weight, then bias) and re-initialises A (kaiming_uniform_
 * for init_lora_weights=true, normal_ for "gaussian"); an embedding draws randn A, randn B and normal_ B.
 */
function skipInjectionDraws(rng: TorchCpuGenerator, base: PretrainedModel, a: LoraAdapter): void {
  const init = a.config.initLoraWeights;
  for (const { module, embedding } of injectionOrder(base, a)) {
    if (embedding) {
      const e = a.embeddings.get(module)!;
      rng.skipNormal(e.A.data.length);
      rng.skipNormal(e.B.data.length);
      if (init !== false) rng.skipNormal(e.B.data.length);
      continue;
    }
    const m = a.modules.get(module)!;
    rng.skipUniform(m.A.data.length);
    rng.skipUniform(m.B.data.length);
    if (m.bias) rng.skipUniform(m.bias.data.length);
    if (init === 'gaussian') rng.skipNormal(m.A.data.length);
    else if (init !== false) rng.skipUniform(m.A.data.length);
  }
}

/** One LoRA'd embedding [V, H] with its tensors. */
function embeddingState(
  name: string,
  V: number,
  H: number,
  r: number,
  alpha: number,
  useRslora: boolean,
  A: TrainableTensor,
  B: TrainableTensor,
  magnitude?: TrainableTensor,
): LoraEmbeddingState {
  return { name, numEmbeddings: V, embeddingDim: H, r, alpha, scaling: loraScaling(alpha, r, useRslora), A, B, magnitude };
}

async function buildAdapter(base: PretrainedModel, input: LoraConfig, name: string, src: Source, trainable: boolean): Promise<LoraAdapter> {
  const config = structuredClone(input);
  config.targetModules = resolveTargetModules(base, config);
  if (src.kind === 'create' && config.taskType && TASK_MODULES_TO_SAVE[config.taskType]) {
    // PeftModelForSequenceClassification extends the config's list (duplicates and all).
    config.modulesToSave = [...(config.modulesToSave ?? []), ...TASK_MODULES_TO_SAVE[config.taskType]!];
  }
  if (config.baseModelNameOrPath === null) config.baseModelNameOrPath = base.dir;
  const targets = findTargets(base, config);
  for (const { spec } of targets.lora) {
    if (spec.layout === 'conv1d' && !config.fanInFanOut) {
      warn('fan_in_fan_out is set to False but the target module is `Conv1D`. Setting fan_in_fan_out to True.');
      config.fanInFanOut = true;
    } else if (spec.layout === 'linear' && config.fanInFanOut) {
      warn('fan_in_fan_out is set to True but the target module is `torch.nn.Linear`. Setting fan_in_fan_out to False.');
      config.fanInFanOut = false;
    }
  }
  const tokenMods = tokenTargets(base, config);
  for (const e of targets.embeddings) {
    if (tokenMods.has(e.name))
      throw new PeftConfigError(`${e.name} is both a LoRA target and in trainable_token_indices; use one of the two for it`);
    if (config.loraBias)
      throw new PeftConfigError(
        `lora_bias=true is not supported for the embedding ${e.name} (as in peft); leave the embedding out of target_modules`,
      );
  }
  const variant = variantFor(config.useDora);
  const weightNames = allWeightNames(base);
  const wrapped = new Set(targets.lora.map((t) => t.spec.name));
  if (config.loraBias) {
    const noBias = targets.lora.filter((t) => !t.spec.bias).map((t) => t.spec.name);
    if (noBias.length && src.kind === 'create')
      warn(
        `lora_bias=true but ${noBias[0]}${noBias.length > 1 ? ` and ${noBias.length - 1} other targets have` : ' has'} no bias: merging this adapter will not be possible (as in peft)`,
      );
  }

  // Base weights the adapter replaces, and under which saved key each lives.
  const overrideNames: { weight: string; module: string; saved: boolean }[] = [];
  for (const m of targets.modulesToSave) {
    for (const w of weightNames) if (w.startsWith(`${m}.`)) overrideNames.push({ weight: w, module: m, saved: true });
  }
  const inMts = (w: string) => overrideNames.some((x) => x.weight === w);
  if (config.bias === 'all') {
    for (const w of weightNames)
      if (w.includes('bias') && !inMts(w)) overrideNames.push({ weight: w, module: w.slice(0, w.lastIndexOf('.')), saved: true });
  } else if (config.bias === 'lora_only') {
    // peft 0.13.2 looks for "<module>.bias" where the bias lives at "<module>.base_layer.bias": never saved.
    for (const { spec } of targets.lora)
      if (spec.bias && !inMts(`${spec.name}.bias`)) overrideNames.push({ weight: `${spec.name}.bias`, module: spec.name, saved: false });
  }

  const modules = new Map<string, LoraModuleState>();
  const embeddings = new Map<string, LoraEmbeddingState>();
  const tokens = new Map<string, TokenState>();
  const overrides = new Map<string, TrainableTensor>();
  const init = config.initLoraWeights;
  const pissa = typeof init === 'string' && init.startsWith('pissa');
  const olora = init === 'olora';
  const quantizedTargets = targets.lora.filter(({ spec }) => base.weights.isQuantized(`${spec.name}.weight`));
  if ((pissa || olora) && quantizedTargets.length) {
    throw new PeftConfigError(
      `init_lora_weights="${String(init)}" rewrites the base weights to the residual, but ${quantizedTargets[0]!.spec.name} is held 4-bit quantized; load the model in full precision to use it`,
    );
  }
  if ((pissa || olora) && targets.embeddings.length)
    throw new PeftConfigError(
      `init_lora_weights="${String(init)}" initialises linear layers only; leave ${targets.embeddings[0]!.name} out of target_modules`,
    );
  if (src.kind === 'create' && (init === 'orthogonal' || init === 'eva')) {
    throw new UnsupportedLoraFeatureError(
      'init_lora_weights',
      `init_lora_weights="${init}" is not implemented for new adapters here; use true, false, "gaussian", "pissa", "pissa_niter_<n>" or "olora" (adapters saved with it load)`,
    );
  }
  const embShape = (e: string) => base.weights.shapeOf(`${e}.weight`) as [number, number];

  if (src.kind === 'load') {
    const used = new Set<string>();
    const take = (key: string, shape: number[], what: string): TrainableTensor | undefined => {
      const t = src.tensors.get(key);
      if (!t) return undefined;
      if (t.shape.length !== shape.length || t.shape.some((d, i) => d !== shape[i])) {
        throw new AdapterMismatchError(
          `${src.dir}: ${key} has shape [${t.shape}] but ${what} of this model needs [${shape}]; the adapter was made for ${config.baseModelNameOrPath ?? 'another model'}, not ${base.dir}`,
        );
      }
      used.add(key);
      return t;
    };
    const missing: string[] = [];
    const need = (kind: TensorKind, module: string, shape: number[]): TrainableTensor => {
      const key = tensorNames(kind, module, name).saved;
      const t = take(key, shape, `${kind} of ${module}`);
      if (!t) missing.push(key);
      return t ?? { shape, data: new Float32Array(shape.reduce((a, b) => a * b, 1)) };
    };
    for (const { spec, r, alpha } of targets.lora) {
      const A = need('lora_A', spec.name, [r, spec.inFeatures]);
      const B = need('lora_B', spec.name, [spec.outFeatures, r]);
      const magnitude = variant.hasMagnitude ? need('lora_magnitude_vector', spec.name, [spec.outFeatures]) : undefined;
      const bias = config.loraBias ? need('lora_B_bias', spec.name, [spec.outFeatures]) : undefined;
      modules.set(spec.name, {
        spec,
        r,
        alpha,
        scaling: loraScaling(alpha, r, config.useRslora),
        dropout: config.loraDropout,
        variant,
        A,
        B,
        magnitude,
        bias,
      });
    }
    const savedBase: [string, TrainableTensor][] = [];
    for (const { name: e, r, alpha } of targets.embeddings) {
      const [V, H] = embShape(e);
      const A = need('lora_embedding_A', e, [r, V]);
      const B = need('lora_embedding_B', e, [H, r]);
      const magnitude = variant.hasMagnitude ? need('lora_magnitude_vector', e, [H]) : undefined;
      embeddings.set(e, embeddingState(e, V, H, r, alpha, config.useRslora, A, B, magnitude));
      // peft saves the base embedding next to it and loads it back into the base layer.
      const b = take(tensorNames('base_layer', e, name).saved, [V, H], `the base weight of ${e}`);
      if (b) savedBase.push([e, b]);
    }
    for (const [m, indices] of tokenMods) {
      const cols = m === base.embeddingName ? embShape(m)[1] : base.linears().find((s) => s.name === m)!.inFeatures;
      tokens.set(m, {
        module: m,
        indices,
        delta: need('trainable_tokens_delta', m, [indices.length, cols]),
        tiedLinears: tiedLinears(base, m),
      });
    }
    for (const ov of overrideNames) {
      const shape = base.weights.get(ov.weight).shape;
      const key = tensorNames('base', ov.module, name, { weight: ov.weight, wrapped: wrapped.has(ov.module) }).saved;
      const t = ov.saved ? take(key, shape, ov.weight) : undefined;
      // modules_to_save must be in the file; a bias peft did not save keeps its base value.
      if (!t && inMtsModule(targets.modulesToSave, ov.weight)) missing.push(key);
      overrides.set(
        ov.weight,
        t
          ? { shape: [...t.shape], data: Float32Array.from(t.data) }
          : { shape: [...shape], data: Float32Array.from(base.weights.get(ov.weight).data) },
      );
    }
    const unexpected = [...src.tensors.keys()].filter((k) => !used.has(k));
    if (missing.length || unexpected.length) {
      const list = (xs: string[]) => xs.slice(0, 8).join(', ') + (xs.length > 8 ? `, ... (${xs.length} in all)` : '');
      throw new AdapterMismatchError(
        `${src.dir} does not fit ${base.dir}:` +
          (missing.length ? ` missing tensors ${list(missing)};` : '') +
          (unexpected.length ? ` tensors for modules the config does not target here: ${list(unexpected)};` : '') +
          ` the adapter was made for ${config.baseModelNameOrPath ?? 'another model'} with target_modules ${JSON.stringify(config.targetModules)}`,
      );
    }
    for (const [e, b] of savedBase)
      base.weights.set(base.weights.resolve(`${e}.weight`), { shape: [...b.shape], data: Float32Array.from(b.data) });
    if (pissa) await applyPissaResidual(base, [...modules.values()], false, init as string);
    if (olora) await applyOloraResidual(base, [...modules.values()], false);
    return { name, config, modules, overrides, modulesToSave: targets.modulesToSave, trainable, embeddings, tokens };
  }

  for (const { spec, r, alpha } of targets.lora) {
    const scaling = loraScaling(alpha, r, config.useRslora);
    const { A, B } =
      pissa || olora
        ? { A: new Float32Array(r * spec.inFeatures), B: new Float32Array(spec.outFeatures * r) }
        : randomLoraInit(init === false ? false : init === 'gaussian' ? 'gaussian' : true, src.rng, r, spec.inFeatures, spec.outFeatures);
    // lora_B's bias: zero with the default init (peft reset_lora_parameters), nn.Linear's default otherwise.
    const bias = config.loraBias
      ? {
          shape: [spec.outFeatures],
          data: init === false ? kaimingUniform(src.rng, spec.outFeatures, r) : new Float32Array(spec.outFeatures),
        }
      : undefined;
    modules.set(spec.name, {
      spec,
      r,
      alpha,
      scaling,
      dropout: config.loraDropout,
      variant,
      A: { shape: [r, spec.inFeatures], data: A },
      B: { shape: [spec.outFeatures, r], data: B },
      bias,
    });
  }
  for (const { name: e, r, alpha } of targets.embeddings) {
    const [V, H] = embShape(e);
    // peft Embedding.reset_lora_parameters: A zero and B ~ N(0, 1) (init true / gaussian); false keeps both ~ N(0, 1).
    const A = init === false ? normals(src.rng, r * V, 1) : new Float32Array(r * V);
    const B = normals(src.rng, H * r, 1);
    embeddings.set(e, embeddingState(e, V, H, r, alpha, config.useRslora, { shape: [r, V], data: A }, { shape: [H, r], data: B }));
  }
  for (const [m, indices] of tokenMods) {
    // TrainableTokensLayer starts from the current rows.
    const w = base.weights.dequantized(`${m}.weight`);
    tokens.set(m, {
      module: m,
      indices,
      delta: { shape: [indices.length, w.shape[1]!], data: gatherRows(w, indices) },
      tiedLinears: tiedLinears(base, m),
    });
  }
  let initial: Map<string, { A: Float32Array; B: Float32Array }> | undefined;
  if (pissa) await applyPissaResidual(base, [...modules.values()], true, init as string);
  if (olora) await applyOloraResidual(base, [...modules.values()], true);
  if (pissa || olora)
    initial = new Map([...modules].map(([m, st]) => [m, { A: Float32Array.from(st.A.data), B: Float32Array.from(st.B.data) }]));
  if (variant.hasMagnitude) {
    const states = [...modules.values()];
    const mags = await doraInitialMagnitudes(
      states.map((s) => ({ spec: s.spec, weight: base.weights.dequantized(`${s.spec.name}.weight`), state: s })),
    );
    states.forEach((s, i) => (s.magnitude = { shape: [s.spec.outFeatures], data: mags[i]! }));
    const embs = [...embeddings.values()];
    const emags = await embeddingDoraMagnitudes(embs.map((e) => ({ weight: base.weights.dequantized(`${e.name}.weight`), state: e })));
    embs.forEach((e, i) => (e.magnitude = { shape: [e.embeddingDim], data: emags[i]! }));
  }
  for (const ov of overrideNames) {
    const w = base.weights.get(ov.weight);
    overrides.set(ov.weight, { shape: [...w.shape], data: Float32Array.from(w.data) });
  }
  return { name, config, modules, overrides, modulesToSave: targets.modulesToSave, trainable, embeddings, tokens, initial };
}

function inMtsModule(mts: readonly string[], weight: string): boolean {
  return mts.some((m) => weight.startsWith(`${m}.`));
}

/**
 * PiSSA (peft pissa_init): A and B from the top-r singular triplets of W, and W replaced by the
 * residual W - s·BA in the base model (the SVD's cost is documented on TopSvd). On load the residual is rebuilt the same way (the SVD is
 * deterministic up to signs, which cancel in BA) and the saved A and B are kept.
 */
async function applyPissaResidual(base: PretrainedModel, states: LoraModuleState[], setAB: boolean, mode: string): Promise<void> {
  // "pissa_niter_<n>": peft's fast SVD (torch.svd_lowrank, n power iterations) -> n + 1 block iterations.
  const niter = /^pissa_niter_(\d+)$/.exec(mode);
  const maxIterations = niter ? Number(niter[1]) + 1 : undefined;
  const svd = new TopSvd();
  try {
    for (const s of states) {
      const name = base.weights.resolve(`${s.spec.name}.weight`);
      const w = base.weights.get(name);
      const conv = s.spec.layout === 'conv1d';
      // SVD of the stored matrix; for Conv1D ([in, out]) the roles of U and V swap.
      const [rows, cols] = w.shape as [number, number];
      const d = await svd.compute(w.data, rows, cols, s.r, { maxIterations });
      const U = conv ? transposeRM(d.Vt, s.r, cols) : d.U;
      const Vt = conv ? transposeRM(d.U, rows, s.r) : d.Vt;
      const { A, B } = pissaFactors({ U, S: d.S, Vt }, s.spec.outFeatures, s.spec.inFeatures, s.r, s.scaling);
      const fresh: LoraModuleState = { ...s, A: { shape: s.A.shape, data: A }, B: { shape: s.B.shape, data: B } };
      const [residual] = await mergeWeights([{ spec: s.spec, weight: w, states: [fresh], scaling: -s.scaling }]);
      base.weights.set(name, { shape: [...w.shape], data: residual! });
      if (setAB) {
        s.A.data.set(A);
        s.B.data.set(B);
      }
    }
  } finally {
    await svd.dispose();
  }
}

/**
 * OLoRA (peft olora_init): A = R[:r], B = Q[:, :r] from the QR of W [out, in], and W replaced by
 * W - s·BA in the base model. On load the residual is rebuilt the same way and the saved A, B kept
 * (peft reruns olora_init when it loads an adapter whose config still says "olora").
 */
async function applyOloraResidual(base: PretrainedModel, states: LoraModuleState[], setAB: boolean): Promise<void> {
  for (const s of states) {
    if (s.spec.layout === 'conv1d')
      throw new PeftConfigError(
        `init_lora_weights="olora" needs nn.Linear weights; ${s.spec.name} is a Conv1D (as peft, which does not transpose it)`,
      );
  }
  for (const s of states) {
    const name = base.weights.resolve(`${s.spec.name}.weight`);
    const w = base.weights.get(name);
    const { A, B } = oloraFactors(w.data, s.spec.outFeatures, s.spec.inFeatures, s.r);
    const fresh: LoraModuleState = { ...s, bias: undefined, A: { shape: s.A.shape, data: A }, B: { shape: s.B.shape, data: B } };
    const [residual] = await mergeWeights([{ spec: s.spec, weight: w, states: [fresh], scaling: -s.scaling }]);
    base.weights.set(name, { shape: [...w.shape], data: residual! });
    if (setAB) {
      s.A.data.set(A);
      s.B.data.set(B);
    }
  }
}

function transposeRM(a: Float64Array, rows: number, cols: number): Float64Array {
  const t = new Float64Array(a.length);
  for (let i = 0; i < rows; i++) for (let j = 0; j < cols; j++) t[j * rows + i] = a[i * cols + j]!;
  return t;
}

/**
 * peft's save_mutated_as_lora + subtract_mutated_init: a PiSSA/OLoRA adapter as a plain LoRA for
 * the original base weights, from its initial A0/B0 saved in `initDir`.
 */
async function convertMutatedToLora(
  a: LoraAdapter,
  slots: TensorSlot[],
  initDir: string,
): Promise<{ slots: TensorSlot[]; config: LoraConfig }> {
  const c = a.config;
  if (c.useRslora && (Object.keys(c.rankPattern).length || Object.keys(c.alphaPattern).length)) {
    throw new PeftConfigError(
      'pathInitialModelForWeightConversion is not supported with rank_pattern or alpha_pattern together with use_rslora=true (as in peft)',
    );
  }
  const init = c.initLoraWeights;
  if (!(init === true || init === 'olora' || (typeof init === 'string' && init.startsWith('pissa')))) {
    warn('pathInitialModelForWeightConversion only converts a PiSSA/OLoRA adapter to a LoRA adapter');
  }
  const initial = await readAdapterTensors(initDir);
  const out: TensorSlot[] = [];
  for (const sl of slots) {
    if (sl.kind !== 'lora_A' && sl.kind !== 'lora_B') continue; // peft keeps only lora_A / lora_B
    const t0 = initial.get(sl.saved!);
    if (!t0 || t0.shape.join() !== sl.tensor.shape.join()) {
      throw new AdapterMismatchError(
        `${initDir} is not this adapter's initial state: ${sl.saved} is ${t0 ? `[${t0.shape}]` : 'missing'} there, [${sl.tensor.shape}] here`,
      );
    }
    const [rows, cols] = sl.tensor.shape as [number, number];
    let tensor: TrainableTensor;
    if (sl.kind === 'lora_A') {
      // cat([A, A0], dim 0)
      const d = new Float32Array(2 * rows * cols);
      d.set(sl.tensor.data);
      d.set(t0.data, rows * cols);
      tensor = { shape: [2 * rows, cols], data: d };
    } else {
      // cat([B, -B0], dim 1)
      const d = new Float32Array(rows * 2 * cols);
      for (let i = 0; i < rows; i++) {
        for (let j = 0; j < cols; j++) {
          d[i * 2 * cols + j] = sl.tensor.data[i * cols + j]!;
          d[i * 2 * cols + cols + j] = -t0.data[i * cols + j]!;
        }
      }
      tensor = { shape: [rows, 2 * cols], data: d };
    }
    out.push({ ...sl, tensor });
  }
  const config = structuredClone(c);
  config.initLoraWeights = true;
  config.r *= 2;
  config.loraAlpha = c.useRslora ? c.loraAlpha * 2 ** 0.5 : c.loraAlpha * 2;
  config.rankPattern = Object.fromEntries(Object.entries(c.rankPattern).map(([k, v]) => [k, 2 * v]));
  config.alphaPattern = Object.fromEntries(Object.entries(c.alphaPattern).map(([k, v]) => [k, 2 * v]));
  return { slots: out, config };
}

/** Module weights that belong to norms: transformers applies no weight decay to them. */
function isNormWeight(name: string): boolean {
  const module = name.slice(0, name.lastIndexOf('.'));
  const last = module.slice(module.lastIndexOf('.') + 1);
  return /norm/i.test(last) || /^ln_/.test(last);
}

/** A 4-bit base weight dequantized in the graph after `after`, in its state-dict layout. */
function storedLayout(ctx: BuildContext, name: string, after: Value): Value {
  const m = ctx.quantizedWeight(name, after);
  return ctx.weights.getQuantized(name)!.transposed ? o.transpose(m, [1, 0]) : m;
}

const OWNER = Symbol('loraOwner');

/** Module names that read the same input in the model families this library builds (Llama family: attention q/k/v, the gated MLP's gate/up). */
const SHARED_INPUT_GROUPS: readonly (readonly string[])[] = [
  ['q_proj', 'k_proj', 'v_proj'],
  ['gate_proj', 'up_proj'],
];

/**
 * Whether training graphs compute x @ A^T once for LoRA modules that share their input
 * (LoraModel.sharedDownGroups). On by default; PEFT_LORA_SHARED_DOWN=0 in the environment turns it
 * off (for A/B measurements), as does setting `enabled` to false before a graph is built.
 */
export const loraSharedDown = {
  enabled: (globalThis as { process?: { env?: Record<string, string | undefined> } }).process?.env?.PEFT_LORA_SHARED_DOWN !== '0',
};

/** x @ A^T of one module, as a part of its group's shared product; undefined when the module has none. */
interface SharedDown {
  down(x: Value, module: string, adapter: string): Value | undefined;
}

export class LoraModel implements AdaptedModel {
  readonly peftType = 'LORA';
  private readonly adapters = new Map<string, LoraAdapter>();
  private active: string[] = [];
  private disabled = false;
  /** adapters folded into the base weights by merge(), in merge order */
  private merged: string[] = [];
  /** base weights as they were before merge() (float32, or the 4-bit data), restored exactly by unmerge() */
  private readonly originals = new Map<string, WeightTensor | QuantizedWeightTensor>();

  private constructor(readonly base: PretrainedModel) {}

  /** peft's get_peft_model: a new adapter on `base`. */
  static async create(base: PretrainedModel, config: Partial<LoraConfig> | LoraConfig, opts: CreateLoraOptions = {}): Promise<LoraModel> {
    const m = new LoraModel(base);
    await m.addAdapter(opts.adapterName ?? 'default', config, opts);
    m.active = [opts.adapterName ?? 'default'];
    return m;
  }

  /** peft's PeftModel.from_pretrained for a LoRA adapter folder. */
  static async fromPretrained(base: PretrainedModel, dir: string, opts: LoadLoraOptions = {}): Promise<LoraModel> {
    const m = new LoraModel(base);
    const name = opts.adapterName ?? 'default';
    await m.loadAdapter(dir, name, opts);
    m.active = [name];
    return m;
  }

  /** Adds a freshly initialised adapter; it is not activated (peft's add_adapter). */
  async addAdapter(name: string, config: Partial<LoraConfig> | LoraConfig, opts: { seed?: number } = {}): Promise<void> {
    this.checkNewName(name);
    const cfg = loraConfig(config);
    const a = await buildAdapter(this.base, cfg, name, { kind: 'create', rng: new SeededRandom(opts.seed ?? 0) }, !cfg.inferenceMode);
    this.adapters.set(name, a);
  }

  /** Loads an adapter folder under `name`; it is not activated (peft's load_adapter). */
  async loadAdapter(dir: string, name: string, opts: { isTrainable?: boolean } = {}): Promise<void> {
    this.checkNewName(name);
    // A compressed adapter's extra "compression" entry (compress.ts) is not a LoRA setting; its
    // tensors are dequantized by readAdapterTensors.
    const { [COMPRESSION_CONFIG_KEY]: _compression, ...json } = await readAdapterConfigFile(dir);
    if (json.peft_type !== 'LORA')
      throw new AdapterError(
        `${join(dir, 'adapter_config.json')}: peft_type is ${JSON.stringify(json.peft_type)}; only LORA adapters can be added to a LoRA model`,
      );
    const config = loraConfigFromJson(json, join(dir, 'adapter_config.json'));
    const tensors = await readAdapterTensors(dir);
    const trainable = opts.isTrainable ?? false;
    config.inferenceMode = !trainable;
    try {
      this.adapters.set(name, await buildAdapter(this.base, config, name, { kind: 'load', tensors, dir }, trainable));
    } catch (e) {
      if (e instanceof TargetModulesNotFoundError) {
        throw new AdapterMismatchError(
          `${dir} does not fit ${this.base.dir}: ${e.message} (the adapter was made for ${config.baseModelNameOrPath ?? 'another model'})`,
        );
      }
      throw e;
    }
  }

  /**
   * peft's add_weighted_adapter: a new (frozen, inactive) adapter `name` combining `adapters` with
   * `weights` (src/tuners/lora/weighted.ts says how each combination type computes).
   */
  async addWeightedAdapter(
    adapters: string[],
    weights: number[],
    name: string,
    combinationType: CombinationType = 'svd',
    opts: WeightedAdapterOptions = {},
  ): Promise<void> {
    this.checkNewName(name);
    if (!COMBINATION_TYPES.includes(combinationType))
      throw new PeftConfigError(`combination type ${JSON.stringify(combinationType)} is not one of ${COMBINATION_TYPES.join(', ')}`);
    if (!adapters.length) throw new PeftConfigError('add_weighted_adapter needs at least one source adapter');
    if (weights.length !== adapters.length || !weights.every(Number.isFinite))
      throw new PeftConfigError(`give one finite weight per source adapter (${adapters.length} adapters, ${weights.length} weights)`);
    if (opts.majoritySignMethod !== undefined && opts.majoritySignMethod !== 'total' && opts.majoritySignMethod !== 'frequency')
      throw new PeftConfigError(`majority_sign_method must be "total" or "frequency", got ${JSON.stringify(opts.majoritySignMethod)}`);
    if (opts.svdClamp !== undefined && !(opts.svdClamp >= 0 && opts.svdClamp <= 1))
      throw new PeftConfigError(`svd_clamp is a quantile in [0, 1], got ${opts.svdClamp}`);
    if (opts.svdRank !== undefined && !(Number.isInteger(opts.svdRank) && opts.svdRank > 0))
      throw new PeftConfigError(`svd_rank must be a positive integer, got ${opts.svdRank}`);
    if (opts.seed !== undefined && !(Number.isSafeInteger(opts.seed) && opts.seed >= 0))
      throw new PeftConfigError(`seed must be a non-negative integer (torch.manual_seed's seed), got ${opts.seed}`);
    const srcs = adapters.map((n) => this.adapter(n));
    // As peft: only lora_A/lora_B are combined. The new adapter takes the rest of its config from
    // the first source and is initialised like a new adapter there (DoRA magnitudes = ||W||, lora_B
    // bias 0, modules_to_save copies and trainable-token rows from the base), and two sources saving
    // the same module in full cannot be combined.
    const saved = new Map<string, string>();
    for (const a of srcs) {
      for (const m of a.modulesToSave) {
        if (saved.has(m))
          throw new PeftConfigError(
            `adapters "${saved.get(m)}" and "${a.name}" both save ${m} in full (modules_to_save); peft cannot combine them`,
          );
        saved.set(m, a.name);
      }
    }
    const type: CombinationType = srcs.length === 1 ? 'linear' : combinationType;
    const ranks = srcs.map((a) => Math.max(a.config.r, ...Object.values(a.config.rankPattern)));
    let newRank: number;
    if (type === 'cat') newRank = ranks.reduce((x, y) => x + y, 0);
    else if (type.endsWith('svd')) newRank = opts.svdRank ?? Math.max(...ranks);
    else {
      if (new Set(ranks).size !== 1)
        throw new PeftConfigError(
          `all adapters must have the same r for combination type "${type}" (got ${ranks.join(', ')}); use cat or an *_svd type`,
        );
      newRank = ranks[0]!;
    }
    const tms = srcs.map((a) => a.config.targetModules);
    let targetModules: string[] | string;
    if (tms.every((t) => typeof t === 'string')) targetModules = tms.map((t) => `(${t as string})`).join('|');
    else if (tms.every((t) => Array.isArray(t))) targetModules = [...new Set(tms.flatMap((t) => t as string[]))];
    else throw new PeftConfigError('the source adapters mix list and regex target_modules; peft cannot combine them');
    const first = srcs[0]!.config;
    const init = first.initLoraWeights;
    const config = loraConfig({
      ...structuredClone(first),
      r: newRank,
      loraAlpha: newRank,
      targetModules,
      alphaPattern: {},
      rankPattern: {},
      // the base weights are not mutated again for the new adapter
      initLoraWeights: init === 'olora' || (typeof init === 'string' && init.startsWith('pissa')) ? true : init,
      inferenceMode: true,
    });
    const a = await buildAdapter(this.base, config, name, { kind: 'create', rng: new SeededRandom(0) }, false);
    // DARE's masks come from torch's CPU generator as peft draws them: torch.manual_seed(seed), then
    // the new adapter's layer initialisation, then the masks module by module.
    const rng = new TorchCpuGenerator(opts.seed ?? 0);
    if (type.startsWith('dare')) skipInjectionDraws(rng, this.base, a);
    const combine = combiner(type, opts, rng);
    const svd = new TopSvd();
    try {
      const fill = async (
        module: string,
        target: { A: TrainableTensor; B: TrainableTensor },
        sources: { A: TrainableTensor; B: TrainableTensor; scaling: number; w: number }[],
      ) => {
        if (!sources.length)
          throw new AdapterError(
            `no source adapter has a LoRA on ${module}, which the combined target_modules select (as in peft: "No matching LoRAs found")`,
          );
        const [rows, cols] = [target.B.shape[0]!, target.A.shape[1]!];
        if (type === 'cat') {
          const A = new Float32Array(newRank * cols);
          const B = new Float32Array(rows * newRank);
          let off = 0;
          for (const s of sources) {
            const r = s.A.shape[0]!;
            for (let i = 0; i < r * cols; i++) A[off * cols + i] = s.A.data[i]! * s.w * s.scaling;
            for (let i = 0; i < rows; i++) for (let j = 0; j < r; j++) B[i * newRank + off + j] = s.B.data[i * r + j]!;
            off += r;
          }
          target.A.data.set(A);
          target.B.data.set(B);
        } else if (type.endsWith('svd')) {
          const deltas = sources.map((s) => {
            const r = s.A.shape[0]!;
            const d = new Float64Array(rows * cols);
            for (let i = 0; i < rows; i++) {
              for (let k = 0; k < r; k++) {
                const b = s.B.data[i * r + k]! * s.scaling;
                if (b === 0) continue;
                for (let j = 0; j < cols; j++) d[i * cols + j] += b * s.A.data[k * cols + j]!;
              }
            }
            return d;
          });
          const delta = combine(
            deltas,
            sources.map((s) => s.w * s.scaling),
          );
          const { A, B } = await svdFactors(delta, rows, cols, newRank, opts.svdClamp, svd);
          target.A.data.set(A);
          target.B.data.set(B);
        } else {
          if (sources.some((s) => s.A.shape[0] !== newRank))
            throw new PeftConfigError(`combination type "${type}" needs every source LoRA on ${module} to have rank ${newRank}`);
          const ws = sources.map((s) => s.w * s.scaling);
          const A = combine(
            sources.map((s) => Float64Array.from(s.A.data)),
            ws.map((x) => (x >= 0 ? 1 : -1) * Math.sqrt(Math.abs(x))),
          );
          const B = combine(
            sources.map((s) => Float64Array.from(s.B.data)),
            ws.map((x) => Math.sqrt(Math.abs(x))),
          );
          target.A.data.set(Float32Array.from(A));
          target.B.data.set(Float32Array.from(B));
        }
      };
      // Module by module in the model's module order (peft's named_modules), as DARE's draws need.
      for (const { module: m, embedding } of injectionOrder(this.base, a)) {
        const st = embedding ? a.embeddings.get(m)! : a.modules.get(m)!;
        const sources = srcs.flatMap((s, i) => {
          const x = embedding ? s.embeddings.get(m) : s.modules.get(m);
          return x ? [{ A: x.A, B: x.B, scaling: x.scaling, w: weights[i]! }] : [];
        });
        await fill(m, st, sources);
      }
    } finally {
      await svd.dispose();
    }
    this.adapters.set(name, a);
  }

  private checkNewName(name: string): void {
    if (!name || /[\s/\\]/.test(name))
      throw new PeftConfigError(`adapter name ${JSON.stringify(name)} must be non-empty without spaces or slashes`);
    if (this.adapters.has(name))
      throw new PeftConfigError(`an adapter named "${name}" already exists; pick another name or delete it first`);
  }

  get adapterNames(): string[] {
    return [...this.adapters.keys()];
  }
  get activeAdapters(): string[] {
    return [...this.active];
  }
  get activeAdapter(): string | undefined {
    return this.active[0];
  }
  get isDisabled(): boolean {
    return this.disabled;
  }
  get mergedAdapters(): string[] {
    return [...this.merged];
  }
  adapter(name: string): LoraAdapter {
    const a = this.adapters.get(name);
    if (!a) throw new AdapterError(`no adapter named "${name}"; adapters: ${this.adapterNames.join(', ') || '(none)'}`);
    return a;
  }
  /** The config of an adapter (as it would be saved). */
  peftConfig(name = this.active[0] ?? 'default'): LoraConfig {
    return structuredClone(this.adapter(name).config);
  }

  /** Activates one adapter, or several whose outputs add up; a merged model is unmerged first, as peft does. */
  setAdapter(names: string | string[]): void {
    const list = typeof names === 'string' ? [names] : [...names];
    for (const n of list) this.adapter(n);
    if (this.merged.length) {
      warn('Adapter cannot be set when the model is merged. Unmerging the model first.');
      this.unmerge();
    }
    this.active = list;
  }

  /** Runs the base model alone until enableAdapters() (peft's disable_adapter context). */
  disableAdapter(): void {
    this.disabled = true;
  }
  enableAdapters(): void {
    this.disabled = false;
  }

  /**
   * Removes an adapter. As peft's delete_adapter: the other active adapters stay active; only when
   * none is left does the first remaining adapter become active.
   */
  deleteAdapter(name: string): void {
    this.adapter(name);
    if (this.merged.includes(name))
      throw new AdapterError(`adapter "${name}" is merged into the base weights; call unmerge() before deleting it`);
    this.adapters.delete(name);
    if (this.active.includes(name)) {
      const still = this.active.filter((n) => n !== name);
      const rest = this.adapterNames;
      if (!still.length && rest.length) warn(`deleted the last active adapter "${name}"; "${rest[0]}" is now active`);
      this.active = still.length ? still : rest.length ? [rest[0]!] : [];
    }
  }

  /** The adapters forward applies: the active ones, none while disabled (`ignoreDisabled`: the active ones regardless, as merging takes them). */
  private activeList(ignoreDisabled = false): LoraAdapter[] {
    return this.disabled && !ignoreDisabled ? [] : this.active.map((n) => this.adapter(n));
  }

  /** Base weights replaced by the active adapters (the first active adapter that has one wins). */
  private activeOverrides(ignoreDisabled = false): Map<string, TrainableTensor> {
    const out = new Map<string, TrainableTensor>();
    for (const a of this.activeList(ignoreDisabled)) for (const [w, t] of a.overrides) if (!out.has(w)) out.set(w, t);
    return out;
  }

  forward(ctx: BuildContext, args: ForwardArgs): ForwardResult {
    const adapters = this.activeList();
    if (adapters.length === 0) return this.base.forward(ctx, args);
    const overrides = this.activeOverrides();
    const linears = new Map(this.base.linears().map((s) => [s.name, s]));
    const perModule = new Map<string, { adapter: string; state: LoraModuleState }[]>();
    for (const a of adapters) {
      if (this.merged.includes(a.name)) continue;
      for (const [m, state] of a.modules) {
        if (!perModule.has(m)) perModule.set(m, []);
        perModule.get(m)!.push({ adapter: a.name, state });
      }
    }
    for (const w of overrides.keys()) {
      const m = w.slice(0, w.lastIndexOf('.'));
      if (linears.has(m)) {
        if (!perModule.has(m)) perModule.set(m, []);
      } else if (!ctx.trainable.has(w)) {
        throw new AdapterError(
          `the active adapter replaces ${w}, which is not inside a linear layer: build the BuildContext with { trainable: model.trainableBaseWeights() } and feed model.parameters()`,
        );
      }
    }
    const perEmbedding = new Map<string, { adapter: string; state: LoraEmbeddingState }[]>();
    const perTokens = new Map<string, { adapter: string; state: TokenState }[]>();
    const projTokens = new Map<string, { adapter: string; state: TokenState }[]>();
    const push = <T>(map: Map<string, T[]>, k: string, v: T) => (map.get(k) ?? map.set(k, []).get(k)!).push(v);
    for (const a of adapters) {
      if (this.merged.includes(a.name)) continue;
      for (const [m, state] of a.embeddings) push(perEmbedding, m, { adapter: a.name, state });
      for (const [m, state] of a.tokens) {
        if (m === this.base.embeddingName) push(perTokens, m, { adapter: a.name, state });
        else push(projTokens, m, { adapter: a.name, state });
        for (const l of state.tiedLinears) push(projTokens, l, { adapter: a.name, state });
      }
    }
    for (const m of new Set([...perEmbedding.keys(), ...perTokens.keys()])) {
      ctx.embeddingHooks.set(m, (ids, baseLookup, c) =>
        this.embeddingForward(ids, baseLookup, m, c, perEmbedding.get(m) ?? [], perTokens.get(m) ?? []),
      );
    }
    for (const [m, entries] of projTokens) {
      const prev = ctx.linearHooks.get(m);
      ctx.linearHooks.set(m, (x, baseFn, spec, c) => {
        let y = prev ? prev(x, baseFn, spec, c) : baseFn(x);
        for (const { adapter, state } of entries) y = this.tokensOnProjection(y, x, c, adapter, state, spec);
        return y;
      });
    }
    const shared = this.sharedDownGroups(ctx, perModule);
    for (const [m, entries] of perModule) {
      const prev = ctx.linearHooks.get(m);
      const outer = prev && (prev as { [OWNER]?: unknown })[OWNER] === this ? undefined : prev;
      const hook: LinearHook = (x, _base, spec, c) => this.linearForward(x, spec, c, entries, overrides, outer, shared);
      (hook as { [OWNER]?: unknown })[OWNER] = this;
      ctx.linearHooks.set(m, hook);
    }
    return this.base.forward(ctx, args);
  }

  private linearForward(
    x: Value,
    spec: LinearSpec,
    ctx: BuildContext,
    entries: { adapter: string; state: LoraModuleState }[],
    overrides: Map<string, TrainableTensor>,
    outer: LinearHook | undefined,
    shared?: SharedDown,
  ): Value {
    const wName = `${spec.name}.weight`;
    const bName = `${spec.name}.bias`;
    const wOv = overrides.get(wName);
    const bOv = overrides.get(bName);
    // Built on first use: plain LoRA under another tuner's hook never touches the base weight here.
    // A 4-bit base weight (QLoRA) is multiplied through QuantMatMul (baseProduct), which rebuilds
    // it from the 4-bit data for the product and again for the backward pass; a variant that needs
    // the matrix itself (DoRA's norm) gets a dequantization ordered after this layer's input. A
    // frozen float32 weight's product is the base layer's own (baseProduct), so with
    // --base-precision int8 the wrapped module multiplies through the int8 copies exactly as the
    // unwrapped module does (DPO's reference, the base without hooks, then agrees bit for bit).
    const quantized = !wOv && ctx.weights.isQuantized(wName);
    let W: Value | undefined;
    const weight = (): Value => (W ??= wOv ? ctx.param(wName, wOv.shape) : quantized ? storedLayout(ctx, wName, x) : ctx.weight(wName));
    const product = (inp: Value): Value => (wOv ? baseMatmul(inp, weight(), spec) : baseProduct(ctx, spec, inp));
    let xw: Value | undefined;
    const xW = (): Value => (xw ??= product(x));
    const baseFn = (inp: Value): Value => {
      const y = inp === x ? xW() : product(inp);
      if (!spec.bias) return y;
      return o.add(y, bOv ? ctx.param(bName, bOv.shape) : ctx.weight(bName));
    };
    let result = outer ? outer(x, baseFn, spec, ctx) : baseFn(x);
    for (const { adapter, state } of entries) {
      const aName = tensorNames('lora_A', spec.name, adapter).param;
      const bName = tensorNames('lora_B', spec.name, adapter).param;
      // Decoding (ctx.derivedFeeds): the scaling is folded into the smaller of A and B when the feeds
      // are gathered. A scaling in the graph is fused by ONNX Runtime into the B product's alpha, and
      // MLAS runs a batch-1 product with alpha != 1 by packing B at every call instead of through its
      // M=1 kernel (bench/RESULTS.md, "Decode: unmerged LoRA vs merged").
      const fold = ctx.derivedFeeds && state.variant.name === 'lora' && !state.bias && state.scaling !== 1;
      const foldA = fold && state.A.data.length <= state.B.data.length;
      const t = {
        A: foldA
          ? ctx.derivedParam(
              `${aName}.scaled`,
              state.A.shape,
              () => scaled(state.A, state.scaling),
              () => [state.A.data, Float32Array.of(state.scaling)],
            )
          : ctx.param(aName, state.A.shape),
        B:
          fold && !foldA
            ? ctx.derivedParam(
                `${bName}.scaled`,
                state.B.shape,
                () => scaled(state.B, state.scaling),
                () => [state.B.data, Float32Array.of(state.scaling)],
              )
            : ctx.param(bName, state.B.shape),
        magnitude: state.magnitude
          ? ctx.param(tensorNames('lora_magnitude_vector', spec.name, adapter).param, state.magnitude.shape)
          : undefined,
        bias: state.bias ? ctx.param(tensorNames('lora_B_bias', spec.name, adapter).param, state.bias.shape) : undefined,
      };
      let maskName = `${PEFT_PREFIX}${spec.name}.lora_dropout.${adapter}.keep_mask`;
      for (let i = 1; ctx.dropoutMasks.has(maskName); i++) maskName = `${PEFT_PREFIX}${spec.name}.lora_dropout.${adapter}.keep_mask_${i}`;
      const xDropped = ctx.dropout(x, state.dropout, maskName);
      const xA = fold || xDropped !== x ? undefined : shared?.down(x, spec.name, adapter);
      result = state.variant.forward({
        result,
        x,
        xDropped,
        baseMatmul: xW,
        product,
        weight,
        spec,
        t,
        scaling: fold ? 1 : state.scaling,
        xA,
      });
    }
    return result;
  }

  /**
   * Training with plain LoRA on modules that read the same input (Llama's q/k/v and gate/up): one
   * product of the input with their lora_A matrices concatenated ([sum r, in]) instead of one per
   * module, split into each module's x @ A^T. Autodiff then also computes the A gradients in one
   * product and the input's gradient through them in one (no sum of per-module [tokens, in]
   * gradients). Each column is the same dot product as before. Not used when decoding (the scaling
   * folding there), with dropout, DoRA, lora_bias, or ranks or input widths that differ, or when
   * `loraSharedDown.enabled` is false.
   */
  private sharedDownGroups(
    ctx: BuildContext,
    perModule: Map<string, { adapter: string; state: LoraModuleState }[]>,
  ): SharedDown | undefined {
    if (!loraSharedDown.enabled || !ctx.training || ctx.derivedFeeds) return undefined;
    const eligible = (s: LoraModuleState | undefined): s is LoraModuleState =>
      !!s && s.variant.name === 'lora' && !s.bias && s.dropout <= 0;
    const members = (module: string, adapter: string): { names: string[]; states: LoraModuleState[] } | undefined => {
      const dot = module.lastIndexOf('.');
      const group = SHARED_INPUT_GROUPS.find((g) => g.includes(module.slice(dot + 1)));
      if (!group) return undefined;
      const names: string[] = [];
      const states: LoraModuleState[] = [];
      for (const leaf of group) {
        const name = `${module.slice(0, dot)}.${leaf}`;
        const state = perModule.get(name)?.find((e) => e.adapter === adapter)?.state;
        if (!state) continue;
        if (!eligible(state)) return undefined;
        names.push(name);
        states.push(state);
      }
      const first = states[0]!;
      if (names.length < 2 || states.some((s) => s.r !== first.r || s.A.shape[1] !== first.A.shape[1])) return undefined;
      return { names, states };
    };
    // per input value: the split product of each group and adapter
    const cache = new Map<Value, Map<string, Value[]>>();
    return {
      down: (x, module, adapter) => {
        const group = members(module, adapter);
        if (!group) return undefined;
        const key = `${adapter}\u0000${group.names.join(',')}`;
        let byGroup = cache.get(x);
        if (!byGroup) cache.set(x, (byGroup = new Map()));
        let parts = byGroup.get(key);
        if (!parts) {
          const A = o.concat(
            group.names.map((n, i) => ctx.param(tensorNames('lora_A', n, adapter).param, group.states[i]!.A.shape)),
            0,
          );
          parts = o.split(
            o.matmulT(x, A),
            -1,
            group.states.map((s) => s.r),
          );
          byGroup.set(key, parts);
        }
        return parts[group.names.indexOf(module)];
      },
    };
  }

  private embeddingForward(
    ids: Value,
    baseLookup: () => Value,
    module: string,
    ctx: BuildContext,
    loras: { adapter: string; state: LoraEmbeddingState }[],
    toks: { adapter: string; state: TokenState }[],
  ): Value {
    let result = baseLookup();
    const wName = `${module}.weight`;
    for (const { adapter, state } of toks) {
      const n = tensorNames('trainable_tokens_delta', module, adapter).param;
      const delta = ctx.param(n, state.delta.shape);
      const idx = ctx.graph.constant(
        `${n}.indices`,
        'int64',
        [state.indices.length],
        BigInt64Array.from(state.indices, (i) => BigInt(i)),
      );
      const rows = ctx.graph.constant(
        `${n}.base_rows`,
        'float32',
        state.delta.shape,
        gatherRows(ctx.weights.dequantized(wName), state.indices),
      );
      result = tokensLookup(result, ids, idx, delta, rows);
    }
    for (const { adapter, state } of loras) {
      const t = {
        A: ctx.param(tensorNames('lora_embedding_A', module, adapter).param, state.A.shape),
        B: ctx.param(tensorNames('lora_embedding_B', module, adapter).param, state.B.shape),
        magnitude: state.magnitude
          ? ctx.param(tensorNames('lora_magnitude_vector', module, adapter).param, state.magnitude.shape)
          : undefined,
      };
      result = embeddingForward(result, ids, () => ctx.weight(wName), t, state.scaling);
    }
    return result;
  }

  /** Trainable tokens on an output projection (a tied lm_head, or a linear module named in trainable_token_indices). */
  private tokensOnProjection(y: Value, x: Value, ctx: BuildContext, adapter: string, state: TokenState, spec: LinearSpec): Value {
    const n = tensorNames('trainable_tokens_delta', state.module, adapter).param;
    const delta = ctx.param(n, state.delta.shape);
    const rows = gatherRows(ctx.weights.dequantized(`${spec.name}.weight`), state.indices);
    const onehot = new Float32Array(state.indices.length * spec.outFeatures);
    state.indices.forEach((t, i) => (onehot[i * spec.outFeatures + t] = 1));
    const key = `${n}.${spec.name}`;
    return tokensProjection(
      y,
      x,
      delta,
      ctx.graph.constant(`${key}.base_rows`, 'float32', state.delta.shape, rows),
      ctx.graph.constant(`${key}.onehot`, 'float32', [state.indices.length, spec.outFeatures], onehot),
    );
  }

  loss(logits: Value, labels: Value): Value {
    return this.base.loss(logits, labels);
  }

  /** Every tensor of an adapter with both of its names. */
  slots(name: string): TensorSlot[] {
    const a = this.adapter(name);
    const out: TensorSlot[] = [];
    const add = (kind: TensorKind, module: string, tensor: TrainableTensor | undefined) => {
      if (!tensor) return;
      const n = tensorNames(kind, module, name);
      out.push({ kind, module, param: n.param, saved: n.saved, tensor });
    };
    for (const [m, s] of a.modules) {
      add('lora_A', m, s.A);
      add('lora_B', m, s.B);
      add('lora_B_bias', m, s.bias);
      add('lora_magnitude_vector', m, s.magnitude);
    }
    for (const [m, e] of a.embeddings) {
      add('lora_embedding_A', m, e.A);
      add('lora_embedding_B', m, e.B);
      add('lora_magnitude_vector', m, e.magnitude);
    }
    for (const [m, t] of a.tokens) add('trainable_tokens_delta', m, t.delta);
    const mts = a.modulesToSave;
    for (const [w, tensor] of a.overrides) {
      const inMts = mts.find((m) => w.startsWith(`${m}.`));
      const module = inMts ?? w.slice(0, w.lastIndexOf('.'));
      const n = tensorNames('base', module, name, { weight: w, wrapped: a.modules.has(module) });
      const saved = !inMts && a.config.bias === 'lora_only' ? null : n.saved;
      out.push({ kind: 'base', module, param: n.param, saved, tensor });
    }
    return out;
  }

  /** The adapter's tensors under their adapter_model.safetensors keys (what savePretrained writes). */
  stateDict(name = this.active[0] ?? 'default'): Map<string, TrainableTensor> {
    const out = new Map<string, TrainableTensor>();
    for (const s of this.slots(name)) if (s.saved !== null) out.set(s.saved, s.tensor);
    return out;
  }

  /** adapter_model.safetensors key of a graph param name (null: not saved), for the active adapters. */
  savedNameOf(param: string): string | null | undefined {
    for (const n of this.active) for (const s of this.slots(n)) if (s.param === param) return s.saved;
    return undefined;
  }

  parameters(): Map<string, TrainableTensor> {
    const out = new Map<string, TrainableTensor>();
    for (const a of this.activeList()) {
      for (const s of this.slots(a.name)) {
        if (s.kind !== 'base' && this.merged.includes(a.name)) continue;
        if (!out.has(s.param)) out.set(s.param, s.tensor);
      }
    }
    return out;
  }

  decayParameters(): Set<string> {
    return new Set([...this.parameters().keys()].filter((n) => !n.endsWith('.bias') && !isNormWeight(n)));
  }

  trainableBaseWeights(): Set<string> {
    return new Set(this.activeOverrides().keys());
  }

  /** Whether the active adapters may be trained (peft: inference_mode / is_trainable). */
  get isTrainable(): boolean {
    return this.activeList().length > 0 && this.activeList().every((a) => a.trainable);
  }

  /**
   * Saves every adapter as peft does: "default" into `dir`, any other into `dir/<name>`; each folder
   * holds adapter_config.json and adapter_model.safetensors.
   */
  async savePretrained(dir: string, opts: SaveLoraOptions = {}): Promise<void> {
    const names = opts.selectedAdapters ?? this.adapterNames;
    for (const n of names) this.adapter(n);
    if (opts.flat && names.length !== 1) throw new AdapterError('flat saving writes one adapter; select exactly one');
    const folders = names.map((n) => (n === 'default' || opts.flat ? dir : join(dir, n)));
    checkOutputDir(dir);
    folders.forEach((f) => checkOutputDir(f));
    const spec =
      opts.compression === undefined
        ? undefined
        : typeof opts.compression === 'string'
          ? compressionSpec(opts.compression)
          : compressionSpec(opts.compression.method, opts.compression.blockSize);
    for (const n of names) {
      const a = this.adapter(n);
      if (a.config.bias === 'lora_only' && a.overrides.size) {
        warn(`adapter "${n}" has bias="lora_only": as in peft 0.13.2 its trained biases are not written to adapter_model.safetensors`);
      }
      if (spec && this.merged.includes(n))
        throw new AdapterError(
          `adapter "${n}" is merged into the base weights; unmerge() before saving it compressed (its output drift is measured through the unmerged model)`,
        );
    }
    // Everything that can fail (drift measurement included) runs before the first file is written.
    const writes: { dir: string; config: LoraConfig; slots: TensorSlot[]; opts: WriteAdapterOptions }[] = [];
    for (let i = 0; i < names.length; i++) {
      const a = this.adapter(names[i]!);
      let slots = this.slots(a.name);
      let config = a.config;
      // peft's save_embedding_layers="auto": an adapter with LoRA on an embedding also stores the base embedding.
      for (const m of a.embeddings.keys()) {
        const n = tensorNames('base_layer', m, a.name);
        slots.push({ kind: 'base_layer', module: m, param: n.param, saved: n.saved, tensor: this.base.weights.dequantized(`${m}.weight`) });
      }
      if (opts.pathInitialModelForWeightConversion !== undefined) {
        if (spec)
          throw new AdapterError(
            'compression and pathInitialModelForWeightConversion cannot be combined; save the converted adapter first, then compress it',
          );
        ({ slots, config } = await convertMutatedToLora(a, slots, opts.pathInitialModelForWeightConversion));
      }
      const metadata: Record<string, string> = {};
      const q = [...a.modules.values()].map((m) => this.base.weights.getQuantized(`${m.spec.name}.weight`)).find((x) => x !== undefined);
      if (q)
        metadata[BASE_QUANTIZATION_METADATA_KEY] = JSON.stringify({
          bits: 4,
          type: q.quant.type,
          double_quant: q.quant.absmax.kind === 'double',
          block_size: q.quant.blockSize,
        });
      let compression: WriteAdapterOptions['compression'];
      if (spec) {
        const report = compressionReport(slots, spec);
        const drift = await this.compressionDrift(a.name, spec, opts.driftSample);
        report.max_abs_logit_diff = drift.maxAbsDiff;
        report.sample = drift.sample;
        compression = { spec, report };
      }
      writes.push({ dir: folders[i]!, config, slots, opts: { metadata, compression } });
    }
    for (const w of writes) await writeAdapterFolder(w.dir, w.config, w.slots, w.opts);
  }

  /**
   * The largest |logit difference| between the model with adapter `name` as it is (float32) and with
   * its lora_A/lora_B replaced by what their compressed form loads back as, on `sample` token ids
   * (default: 2 x 32 fixed pseudo-random ids). Both runs share one session; only the fed tensors differ.
   */
  async compressionDrift(
    name: string,
    spec: CompressionSpec,
    sample?: readonly (readonly number[])[],
  ): Promise<{ maxAbsDiff: number; sample: string }> {
    const a = this.adapter(name);
    const vocab = this.base.config.vocabSize;
    const rows = sample ?? Array.from({ length: 2 }, (_, b) => Array.from({ length: 32 }, (_, i) => (7919 * b + 104729 * i + 13) % vocab));
    const seq = rows[0]?.length ?? 0;
    if (!rows.length || !seq || rows.some((r) => r.length !== seq || r.some((t) => !(Number.isInteger(t) && t >= 0 && t < vocab)))) {
      throw new AdapterError(`the drift sample must be rows of equal length holding token ids below the vocabulary size ${vocab}`);
    }
    const saved = { active: this.active, disabled: this.disabled };
    this.active = [name];
    this.disabled = false;
    try {
      const g = new Graph();
      const ctx = new BuildContext(g, this.base.weights, { trainable: this.trainableBaseWeights() });
      const out = this.forward(ctx, {
        inputIds: g.input('input_ids', 'int64', ['batch', 'seq']),
        attentionMask: g.input('attention_mask', 'int64', ['batch', 'seq']),
      });
      const session = await RuntimeSession.fromGraph(g, { logits: out.logits }, { name: 'lora compression drift' });
      try {
        const shape = [rows.length, seq];
        const base: Record<string, HostTensor> = {
          input_ids: { dtype: 'int64', shape, data: BigInt64Array.from(rows.flat(), (t) => BigInt(t)) },
          attention_mask: { dtype: 'int64', shape, data: new BigInt64Array(rows.length * seq).fill(1n) },
        };
        const params = this.parameters();
        const compressed = new Map<string, Float32Array>();
        for (const s of this.slots(a.name)) if (isCompressible(s)) compressed.set(s.param, roundTrip(s.tensor, spec));
        const feeds = (useCompressed: boolean): Record<string, HostTensor> => {
          const f = { ...base };
          for (const k of ctx.params.keys()) {
            const t = params.get(k)!;
            f[k] = { dtype: 'float32', shape: t.shape, data: (useCompressed ? compressed.get(k) : undefined) ?? t.data };
          }
          return f;
        };
        const x = (await session.run(feeds(false))).logits!.data as Float32Array;
        const y = (await session.run(feeds(true))).logits!.data as Float32Array;
        let m = 0;
        for (let i = 0; i < x.length; i++) m = Math.max(m, Math.abs(x[i]! - y[i]!));
        return {
          maxAbsDiff: m,
          sample: sample ? `${rows.length} x ${seq} given token ids` : `${rows.length} x ${seq} fixed pseudo-random token ids`,
        };
      } finally {
        await session.dispose();
      }
    } finally {
      this.active = saved.active;
      this.disabled = saved.disabled;
    }
  }

  /** peft's get_nb_trainable_parameters: [trainable, all], counting each adapter's tensors and modules_to_save copies. */
  numParameters(): { trainable: number; all: number } {
    let all = this.base.weights.numel();
    let trainable = 0;
    // As in peft, disabling adapters (a forward-pass switch) does not change requires_grad.
    const activeNames = new Set(this.active);
    const trainedBiases = new Set<string>();
    for (const a of this.adapters.values()) {
      const counts = a.trainable && activeNames.has(a.name);
      const mts = a.modulesToSave;
      for (const s of a.modules.values()) {
        const n = s.A.data.length + s.B.data.length + (s.magnitude?.data.length ?? 0) + (s.bias?.data.length ?? 0);
        all += n;
        if (counts) trainable += n;
      }
      for (const e of a.embeddings.values()) {
        const n = e.A.data.length + e.B.data.length + (e.magnitude?.data.length ?? 0);
        all += n;
        if (counts) trainable += n;
      }
      for (const t of a.tokens.values()) {
        all += t.delta.data.length;
        if (counts) trainable += t.delta.data.length;
      }
      for (const [w, t] of a.overrides) {
        if (mts.some((m) => w.startsWith(`${m}.`))) {
          // ModulesToSaveWrapper keeps the original and adds a copy per adapter.
          all += t.data.length;
          if (counts) trainable += t.data.length;
        } else if (counts && !trainedBiases.has(w)) {
          trainedBiases.add(w);
          trainable += t.data.length;
        }
      }
    }
    return { trainable, all };
  }

  /** Prints (and returns) peft's line "trainable params: N || all params: M || trainable%: P". */
  printTrainableParameters(print: (line: string) => void = console.log): string {
    const { trainable, all } = this.numParameters();
    const fmt = (n: number) => String(n).replace(/\B(?=(\d{3})+(?!\d))/g, ',');
    const line = `trainable params: ${fmt(trainable)} || all params: ${fmt(all)} || trainable%: ${((100 * trainable) / all).toFixed(4)}`;
    print(line);
    return line;
  }

  /**
   * Folds the active (or named) adapters' LoRA updates into the base weights; forward then skips
   * them. A 4-bit base weight (QLoRA) becomes its float32 dequantization plus the update (exact:
   * the model computes what it computed with the adapter); unmerge() restores the 4-bit data.
   */
  async merge(adapterNames: string[] = this.active): Promise<void> {
    const todo = adapterNames.filter((n) => !this.merged.includes(n));
    if (todo.length < adapterNames.length) warn(`already merged: ${adapterNames.filter((n) => this.merged.includes(n)).join(', ')}`);
    const adapters = todo.map((n) => this.adapter(n));
    this.checkMergeable(adapters);
    const jobs = this.mergeJobs(adapters);
    const results = await mergeWeights(jobs.map((j) => j.job));
    const updates = new Map<string, WeightTensor>();
    jobs.forEach(({ name, job }, i) => updates.set(name, { shape: [...job.weight.shape], data: results[i]! }));
    for (const [name, w] of await this.extraMerges(adapters, (n) => updates.get(n) ?? this.base.weights.dequantized(n)))
      updates.set(name, w);
    for (const [name, w] of updates) {
      if (!this.originals.has(name)) this.originals.set(name, this.base.weights.getQuantized(name) ?? this.base.weights.get(name));
      this.base.weights.set(name, w);
    }
    this.merged.push(...todo);
  }

  /** peft refuses to merge lora_bias into a base layer without a bias: checked before any weight changes. */
  private checkMergeable(adapters: LoraAdapter[]): void {
    for (const a of adapters) {
      for (const s of a.modules.values()) {
        if (s.bias && !s.spec.bias) {
          throw new AdapterError(
            `adapter "${a.name}" has lora_bias=true but ${s.spec.name} has no bias, so it cannot be merged (as in peft); use it unmerged`,
          );
        }
      }
    }
  }

  /**
   * Merged tensors besides the linear weights, by resolved weight name: lora_B biases into the base
   * biases, embedding LoRAs into the embedding matrix (a tied lm_head follows, as in peft), and
   * trainable-token rows into their matrix. `current` gives a weight as merged so far.
   */
  private async extraMerges(adapters: LoraAdapter[], current: (name: string) => WeightTensor): Promise<Map<string, WeightTensor>> {
    const out = new Map<string, WeightTensor>();
    const get = (n: string) => out.get(n) ?? current(n);
    for (const a of adapters) {
      for (const s of a.modules.values()) {
        if (!s.bias) continue;
        const bn = this.base.weights.resolve(`${s.spec.name}.bias`);
        const b = Float32Array.from(get(bn).data);
        for (let i = 0; i < b.length; i++) b[i] += s.scaling * s.bias.data[i]!;
        out.set(bn, { shape: [b.length], data: b });
      }
      for (const [m, e] of a.embeddings) {
        const wn = this.base.weights.resolve(`${m}.weight`);
        const w = get(wn);
        const [merged] = await mergeEmbeddings([{ weight: w, states: [e] }]);
        out.set(wn, { shape: [...w.shape], data: merged! });
      }
      for (const [m, t] of a.tokens) {
        const wn = this.base.weights.resolve(`${m}.weight`);
        const w = get(wn);
        const data = Float32Array.from(w.data);
        const cols = w.shape[1]!;
        t.indices.forEach((row, i) => data.set(t.delta.data.subarray(i * cols, (i + 1) * cols), row * cols));
        out.set(wn, { shape: [...w.shape], data });
      }
    }
    return out;
  }

  /** Restores the base weights exactly as they were before merge(). */
  unmerge(): void {
    for (const [name, w] of this.originals) {
      if ('quant' in w) this.base.weights.setQuantized(name, w);
      else this.base.weights.set(name, w);
    }
    this.originals.clear();
    this.merged = [];
  }

  private mergeJobs(
    adapters: LoraAdapter[],
  ): { name: string; job: { spec: LinearSpec; weight: WeightTensor; states: LoraModuleState[] } }[] {
    const byWeight = new Map<string, { spec: LinearSpec; states: LoraModuleState[] }>();
    for (const a of adapters) {
      for (const s of a.modules.values()) {
        const name = this.base.weights.resolve(`${s.spec.name}.weight`);
        if (!byWeight.has(name)) byWeight.set(name, { spec: s.spec, states: [] });
        byWeight.get(name)!.states.push(s);
      }
    }
    // A 4-bit weight merges into its float32 dequantization (what the forward pass multiplied by).
    return [...byWeight].map(([name, { spec, states }]) => ({ name, job: { spec, weight: this.base.weights.dequantized(name), states } }));
  }

  /**
   * peft's merge_and_unload: a plain model whose weights have the active adapters merged in and
   * their modules_to_save copies and trained biases in place. This LoraModel and its base are left
   * as they are.
   *
   * Over a 4-bit base (QLoRA), by default every quantized weight is dequantized and the result is a
   * full-precision model that computes exactly what the QLoRA model computes (W_nf4 + s·BA, float32
   * rounding only). With `requantize` the merged weights are quantized again with their own options
   * (type, block size, double quantization), which adds one 4-bit rounding of W_nf4 + s·BA, and the
   * weights no adapter touches keep their 4-bit data bit for bit (docs/QUANTIZATION.md measures both).
   */
  async mergeAndUnload(opts: MergeAndUnloadOptions = {}): Promise<PretrainedModel> {
    const quantizedBase = this.base.weights.quantizedNames().length > 0;
    if (opts.requantize && !quantizedBase) {
      throw new AdapterError(
        'requantize needs a 4-bit base model (QLoRA); this base is full precision: merge without it, then quantize the merged model (`peft quantize`)',
      );
    }
    const store = copyWeightStore(this.base);
    if (!opts.requantize) for (const n of store.quantizedNames()) store.set(n, this.base.weights.dequantized(n));
    // As peft (and merge()): the active adapters are merged even while disabled, since disabling
    // only changes what forward computes.
    const adapters = this.activeList(true).filter((a) => !this.merged.includes(a.name));
    this.checkMergeable(adapters);
    const jobs = this.mergeJobs(adapters);
    const results = await mergeWeights(jobs.map((j) => j.job));
    const done = new Map<string, WeightTensor>();
    jobs.forEach(({ name, job }, i) => {
      const merged = { shape: [...job.weight.shape], data: results[i]! };
      done.set(name, merged);
      const q = opts.requantize ? this.base.weights.getQuantized(name) : undefined;
      if (q) store.setQuantized(name, requantizeLike(name, merged, q));
      else store.set(name, merged);
    });
    for (const [name, w] of await this.extraMerges(adapters, (n) => done.get(n) ?? this.base.weights.dequantized(n))) store.set(name, w);
    // set() on the name itself unties a tied head, as peft's copy is a module of its own.
    for (const [w, t] of this.activeOverrides(true)) store.set(w, { shape: [...t.shape], data: Float32Array.from(t.data) });
    return withWeights(this.base, store);
  }
}

/** s * t as a new float32 tensor (a LoRA factor with its scaling folded in, once per gathering of the feeds). */
function scaled(t: TrainableTensor, s: number): DerivedFeed {
  const data = new Float32Array(t.data.length);
  for (let i = 0; i < data.length; i++) data[i] = t.data[i]! * s;
  return { dtype: 'float32', shape: [...t.shape], data };
}
