// BottleneckModel: AdapterHub bottleneck adapters (SeqBn / DoubleSeqBn / ParBn) on one of our
// base models. It owns the adapter tensors per (layer, location), installs a sub-layer hook at
// each location, optionally trains or overrides the static head, and saves in AdapterHub's layout.

import type { Value } from '../../graph/ir.js';
import * as o from '../../graph/ops.js';
import type { BuildContext, LinearSpec } from '../../nn/context.js';
import type { ForwardArgs, ForwardResult, PretrainedModel } from '../../models/types.js';
import { AdapterError, PeftConfigError, type AdaptedModel, type TrainableTensor } from '../types.js';
import { type BnConfig, bottleneckSize, seqBnConfig, validateBnConfig } from './config.js';
import { initBottleneck } from './init.js';
import { adapterFunction, bottleneckLocation } from './layer.js';
import {
  basePrefixOf,
  checkBottleneckSupported,
  BN_LOCATIONS,
  type BnLocation,
  type BnTensor,
  bnTensorName,
  sublayerKey,
} from './names.js';
import { saveBottleneck, type SaveBottleneckOptions } from './save.js';
import { descriptorOf } from '../../models/registry.js';

/** One adapter instance: a (layer, location) with its four tensors. */
export interface BnSite {
  layer: number;
  location: BnLocation;
  bottleneck: number;
  tensors: Record<BnTensor, TrainableTensor>;
}

/** The AdapterHub metadata saved next to the config ("model_name", "model_class", ...). */
export interface AdapterHubMeta {
  modelName: string;
  modelClass: string;
  modelType: string;
  hiddenSize: number;
  /** the adapters version string written to the file ('0.2.2': the format reproduced here) */
  version: string;
}

export interface CreateBottleneckOptions {
  /** default: SeqBnConfig() (Pfeiffer) */
  config?: BnConfig;
  /** the adapter name inside every tensor name (default "default") */
  name?: string;
  /** seed of the random init */
  seed?: number;
  /** start adapter_up.weight at zero (default true; adapters' own 'bert' init draws it from N(0, 0.02)) */
  zeroUp?: boolean;
  /** train the static head (classifier) with the adapter; default true for sequence classification, as adapters' train_adapter leaves it trainable */
  trainHead?: boolean;
  /** model_name written to adapter_config.json (default: the base model folder) */
  modelName?: string;
}

/** The architecture class name AdapterHub records as model_class. */
export function modelClassOf(base: PretrainedModel): string {
  // the class config.json names when the library builds it, else the model type's default class
  const d = descriptorOf(base);
  if (base.task === 'causal-lm')
    return base.config.architectures.find((a) => a in d.classes) ?? d.defaultClass[base.config.modelType] ?? Object.keys(d.classes)[0]!;
  return base.task === 'seq-cls' ? 'BertForSequenceClassification' : base.task === 'masked-lm' ? 'BertForMaskedLM' : 'BertModel';
}

/** Weights of the static head: every parameter outside the base-model prefix (lm_head.weight, classifier.*). */
export function headWeightNames(base: PretrainedModel): string[] {
  const prefix = basePrefixOf(base);
  const names = new Set([
    ...base.expectedWeights(),
    ...base.linears().flatMap((s) => [`${s.name}.weight`, ...(s.bias ? [`${s.name}.bias`] : [])]),
  ]);
  return [...names].filter((n) => !n.startsWith(prefix) && base.weights.has(n)).sort();
}

/** The linear modules that make up the head, when every head weight belongs to one. */
function headLinears(base: PretrainedModel): LinearSpec[] | null {
  const names = headWeightNames(base);
  const specs = base.linears().filter((s) => names.includes(`${s.name}.weight`));
  const covered = new Set(specs.flatMap((s) => [`${s.name}.weight`, ...(s.bias ? [`${s.name}.bias`] : [])]));
  return names.every((n) => covered.has(n)) ? specs : null;
}

export class BottleneckModel implements AdaptedModel {
  readonly peftType = 'BOTTLENECK';

  private constructor(
    readonly base: PretrainedModel,
    readonly config: BnConfig,
    readonly name: string,
    readonly sites: readonly BnSite[],
    readonly meta: AdapterHubMeta,
    /** head weights the graph uses instead of the base ones (trained, or loaded and different), by base weight name */
    private readonly head: Map<string, TrainableTensor>,
    readonly trainHead: boolean,
  ) {}

  /** A new adapter (adapters' add_adapter + train_adapter). */
  static create(base: PretrainedModel, opts: CreateBottleneckOptions = {}): BottleneckModel {
    const config = opts.config ?? seqBnConfig();
    const m = BottleneckModel.fromConfig(base, config, {
      name: opts.name,
      trainHead: opts.trainHead,
      meta: {
        modelName: opts.modelName ?? base.dir,
        modelClass: modelClassOf(base),
        modelType: base.config.modelType,
        hiddenSize: base.hiddenSize,
        version: '0.2.2',
      },
    });
    let seed = opts.seed ?? 0;
    for (const s of m.sites) {
      const init = initBottleneck(base.hiddenSize, s.bottleneck, {
        initWeights: config.initWeights,
        zeroUp: opts.zeroUp ?? true,
        seed: seed++,
      });
      s.tensors['adapter_down.0.weight'] = init.down;
      s.tensors['adapter_down.0.bias'] = init.downBias;
      s.tensors['adapter_up.weight'] = init.up;
      s.tensors['adapter_up.bias'] = init.upBias;
    }
    return m;
  }

  /** The sites of `config` on `base` with zero tensors (loading fills them). */
  static fromConfig(
    base: PretrainedModel,
    config: BnConfig,
    opts: { name?: string; trainHead?: boolean; meta: AdapterHubMeta; head?: Map<string, TrainableTensor> },
  ): BottleneckModel {
    validateBnConfig(config);
    checkBottleneckSupported(base);
    const name = opts.name ?? 'default';
    if (!/^[^.\s]+$/.test(name))
      throw new PeftConfigError(`adapter name "${name}" must be non-empty without dots or spaces (it becomes part of every tensor name)`);
    for (const i of config.leaveOut) {
      if (i >= base.numLayers)
        throw new PeftConfigError(`leave_out lists layer ${i}, but the model has ${base.numLayers} layers (0..${base.numLayers - 1})`);
    }
    const H = base.hiddenSize;
    const sites: BnSite[] = [];
    for (let layer = 0; layer < base.numLayers; layer++) {
      if (config.leaveOut.includes(layer)) continue;
      for (const location of BN_LOCATIONS) {
        if (location === 'mh_adapter' ? !config.mhAdapter : !config.outputAdapter) continue;
        const b = bottleneckSize(config, layer, H);
        sites.push({
          layer,
          location,
          bottleneck: b,
          tensors: {
            'adapter_down.0.weight': { shape: [b, H], data: new Float32Array(b * H) },
            'adapter_down.0.bias': { shape: [b], data: new Float32Array(b) },
            'adapter_up.weight': { shape: [H, b], data: new Float32Array(H * b) },
            'adapter_up.bias': { shape: [H], data: new Float32Array(H) },
          },
        });
      }
    }
    const trainHead = opts.trainHead ?? base.task === 'seq-cls';
    const head = opts.head ?? new Map<string, TrainableTensor>();
    if (trainHead || head.size) {
      if (!headLinears(base)) {
        throw new PeftConfigError(
          `the ${modelClassOf(base)} head (${headWeightNames(base).join(', ')}) is not made of linear modules only; it cannot be trained or replaced with the adapter, pass trainHead: false`,
        );
      }
      if (trainHead) {
        for (const w of headWeightNames(base)) {
          if (!head.has(w)) head.set(w, { shape: [...base.weights.get(w).shape], data: Float32Array.from(base.weights.get(w).data) });
        }
      }
    }
    return new BottleneckModel(base, config, name, sites, opts.meta, head, trainHead);
  }

  /** The graph param name of one adapter tensor (its AdapterHub key). */
  paramName(site: BnSite, tensor: BnTensor): string {
    return bnTensorName(this.base, site.layer, site.location, this.name, tensor);
  }

  site(layer: number, location: BnLocation): BnSite {
    const s = this.sites.find((x) => x.layer === layer && x.location === location);
    if (!s) throw new AdapterError(`the adapter has no ${location} at layer ${layer}`);
    return s;
  }

  /** Current head tensors (trained copies or loaded overrides), by base weight name. */
  headWeights(): Map<string, TrainableTensor> {
    return this.head;
  }

  forward(ctx: BuildContext, args: ForwardArgs): ForwardResult {
    for (const s of this.sites) {
      const key = sublayerKey(s.layer, s.location);
      if (ctx.sublayerHooks.has(key))
        throw new AdapterError(`sub-layer ${key} already has a hook installed; one residual-stream method per location`);
      const p = (t: BnTensor): Value => ctx.param(this.paramName(s, t), s.tensors[t].shape);
      const weights = {
        downWeight: p('adapter_down.0.weight'),
        downBias: p('adapter_down.0.bias'),
        upWeight: p('adapter_up.weight'),
        upBias: p('adapter_up.bias'),
      };
      const scaling = this.config.scaling as number;
      // adapters applies its dropout to the scaled up-projection; ctx.dropout is the identity outside training.
      const maskName = `${this.paramName(s, 'adapter_up.weight').slice(0, -'adapter_up.weight'.length)}dropout.keep_mask`;
      const A = (z: Value): Value =>
        ctx.dropout(adapterFunction(z, weights, this.config.nonLinearity, scaling).out, this.config.dropout, maskName);
      ctx.sublayerHooks.set(key, ({ output, residual, norm, ctx: c }) =>
        c.graph.scope(`${key}.bottleneck`, () => bottleneckLocation(this.config, { output, residual, norm }, A).out),
      );
    }
    if (this.head.size) {
      for (const spec of headLinears(this.base)!) this.installHead(ctx, spec);
    }
    return this.base.forward(ctx, args);
  }

  /** The head module computed from our copy: a param when trained, a constant when only loaded. */
  private installHead(ctx: BuildContext, spec: LinearSpec): void {
    if (ctx.linearHooks.has(spec.name))
      throw new AdapterError(`${spec.name} already has a tuner hook installed; the bottleneck adapter replaces the head there`);
    const tensor = (w: string): Value => {
      const t = this.head.get(w) ?? { shape: [...this.base.weights.get(w).shape], data: this.base.weights.get(w).data };
      return this.trainHead ? ctx.param(w, t.shape) : ctx.graph.constant(`adapter_head.${w}`, 'float32', t.shape, t.data);
    };
    ctx.linearHooks.set(spec.name, (x) => {
      const w = tensor(`${spec.name}.weight`);
      const y = spec.layout === 'conv1d' ? o.matmul(x, w) : o.matmulT(x, w);
      return spec.bias ? o.add(y, tensor(`${spec.name}.bias`)) : y;
    });
  }

  loss(logits: Value, labels: Value): Value {
    return this.base.loss(logits, labels);
  }

  parameters(): Map<string, TrainableTensor> {
    const out = new Map<string, TrainableTensor>();
    for (const s of this.sites) for (const t of Object.keys(s.tensors) as BnTensor[]) out.set(this.paramName(s, t), s.tensors[t]);
    if (this.trainHead) for (const [w, t] of this.head) out.set(w, t);
    return out;
  }

  decayParameters(): Set<string> {
    return new Set([...this.parameters().keys()].filter((n) => !/bias/.test(n)));
  }

  trainableBaseWeights(): Set<string> {
    // The head is replaced through a linear hook, so no base weight becomes a graph param.
    return new Set();
  }

  /** Writes adapter_config.json + adapter.safetensors (+ head_config.json + model_head.safetensors unless withHead is false). */
  async savePretrained(dir: string, opts: SaveBottleneckOptions = {}): Promise<void> {
    await saveBottleneck(this, dir, opts);
  }
}
