// Cached autoregressive decoding over a batch of prompts: left padding with position ids derived
// from the attention mask (as transformers' generate), one prefill run, then one-token decode
// steps until every row has stopped. Sessions are compiled once per Generator and reused.

import { firstNonFinite, nonFiniteMessage } from '../nn/finite.js';
import type { Tokenizer } from '../io/tokenizer.js';
import type { RuntimeOptions } from '../runtime/session.js';
import {
  type GenerateOptions,
  type GenerationDefaults,
  GenerationError,
  type GenerationPlan,
  defaultsFrom,
  loadGenerationDefaults,
  resolvePlan,
} from './config.js';
import { type InferenceModel, baseModel } from './model.js';
import { Rng } from '../train/rng.js';
import { argmax, sampleToken } from './sampling.js';
import { DecoderSessions } from './sessions.js';
import type { KVCache } from './kvcache.js';
import { RowText } from './streaming.js';
import { BASE_ADAPTER, isMultiAdapter } from '../tuners/multi/model.js';
import { descriptorOf } from '../models/registry.js';

/** A text prompt (encoded with the generator's tokenizer) or token ids. */
export type Prompt = string | readonly number[];

export interface GenerationResult {
  promptIds: number[];
  /** the new tokens, up to and including a stop token; no padding */
  tokenIds: number[];
  /** the new tokens as text (special tokens skipped), cut before a stop string; with a tokenizer only */
  text?: string;
  /** 'stop': a stop token or stop string ended the row; 'length': maxNewTokens was reached */
  finishReason: 'stop' | 'length';
  /** the stop string that ended the row, if one did */
  stopString?: string;
}

export interface GenerationStats {
  batch: number;
  /** padded prompt length */
  promptLength: number;
  /** decoding steps run (the prefill's token included) */
  steps: number;
  /** new tokens kept over all rows (padding of finished rows not counted) */
  newTokens: number;
  prefillMs: number;
  decodeMs: number;
}

export interface Generation {
  sequences: GenerationResult[];
  stats: GenerationStats;
}

export interface GeneratorOptions {
  /** needed for text prompts, stop strings and streamed text */
  tokenizer?: Tokenizer;
  runtime?: RuntimeOptions;
  /** defaults instead of the model folder's generation_config.json */
  defaults?: GenerationDefaults;
  /**
   * How an adapted model's tensors reach the sessions. 'frozen': baked into them as constants when
   * they are compiled (DecoderSessionsOptions.frozen: no tensor is fed per token, the fastest for
   * decoding), and the sessions are compiled again when a generation finds the model's values
   * changed since. 'fed': fed from the live arrays, read at the start of every generation (a model
   * being trained). 'auto' (default): 'frozen' until a generation finds them changed (the adapter is
   * being trained or edited), then 'fed' from there on: one recompilation at most. A mixed-adapter
   * model (MultiAdapterModel) is always fed.
   */
  adapterTensors?: 'auto' | 'frozen' | 'fed';
}

interface Row {
  promptIds: number[];
  tokens: number[];
  finished: boolean;
  finishReason: 'stop' | 'length';
  text?: RowText;
}

export class Generator {
  /** generations running on each sessions object; a replaced one is disposed when its count drops to 0 */
  private readonly running = new Map<DecoderSessions, number>();
  /** a recompilation in progress (one at a time; generations wait for it) */
  private rebuilding?: Promise<DecoderSessions>;
  private disposed = false;

  private constructor(
    readonly model: InferenceModel,
    private sessions: DecoderSessions,
    readonly defaults: GenerationDefaults,
    readonly tokenizer: Tokenizer | undefined,
    private readonly runtime: RuntimeOptions | undefined,
    private mode: 'frozen' | 'fed',
    private readonly onChange: 'rebuild' | 'feed',
  ) {}

  /** Compiles the prefill and decode sessions of a causal LM (base or adapted). */
  static async create(model: InferenceModel, opts: GeneratorOptions = {}): Promise<Generator> {
    const base = baseModel(model);
    const defaults = opts.defaults ?? (base.dir ? await loadGenerationDefaults(base.dir, base.config) : defaultsFrom({}, base.config));
    const choice = opts.adapterTensors ?? 'auto';
    if (!['auto', 'frozen', 'fed'].includes(choice))
      throw new GenerationError(`adapterTensors must be 'auto', 'frozen' or 'fed', got "${String(choice)}"`);
    // A mixed-adapter model swaps adapters while it serves: its tensors are always fed.
    const mode = choice === 'fed' || isMultiAdapter(model) ? 'fed' : 'frozen';
    const sessions = await DecoderSessions.create(model, opts.runtime, { frozen: mode === 'frozen' });
    return new Generator(model, sessions, defaults, opts.tokenizer, opts.runtime, mode, choice === 'frozen' ? 'rebuild' : 'feed');
  }

  /** How the adapter's tensors reach the sessions now: baked in ('frozen') or fed per run ('fed'). */
  get adapterTensors(): 'frozen' | 'fed' {
    return this.mode;
  }

  /**
   * The sessions to run a generation on: the current ones, unless their baked adapter values differ
   * from the model's now (then compiled again: frozen, or fed from now on; GeneratorOptions.adapterTensors).
   */
  private async current(): Promise<{ sessions: DecoderSessions; checkMs: number }> {
    while (this.rebuilding) await this.rebuilding.catch(() => undefined);
    if (this.disposed) throw new GenerationError('this Generator was disposed');
    const t0 = performance.now();
    const changed = this.mode === 'frozen' ? this.sessions.frozen?.changed() : undefined;
    // The comparison is part of every generation's cost (counted in its prefillMs); a recompilation is not.
    const checkMs = performance.now() - t0;
    if (changed === undefined) return { sessions: this.sessions, checkMs };
    const old = this.sessions;
    const mode = this.onChange === 'rebuild' ? 'frozen' : 'fed';
    this.rebuilding = DecoderSessions.create(this.model, this.runtime, { frozen: mode === 'frozen' });
    try {
      this.sessions = await this.rebuilding;
      this.mode = mode;
    } finally {
      this.rebuilding = undefined;
    }
    if (!this.running.get(old)) await old.dispose();
    return { sessions: this.sessions, checkMs };
  }

  get vocabSize(): number {
    return this.sessions.vocabSize;
  }

  async generate(prompts: Prompt | readonly Prompt[], options: GenerateOptions = {}): Promise<Generation> {
    const list: readonly Prompt[] = typeof prompts === 'string' || isIdList(prompts) ? [prompts as Prompt] : (prompts as readonly Prompt[]);
    if (list.length === 0) throw new GenerationError('no prompts given');
    const plan = resolvePlan(options, this.defaults, this.vocabSize);
    const tok = this.tokenizer;
    if (plan.stopStrings.length && !tok) throw new GenerationError('stop strings need a tokenizer: pass one to Generator.create');
    const rows: Row[] = list.map((p, i) => {
      const ids = this.encode(p, i, options.addSpecialTokens ?? true);
      const decode = tok ? (x: readonly number[]) => tok.decode(x, { skipSpecialTokens: true }) : undefined;
      return {
        promptIds: ids,
        tokens: [],
        finished: false,
        finishReason: 'length',
        text: decode ? new RowText(decode, plan.stopStrings) : undefined,
      };
    });
    this.checkLengths(rows, plan);
    const multi = isMultiAdapter(this.model) ? this.model : undefined;
    if (options.adapters && !multi) throw new GenerationError('per-row adapters need a mixed-adapter model (MultiAdapterModel)');
    if (multi) {
      const names = options.adapters ?? rows.map(() => BASE_ADAPTER);
      if (names.length !== rows.length)
        throw new GenerationError(
          `${names.length} adapter names for ${rows.length} prompts; give one per prompt ("${BASE_ADAPTER}" for none)`,
        );
      multi.rowIndex(names);
      // Held for the whole run: a swap meanwhile does not change these rows.
      const slots = names.map((n) => multi.acquire(n));
      try {
        return await this.runOn(rows, plan, options.onToken, BigInt64Array.from(slots.map(BigInt)));
      } finally {
        slots.forEach((s) => multi.release(s));
      }
    }
    return this.runOn(rows, plan, options.onToken);
  }

  /** run() on the current sessions, which stay alive until it ends even if replaced meanwhile. */
  private async runOn(
    rows: Row[],
    plan: GenerationPlan,
    onToken: GenerateOptions['onToken'],
    adapterIndex?: BigInt64Array,
  ): Promise<Generation> {
    const { sessions, checkMs } = await this.current();
    this.running.set(sessions, (this.running.get(sessions) ?? 0) + 1);
    try {
      const g = await this.run(sessions, rows, plan, onToken, adapterIndex);
      g.stats.prefillMs += checkMs;
      return g;
    } finally {
      const n = this.running.get(sessions)! - 1;
      if (n) this.running.set(sessions, n);
      else {
        this.running.delete(sessions);
        if (sessions !== this.sessions || this.disposed) await sessions.dispose();
      }
    }
  }

  private encode(p: Prompt, i: number, addSpecialTokens: boolean): number[] {
    let ids: number[];
    if (typeof p === 'string') {
      if (!this.tokenizer) throw new GenerationError('text prompts need a tokenizer: pass one to Generator.create, or give token ids');
      ids = this.tokenizer.encode(p, { addSpecialTokens });
    } else ids = [...p];
    if (ids.length === 0) throw new GenerationError(`prompt ${i} is empty (no tokens); give at least one token`);
    for (const id of ids) {
      if (!Number.isInteger(id) || id < 0 || id >= this.vocabSize)
        throw new GenerationError(`prompt ${i} has token id ${id}, outside the model's vocabulary [0, ${this.vocabSize})`);
    }
    return ids;
  }

  private checkLengths(rows: Row[], plan: GenerationPlan): void {
    const base = baseModel(this.model);
    const maxPos = base.config.maxPositionEmbeddings;
    const longest = Math.max(...rows.map((r) => r.promptIds.length));
    if (longest > maxPos) {
      throw new GenerationError(
        `a prompt is ${longest} tokens, longer than the model's ${maxPos} positions (max_position_embeddings); shorten it`,
      );
    }
    // Learned absolute positions have no row beyond max_position_embeddings; rotary ones extrapolate.
    if (descriptorOf(base).positions === 'absolute' && longest + plan.maxNewTokens - 1 > maxPos) {
      throw new GenerationError(
        `${longest} prompt tokens + ${plan.maxNewTokens} new tokens exceed the model's ${maxPos} positions; lower maxNewTokens to ${maxPos - longest + 1} or shorten the prompt`,
      );
    }
  }

  private async run(
    sessions: DecoderSessions,
    rows: Row[],
    plan: GenerationPlan,
    onToken: GenerateOptions['onToken'],
    adapterIndex?: BigInt64Array,
  ): Promise<Generation> {
    const batch = rows.length;
    const width = Math.max(...rows.map((r) => r.promptIds.length));
    const rng = Rng.fromSeed(plan.seed);
    // masks[r] covers every position the cache holds for row r (left padding included).
    const masks: number[][] = rows.map((r) => [
      ...new Array<number>(width - r.promptIds.length).fill(0),
      ...new Array<number>(r.promptIds.length).fill(1),
    ]);
    const inputIds = new BigInt64Array(batch * width);
    const positions = new BigInt64Array(batch * width);
    rows.forEach((r, b) => {
      const pad = width - r.promptIds.length;
      for (let t = 0; t < width; t++) {
        inputIds[b * width + t] = BigInt(t < pad ? plan.padTokenId : r.promptIds[t - pad]!);
        // transformers: cumsum(mask) - 1, with padding positions set to 1
        positions[b * width + t] = BigInt(t < pad ? 1 : t - pad);
      }
    });
    const t0 = performance.now();
    // Adapter values as they are now, for the whole generation (converted once, not per token).
    const params = sessions.params();
    let out = await sessions.prefill(
      {
        batch,
        seq: width,
        inputIds,
        attentionMask: flatMask(masks, 0),
        positionIds: positions,
        adapterIndex,
      },
      params,
    );
    const prefillMs = performance.now() - t0;
    let steps = 0;
    // Advanced in place by every decode step.
    const cache: KVCache = out.cache;
    const vocab = this.vocabSize;
    for (;;) {
      steps++;
      const next = new BigInt64Array(batch);
      for (let b = 0; b < batch; b++) {
        const row = rows[b]!;
        if (row.finished) {
          next[b] = BigInt(plan.padTokenId);
          continue;
        }
        const logits = out.logits.subarray(b * vocab, (b + 1) * vocab);
        const bad = firstNonFinite(logits);
        if (bad >= 0) throw new GenerationError(nonFiniteMessage(`the logits of row ${b} at step ${steps}`, bad, logits[bad]!));
        const id = plan.doSample ? sampleToken(logits, plan.sampling, rng) : argmax(logits);
        next[b] = BigInt(id);
        row.tokens.push(id);
        const piece = row.text && (onToken || plan.stopStrings.length) ? row.text.update(row.tokens) : '';
        if (plan.stopTokenIds.has(id) || row.text?.stopped) {
          row.finished = true;
          row.finishReason = 'stop';
        }
        if (onToken)
          onToken({ row: b, tokenId: id, text: piece + (row.finished && row.text ? row.text.flush() : ''), step: row.tokens.length - 1 });
      }
      if (steps >= plan.maxNewTokens || rows.every((r) => r.finished)) break;
      // Every row attends to its new token, finished ones too (they feed padding), as transformers does.
      for (const m of masks) m.push(1);
      // A method that adds positions of its own (virtual tokens) grows the cache beyond our masks.
      const extra = cache.length + 1 - masks[0]!.length;
      const pos = new BigInt64Array(batch);
      masks.forEach((m, b) => (pos[b] = BigInt(extra + m.reduce((s, x) => s + x, 0) - 1)));
      out = await sessions.decode(
        { batch, seq: 1, inputIds: next, attentionMask: flatMask(masks, extra), positionIds: pos, adapterIndex },
        cache,
        params,
      );
    }
    const decodeMs = performance.now() - t0 - prefillMs;
    const sequences = rows.map((r, b): GenerationResult => {
      let text: string | undefined;
      if (r.text) {
        if (!r.text.stopped) r.text.update(r.tokens);
        const rest = r.text.flush();
        if (onToken && rest && !r.finished)
          onToken({ row: b, tokenId: r.tokens[r.tokens.length - 1]!, text: rest, step: r.tokens.length - 1 });
        text = r.text.text;
      }
      return { promptIds: r.promptIds, tokenIds: r.tokens, text, finishReason: r.finishReason, stopString: r.text?.stopString };
    });
    const newTokens = rows.reduce((s, r) => s + r.tokens.length, 0);
    return { sequences, stats: { batch, promptLength: width, steps, newTokens, prefillMs, decodeMs } };
  }

  async dispose(): Promise<void> {
    while (this.rebuilding) await this.rebuilding.catch(() => undefined);
    if (this.disposed) return;
    this.disposed = true;
    // A generation still running disposes its sessions when it ends (runOn).
    if (!this.running.get(this.sessions)) await this.sessions.dispose();
  }
}

function isIdList(p: unknown): p is readonly number[] {
  return Array.isArray(p) && p.every((x) => typeof x === 'number');
}

/** [batch, extra + width] int64: `extra` leading ones (positions a method added), then each row's mask. */
function flatMask(masks: number[][], extra: number): BigInt64Array {
  const width = masks[0]!.length + extra;
  const out = new BigInt64Array(masks.length * width);
  masks.forEach((m, b) => {
    for (let t = 0; t < extra; t++) out[b * width + t] = 1n;
    for (let t = 0; t < m.length; t++) out[b * width + extra + t] = BigInt(m[t]!);
  });
  return out;
}
