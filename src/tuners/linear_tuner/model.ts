// What the tuners that wrap linear layers with their own tensors share (LoHa, LoKr, VeRA, AdaLoRA,
// OFT, BOFT): each method describes the tensors of one wrapped module, how it changes the module's
// output in the graph and what weight a merge leaves behind (`LinearMethod`); LinearTunerModel does
// the rest as for every method: targets, tensors by name (in-memory and saved), create/load with
// shape checks, graph hooks, save in peft's layout, merge/unmerge/merge_and_unload (the merged
// weights computed once in ONNX Runtime by the same graph builders the forward pass uses).

import { existsSync, mkdir, join } from '../../storage/index.js';
import { Graph, type Value } from '../../graph/ir.js';
import * as o from '../../graph/ops.js';
import { type RawTensor, fromTypedArray, writeSafetensors } from '../../io/safetensors.js';
import { writeFileAtomic } from '../../io/atomic.js';
import { writePythonJson, type PyJson } from '../../io/pyjson.js';
import type { ForwardArgs, ForwardResult, PretrainedModel } from '../../models/types.js';
import type { BuildContext, LinearSpec } from '../../nn/context.js';
import type { WeightTensor } from '../../nn/weights.js';
import { RuntimeSession } from '../../runtime/session.js';
import { SeededRandom } from '../../nn/random.js';
import { PEFT_PREFIX, checkOutputDir, readAdapterConfigFile, readAdapterTensors } from '../lora/save.js';
import { AdapterError, AdapterMismatchError, type AdaptedModel, type TrainableTensor } from '../types.js';
import { type LinearTunerConfig, findLinearTargets } from './config.js';

/** One tensor of a wrapped module (or shared by all, like VeRA's projections). */
export interface TensorDecl {
  /** peft's attribute name, as in the saved key: "hada_w1_a", "oft_R.weight", "lora_E" */
  kind: string;
  shape: number[];
  /** false: frozen (a constant in the graph, never updated; VeRA's shared projections) */
  trainable?: boolean;
}

/** Graph values of one module's tensors (and the shared ones), by kind. */
export type Tensors = Readonly<Record<string, Value>>;

export interface ForwardInput<C> {
  /** the module input [..., in] (dropout, if the method has one, is the method's to apply via `dropout`) */
  x: Value;
  /** the frozen module: x -> x Wᵀ + b */
  base: (x: Value) => Value;
  /** the frozen weight [out, in] (for methods that transform the weight itself) */
  weight: () => Value;
  /** the frozen bias [out], if the layer has one */
  bias: () => Value | undefined;
  spec: LinearSpec;
  t: Tensors;
  shared: Tensors;
  config: C;
  ctx: BuildContext;
  /** ctx.dropout under a name unique to this module */
  dropout: (x: Value, ratio: number) => Value;
}

/** One method over linear layers. */
export interface LinearMethod<C extends LinearTunerConfig> {
  readonly peftType: string;
  readonly label: string;
  /** Parses and checks adapter_config.json fields (unknown fields kept for saving). */
  parseConfig(fields: Record<string, unknown>, source: string): C;
  /** Fields that change the math and are implemented only for inference (refused when creating or training). */
  checkTrainable?(config: C): void;
  /** The tensors of one wrapped module. */
  moduleTensors(spec: LinearSpec, config: C, module: string): TensorDecl[];
  /** Tensors shared by every module (saved once under `base_model.<kind>`). */
  sharedTensors?(specs: readonly LinearSpec[], config: C): TensorDecl[];
  /** Initial values of a new adapter's module tensors (peft's init with init_weights), by kind. */
  init(spec: LinearSpec, config: C, decls: readonly TensorDecl[], rng: SeededRandom, module: string): Map<string, Float32Array>;
  /** Initial values of the shared tensors. */
  initShared?(decls: readonly TensorDecl[], config: C, rng: SeededRandom): Map<string, Float32Array>;
  /** The adapted module's output. */
  forward(a: ForwardInput<C>): Value;
  /**
   * The module's weight after merging, [out, in], from the frozen weight W [out, in]; absent for
   * methods that do not merge. Must compute what forward() computes (up to float rounding).
   */
  mergedWeight?(W: Value, spec: LinearSpec, t: Tensors, shared: Tensors, config: C): Value;
  /**
   * A term the method adds to the task loss, from the graph values of every module's tensors
   * (AdaLoRA's orthogonal regularizer); undefined for none.
   */
  regularizer?(modules: readonly Tensors[], config: C): Value | undefined;
  /** The hook run after every optimizer step while training (AdaLoRA's rank allocator), built once per model. */
  trainingHook?(model: LinearTunerModel<C>): ((step: number, grads: ReadonlyMap<string, Float32Array>) => void) | undefined;
  /** A module tensor as saved (AdaLoRA keeps only the rows its rank pattern kept). */
  savedTensor?(kind: string, t: TrainableTensor, module: string, config: C): TrainableTensor;
  /** Whether a module with these tensors changes nothing and is left out (AdaLoRA layers pruned to rank 0). */
  isEmpty?(decls: readonly TensorDecl[]): boolean;
  /** Config fields as saved (the parsed config back to adapter_config.json). */
  configToJson(config: C): Record<string, PyJson>;
}

export interface LinearModule {
  spec: LinearSpec;
  tensors: Map<string, TrainableTensor>;
  decls: TensorDecl[];
}

export interface LinearTunerOptions {
  adapterName?: string;
  seed?: number;
  isTrainable?: boolean;
}

/** In-memory name of a module tensor: peft's "<module>.<kind>.<adapter>[.weight]". */
function paramName(module: string, kind: string, adapter: string): string {
  const dot = kind.indexOf('.');
  const head = dot < 0 ? kind : kind.slice(0, dot);
  const tail = dot < 0 ? '' : kind.slice(dot);
  return `${PEFT_PREFIX}${module}.${head}.${adapter}${tail}`;
}

const savedName = (module: string, kind: string): string => `${PEFT_PREFIX}${module}.${kind}`;
const sharedSaved = (kind: string): string => `base_model.${kind}`;
const sharedParam = (kind: string, adapter: string): string => `base_model.${kind}.${adapter}`;

/** Runs a graph with no inputs once and returns its float32 outputs. */
async function runOnce(g: Graph, outputs: Record<string, Value>, what: string): Promise<Record<string, Float32Array>> {
  const s = await RuntimeSession.fromGraph(g, outputs, { name: what });
  try {
    const r = await s.run({});
    return Object.fromEntries(Object.entries(r).map(([k, v]) => [k, v.data as Float32Array]));
  } finally {
    await s.dispose();
  }
}

export class LinearTunerModel<C extends LinearTunerConfig> implements AdaptedModel {
  readonly peftType: string;
  private merged = false;
  private unloaded = false;
  private readonly originals = new Map<string, WeightTensor>();
  private hook: ((step: number, grads: ReadonlyMap<string, Float32Array>) => void) | undefined | null = null;
  /** the module tensors' graph values of each graph forward() built, for loss() */
  private readonly built = new WeakMap<Graph, Tensors[]>();

  private constructor(
    readonly base: PretrainedModel,
    readonly method: LinearMethod<C>,
    readonly config: C,
    readonly modules: Map<string, LinearModule>,
    readonly shared: Map<string, TrainableTensor & { trainable: boolean }>,
    readonly adapterName: string,
    readonly trainable: boolean,
  ) {
    this.peftType = method.peftType;
  }

  private static layout<C extends LinearTunerConfig>(base: PretrainedModel, method: LinearMethod<C>, config: C) {
    const specs = findLinearTargets(base, config, method.label);
    const modules = new Map<string, LinearModule>();
    for (const spec of specs) modules.set(spec.name, { spec, decls: method.moduleTensors(spec, config, spec.name), tensors: new Map() });
    const sharedDecls = method.sharedTensors?.(specs, config) ?? [];
    return { modules, sharedDecls };
  }

  /** A new adapter (peft's get_peft_model): tensors initialised as peft does, from a seeded generator. */
  static create<C extends LinearTunerConfig>(base: PretrainedModel, method: LinearMethod<C>, fields: Record<string, unknown>, opts: LinearTunerOptions = {}): LinearTunerModel<C> {
    const config = method.parseConfig(fields, `${method.label} config`);
    method.checkTrainable?.(config);
    if (config.baseModelNameOrPath === null) config.baseModelNameOrPath = base.dir;
    const { modules, sharedDecls } = LinearTunerModel.layout(base, method, config);
    const rng = new SeededRandom(opts.seed ?? 0);
    const shared = new Map<string, TrainableTensor & { trainable: boolean }>();
    if (sharedDecls.length) {
      const init = method.initShared!(sharedDecls, config, rng);
      for (const d of sharedDecls) shared.set(d.kind, { shape: d.shape, data: init.get(d.kind)!, trainable: d.trainable !== false });
    }
    for (const [name, m] of modules) {
      const init = method.init(m.spec, config, m.decls, rng, name);
      for (const d of m.decls) m.tensors.set(d.kind, { shape: d.shape, data: init.get(d.kind) ?? new Float32Array(d.shape.reduce((a, b) => a * b, 1)) });
    }
    return new LinearTunerModel(base, method, config, modules, shared, opts.adapterName ?? 'default', true);
  }

  /** The adapter saved in `dir` (peft's PeftModel.from_pretrained): every tensor checked against the model first. */
  static async fromPretrained<C extends LinearTunerConfig>(base: PretrainedModel, method: LinearMethod<C>, dir: string, opts: LinearTunerOptions = {}): Promise<LinearTunerModel<C>> {
    const file = join(dir, 'adapter_config.json');
    const config = method.parseConfig(await readAdapterConfigFile(dir), file);
    if (opts.isTrainable) method.checkTrainable?.(config);
    const { modules, sharedDecls } = LinearTunerModel.layout(base, method, config);
    const tensors = await readAdapterTensors(dir);
    const used = new Set<string>();
    const missing: string[] = [];
    const take = (key: string, shape: number[]): Float32Array => {
      const t = tensors.get(key);
      if (!t) {
        missing.push(key);
        return new Float32Array(shape.reduce((a, b) => a * b, 1));
      }
      if (t.shape.length !== shape.length || t.shape.some((d, i) => d !== shape[i])) {
        throw new AdapterMismatchError(`${dir}: ${key} has shape [${t.shape}] but this model needs [${shape}]; the adapter was made for ${config.baseModelNameOrPath ?? 'another model'}, not ${base.dir}`);
      }
      used.add(key);
      return Float32Array.from(t.data);
    };
    const shared = new Map<string, TrainableTensor & { trainable: boolean }>();
    for (const d of sharedDecls) shared.set(d.kind, { shape: d.shape, data: take(sharedSaved(d.kind), d.shape), trainable: d.trainable !== false });
    for (const [name, m] of modules) for (const d of m.decls) m.tensors.set(d.kind, { shape: d.shape, data: take(savedName(name, d.kind), d.shape) });
    const unexpected = [...tensors.keys()].filter((k) => !used.has(k));
    if (missing.length || unexpected.length) {
      const list = (xs: string[]) => xs.slice(0, 6).join(', ') + (xs.length > 6 ? `, ... (${xs.length} in all)` : '');
      throw new AdapterMismatchError(
        `${dir} does not fit ${base.dir}:` +
          (missing.length ? ` missing tensors ${list(missing)};` : '') +
          (unexpected.length ? ` tensors this ${method.label} config does not describe here: ${list(unexpected)};` : '') +
          ` the adapter was made for ${config.baseModelNameOrPath ?? 'another model'} with target_modules ${JSON.stringify(config.targetModules)}`,
      );
    }
    return new LinearTunerModel(base, method, config, modules, shared, opts.adapterName ?? 'default', opts.isTrainable === true);
  }

  private check(): void {
    if (this.unloaded) throw new AdapterError(`this ${this.method.label} adapter was merged and unloaded into its base model; use the returned model`);
  }

  private active(): [string, LinearModule][] {
    return [...this.modules].filter(([, m]) => !(this.method.isEmpty?.(m.decls) ?? false));
  }

  forward(ctx: BuildContext, args: ForwardArgs): ForwardResult {
    this.check();
    if (this.merged) return this.base.forward(ctx, args);
    const shared: Record<string, Value> = {};
    for (const [kind, t] of this.shared) {
      shared[kind] = t.trainable ? ctx.param(sharedParam(kind, this.adapterName), t.shape) : ctx.graph.constant(sharedParam(kind, this.adapterName), 'float32', t.shape, { kind: 'array', data: t.data });
    }
    const built: Tensors[] = [];
    this.built.set(ctx.graph, built);
    for (const [name, m] of this.active()) {
      if (ctx.linearHooks.has(name)) throw new AdapterError(`${name} already has a tuner hook installed; one method per module`);
      const t: Record<string, Value> = {};
      for (const d of m.decls) t[d.kind] = ctx.param(paramName(name, d.kind, this.adapterName), d.shape);
      built.push(t);
      ctx.linearHooks.set(name, (x, base, spec) => {
        let i = 0;
        const dropout = (v: Value, ratio: number): Value => ctx.dropout(v, ratio, `${PEFT_PREFIX}${name}.${this.method.peftType.toLowerCase()}_dropout.${this.adapterName}.keep_mask${i++ ? `_${i - 1}` : ''}`);
        const weight = (): Value => {
          const w = ctx.weight(`${spec.name}.weight`);
          return spec.layout === 'conv1d' ? o.transpose(w, [1, 0]) : w;
        };
        const bias = (): Value | undefined => (spec.bias ? ctx.weight(`${spec.name}.bias`) : undefined);
        return this.method.forward({ x, base, weight, bias, spec, t, shared, config: this.config, ctx, dropout });
      });
    }
    return this.base.forward(ctx, args);
  }

  loss(logits: Value, labels: Value): Value {
    const task = this.base.loss(logits, labels);
    const built = this.built.get(logits.graph);
    const extra = built && built.length ? this.method.regularizer?.(built, this.config) : undefined;
    return extra ? o.add(task, extra) : task;
  }

  parameters(): Map<string, TrainableTensor> {
    const out = new Map<string, TrainableTensor>();
    if (this.merged) return out;
    for (const [kind, t] of this.shared) if (t.trainable) out.set(sharedParam(kind, this.adapterName), t);
    for (const [name, m] of this.active()) for (const d of m.decls) if (d.trainable !== false) out.set(paramName(name, d.kind, this.adapterName), m.tensors.get(d.kind)!);
    return out;
  }

  decayParameters(): Set<string> {
    return new Set(this.parameters().keys());
  }

  trainableBaseWeights(): Set<string> {
    return new Set();
  }

  /** peft's get_nb_trainable_parameters: trainable adapter tensors (frozen shared buffers are not parameters). */
  numParameters(): { trainable: number; all: number } {
    let n = 0;
    for (const m of this.modules.values()) for (const d of m.decls) if (d.trainable !== false) n += m.tensors.get(d.kind)!.data.length;
    for (const t of this.shared.values()) if (t.trainable) n += t.data.length;
    return { trainable: this.trainable ? n : 0, all: this.base.weights.numel() + n };
  }

  /** The graph param name of a module tensor. */
  paramName(module: string, kind: string): string {
    return paramName(module, kind, this.adapterName);
  }

  afterOptimizerStep(step: number, grads: ReadonlyMap<string, Float32Array>): void {
    if (this.merged) return;
    if (this.hook === null) this.hook = this.method.trainingHook?.(this);
    this.hook?.(step, grads);
  }

  /** The module tensors and shared tensors under their adapter_model.safetensors keys. */
  stateDict(): Map<string, TrainableTensor> {
    const out = new Map<string, TrainableTensor>();
    for (const [kind, t] of this.shared) out.set(sharedSaved(kind), t);
    for (const [name, m] of this.modules) {
      for (const d of m.decls) {
        const t = m.tensors.get(d.kind)!;
        out.set(savedName(name, d.kind), this.method.savedTensor ? this.method.savedTensor(d.kind, t, name, this.config) : t);
      }
    }
    return out;
  }

  async savePretrained(dir: string): Promise<void> {
    this.check();
    if (this.merged) throw new AdapterError(`unmerge() the ${this.method.label} adapter before saving it: its update is folded into the base weights`);
    checkOutputDir(dir);
    const tensors = new Map<string, RawTensor>();
    for (const [k, t] of this.stateDict()) tensors.set(k, fromTypedArray(t.data, t.shape));
    await mkdir(dir, { recursive: true });
    await writeSafetensors(join(dir, 'adapter_model.safetensors'), tensors, { format: 'pt' });
    await writePythonJson(join(dir, 'adapter_config.json'), { ...this.method.configToJson(this.config), inference_mode: true });
    if (!existsSync(join(dir, 'README.md'))) {
      const base = this.config.baseModelNameOrPath;
      await writeFileAtomic(join(dir, 'README.md'), `---\n${base ? `base_model: ${base}\n` : ''}library_name: peft\n---\n\n# ${this.method.label} adapter\n\nSaved in the Hugging Face peft format (adapter_config.json + adapter_model.safetensors).\n`);
    }
  }

  /** The merged weights of every active module, computed in one ORT run. */
  private async mergedWeights(): Promise<Map<string, WeightTensor>> {
    const mergedWeight = this.method.mergedWeight;
    if (!mergedWeight) throw new AdapterError(`${this.method.label} adapters cannot be merged into the base weights`);
    const g = new Graph();
    const c = (name: string, t: TrainableTensor): Value => g.constant(name, 'float32', t.shape, { kind: 'array', data: t.data });
    const shared: Record<string, Value> = {};
    for (const [kind, t] of this.shared) shared[kind] = c(`shared.${kind}`, t);
    const outputs: Record<string, Value> = {};
    const names: Record<string, string> = {};
    let i = 0;
    for (const [name, m] of this.active()) {
      const wName = this.base.weights.resolve(`${name}.weight`);
      const w = this.base.weights.dequantized(wName);
      let W = c(`w${i}`, w);
      if (m.spec.layout === 'conv1d') W = o.transpose(W, [1, 0]);
      const t: Record<string, Value> = {};
      for (const d of m.decls) t[d.kind] = c(`m${i}.${d.kind}`, m.tensors.get(d.kind)!);
      let out = mergedWeight.call(this.method, W, m.spec, t, shared, this.config);
      if (m.spec.layout === 'conv1d') out = o.transpose(out, [1, 0]);
      outputs[`out${i}`] = out;
      names[`out${i}`] = wName;
      i++;
    }
    const r = await runOnce(g, outputs, `${this.method.label} merge`);
    const result = new Map<string, WeightTensor>();
    for (const [k, wName] of Object.entries(names)) result.set(wName, { shape: [...this.base.weights.dequantized(wName).shape], data: r[k]! });
    return result;
  }

  private checkMergeable(): void {
    for (const [name] of this.active()) {
      const n = `${name}.weight`;
      if (this.base.weights.isAlias(n)) throw new AdapterError(`cannot merge into ${name}: ${n} is tied to ${this.base.weights.resolve(n)}; use the adapter unmerged`);
      if (this.base.weights.isQuantized(n)) throw new AdapterError(`cannot merge into ${name}: its weight is held 4-bit; load the base in full precision to merge`);
    }
  }

  /** Folds the adapter into the base weights (peft merge()); forward then runs the plain base. */
  async merge(): Promise<void> {
    this.check();
    if (this.merged) return;
    this.checkMergeable();
    const weights = await this.mergedWeights();
    for (const [n, w] of weights) {
      this.originals.set(n, this.base.weights.get(n));
      this.base.weights.set(n, w);
    }
    this.merged = true;
  }

  /** Restores the base weights exactly as they were before merge() (peft unmerge()). */
  unmerge(): void {
    this.check();
    for (const [n, w] of this.originals) this.base.weights.set(n, w);
    this.originals.clear();
    this.merged = false;
  }

  get isMerged(): boolean {
    return this.merged;
  }

  /** peft's merge_and_unload: the base model with the adapter folded in. */
  async mergeAndUnload(): Promise<PretrainedModel> {
    await this.merge();
    this.originals.clear();
    this.unloaded = true;
    return this.base;
  }
}
