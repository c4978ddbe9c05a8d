// MultiAdapterModel: several LoRA and IA3 adapters of one frozen base, with one adapter per batch
// row (peft's `adapter_names=[...]`, "__base__" for none) in ONE session run. Every targeted linear
// module gets one hook over stacked tensors: slot 0 is the base (zero LoRA, unit IA3), slot k an
// adapter; a graph input `adapter_index` [batch] picks each row's slot. Ranks are zero-padded to a
// common width (zero rows and columns add exact zeros), and both the slot count and the padded
// rank are symbolic dims, so loading, replacing or removing an adapter only changes what is fed:
// no session is rebuilt as long as the adapter's modules are among the compiled targets.
//
// Two ways to compute the rows' deltas, both over the same host stacks (measured in
// bench/RESULTS.md, "Mixed-adapter batches"):
// - 'gather': each row gathers its own A [in, r] and B [r, out] (batched matmuls over rows);
// - 'concat': every slot's A side by side (one [in, slots*r] GEMM for the whole batch), a per-row
//   selection mask (one-hot times scaling), then every B stacked (one [slots*r, out] GEMM).
//
// Hot swap: slots are immutable once filled. Replacing adapter "x" fills a new slot and points the
// name at it; requests that resolved "x" earlier keep their slot index until they release it, so a
// swap never changes what a request in flight computes. A slot is reused only after release.

import type { Graph, Value } from '../../graph/ir.js';
import * as o from '../../graph/ops.js';
import type { ForwardArgs, ForwardResult, PretrainedModel } from '../../models/types.js';
import type { BuildContext, LinearHook, LinearSpec } from '../../nn/context.js';
import { IA3Model } from '../ia3/model.js';
import { loadAdapter } from '../load.js';
import { LoraModel } from '../lora/model.js';
import { readAdapterConfigFile } from '../lora/save.js';
import { AdapterError, type AdaptedModel, type TrainableTensor } from '../types.js';
import { PeftError } from '../../errors.js';

/** The row name for "no adapter" (peft's "__base__"). */
export const BASE_ADAPTER = '__base__';
/** The graph input that holds each row's slot index, int64 [batch]. */
export const ADAPTER_INDEX_INPUT = 'adapter_index';

export type MixedStrategy = 'gather' | 'concat';

/** A mixed-adapter batch that cannot be built or run as asked. */
export class MixedBatchError extends PeftError {
  constructor(message: string) {
    super(message);
    this.name = 'MixedBatchError';
  }
}

export interface MultiAdapterOptions {
  /** how the per-row deltas are computed (default 'concat'; see the file comment) */
  strategy?: MixedStrategy;
  /**
   * LoRA target modules to compile in besides those of the adapters loaded before the first build
   * (full module names or name suffixes such as "q_proj"), so adapters loaded later that target
   * them need no recompilation.
   */
  targetModules?: readonly string[];
  /** pad every LoRA rank to at least this (peft's prepare_model_for_compiled_hotswap target_rank): feed shapes stay fixed */
  maxRank?: number;
}

interface LoraEntry {
  r: number;
  scaling: number;
  /** lora_A.weight [r, in] */
  A: Float32Array;
  /** lora_B.weight [out, r] */
  B: Float32Array;
}

interface Ia3Entry {
  feedforward: boolean;
  /** [in] (feedforward) or [out] */
  vector: Float32Array;
}

/** One filled slot: an adapter's tensors, immutable. */
interface Slot {
  name: string;
  kind: 'LORA' | 'IA3';
  source: string;
  lora: Map<string, LoraEntry>;
  ia3: Map<string, Ia3Entry>;
  /** requests holding this slot */
  refs: number;
  /** the name no longer points here (unloaded or replaced); freed when refs reaches 0 */
  retired: boolean;
}

/** What the compiled graph hooks: LoRA modules, IA3 modules and the side their vector scales. */
interface Layout {
  lora: Set<string>;
  ia3: Map<string, boolean>;
}

/** A summary of one loaded adapter, for listings. */
export interface LoadedAdapterInfo {
  name: string;
  peftType: 'LORA' | 'IA3';
  source: string;
  modules: number;
  maxRank: number;
  slot: number;
}

function checkName(name: string): void {
  if (!name || /[\s/\\,=]/.test(name) || name === BASE_ADAPTER) {
    throw new MixedBatchError(
      `adapter name ${JSON.stringify(name)} must be non-empty, without spaces, slashes, commas or "=", and not ${BASE_ADAPTER}`,
    );
  }
}

/** Reads an adapter folder into slot tensors, checking it can join a mixed batch. */
async function readSlot(base: PretrainedModel, name: string, dir: string, adapter?: AdaptedModel): Promise<Omit<Slot, 'refs' | 'retired'>> {
  const raw = await readAdapterConfigFile(dir).catch(() => undefined);
  if (
    raw &&
    (raw.lora_bias === true ||
      (Array.isArray(raw.trainable_token_indices) && raw.trainable_token_indices.length) ||
      (raw.trainable_token_indices && typeof raw.trainable_token_indices === 'object' && Object.keys(raw.trainable_token_indices).length))
  ) {
    throw new MixedBatchError(
      `${dir}: lora_bias / trainable_token_indices adapters cannot join a mixed batch; merge it (peft merge) and serve the merged model instead`,
    );
  }
  const m = adapter ?? (await loadAdapter(base, dir));
  const linears = new Map(base.linears().map((s) => [s.name, s]));
  if (m instanceof LoraModel) {
    const a = m.adapter(m.activeAdapter ?? 'default');
    if (a.config.useDora)
      throw new MixedBatchError(
        `${dir}: DoRA adapters cannot join a mixed batch (plain LoRA and IA3 only); merge it and serve the merged model instead`,
      );
    const extra = a as { embeddings?: Map<string, unknown>; tokens?: Map<string, unknown> };
    if (extra.embeddings?.size || extra.tokens?.size) {
      throw new MixedBatchError(
        `${dir}: LoRA on embeddings / trainable tokens cannot join a mixed batch (linear layers only); merge it and serve the merged model instead`,
      );
    }
    if (a.overrides.size || a.modulesToSave.length) {
      throw new MixedBatchError(
        `${dir}: the adapter replaces base weights (modules_to_save or trained biases: ${[...a.overrides.keys()].slice(0, 3).join(', ')}); mixed batches take plain LoRA and IA3 adapters only`,
      );
    }
    const lora = new Map<string, LoraEntry>();
    for (const [mod, s] of a.modules) {
      if (!linears.has(mod)) throw new MixedBatchError(`${dir}: LoRA on ${mod}, which is not a linear layer, cannot join a mixed batch`);
      if (s.magnitude) throw new MixedBatchError(`${dir}: DoRA magnitudes on ${mod}; mixed batches take plain LoRA only`);
      const spec = linears.get(mod)!;
      const A = s.A.data;
      const B = s.B.data;
      if (A.length !== s.r * spec.inFeatures || B.length !== spec.outFeatures * s.r)
        throw new MixedBatchError(`${dir}: ${mod} has LoRA tensors of unexpected size`);
      lora.set(mod, { r: s.r, scaling: s.scaling, A: Float32Array.from(A), B: Float32Array.from(B) });
    }
    return { name, kind: 'LORA', source: dir, lora, ia3: new Map() };
  }
  if (m instanceof IA3Model) {
    if (m.config.variant !== 'scale')
      throw new MixedBatchError(`${dir}: the additive IA3 variant cannot join a mixed batch; merge it instead`);
    if (m.modulesToSaveWeights().size)
      throw new MixedBatchError(`${dir}: IA3 with modules_to_save cannot join a mixed batch; merge it instead`);
    const ia3 = new Map<string, Ia3Entry>();
    for (const t of m.targets) ia3.set(t.spec.name, { feedforward: t.feedforward, vector: Float32Array.from(m.vector(t.spec.name).data) });
    return { name, kind: 'IA3', source: dir, lora: new Map(), ia3 };
  }
  throw new MixedBatchError(
    `${dir} is a ${m.peftType} adapter; mixed-adapter batches take LoRA and IA3 adapters (merge other methods into the weights, or serve them alone)`,
  );
}

export class MultiAdapterModel implements AdaptedModel {
  readonly peftType = 'MIXED';
  /** slot 0 is the base model */
  private slots: (Slot | null)[] = [null];
  private readonly names = new Map<string, number>();
  private layout: Layout | null = null;
  private feedsCache: Map<string, TrainableTensor> | null = null;
  readonly strategy: MixedStrategy;
  private readonly declaredTargets: readonly string[];
  readonly maxRank: number;
  private readonly inputs = new WeakMap<Graph, Value>();

  constructor(
    readonly base: PretrainedModel,
    opts: MultiAdapterOptions = {},
  ) {
    this.strategy = opts.strategy ?? 'concat';
    if (this.strategy !== 'gather' && this.strategy !== 'concat')
      throw new MixedBatchError(`strategy must be "gather" or "concat", got ${JSON.stringify(this.strategy)}`);
    this.declaredTargets = opts.targetModules ?? [];
    this.maxRank = opts.maxRank ?? 0;
    if (!Number.isInteger(this.maxRank) || this.maxRank < 0)
      throw new MixedBatchError(`maxRank must be an integer >= 0, got ${opts.maxRank}`);
    const names = new Set(base.linears().map((s) => s.name));
    for (const t of this.declaredTargets) {
      if (![...names].some((n) => n === t || n.endsWith(`.${t}`)))
        throw new MixedBatchError(`target module "${t}" matches no linear layer of ${base.dir}`);
    }
  }

  /** A model over `base` with the adapters `{ name: folder }` loaded. */
  static async fromFolders(
    base: PretrainedModel,
    adapters: Record<string, string> | readonly [string, string][],
    opts: MultiAdapterOptions = {},
  ): Promise<MultiAdapterModel> {
    const m = new MultiAdapterModel(base, opts);
    for (const [name, dir] of Array.isArray(adapters) ? adapters : Object.entries(adapters)) await m.loadAdapter(name, dir);
    return m;
  }

  /** Names of the loaded adapters, in load order. */
  get adapterNames(): string[] {
    return [...this.names.keys()];
  }

  hasAdapter(name: string): boolean {
    return this.names.has(name);
  }

  adapters(): LoadedAdapterInfo[] {
    return [...this.names].map(([name, i]) => {
      const s = this.slots[i]!;
      return {
        name,
        peftType: s.kind,
        source: s.source,
        modules: s.lora.size + s.ia3.size,
        maxRank: Math.max(0, ...[...s.lora.values()].map((e) => e.r)),
        slot: i,
      };
    });
  }

  /** Whether the sessions compiled so far already hook every module the adapter needs. */
  private fits(s: Omit<Slot, 'refs' | 'retired'>): string | null {
    const l = this.layout;
    if (!l) return null;
    for (const m of s.lora.keys()) if (!l.lora.has(m)) return `LoRA on ${m}`;
    for (const [m, e] of s.ia3) if (l.ia3.get(m) !== e.feedforward) return `IA3 on ${m}`;
    return null;
  }

  /**
   * Loads (or, with `replace`, replaces) the adapter `name` from a folder. Requests that resolved
   * the name before keep their slot (see acquire) and see no change.
   */
  async loadAdapter(name: string, dir: string, opts: { replace?: boolean; adapter?: AdaptedModel } = {}): Promise<void> {
    checkName(name);
    if (this.names.has(name) && !opts.replace)
      throw new MixedBatchError(`an adapter named "${name}" is already loaded; unload it first or replace it`);
    const read = await readSlot(this.base, name, dir, opts.adapter);
    const miss = this.fits(read);
    if (miss) {
      throw new MixedBatchError(
        `adapter "${name}" (${dir}) needs ${miss}, which the compiled sessions do not hook; declare it up front (targetModules / serve --target-modules) or rebuild the sessions`,
      );
    }
    if (this.names.has(name) && !opts.replace) throw new MixedBatchError(`an adapter named "${name}" is already loaded`);
    const old = this.names.get(name);
    let i = this.slots.findIndex((s, k) => k > 0 && s === null);
    if (i < 0) i = this.slots.push(null) - 1;
    this.slots[i] = { ...read, refs: 0, retired: false };
    this.names.set(name, i);
    if (old !== undefined) this.retire(old);
    this.feedsCache = null;
  }

  /** Unloads an adapter; rows already holding it finish with it. */
  unloadAdapter(name: string): void {
    const i = this.names.get(name);
    if (i === undefined)
      throw new MixedBatchError(`no adapter named "${name}" is loaded; loaded: ${this.adapterNames.join(', ') || '(none)'}`);
    this.names.delete(name);
    this.retire(i);
  }

  private retire(i: number): void {
    const s = this.slots[i]!;
    s.retired = true;
    if (s.refs === 0) this.free(i);
  }

  private free(i: number): void {
    this.slots[i] = null;
    // Trailing empty slots go, so the stacks shrink again.
    while (this.slots.length > 1 && this.slots[this.slots.length - 1] === null) this.slots.pop();
    this.feedsCache = null;
  }

  /** The slot index of each row's adapter name ("__base__" = 0), without holding them. */
  rowIndex(names: readonly string[]): BigInt64Array {
    return BigInt64Array.from(names.map((n) => BigInt(this.slotOf(n))));
  }

  private slotOf(n: string): number {
    if (n === BASE_ADAPTER) return 0;
    const i = this.names.get(n);
    if (i === undefined)
      throw new MixedBatchError(`no adapter named "${n}" is loaded; loaded: ${[BASE_ADAPTER, ...this.adapterNames].join(', ')}`);
    return i;
  }

  /** Resolves a name and holds its slot until release(): a later replace or unload does not change it. */
  acquire(name: string): number {
    const i = this.slotOf(name);
    if (i > 0) this.slots[i]!.refs++;
    return i;
  }

  release(slot: number): void {
    if (slot === 0) return;
    const s = this.slots[slot];
    if (!s || s.refs <= 0) throw new MixedBatchError(`slot ${slot} is not held`);
    s.refs--;
    if (s.refs === 0 && s.retired) this.free(slot);
  }

  /** The modules the next build hooks: the adapters' and the declared ones. */
  private currentLayout(): Layout {
    const lora = new Set<string>();
    const ia3 = new Map<string, boolean>();
    for (const s of this.slots) {
      if (!s) continue;
      for (const m of s.lora.keys()) lora.add(m);
      for (const [m, e] of s.ia3) {
        if (ia3.has(m) && ia3.get(m) !== e.feedforward)
          throw new MixedBatchError(`two adapters disagree on whether ${m} is a feedforward IA3 module`);
        ia3.set(m, e.feedforward);
      }
    }
    for (const spec of this.base.linears()) {
      if (this.declaredTargets.some((t) => spec.name === t || spec.name.endsWith(`.${t}`))) lora.add(spec.name);
    }
    return { lora, ia3 };
  }

  /** LoRA rank all stacks are padded to. */
  private paddedRank(): number {
    let r = Math.max(1, this.maxRank);
    for (const s of this.slots) if (s) for (const e of s.lora.values()) r = Math.max(r, e.r);
    return r;
  }

  forward(ctx: BuildContext, args: ForwardArgs): ForwardResult {
    const layout = this.layout ?? this.currentLayout();
    if (this.layout === null) {
      this.layout = layout;
      this.feedsCache = null;
    }
    const g = ctx.graph;
    let idx = this.inputs.get(g);
    if (!idx) {
      idx = g.input(ADAPTER_INDEX_INPUT, 'int64', ['batch']);
      this.inputs.set(g, idx);
    }
    const index = idx;
    const specs = new Map(this.base.linears().map((s) => [s.name, s]));
    const modules = new Set([...layout.lora, ...layout.ia3.keys()]);
    for (const m of modules) {
      const spec = specs.get(m)!;
      if (ctx.linearHooks.has(m))
        throw new AdapterError(`${m} already has a tuner hook installed; a mixed-adapter model is the only tuner of its modules`);
      ctx.linearHooks.set(m, this.hook(spec, index, layout));
    }
    return this.base.forward(ctx, args);
  }

  private hook(spec: LinearSpec, index: Value, layout: Layout): LinearHook {
    const m = spec.name;
    const ia3Side = layout.ia3.get(m);
    const hasLora = layout.lora.has(m);
    return (x, base, _spec, ctx) => {
      if (x.rank !== 3) throw new MixedBatchError(`${m}: mixed-adapter batches need [batch, seq, features] inputs, got rank ${x.rank}`);
      const param = (suffix: string, shape: (number | string)[]): Value => {
        const name = `multi.${m}.${suffix}`;
        const hit = ctx.params.get(name);
        if (hit) return hit;
        // Graph inputs rather than params: the slot and rank dims are symbolic.
        const v = ctx.graph.input(name, 'float32', shape);
        ctx.params.set(name, v);
        return v;
      };
      // A row's IA3 vector: [batch, 1, n] (ones for rows of other adapters and the base).
      const rowVector = (n: number): Value => o.unsqueeze(o.gather(param('ia3', ['slots', n]), index, 0), 1);
      let y = ia3Side === true ? base(o.mul(x, rowVector(spec.inFeatures))) : base(x);
      if (ia3Side === false) y = o.mul(y, rowVector(spec.outFeatures));
      if (!hasLora) return y;
      let delta: Value;
      if (this.strategy === 'gather') {
        const A = o.gather(param('lora_A', ['slots', spec.inFeatures, 'rank']), index, 0);
        const B = o.gather(param('lora_B', ['slots', 'rank', spec.outFeatures]), index, 0);
        const s = o.reshape(o.gather(param('lora_scaling', ['slots']), index, 0), [-1, 1, 1]);
        delta = o.mul(o.matmul(o.matmul(x, A), B), s);
      } else {
        const h = o.matmul(x, param('lora_A', [spec.inFeatures, 'slots*rank']));
        const sel = o.unsqueeze(o.gather(param('lora_select', ['slots', 'slots*rank']), index, 0), 1);
        delta = o.matmul(o.mul(h, sel), param('lora_B', ['slots*rank', spec.outFeatures]));
      }
      return o.add(y, delta);
    };
  }

  loss(logits: Value, labels: Value): Value {
    return this.base.loss(logits, labels);
  }

  /** The stacked tensors the compiled graph is fed (rebuilt after a load/unload, never mutated in place). */
  parameters(): Map<string, TrainableTensor> {
    if (this.feedsCache) return this.feedsCache;
    const layout = this.layout ?? this.currentLayout();
    const S = this.slots.length;
    const R = this.paddedRank();
    const out = new Map<string, TrainableTensor>();
    const specs = new Map(this.base.linears().map((s) => [s.name, s]));
    for (const [m, feedforward] of layout.ia3) {
      const spec = specs.get(m)!;
      const n = feedforward ? spec.inFeatures : spec.outFeatures;
      const v = new Float32Array(S * n).fill(1);
      this.slots.forEach((s, k) => {
        const e = s?.ia3.get(m);
        if (e) v.set(e.vector, k * n);
      });
      out.set(`multi.${m}.ia3`, { shape: [S, n], data: v });
    }
    for (const m of layout.lora) {
      const { inFeatures: I, outFeatures: O } = specs.get(m)!;
      if (this.strategy === 'gather') {
        const A = new Float32Array(S * I * R);
        const B = new Float32Array(S * R * O);
        const sc = new Float32Array(S);
        this.slots.forEach((s, k) => {
          const e = s?.lora.get(m);
          if (!e) return;
          sc[k] = e.scaling;
          // A [S, in, R] holds lora_A transposed; B [S, R, out] holds lora_B transposed.
          for (let j = 0; j < e.r; j++) {
            for (let i = 0; i < I; i++) A[k * I * R + i * R + j] = e.A[j * I + i]!;
            for (let q = 0; q < O; q++) B[k * R * O + j * O + q] = e.B[q * e.r + j]!;
          }
        });
        out.set(`multi.${m}.lora_A`, { shape: [S, I, R], data: A });
        out.set(`multi.${m}.lora_B`, { shape: [S, R, O], data: B });
        out.set(`multi.${m}.lora_scaling`, { shape: [S], data: sc });
      } else {
        const W = S * R;
        const A = new Float32Array(I * W);
        const B = new Float32Array(W * O);
        const sel = new Float32Array(S * W);
        this.slots.forEach((s, k) => {
          const e = s?.lora.get(m);
          if (!e) return;
          for (let j = 0; j < e.r; j++) {
            const c = k * R + j;
            sel[k * W + c] = e.scaling;
            for (let i = 0; i < I; i++) A[i * W + c] = e.A[j * I + i]!;
            for (let q = 0; q < O; q++) B[c * O + q] = e.B[q * e.r + j]!;
          }
        });
        out.set(`multi.${m}.lora_A`, { shape: [I, W], data: A });
        out.set(`multi.${m}.lora_B`, { shape: [W, O], data: B });
        out.set(`multi.${m}.lora_select`, { shape: [S, W], data: sel });
      }
    }
    this.feedsCache = out;
    return out;
  }

  decayParameters(): Set<string> {
    return new Set();
  }

  trainableBaseWeights(): Set<string> {
    return new Set();
  }

  async savePretrained(): Promise<void> {
    throw new MixedBatchError('a mixed-adapter model is for inference; save each adapter from its own LoRA/IA3 model');
  }
}

export function isMultiAdapter(m: unknown): m is MultiAdapterModel {
  return m instanceof MultiAdapterModel;
}
