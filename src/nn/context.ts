// The context a model builds its graph in: one Graph, the frozen weights, which tensors are
// trainable, and the hooks tuners install on named modules (peft's module injection, expressed
// as functions the model calls where the wrapped module would run).

import { checkpoint } from '../autodiff/checkpoint.js';
import type { Graph, Value } from '../graph/ir.js';
import * as o from '../graph/ops.js';
import type { Dim } from '../graph/types.js';
import { QuantizationError } from '../quant/errors.js';
import { PeftError } from '../errors.js';
import { dequantizeInGraph } from '../quant/graph.js';
import { type QuantKernel, type QuantOperands, quantOperands } from '../quant/matmul.js';
import type { Quantized4bit } from '../quant/blockwise.js';
import { int8Operands } from '../quant/int8_base.js';
import { float32ToFloat16 } from '../io/safetensors/dtype.js';
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

/** An embedding lookup through a tuner: `base()` is the plain lookup of `ids` in the module's weight. */
export type EmbeddingHook = (ids: Value, base: () => Value, ctx: BuildContext) => Value;

/** Called with a sub-layer's output and its residual input; returns the new residual stream. */
export type SublayerHook = (args: {
  layer: number;
  output: Value;
  residual: Value;
  norm?: (x: Value) => Value;
  ctx: BuildContext;
}) => Value;

export interface BuildOptions {
  /** weight names that are trainable params instead of frozen constants (full fine-tuning, modules_to_save) */
  trainable?: ReadonlySet<string>;
  training?: boolean;
  /** how products with 4-bit weights are computed (default 'ops'; see src/quant/matmul.ts) */
  quantKernel?: QuantKernel;
  /**
   * while training, recompute decoder layers' activations in the backward pass instead of keeping
   * them: true (or 1) every layer, a number k every k-th layer (layers 0, k, 2k, ...), false or 0 none
   */
  gradientCheckpointing?: boolean | number;
  /**
   * while training (and without gradientCheckpointing), recompute each attention core (scores,
   * softmax, probabilities @ v) from q, k and v, and a gated MLP's activation from its two linear
   * outputs, in the backward pass instead of keeping them: selective recomputation (`recomputed`)
   */
  selectiveRecompute?: boolean;
  /**
   * How frozen float32 matrices of linear modules are multiplied: 'fp32' (default) as they are,
   * 'int8' through two int8 copies (src/quant/int8_base.ts). Trainable weights stay float32.
   */
  basePrecision?: BasePrecision;
  /**
   * With basePrecision 'int8': linear modules whose products stay float32, by name or name suffix
   * ("lm_head", "mlp.down_proj"; matched as PEFT matches target_modules). Default none.
   */
  int8Exclude?: readonly string[];
  /**
   * Inference only: tuners may feed tensors derived from their live ones (LoRA's A or B with the
   * scaling folded in, so the graph has no scaling for ONNX Runtime to fuse into the product's
   * alpha, which takes batch-1 products off MLAS's M=1 kernel). The derived values are computed when
   * the feeds are gathered (BuildContext.derived; paramFeeds in src/generate/model.ts).
   */
  derivedFeeds?: boolean;
  /**
   * Inference only: the params (tuners' tensors, trainable base weights) become constants of the
   * graph holding a copy of their values now, so a session compiled from it is fed none of them:
   * a frozen adapter baked into a decoding session (onnxruntime-node converts every feed to a native
   * tensor at every run). The function gives the live tensors by name (called once per build and
   * once per BuildContext.frozenParams check); FrozenParams tells when they changed since.
   */
  frozenParams?: () => (name: string) => Float32Array | undefined;
}

/** Which live arrays a frozen param was made from, and copies of them at build time. */
interface FrozenRecord {
  /** the param's name (the live tensor's) */
  name: string;
  /** the graph constant's */
  constant: string;
  sources: (lookup: (name: string) => Float32Array | undefined) => readonly (Float32Array | undefined)[];
  snapshot: readonly Float32Array[];
}

/** Whether two float32 arrays hold the same bit patterns (memcmp where Node's Buffer exists). */
function sameBits(a: Float32Array, b: Float32Array): boolean {
  if (a.length !== b.length) return false;
  const B = (globalThis as { Buffer?: typeof Buffer }).Buffer;
  if (B) return B.from(a.buffer, a.byteOffset, a.byteLength).equals(B.from(b.buffer, b.byteOffset, b.byteLength));
  const x = new Int32Array(a.buffer, a.byteOffset, a.length);
  const y = new Int32Array(b.buffer, b.byteOffset, b.length);
  for (let i = 0; i < x.length; i++) if (x[i] !== y[i]) return false;
  return true;
}

/** The params a context baked into its graph (BuildOptions.frozenParams), to compare with their live values. */
export class FrozenParams {
  constructor(
    private readonly records: readonly FrozenRecord[],
    private readonly live: () => (name: string) => Float32Array | undefined,
  ) {}

  /** the graph constants holding them */
  get names(): string[] {
    return this.records.map((r) => r.constant);
  }

  /** The first baked param whose live values differ from what was baked (or is gone), else undefined. */
  changed(): string | undefined {
    const lookup = this.live();
    for (const r of this.records) {
      const now = r.sources(lookup);
      if (now.length !== r.snapshot.length) return r.name;
      for (let i = 0; i < now.length; i++) {
        const a = now[i];
        const b = r.snapshot[i]!;
        if (!a || a.length !== b.length) return r.name;
        if (!sameBits(a, b)) return r.name;
      }
    }
    return undefined;
  }
}

/** A float32 tensor computed from a tuner's live tensors when the feeds are gathered. */
export interface DerivedFeed {
  dtype: 'float32';
  shape: number[];
  data: Float32Array;
}

/** Precision of the frozen base's products in a graph (4-bit bases are chosen at load time instead). */
export type BasePrecision = 'fp32' | 'int8';

export class BuildContext {
  readonly linearHooks = new Map<string, LinearHook>();
  /**
   * Input transforms applied before a module (and its tuner hook) runs, by module name: the decoding
   * sessions narrow lm_head's input to the last position, so the prompt's other positions never go
   * through the vocabulary projection.
   */
  readonly linearInputs = new Map<string, (x: Value) => Value>();
  /** by embedding module name (e.g. "model.embed_tokens"): LoRA on embeddings, trainable tokens */
  readonly embeddingHooks = new Map<string, EmbeddingHook>();
  /** keys like "3.attn" / "3.ffn": bottleneck adapters and other residual-stream methods */
  readonly sublayerHooks = new Map<string, SublayerHook>();
  /** extra trainable tensors tuners created, by name */
  readonly params = new Map<string, Value>();
  private readonly cache = new Map<string, Value>();
  readonly trainable: ReadonlySet<string>;
  readonly training: boolean;
  readonly quantKernel: QuantKernel;
  /** every how many decoder layers one is checkpointed while training (0: none; BuildOptions.gradientCheckpointing) */
  readonly checkpointEvery: number;
  readonly selectiveRecompute: boolean;
  /** inside a checkpointed layer (whose recomputation covers any selective one) */
  private inCheckpoint = false;
  /** how the outputs of `recomputed` and `elementwise` were made, by value id (for `recomputedWith`) */
  private readonly recipes = new Map<number, { inputs: Value[]; fn: (inputs: Value[]) => Value }>();
  readonly basePrecision: BasePrecision;
  private readonly int8Exclude: readonly string[];
  readonly derivedFeeds: boolean;
  /** params whose feed is computed from live tensors (see BuildOptions.derivedFeeds), by name */
  readonly derived = new Map<string, () => DerivedFeed>();
  private readonly operands = new Map<string, QuantOperands>();
  private readonly int8 = new Map<string, [Value, Value, Value, Value]>();
  private readonly frozenSource?: () => (name: string) => Float32Array | undefined;
  private frozenLookup?: (name: string) => Float32Array | undefined;
  private readonly frozenValues = new Map<string, Value>();
  private readonly frozenRecords: FrozenRecord[] = [];
  private readonly half = new Map<string, Value>();

  constructor(
    readonly graph: Graph,
    readonly weights: WeightStore,
    opts: BuildOptions = {},
  ) {
    this.trainable = opts.trainable ?? new Set();
    this.training = opts.training ?? false;
    this.quantKernel = opts.quantKernel ?? 'ops';
    this.checkpointEvery = checkpointEveryOf(opts.gradientCheckpointing ?? false);
    this.selectiveRecompute = opts.selectiveRecompute ?? false;
    this.basePrecision = opts.basePrecision ?? 'fp32';
    this.int8Exclude = opts.int8Exclude ?? [];
    this.derivedFeeds = opts.derivedFeeds ?? false;
    this.frozenSource = opts.frozenParams;
  }

  /** The params baked into this graph as constants (BuildOptions.frozenParams); undefined without it. */
  frozenParams(): FrozenParams | undefined {
    return this.frozenSource ? new FrozenParams([...this.frozenRecords], this.frozenSource) : undefined;
  }

  /**
   * A frozen param: a constant holding `data` (owned by the graph from now on), recorded with the
   * live arrays it was made from (BuildOptions.frozenParams).
   */
  private frozenParam(
    name: string,
    shape: number[],
    data: Float32Array,
    sources: FrozenRecord['sources'],
    snapshot = sources(this.liveTensor).map((a, i) => {
      if (!a) throw new Error(`frozen param "${name}": its live source ${i} is missing`);
      return Float32Array.from(a);
    }),
  ): Value {
    const v = this.graph.constant(name, 'float32', shape, data);
    this.frozenValues.set(name, v);
    this.frozenRecords.push({ name, constant: v.name, sources, snapshot });
    return v;
  }

  /** A live tensor by name, for frozen params (looked up once per build). */
  private get liveTensor(): (name: string) => Float32Array | undefined {
    return (this.frozenLookup ??= this.frozenSource!());
  }

  /** A param baked as a constant with a copy of its live values (frozen mode). */
  private frozenCopy(name: string, shape: number[]): Value {
    const hit = this.frozenValues.get(name);
    if (hit) return hit;
    const live = this.liveTensor(name);
    if (!live) throw new Error(`frozen param "${name}" has no live tensor`);
    const data = Float32Array.from(live);
    // The constant is its own snapshot: compare the live array with the copy baked.
    return this.frozenParam(name, shape, data, (lookup) => [lookup(name)], [data]);
  }

  /**
  /**
   * Base weights this graph holds only as int8 copies (no float32 constant of them): a session
   * compiled from it never reads their float32 arrays.
   */
  int8OnlyWeights(outputs?: readonly Value[]): string[] {
    // given the graph's outputs: a float32 constant no output reaches (the LM head's, when the
    // chunked loss builds its backward product from the int8 copies) does not count
    const used = outputs ? reachable(outputs) : undefined;
    return [...this.int8.keys()].filter((n) => {
      const f = this.cache.get(n);
      return !f || (used !== undefined && !used.has(f));
    });
  }

  /**
   * A float16 copy of a frozen float32 matrix as a graph constant (one per weight array and
   * process, shared by the train and eval steps), or undefined when the weight is trainable,
   * quantized or not a matrix, or the graph is not built with basePrecision 'int8'. Rows gathered
   * from it stand in for the float32 matrix where only a few rows are read (the token embedding
   * tied to an int8 LM head, the LM head's label rows in the chunked loss), so the float32 array
   * can be released (Trainer's releaseInt8Only): 2 bytes a parameter instead of 4, relative
   * error at most 2^-11 per element.
   */
  halfWeight(name: string): Value | undefined {
    if (this.basePrecision !== 'int8' || !this.weights.has(name)) return undefined;
    name = this.weights.resolve(name);
    if (this.trainable.has(name) || this.weights.isQuantized(name)) return undefined;
    const shape = this.weights.shapeOf(name);
    if (shape.length !== 2) return undefined;
    let v = this.half.get(name);
    if (!v) {
      const data = this.weights.get(name).data;
      let h = halfCopies.get(data);
      if (!h) {
        h = new Uint16Array(data.length);
        for (let i = 0; i < data.length; i++) h[i] = float32ToFloat16(data[i]!);
        halfCopies.set(data, h);
      }
      this.half.set(name, (v = this.graph.constant(`${name}.fp16`, 'float16', shape, { kind: 'array', data: h })));
    }
    return v;
  }

  /**
   * The token embedding lookup from the float16 copy (halfWeight) of a frozen embedding matrix
   * that is also the model's int8 LM head (tied), or undefined (the float32 lookup then).
   */
  halfEmbedding(name: string, ids: Value): Value | undefined {
    if (this.basePrecision !== 'int8' || !this.weights.has('lm_head.weight')) return undefined;
    if (this.weights.resolve('lm_head.weight') !== this.weights.resolve(name)) return undefined;
    const table = this.halfWeight(name);
    return table && o.cast(o.gather(table, ids, 0), 'float32');
  }

  /**
   * The int8 operands of a frozen float32 weight (stored in `layout`) for o.int8Matmul, or undefined
   * when the weight is trainable, 4-bit, or the graph is not built with basePrecision 'int8'. With
   * `floatBackward` (an nn.Linear weight only) the float32 weight comes as a fifth operand and the
   * backward product autodiff derives uses it instead of the second int8 copy: the LM head's, whose
   * incoming gradient (softmax minus one-hot) loses its many small probabilities to per-tensor 8-bit
   * quantization. The chunked loss (src/train/chunked_loss.ts) builds that product itself from the
   * int8 copy, the one-hot part apart and the softmax scaled per row.
   */
  int8Weight(
    name: string,
    layout: 'linear' | 'conv1d',
    floatBackward = false,
  ): readonly [Value, Value, Value, Value] | readonly [Value, Value, Value, Value, Value] | undefined {
    if (this.basePrecision !== 'int8') return undefined;
    const module = name.replace(/\.weight$/, '');
    if (this.int8Exclude.some((m) => module === m || module.endsWith(`.${m}`))) return undefined;
    name = this.weights.resolve(name);
    if (this.trainable.has(name) || this.weights.isQuantized(name)) return undefined;
    if (this.weights.shapeOf(name).length !== 2) return undefined;
    let ops = this.int8.get(name);
    // quantized from the held float32 array, or from the file for a released one (never kept as float32)
    if (!ops) this.int8.set(name, (ops = int8Operands(this.graph, name, this.weights.int8(name, layout))));
    return floatBackward && layout === 'linear' ? [...ops, this.weight(name)] : ops;
  }

  /**
   * Decoder layer `index`, fn(x). Training with gradient checkpointing on this layer (every
   * checkpointEvery-th, from layer 0), it is a checkpointed region (src/autodiff/checkpoint.ts):
   * only x is kept for the backward pass, which recomputes the layer.
   */
  layer(index: number, x: Value, fn: (x: Value) => Value): Value {
    if (!this.training || this.checkpointEvery === 0 || index % this.checkpointEvery !== 0) return fn(x);
    this.inCheckpoint = true;
    try {
      return checkpoint([x], ([h]) => fn(h!));
    } finally {
      this.inCheckpoint = false;
    }
  }

  /**
   * Selective recomputation: fn(inputs), a small part of a layer whose intermediates are large and
   * cheap to rebuild (an attention core: scores, probabilities, @ v; a gated MLP's activation).
   * Training with selectiveRecompute (and not inside a checkpointed layer, which recomputes it
   * anyway), a checkpointed region: only `inputs` are kept for the backward pass, which recomputes
   * the rest from them.
   */
  recomputed(inputs: Value[], fn: (inputs: Value[]) => Value): Value {
    if (!this.recomputing) return fn(inputs);
    const out = checkpoint(inputs, fn);
    this.recipes.set(out.id, { inputs, fn });
    return out;
  }

  /**
   * fn(inputs), an element-wise step whose output the backward pass does not need as long as
   * nothing trainable reads it (an MLP's activation, which a frozen product consumes): built as it
   * is, and remembered so that a consumer which would keep it (`recomputedWith`) can recompute it instead.
   */
  elementwise(inputs: Value[], fn: (inputs: Value[]) => Value): Value {
    const out = fn(inputs);
    if (this.recomputing) this.recipes.set(out.id, { inputs, fn });
    return out;
  }

  /**
   * fn(x) for a consumer whose gradient reads x (IA3's scaling of an MLP's activation: the vector's
   * gradient is the sum of x times the incoming one). When x came from `recomputed` or
   * `elementwise` (and selective recomputation is on), x and fn are one recomputed region over x's
   * inputs, so x is not kept for the backward pass: the same values, for an element-wise
   * recomputation of x there. Otherwise fn(x).
   */
  recomputedWith(x: Value, fn: (x: Value) => Value): Value {
    const r = this.recomputing ? this.recipes.get(x.id) : undefined;
    if (!r) return fn(x);
    const out = checkpoint(r.inputs, (inputs) => fn(r.fn(inputs)));
    this.recipes.set(out.id, { inputs: r.inputs, fn: (inputs) => fn(r.fn(inputs)) });
    return out;
  }

  /** selective recomputation applies here: training with selectiveRecompute, outside a checkpointed layer */
  private get recomputing(): boolean {
    return this.training && this.selectiveRecompute && !this.inCheckpoint;
  }

  /**
   * The graph value of a base-model weight: a frozen constant, or a param if it is trainable. A
   * 4-bit quantized weight is dequantized in the graph, in its state-dict layout.
   */
  weight(name: string): Value {
    name = this.weights.resolve(name);
    const hit = this.cache.get(name);
    if (hit) return hit;
    const q = this.weights.getQuantized(name);
    if (q) {
      const m = this.quantizedWeight(name);
      const v = q.transposed ? o.transpose(m, [1, 0]) : m;
      this.cache.set(name, v);
      return v;
    }
    const w = this.weights.get(name);
    if (this.trainable.has(name) && this.frozenSource) {
      const v = this.frozenCopy(name, [...w.shape]);
      this.cache.set(name, v);
      return v;
    }
    const v = this.trainable.has(name)
      ? this.graph.param(name, 'float32', w.shape)
      : this.graph.constant(name, 'float32', w.shape, { kind: 'array', data: w.data });
    if (this.trainable.has(name)) this.params.set(name, v);
    this.cache.set(name, v);
    return v;
  }

  /** The 4-bit data of a resolved weight name, which must be quantized and frozen. */
  private frozenQuantized(name: string): Quantized4bit {
    const q = this.weights.getQuantized(name);
    if (!q) throw new QuantizationError(`weight "${name}" is not quantized`);
    if (this.trainable.has(name)) {
      throw new QuantizationError(
        `weight "${name}" is 4-bit quantized and cannot be trained; keep it in full precision (skipModules) or load the model without quantization`,
      );
    }
    return q.quant;
  }

  /**
   * A 4-bit quantized weight as bitsandbytes' Linear4bit uses it: the float32 matrix in its quantized
   * layout ([out, in], also for GPT-2's Conv1D), rebuilt in the graph from the 4-bit constants.
   * `after` (the layer's input) makes ONNX Runtime rebuild it right before its use instead of
   * holding every dequantized weight from the start of the run.
   */
  quantizedWeight(name: string, after?: Value): Value {
    name = this.weights.resolve(name);
    const key = `${name}#4bit`;
    const hit = this.cache.get(key);
    if (hit) return hit;
    const v = dequantizeInGraph(this.graph, name, this.frozenQuantized(name), { after });
    this.cache.set(key, v);
    return v;
  }

  /**
   * A 4-bit quantized weight as QuantMatMul operands (its [out, in] matrix, also for GPT-2's
   * Conv1D), created once per graph: every product with it (forward, and the backward that
   * autodiff derives) rebuilds the float32 matrix from these constants when it runs.
   */
  quantizedOperands(name: string): QuantOperands {
    name = this.weights.resolve(name);
    const hit = this.operands.get(name);
    if (hit) return hit;
    const v = quantOperands(this.graph, name, this.frozenQuantized(name), { kernel: this.quantKernel });
    this.operands.set(name, v);
    return v;
  }

  /** A tuner's trainable tensor, fed at every run under `name`. */
  param(name: string, shape: number[]): Value {
    const hit = this.params.get(name);
    if (hit) return hit;
    if (this.frozenSource) return this.frozenCopy(name, shape);
    const v = this.graph.param(name, 'float32', shape);
    this.params.set(name, v);
    return v;
  }

  /**
   * A param fed with `compute()` at every gathering of the feeds (only with BuildOptions.derivedFeeds);
   * with BuildOptions.frozenParams, a constant holding `compute()` now. `sources` gives the live
   * arrays compute() reads (scalars as one-element arrays), so a frozen graph can tell when they change.
   */
  derivedParam(name: string, shape: number[], compute: () => DerivedFeed, sources: () => Float32Array[]): Value {
    if (!this.derivedFeeds) throw new Error(`derived param "${name}" in a context built without derivedFeeds`);
    if (this.frozenSource) return this.frozenValues.get(name) ?? this.frozenParam(name, shape, compute().data, () => sources());
    this.derived.set(name, compute);
    return this.param(name, shape);
  }

  /** Keep-mask inputs that dropout() created, by graph input name: the caller feeds each one on every run. */
  readonly dropoutMasks = new Map<string, { ratio: number; like: Value }>();

  /**
   * Inverted dropout of x while training, identity otherwise. The keep mask is a bool graph input
   * `name` shaped like x, drawn by the caller from its seeded RNG (P(keep) = 1 - ratio), so runs
   * and resumed runs are reproducible; dropoutMaskShape() gives its concrete shape for a batch.
   */
  dropout(x: Value, ratio: number, name: string): Value {
    if (!this.training || ratio <= 0) return x;
    const mask = this.graph.input(name, 'bool', x.shape);
    this.dropoutMasks.set(name, { ratio, like: x });
    return o.dropout(x, mask, ratio);
  }

  /** The shape a dropout mask has when the graph inputs are fed tensors of these shapes. */
  dropoutMaskShape(name: string, feedShapes: Readonly<Record<string, readonly number[]>>): number[] {
    const m = this.dropoutMasks.get(name);
    if (!m) throw new Error(`no dropout mask named "${name}"`);
    const sym = new Map<string, number>();
    for (const v of this.graph.inputs) {
      const s = feedShapes[v.name];
      if (!s) continue;
      v.shape.forEach((d, i) => {
        if (typeof d === 'string' && /^[A-Za-z_]\w*$/.test(d) && s[i] !== undefined) sym.set(d, s[i]!);
      });
    }
    return m.like.shape.map((d) => evalDim(d, sym));
  }
}

/** Evaluates a symbolic dim ("batch", "seq+5", "4*batch*seq", "(seq-1)*batch") with bound symbols. */
export function evalDim(d: Dim, sym: ReadonlyMap<string, number>): number {
  if (typeof d === 'number') return d;
  const tokens = d.match(/\d+|[A-Za-z_]\w*|[-+*()]/g) ?? [];
  let i = 0;
  const atom = (): number => {
    const t = tokens[i++];
    if (t === '(') {
      const v = sum();
      i++;
      return v;
    }
    if (t !== undefined && /^\d+$/.test(t)) return Number(t);
    const v = t === undefined ? undefined : sym.get(t);
    if (v === undefined) throw new Error(`dimension "${d}": symbol "${t}" is not bound by any fed input`);
    return v;
  };
  const product = (): number => {
    let v = atom();
    while (tokens[i] === '*') {
      i++;
      v *= atom();
    }
    return v;
  };
  const sum = (): number => {
    let v = product();
    while (tokens[i] === '+' || tokens[i] === '-') {
      const op = tokens[i++];
      v = op === '+' ? v + product() : v - product();
    }
    return v;
  };
  return sum();
}

/** A build option a caller gave that no graph can be built with. */
class BuildOptionsError extends PeftError {}

/** BuildOptions.gradientCheckpointing as "every k-th layer" (0: none); k must be a whole number >= 0. */
function checkpointEveryOf(setting: boolean | number): number {
  if (typeof setting === 'boolean') return setting ? 1 : 0;
  if (!Number.isInteger(setting) || setting < 0)
    throw new BuildOptionsError(
      `gradient checkpointing takes true, false or a whole number of layers k >= 0 (every k-th layer), got ${setting}`,
    );
  return setting;
}

/** float16 copies of weight arrays (BuildContext.halfWeight), shared by every graph built over them */
const halfCopies = new WeakMap<Float32Array, Uint16Array>();

/** Every value the outputs are computed from (the outputs included). */
function reachable(outputs: readonly Value[]): Set<Value> {
  const seen = new Set<Value>();
  const stack = [...outputs];
  while (stack.length) {
    const v = stack.pop()!;
    if (seen.has(v)) continue;
    seen.add(v);
    if (v.producer) for (const i of v.producer.inputs) stack.push(i);
  }
  return seen;
}
