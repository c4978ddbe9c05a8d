// LoraModel: peft's PeftModel + LoraModel for LoRA adapters over one frozen base model. It holds
// named adapters (host tensors), installs the active ones as linear hooks when a graph is built,
// saves and loads peft's folder layout, and merges into / restores the base weights.

import { join } from 'node:path';
import type { Value } from '../../graph/ir.js';
import * as o from '../../graph/ops.js';
import type { ForwardArgs, ForwardResult, PretrainedModel } from '../../models/types.js';
import type { LinearHook, LinearSpec } from '../../nn/context.js';
import type { QuantizedWeightTensor, WeightTensor } from '../../nn/weights.js';
import { baseProduct } from '../../nn/layers.js';
import { AdapterError, AdapterMismatchError, PeftConfigError, type AdaptedModel, type TrainableTensor } from '../types.js';
import { type LoraConfig, TASK_MODULES_TO_SAVE, loraConfig, loraConfigFromJson, loraScaling } from './config.js';
import { SeededRandom, TopSvd, pissaFactors, randomLoraInit } from './init.js';
import { type LoraModuleState, baseMatmul, variantFor } from './layer.js';
import { copyWeightStore, doraInitialMagnitudes, mergeWeights, requantizeLike, withWeights } from './merge.js';
import { PEFT_PREFIX, type TensorSlot, type WriteAdapterOptions, checkSaveDir, compressionReport, isCompressible, readAdapterConfigFile, readAdapterTensors, tensorNames, writeAdapterFolder } from './save.js';
import { type AdapterCompression, BASE_QUANTIZATION_METADATA_KEY, COMPRESSION_CONFIG_KEY, type CompressionSpec, compressionSpec, roundTrip } from './compress.js';
import { Graph } from '../../graph/ir.js';
import { BuildContext } from '../../nn/context.js';
import { type HostTensor, RuntimeSession } from '../../runtime/session.js';
import { TargetModulesNotFoundError, findTargets, resolveTargetModules } from './targets.js';

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
  process.emitWarning(message, { type: 'PeftWarning' });
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

/**
 * Builds one adapter for `base`. With `create`, tensors are initialised as peft does (and PiSSA
 * rewrites the base weights to the residual, as peft does); with `load` every tensor comes from the
 * file, all of it checked against the model before the base is touched.
 */
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
  const variant = variantFor(config.useDora);
  const weightNames = allWeightNames(base);
  const wrapped = new Set(targets.lora.map((t) => t.spec.name));

  // Base weights the adapter replaces, and under which saved key each lives.
  const overrideNames: { weight: string; module: string; saved: boolean }[] = [];
  for (const m of targets.modulesToSave) {
    for (const w of weightNames) if (w.startsWith(`${m}.`)) overrideNames.push({ weight: w, module: m, saved: true });
  }
  const inMts = (w: string) => overrideNames.some((x) => x.weight === w);
  if (config.bias === 'all') {
    for (const w of weightNames) if (w.includes('bias') && !inMts(w)) overrideNames.push({ weight: w, module: w.slice(0, w.lastIndexOf('.')), saved: true });
  } else if (config.bias === 'lora_only') {
    // peft 0.13.2 looks for "<module>.bias" where the bias lives at "<module>.base_layer.bias": never saved.
    for (const { spec } of targets.lora) if (spec.bias && !inMts(`${spec.name}.bias`)) overrideNames.push({ weight: `${spec.name}.bias`, module: spec.name, saved: false });
  }

  const modules = new Map<string, LoraModuleState>();
  const overrides = new Map<string, TrainableTensor>();
  const pissa = typeof config.initLoraWeights === 'string' && config.initLoraWeights.startsWith('pissa');
  const quantizedTargets = targets.lora.filter(({ spec }) => base.weights.isQuantized(`${spec.name}.weight`));
  if (pissa && quantizedTargets.length) {
    throw new PeftConfigError(
      `init_lora_weights="${String(config.initLoraWeights)}" rewrites the base weights to the PiSSA residual, but ${quantizedTargets[0]!.spec.name} is held 4-bit quantized; load the model in full precision to use PiSSA`,
    );
  }

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
    for (const { spec, r, alpha } of targets.lora) {
      const need = (kind: 'lora_A' | 'lora_B' | 'lora_magnitude_vector', shape: number[]): TrainableTensor => {
        const key = tensorNames(kind, spec.name, name).saved;
        const t = take(key, shape, `${kind} of ${spec.name}`);
        if (!t) missing.push(key);
        return t ?? { shape, data: new Float32Array(shape.reduce((a, b) => a * b, 1)) };
      };
      const A = need('lora_A', [r, spec.inFeatures]);
      const B = need('lora_B', [spec.outFeatures, r]);
      const magnitude = variant.hasMagnitude ? need('lora_magnitude_vector', [spec.outFeatures]) : undefined;
      modules.set(spec.name, { spec, r, alpha, scaling: loraScaling(alpha, r, config.useRslora), dropout: config.loraDropout, variant, A, B, magnitude });
    }
    for (const ov of overrideNames) {
      const shape = base.weights.get(ov.weight).shape;
      const key = tensorNames('base', ov.module, name, { weight: ov.weight, wrapped: wrapped.has(ov.module) }).saved;
      const t = ov.saved ? take(key, shape, ov.weight) : undefined;
      // modules_to_save must be in the file; a bias peft did not save keeps its base value.
      if (!t && inMtsModule(targets.modulesToSave, ov.weight)) missing.push(key);
      overrides.set(ov.weight, t ? { shape: [...t.shape], data: Float32Array.from(t.data) } : { shape: [...shape], data: Float32Array.from(base.weights.get(ov.weight).data) });
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
    if (pissa) await applyPissaResidual(base, [...modules.values()], false, config.initLoraWeights as string);
    return { name, config, modules, overrides, modulesToSave: targets.modulesToSave, trainable };
  }

  for (const { spec, r, alpha } of targets.lora) {
    const scaling = loraScaling(alpha, r, config.useRslora);
    const init = config.initLoraWeights;
    const { A, B } = pissa ? { A: new Float32Array(r * spec.inFeatures), B: new Float32Array(spec.outFeatures * r) } : randomLoraInit(init as boolean | 'gaussian', src.rng, r, spec.inFeatures, spec.outFeatures);
    modules.set(spec.name, {
      spec,
      r,
      alpha,
      scaling,
      dropout: config.loraDropout,
      variant,
      A: { shape: [r, spec.inFeatures], data: A },
      B: { shape: [spec.outFeatures, r], data: B },
    });
  }
  if (pissa) await applyPissaResidual(base, [...modules.values()], true, config.initLoraWeights as string);
  if (variant.hasMagnitude) {
    const states = [...modules.values()];
    const mags = await doraInitialMagnitudes(states.map((s) => ({ spec: s.spec, weight: base.weights.dequantized(`${s.spec.name}.weight`), state: s })));
    states.forEach((s, i) => (s.magnitude = { shape: [s.spec.outFeatures], data: mags[i]! }));
  }
  for (const ov of overrideNames) {
    const w = base.weights.get(ov.weight);
    overrides.set(ov.weight, { shape: [...w.shape], data: Float32Array.from(w.data) });
  }
  return { name, config, modules, overrides, modulesToSave: targets.modulesToSave, trainable };
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

function transposeRM(a: Float64Array, rows: number, cols: number): Float64Array {
  const t = new Float64Array(a.length);
  for (let i = 0; i < rows; i++) for (let j = 0; j < cols; j++) t[j * rows + i] = a[i * cols + j]!;
  return t;
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
    if (json.peft_type !== 'LORA') throw new AdapterError(`${join(dir, 'adapter_config.json')}: peft_type is ${JSON.stringify(json.peft_type)}; only LORA adapters can be added to a LoRA model`);
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

  private checkNewName(name: string): void {
    if (!name || /[\s/\\]/.test(name)) throw new PeftConfigError(`adapter name ${JSON.stringify(name)} must be non-empty without spaces or slashes`);
    if (this.adapters.has(name)) throw new PeftConfigError(`an adapter named "${name}" already exists; pick another name or delete it first`);
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
    if (this.merged.includes(name)) throw new AdapterError(`adapter "${name}" is merged into the base weights; call unmerge() before deleting it`);
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
    for (const [m, entries] of perModule) {
      const prev = ctx.linearHooks.get(m);
      const outer = prev && (prev as { [OWNER]?: unknown })[OWNER] === this ? undefined : prev;
      const hook: LinearHook = (x, _base, spec, c) => this.linearForward(x, spec, c, entries, overrides, outer);
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
  ): Value {
    const wName = `${spec.name}.weight`;
    const bName = `${spec.name}.bias`;
    const wOv = overrides.get(wName);
    const bOv = overrides.get(bName);
    // Built on first use: plain LoRA under another tuner's hook never touches the base weight here.
    // A 4-bit base weight (QLoRA) is multiplied through QuantMatMul (baseProduct), which rebuilds
    // it from the 4-bit data for the product and again for the backward pass; a variant that needs
    // the matrix itself (DoRA's norm) gets a dequantization ordered after this layer's input.
    const quantized = !wOv && ctx.weights.isQuantized(wName);
    let W: Value | undefined;
    const weight = (): Value => (W ??= wOv ? ctx.param(wName, wOv.shape) : quantized ? storedLayout(ctx, wName, x) : ctx.weight(wName));
    const product = (inp: Value): Value => (quantized ? baseProduct(ctx, spec, inp) : baseMatmul(inp, weight(), spec));
    let xw: Value | undefined;
    const xW = (): Value => (xw ??= product(x));
    const baseFn = (inp: Value): Value => {
      const y = inp === x ? xW() : product(inp);
      if (!spec.bias) return y;
      return o.add(y, bOv ? ctx.param(bName, bOv.shape) : ctx.weight(bName));
    };
    let result = outer ? outer(x, baseFn, spec, ctx) : baseFn(x);
    for (const { adapter, state } of entries) {
      const t = {
        A: ctx.param(tensorNames('lora_A', spec.name, adapter).param, state.A.shape),
        B: ctx.param(tensorNames('lora_B', spec.name, adapter).param, state.B.shape),
        magnitude: state.magnitude ? ctx.param(tensorNames('lora_magnitude_vector', spec.name, adapter).param, state.magnitude.shape) : undefined,
      };
      let maskName = `${PEFT_PREFIX}${spec.name}.lora_dropout.${adapter}.keep_mask`;
      for (let i = 1; ctx.dropoutMasks.has(maskName); i++) maskName = `${PEFT_PREFIX}${spec.name}.lora_dropout.${adapter}.keep_mask_${i}`;
      const xDropped = ctx.dropout(x, state.dropout, maskName);
      result = state.variant.forward({ result, x, xDropped, baseMatmul: xW, product, weight, spec, t, scaling: state.scaling });
    }
    return result;
  }

  loss(logits: Value, labels: Value): Value {
    return this.base.loss(logits, labels);
  }

  /** Every tensor of an adapter with both of its names. */
  slots(name: string): TensorSlot[] {
    const a = this.adapter(name);
    const out: TensorSlot[] = [];
    for (const [m, s] of a.modules) {
      const add = (kind: 'lora_A' | 'lora_B' | 'lora_magnitude_vector', tensor: TrainableTensor) => {
        const n = tensorNames(kind, m, name);
        out.push({ kind, module: m, param: n.param, saved: n.saved, tensor });
      };
      add('lora_A', s.A);
      add('lora_B', s.B);
      if (s.magnitude) add('lora_magnitude_vector', s.magnitude);
    }
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
    const folders = names.map((n) => (n === 'default' ? dir : join(dir, n)));
    checkSaveDir(dir);
    folders.forEach((f) => checkSaveDir(f));
    const spec = opts.compression === undefined ? undefined : typeof opts.compression === 'string' ? compressionSpec(opts.compression) : compressionSpec(opts.compression.method, opts.compression.blockSize);
    for (const n of names) {
      const a = this.adapter(n);
      if (a.config.bias === 'lora_only' && a.overrides.size) {
        warn(`adapter "${n}" has bias="lora_only": as in peft 0.13.2 its trained biases are not written to adapter_model.safetensors`);
      }
      if (spec && this.merged.includes(n)) throw new AdapterError(`adapter "${n}" is merged into the base weights; unmerge() before saving it compressed (its output drift is measured through the unmerged model)`);
    }
    // Everything that can fail (drift measurement included) runs before the first file is written.
    const writes: { dir: string; config: LoraConfig; slots: TensorSlot[]; opts: WriteAdapterOptions }[] = [];
    for (let i = 0; i < names.length; i++) {
      const a = this.adapter(names[i]!);
      const slots = this.slots(a.name);
      const metadata: Record<string, string> = {};
      const q = [...a.modules.values()].map((m) => this.base.weights.getQuantized(`${m.spec.name}.weight`)).find((x) => x !== undefined);
      if (q) metadata[BASE_QUANTIZATION_METADATA_KEY] = JSON.stringify({ bits: 4, type: q.quant.type, double_quant: q.quant.absmax.kind === 'double', block_size: q.quant.blockSize });
      let compression: WriteAdapterOptions['compression'];
      if (spec) {
        const report = compressionReport(slots, spec);
        const drift = await this.compressionDrift(a.name, spec, opts.driftSample);
        report.max_abs_logit_diff = drift.maxAbsDiff;
        report.sample = drift.sample;
        compression = { spec, report };
      }
      writes.push({ dir: folders[i]!, config: a.config, slots, opts: { metadata, compression } });
    }
    for (const w of writes) await writeAdapterFolder(w.dir, w.config, w.slots, w.opts);
  }

  /**
   * The largest |logit difference| between the model with adapter `name` as it is (float32) and with
   * its lora_A/lora_B replaced by what their compressed form loads back as, on `sample` token ids
   * (default: 2 x 32 fixed pseudo-random ids). Both runs share one session; only the fed tensors differ.
   */
  async compressionDrift(name: string, spec: CompressionSpec, sample?: readonly (readonly number[])[]): Promise<{ maxAbsDiff: number; sample: string }> {
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
      const out = this.forward(ctx, { inputIds: g.input('input_ids', 'int64', ['batch', 'seq']), attentionMask: g.input('attention_mask', 'int64', ['batch', 'seq']) });
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
        return { maxAbsDiff: m, sample: sample ? `${rows.length} x ${seq} given token ids` : `${rows.length} x ${seq} fixed pseudo-random token ids` };
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
        const n = s.A.data.length + s.B.data.length + (s.magnitude?.data.length ?? 0);
        all += n;
        if (counts) trainable += n;
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
    const jobs = this.mergeJobs(todo.map((n) => this.adapter(n)));
    const results = await mergeWeights(jobs.map((j) => j.job));
    jobs.forEach(({ name, job }, i) => {
      if (!this.originals.has(name)) this.originals.set(name, this.base.weights.getQuantized(name) ?? job.weight);
      this.base.weights.set(name, { shape: [...job.weight.shape], data: results[i]! });
    });
    this.merged.push(...todo);
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

  private mergeJobs(adapters: LoraAdapter[]): { name: string; job: { spec: LinearSpec; weight: WeightTensor; states: LoraModuleState[] } }[] {
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
      throw new AdapterError('requantize needs a 4-bit base model (QLoRA); this base is full precision: merge without it, then quantize the merged model (`peft quantize`)');
    }
    const store = copyWeightStore(this.base);
    if (!opts.requantize) for (const n of store.quantizedNames()) store.set(n, this.base.weights.dequantized(n));
    // As peft (and merge()): the active adapters are merged even while disabled, since disabling
    // only changes what forward computes.
    const adapters = this.activeList(true).filter((a) => !this.merged.includes(a.name));
    const jobs = this.mergeJobs(adapters);
    const results = await mergeWeights(jobs.map((j) => j.job));
    jobs.forEach(({ name, job }, i) => {
      const merged = { shape: [...job.weight.shape], data: results[i]! };
      const q = opts.requantize ? this.base.weights.getQuantized(name) : undefined;
      if (q) store.setQuantized(name, requantizeLike(name, merged, q));
      else store.set(name, merged);
    });
    // set() on the name itself unties a tied head, as peft's copy is a module of its own.
    for (const [w, t] of this.activeOverrides(true)) store.set(w, { shape: [...t.shape], data: Float32Array.from(t.data) });
    return withWeights(this.base, store);
  }
}
