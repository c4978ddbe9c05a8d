// LN tuning (Zhao et al. 2023, "Tuning LayerNorm in Attention") as peft 0.20 implements it: the
// targeted normalization modules are replaced by trained copies (weight and bias where the module
// has one); the rest of the model is frozen. Saved tensors
// base_model.model.<module>.ln_tuning_layers.weight (and .bias). Merging swaps the copies into the
// base model, so merged and unmerged outputs are identical.

import { existsSync, mkdir, join } from '../../storage/index.js';
import type { Value } from '../../graph/ir.js';
import { type RawTensor, fromTypedArray, writeSafetensors } from '../../io/safetensors.js';
import { type PyJson, writePythonJson } from '../../io/pyjson.js';
import { writeFileAtomic } from '../../io/atomic.js';
import type { ForwardArgs, ForwardResult, PretrainedModel } from '../../models/types.js';
import type { BuildContext } from '../../nn/context.js';
import type { WeightTensor } from '../../nn/weights.js';
import { FieldReader, type LinearTunerConfig, commonFields, commonJson } from '../linear_tuner/config.js';
import { PEFT_PREFIX, checkOutputDir, readAdapterConfigFile, readAdapterTensors } from '../lora/save.js';
import { TargetModulesNotFoundError, pythonRegex, targetModuleMatches } from '../lora/targets.js';
import type { Tuner } from '../registry.js';
import { type AdaptedModel, AdapterError, AdapterMismatchError, PeftConfigError, type TrainableTensor } from '../types.js';

/** peft's TRANSFORMERS_MODELS_TO_LNTUNING_TARGET_MODULES_MAPPING for the families this library loads. */
const LN_TUNING_DEFAULT_TARGETS: Readonly<Record<string, readonly string[]>> = {
  llama: ['input_layernorm', 'post_attention_layernorm', 'norm'],
  mistral: ['input_layernorm', 'post_attention_layernorm', 'norm'],
  qwen2: ['input_layernorm', 'post_attention_layernorm', 'norm'],
  qwen3: ['input_layernorm', 'post_attention_layernorm', 'norm'],
  gpt2: ['ln_1', 'ln_2', 'ln_f'],
  bert: ['LayerNorm'],
};

type LnTuningConfig = LinearTunerConfig;

function lnTuningConfig(fields: Record<string, unknown>, source = 'LN tuning config'): LnTuningConfig {
  return commonFields(new FieldReader(fields, source), 'LN_TUNING', 'LN tuning');
}

/** transformers' rule: no weight decay on biases and normalization weights. */
const decays = (name: string): boolean => !/bias/.test(name) && !/(norm|(^|\.)ln_)/i.test(name);

function excluded(c: LnTuningConfig, key: string): boolean {
  const ex = c.excludeModules;
  if (ex === null) return false;
  if (typeof ex === 'string') return pythonRegex(`^(?:${ex})$`).test(key);
  return ex.some((t) => key === t || key.endsWith(`.${t}`));
}

export class LnTuningModel implements AdaptedModel {
  readonly peftType = 'LN_TUNING';
  private merged = false;
  private unloaded = false;
  private readonly originals = new Map<string, WeightTensor>();

  private constructor(
    readonly base: PretrainedModel,
    readonly config: LnTuningConfig,
    /** trained copies by base weight name */
    readonly copies: Map<string, TrainableTensor>,
    /** the targeted module of each copied weight */
    readonly moduleOf: Map<string, string>,
    readonly trainable: boolean,
  ) {}

  /** The weights of the targeted modules, in model order. */
  private static targets(base: PretrainedModel, c: LnTuningConfig): Map<string, string> {
    if (c.targetModules === null) {
      const d = LN_TUNING_DEFAULT_TARGETS[base.config.modelType];
      if (!d)
        throw new PeftConfigError(
          `no default LN tuning target_modules for model_type "${base.config.modelType}"; set target_modules to the normalization modules' names`,
        );
      c.targetModules = [...d];
    }
    const match = { targetModules: c.targetModules, layersToTransform: c.layersToTransform, layersPattern: c.layersPattern } as Parameters<
      typeof targetModuleMatches
    >[0];
    const out = new Map<string, string>();
    const weights = new Set([...base.weights.names()]);
    for (const m of base.moduleNames()) {
      if (!targetModuleMatches(match, m) || excluded(c, m)) continue;
      for (const w of [`${m}.weight`, `${m}.bias`]) {
        if (!weights.has(w)) continue;
        if (base.weights.isAlias(w))
          throw new PeftConfigError(
            `LN tuning target ${m} holds ${w}, which is tied to ${base.weights.resolve(w)}; leave it out of target_modules`,
          );
        out.set(w, m);
      }
    }
    if (out.size === 0) throw new TargetModulesNotFoundError(c.targetModules, base.moduleNames());
    return out;
  }

  static create(base: PretrainedModel, fields: Record<string, unknown>): LnTuningModel {
    const config = lnTuningConfig(fields);
    if (config.baseModelNameOrPath === null) config.baseModelNameOrPath = base.dir;
    const moduleOf = LnTuningModel.targets(base, config);
    const copies = new Map<string, TrainableTensor>();
    for (const w of moduleOf.keys()) {
      const t = base.weights.get(w);
      copies.set(w, { shape: [...t.shape], data: Float32Array.from(t.data) });
    }
    return new LnTuningModel(base, config, copies, moduleOf, true);
  }

  static async fromPretrained(base: PretrainedModel, dir: string, opts: { isTrainable?: boolean } = {}): Promise<LnTuningModel> {
    const config = lnTuningConfig(await readAdapterConfigFile(dir), join(dir, 'adapter_config.json'));
    const moduleOf = LnTuningModel.targets(base, config);
    const tensors = await readAdapterTensors(dir);
    const copies = new Map<string, TrainableTensor>();
    const used = new Set<string>();
    const missing: string[] = [];
    for (const [w, m] of moduleOf) {
      const key = savedKey(w, m);
      const t = tensors.get(key);
      const shape = base.weights.get(w).shape;
      if (!t) {
        missing.push(key);
        continue;
      }
      if (t.shape.length !== shape.length || t.shape.some((d, i) => d !== shape[i]))
        throw new AdapterMismatchError(`${dir}: ${key} has shape [${t.shape}] but ${w} of this model is [${shape}]`);
      used.add(key);
      copies.set(w, { shape: [...shape], data: Float32Array.from(t.data) });
    }
    const unexpected = [...tensors.keys()].filter((k) => !used.has(k));
    if (missing.length || unexpected.length) {
      throw new AdapterMismatchError(
        `${dir} does not fit ${base.dir}:${missing.length ? ` missing tensors ${missing.slice(0, 6).join(', ')};` : ''}${unexpected.length ? ` tensors for modules the config does not target here: ${unexpected.slice(0, 6).join(', ')};` : ''} target_modules ${JSON.stringify(config.targetModules)}`,
      );
    }
    return new LnTuningModel(base, config, copies, moduleOf, opts.isTrainable === true);
  }

  private check(): void {
    if (this.unloaded) throw new AdapterError('this LN tuning adapter was merged and unloaded into its base model; use the returned model');
  }

  forward(ctx: BuildContext, args: ForwardArgs): ForwardResult {
    this.check();
    if (!this.merged) {
      for (const w of this.copies.keys()) {
        if (!ctx.trainable.has(w))
          throw new AdapterError(
            `LN tuning weight ${w} must be a graph param: build the BuildContext with { trainable: model.trainableBaseWeights() }`,
          );
      }
    }
    return this.base.forward(ctx, args);
  }

  loss(logits: Value, labels: Value): Value {
    return this.base.loss(logits, labels);
  }

  /** The copies under the base weight names: the graph uses them in place of the base weights. */
  parameters(): Map<string, TrainableTensor> {
    return this.merged ? new Map() : new Map(this.copies);
  }

  decayParameters(): Set<string> {
    return new Set([...this.parameters().keys()].filter(decays));
  }

  trainableBaseWeights(): Set<string> {
    return this.merged ? new Set() : new Set(this.copies.keys());
  }

  /** peft keeps the original module and its copy: both count, the copies train. */
  numParameters(): { trainable: number; all: number } {
    const n = [...this.copies.values()].reduce((a, t) => a + t.data.length, 0);
    return { trainable: this.trainable ? n : 0, all: this.base.weights.numel() + n };
  }

  stateDict(): Map<string, TrainableTensor> {
    return new Map([...this.copies].map(([w, t]) => [savedKey(w, this.moduleOf.get(w)!), t]));
  }

  async savePretrained(dir: string): Promise<void> {
    this.check();
    if (this.merged) throw new AdapterError('unmerge() the LN tuning adapter before saving it: its copies are swapped into the base model');
    checkOutputDir(dir);
    const tensors = new Map<string, RawTensor>();
    for (const [k, t] of this.stateDict()) tensors.set(k, fromTypedArray(t.data, t.shape));
    await mkdir(dir, { recursive: true });
    await writeSafetensors(join(dir, 'adapter_model.safetensors'), tensors, { format: 'pt' });
    const json: Record<string, PyJson> = { ...commonJson(this.config), inference_mode: true };
    await writePythonJson(join(dir, 'adapter_config.json'), json);
    const card = join(dir, 'README.md');
    if (!existsSync(card)) await writeFileAtomic(card, `---\nlibrary_name: peft\n---\n\n# LN tuning adapter\n`);
  }

  /** Swaps the trained copies into the base model (peft merge()). */
  merge(): void {
    this.check();
    if (this.merged) return;
    for (const [w, t] of this.copies) {
      this.originals.set(w, this.base.weights.get(w));
      this.base.weights.set(w, { shape: [...t.shape], data: Float32Array.from(t.data) });
    }
    this.merged = true;
  }

  unmerge(): void {
    this.check();
    for (const [w, t] of this.originals) this.base.weights.set(w, t);
    this.originals.clear();
    this.merged = false;
  }

  mergeAndUnload(): PretrainedModel {
    this.merge();
    this.originals.clear();
    this.unloaded = true;
    return this.base;
  }
}

function savedKey(weight: string, module: string): string {
  return `${PEFT_PREFIX}${module}.ln_tuning_layers${weight.slice(module.length)}`;
}

/** The registry entry. */
export const lnTuningTuner = {
  peftType: 'LN_TUNING',
  label: 'LN tuning',
  mergeable: true,
  saves: 'adapter (adapter_config.json, adapter_model.safetensors)',
  infoSettings: ['target_modules', 'exclude_modules', 'modules_to_save'],
  presets: [
    {
      name: 'lntuning',
      label: 'LN tuning',
      learningRate: 1e-2,
      trainLearningRate: 1e-3,
      compareByDefault: false,
      flags: { target: 'target_modules' },
      fields: { peft_type: 'LN_TUNING', task_type: 'CAUSAL_LM' },
      settings: "peft's default normalization modules (every layer's norms and the final norm) train as copies",
      folklore: { parameter: 'High', compute: 'High', space: 'High', performance: 'Medium', flexibility: 'Medium' },
    },
  ],
  create: async (base: PretrainedModel, fields: Record<string, unknown>) => LnTuningModel.create(base, fields),
  fromPretrained: (base: PretrainedModel, dir: string, opts: { isTrainable?: boolean } = {}) =>
    LnTuningModel.fromPretrained(base, dir, opts),
} satisfies Tuner;
