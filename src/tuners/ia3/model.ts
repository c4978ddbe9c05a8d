// IA3Model: peft's IA3 on one of our base models. It resolves which linear modules are targets,
// owns the learned vectors (and modules_to_save copies), installs the hooks when it builds the
// forward pass, and merges/unmerges the vectors into the base weights.

import type { Value } from '../../graph/ir.js';
import type { BuildContext } from '../../nn/context.js';
import { SeededRandom, normals } from '../../nn/random.js';
import type { ForwardArgs, ForwardResult, PretrainedModel } from '../../models/types.js';
import { AdapterError, PeftConfigError, type AdaptedModel, type TrainableTensor } from '../types.js';
import { type IA3Config, type IA3Options, isFeedforward, matchesTarget, resolveIA3Config, validateIA3Config } from './config.js';
import { type IA3Target, ia3Hook, ia3VectorShape } from './layer.js';
import { mergeTarget, unmergeTarget } from './merge.js';
import { type IA3TensorKind, ia3ParamName } from './names.js';
import { saveIA3 } from './save.js';

export interface CreateIA3Options extends IA3Options {
  /** seed of the random normal init used when initIa3Weights is false */
  seed?: number;
  /** adapter name in the in-memory parameter names (peft's "default") */
  adapterName?: string;
}

/** transformers' get_decay_parameter_names: no decay for biases and normalisation weights. */
function decays(name: string): boolean {
  return !/bias/.test(name) && !/(norm|\.ln_\d+\.|\.ln_f\.)/i.test(name);
}

/** The targeted linear modules of `base` under `config`, with typed errors for bad patterns. */
function resolveTargets(base: PretrainedModel, config: IA3Config): IA3Target[] {
  const linears = base.linears();
  const linearNames = new Set(linears.map((s) => s.name));
  const targets: IA3Target[] = [];
  for (const spec of linears) {
    if (matchesTarget(spec.name, config.targetModules))
      targets.push({ spec, feedforward: isFeedforward(spec.name, config.feedforwardModules) });
  }
  const unsupported = base.moduleNames().filter((m) => !linearNames.has(m) && matchesTarget(m, config.targetModules));
  if (unsupported.length) {
    throw new PeftConfigError(
      `IA3 target_modules ${JSON.stringify(config.targetModules)} match modules that are not linear layers: ${unsupported.slice(0, 10).join(', ')}; IA3 wraps linear (and GPT-2 Conv1D) modules only`,
    );
  }
  if (targets.length === 0) {
    const short = [...new Set(linears.map((s) => s.name.split('.').slice(-2).join('.')))];
    throw new PeftConfigError(
      `IA3 target_modules ${JSON.stringify(config.targetModules)} match no module of this ${base.config.modelType} model; its linear modules are ${linears
        .map((s) => s.name)
        .slice(0, 12)
        .join(', ')}${linears.length > 12 ? ', ...' : ''} (name suffixes: ${short.join(', ')})`,
    );
  }
  return targets;
}

/** Weights of the modules named by modules_to_save (peft matches them by name suffix). */
function resolveModulesToSave(base: PretrainedModel, config: { modulesToSave: string[] | null }): string[] {
  if (!config.modulesToSave?.length) return [];
  const candidates = new Set([
    ...base.expectedWeights(),
    ...base.linears().flatMap((s) => [`${s.name}.weight`, ...(s.bias ? [`${s.name}.bias`] : [])]),
  ]);
  const out: string[] = [];
  for (const m of base.moduleNames()) {
    if (!config.modulesToSave.some((t) => m.endsWith(t))) continue;
    for (const w of candidates) {
      if (!w.startsWith(`${m}.`) || w.slice(m.length + 1).includes('.')) continue;
      if (!base.weights.has(w)) continue;
      if (base.weights.isAlias(w)) {
        throw new PeftConfigError(
          `modules_to_save "${m}" holds ${w}, which is tied to ${base.weights.resolve(w)}; training a tied weight as a separate copy is not supported, leave it out of modules_to_save`,
        );
      }
      if (!out.includes(w)) out.push(w);
    }
  }
  return out;
}

export class IA3Model implements AdaptedModel {
  readonly peftType = 'IA3';
  private mergedState = false;
  private unloaded = false;

  private constructor(
    readonly base: PretrainedModel,
    readonly config: IA3Config,
    readonly adapterName: string,
    readonly targets: readonly IA3Target[],
    /** learned vectors by module name */
    private readonly vectors: Map<string, TrainableTensor>,
    /** modules_to_save copies by base weight name */
    private readonly savedModules: Map<string, TrainableTensor>,
  ) {}

  /** A new IA3 adapter on `base` (peft's get_peft_model with an IA3Config). */
  static create(base: PretrainedModel, opts: CreateIA3Options = {}): IA3Model {
    return IA3Model.fromConfig(base, resolveIA3Config(base, opts), opts);
  }

  /** An adapter for an already resolved config (loading passes the file's config here). */
  static fromConfig(base: PretrainedModel, config: IA3Config, opts: { seed?: number; adapterName?: string } = {}): IA3Model {
    validateIA3Config(config);
    const targets = resolveTargets(base, config);
    // peft forces fan_in_fan_out to the layer type of the targets, and saves what it forced.
    const conv = targets.some((t) => t.spec.layout === 'conv1d');
    const resolved: IA3Config = {
      ...config,
      fanInFanOut: conv ? true : targets.every((t) => t.spec.layout === 'linear') ? false : config.fanInFanOut,
    };
    const vectors = new Map<string, TrainableTensor>();
    let seed = opts.seed ?? 0;
    for (const t of targets) {
      const shape = ia3VectorShape(t);
      const n = shape[0] * shape[1];
      const data = config.initIa3Weights
        ? new Float32Array(n).fill(config.variant === 'scale' ? 1 : 0)
        : normals(new SeededRandom(seed++), n);
      vectors.set(t.spec.name, { shape, data });
    }
    const savedModules = new Map<string, TrainableTensor>();
    for (const w of resolveModulesToSave(base, config)) {
      const src = base.weights.get(w);
      savedModules.set(w, { shape: [...src.shape], data: Float32Array.from(src.data) });
    }
    return new IA3Model(base, resolved, opts.adapterName ?? 'default', targets, vectors, savedModules);
  }

  get kind(): IA3TensorKind {
    return this.config.variant === 'scale' ? 'ia3_l' : 'ia3_m';
  }

  get merged(): boolean {
    return this.mergedState;
  }

  /** The learned vector of one target module (shared with parameters(), so updates show). */
  vector(module: string): TrainableTensor {
    const v = this.vectors.get(module);
    if (!v) throw new AdapterError(`${module} is not an IA3 target; targets: ${[...this.vectors.keys()].join(', ')}`);
    return v;
  }

  /** modules_to_save copies by base weight name. */
  modulesToSaveWeights(): Map<string, TrainableTensor> {
    return this.savedModules;
  }

  private checkUsable(): void {
    if (this.unloaded) throw new AdapterError('this IA3 adapter was merged and unloaded into its base model; use the returned base model');
  }

  forward(ctx: BuildContext, args: ForwardArgs): ForwardResult {
    this.checkUsable();
    for (const w of this.savedModules.keys()) {
      if (!ctx.trainable.has(w)) {
        throw new AdapterError(
          `IA3 modules_to_save weight ${w} must be a graph param: build the BuildContext with { trainable: model.trainableBaseWeights() }`,
        );
      }
    }
    if (!this.mergedState) {
      for (const t of this.targets) {
        const name = t.spec.name;
        if (ctx.linearHooks.has(name)) throw new AdapterError(`${name} already has a tuner hook installed; one method per module`);
        const v: Value = ctx.param(ia3ParamName(name, this.kind, this.adapterName), ia3VectorShape(t));
        ctx.linearHooks.set(name, ia3Hook(v, t, this.config.variant));
      }
    }
    return this.base.forward(ctx, args);
  }

  loss(logits: Value, labels: Value): Value {
    return this.base.loss(logits, labels);
  }

  parameters(): Map<string, TrainableTensor> {
    const out = new Map<string, TrainableTensor>();
    if (!this.mergedState) for (const [m, v] of this.vectors) out.set(ia3ParamName(m, this.kind, this.adapterName), v);
    for (const [w, t] of this.savedModules) out.set(w, t);
    return out;
  }

  decayParameters(): Set<string> {
    return new Set([...this.parameters().keys()].filter(decays));
  }

  trainableBaseWeights(): Set<string> {
    return new Set(this.savedModules.keys());
  }

  /** Folds the vectors into the base weights (peft merge()); the forward pass then runs the plain base modules. */
  merge(): void {
    this.checkUsable();
    if (this.mergedState) return;
    // Check every target before touching any weight, so a failure leaves nothing half merged.
    for (const t of this.targets) {
      for (const suffix of ['weight', ...(t.spec.bias ? ['bias'] : [])]) {
        const n = `${t.spec.name}.${suffix}`;
        if (this.base.weights.isAlias(n))
          throw new AdapterError(
            `cannot merge IA3 into ${t.spec.name}: ${n} is tied to ${this.base.weights.resolve(n)}; use the adapter unmerged`,
          );
      }
      if (this.config.variant === 'additive' && !t.spec.bias) {
        throw new AdapterError(
          `cannot merge the additive IA3 vector of ${t.spec.name}: the module has no bias to fold it into; use the adapter unmerged`,
        );
      }
    }
    for (const t of this.targets) mergeTarget(this.base.weights, t, this.vectors.get(t.spec.name)!.data, this.config.variant);
    this.mergedState = true;
  }

  /** Takes the vectors out of the base weights again (peft unmerge(): divides by ia3_l + 1e-8). */
  unmerge(): void {
    this.checkUsable();
    if (!this.mergedState) return;
    for (const t of this.targets) unmergeTarget(this.base.weights, t, this.vectors.get(t.spec.name)!.data, this.config.variant);
    this.mergedState = false;
  }

  /** peft merge_and_unload(): merges, writes the modules_to_save copies into the base weights, returns the base model. */
  mergeAndUnload(): PretrainedModel {
    this.merge();
    for (const [w, t] of this.savedModules) this.base.weights.set(w, { shape: [...t.shape], data: Float32Array.from(t.data) });
    this.unloaded = true;
    return this.base;
  }

  async savePretrained(dir: string): Promise<void> {
    this.checkUsable();
    if (this.mergedState)
      throw new AdapterError('unmerge() the IA3 adapter before saving it: its vectors are folded into the base weights');
    await saveIA3(dir, this.config, this.vectors, this.savedModules);
  }
}
