// The context a model builds its graph in: one Graph, the frozen weights, which tensors are
// trainable, and the hooks tuners install on named modules (peft's module injection, expressed
// as functions the model calls where the wrapped module would run).

import type { Graph, Value } from '../graph/ir.js';
import type { WeightStore } from './weights.js';

/** A linear-like module of the base model, named as in the Hugging Face state dict. */
export interface LinearSpec {
  name: string;
  inFeatures: number;
  outFeatures: number;
  bias: boolean;
  /** 'conv1d': GPT-2's Conv1D, weight stored [in, out]; 'linear': nn.Linear, weight [out, in] */
  layout: 'linear' | 'conv1d';
}

export type LinearHook = (x: Value, base: (x: Value) => Value, spec: LinearSpec, ctx: BuildContext) => Value;

/** Called with a sub-layer's output and its residual input; returns the new residual stream. */
export type SublayerHook = (args: { layer: number; output: Value; residual: Value; norm?: (x: Value) => Value; ctx: BuildContext }) => Value;

export interface BuildOptions {
  /** weight names that are trainable params instead of frozen constants (full fine-tuning, modules_to_save) */
  trainable?: ReadonlySet<string>;
  training?: boolean;
}

export class BuildContext {
  readonly linearHooks = new Map<string, LinearHook>();
  /** keys like "3.attn" / "3.ffn": bottleneck adapters and other residual-stream methods */
  readonly sublayerHooks = new Map<string, SublayerHook>();
  /** extra trainable tensors tuners created, by name */
  readonly params = new Map<string, Value>();
  private readonly cache = new Map<string, Value>();
  readonly trainable: ReadonlySet<string>;
  readonly training: boolean;

  constructor(readonly graph: Graph, readonly weights: WeightStore, opts: BuildOptions = {}) {
    this.trainable = opts.trainable ?? new Set();
    this.training = opts.training ?? false;
  }

  /** The graph value of a base-model weight: a frozen constant, or a param if it is trainable. */
  weight(name: string): Value {
    name = this.weights.resolve(name);
    const hit = this.cache.get(name);
    if (hit) return hit;
    const w = this.weights.get(name);
    const v = this.trainable.has(name)
      ? this.graph.param(name, 'float32', w.shape)
      : this.graph.constant(name, 'float32', w.shape, { kind: 'array', data: w.data });
    if (this.trainable.has(name)) this.params.set(name, v);
    this.cache.set(name, v);
    return v;
  }

  /** A tuner's trainable tensor, fed at every run under `name`. */
  param(name: string, shape: number[]): Value {
    const hit = this.params.get(name);
    if (hit) return hit;
    const v = this.graph.param(name, 'float32', shape);
    this.params.set(name, v);
    return v;
  }
}
