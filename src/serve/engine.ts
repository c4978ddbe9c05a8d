// The serving engine: continuous batching over one base model and its LoRA/IA3 adapters. Requests
// wait in a bounded queue; at every step the requests that arrived are prefilled together (left
// padded) and join the running batch, then every running row decodes one token in ONE session run
// (each row through its own adapter: MultiAdapterModel's adapter_index). A row that finishes (stop
// token, stop string, max_tokens, cancelled, timed out) leaves the batch at once and its slot goes
// to the next request. Rows never see each other: attention is masked per row and every other op
// is row-wise, so a row's tokens equal those of the same request run alone.

import { GenerationError, type GenerationDefaults } from '../generate/config.js';
import { argmax, sampleToken } from '../generate/sampling.js';
import { DecoderSessions, type StepOutput } from '../generate/sessions.js';
import { KVCache } from '../generate/kvcache.js';
import { RowText } from '../generate/streaming.js';
import type { Tokenizer } from '../io/tokenizer.js';
import type { RuntimeOptions } from '../runtime/session.js';
import { Rng } from '../train/rng.js';
import { BASE_ADAPTER, type MultiAdapterModel } from '../tuners/multi/model.js';
import { PeftError } from '../errors.js';
import { descriptorOf } from '../models/registry.js';

/** The queue is full: the server answers 503. */
export class QueueFullError extends PeftError {
  constructor(limit: number) {
    super(`the server is at capacity (${limit} requests waiting); retry later`);
    this.name = 'QueueFullError';
  }
}

export interface EngineOptions {
  /** rows decoded together at most (default 16) */
  maxBatch?: number;
  /** requests waiting for a row at most; more get QueueFullError (default 64) */
  maxQueue?: number;
  runtime?: RuntimeOptions;
}

export interface EngineRequest {
  promptIds: number[];
  /** adapter name, or "__base__" */
  adapter: string;
  maxTokens: number;
  /** 0 = greedy */
  temperature: number;
  topP: number;
  /** sampling seed; default a random one */
  seed?: number;
  stop: string[];
  /** newly final text of this request, as soon as it is known */
  onText?: (text: string) => void;
  /** cancels the request (client gone); it leaves the batch at the next step */
  signal?: AbortSignal;
  /** ms since the epoch after which the request ends with finishReason 'timeout' */
  deadline?: number;
}

export type FinishReason = 'stop' | 'length' | 'cancelled' | 'timeout';

export interface EngineResult {
  tokenIds: number[];
  text: string;
  finishReason: FinishReason;
  promptTokens: number;
}

interface Pending {
  req: EngineRequest;
  slot: number;
  resolve: (r: EngineResult) => void;
  reject: (e: unknown) => void;
}

interface Row extends Pending {
  rng: Rng;
  tokens: number[];
  text: RowText;
  /** 1 = token, 0 = padding, aligned with the batch cache's positions */
  mask: number[];
  /** position id of the next token fed */
  pos: number;
  /** the token to feed at the next decode step */
  next: number;
}

export interface EngineStats {
  running: number;
  waiting: number;
  steps: number;
  /** largest batch decoded so far */
  peakBatch: number;
  /** requests ended because their client went away */
  cancelled: number;
  /** requests ended by their deadline */
  timedOut: number;
}

export class ServeEngine {
  private readonly queue: Pending[] = [];
  private rows: Row[] = [];
  private cache: KVCache | null = null;
  private loop: Promise<void> | null = null;
  private readonly maxBatch: number;
  private readonly maxQueue: number;
  private stepCount = 0;
  private ended = { cancelled: 0, timeout: 0 };
  private peak = 0;
  private closed = false;

  private constructor(
    readonly model: MultiAdapterModel,
    readonly sessions: DecoderSessions,
    readonly tokenizer: Tokenizer,
    readonly defaults: GenerationDefaults,
    opts: EngineOptions,
  ) {
    this.maxBatch = opts.maxBatch ?? 16;
    this.maxQueue = opts.maxQueue ?? 64;
    if (!Number.isInteger(this.maxBatch) || this.maxBatch < 1)
      throw new GenerationError(`maxBatch must be an integer >= 1, got ${this.maxBatch}`);
    if (!Number.isInteger(this.maxQueue) || this.maxQueue < 0)
      throw new GenerationError(`maxQueue must be an integer >= 0, got ${this.maxQueue}`);
  }

  /** Compiles the prefill and decode sessions once; adapters are loaded and swapped without recompiling. */
  static async create(
    model: MultiAdapterModel,
    tokenizer: Tokenizer,
    defaults: GenerationDefaults,
    opts: EngineOptions = {},
  ): Promise<ServeEngine> {
    const sessions = await DecoderSessions.create(model, opts.runtime);
    return new ServeEngine(model, sessions, tokenizer, defaults, opts);
  }

  get vocabSize(): number {
    return this.sessions.vocabSize;
  }

  stats(): EngineStats {
    return {
      running: this.rows.length,
      waiting: this.queue.length,
      steps: this.stepCount,
      peakBatch: this.peak,
      cancelled: this.ended.cancelled,
      timedOut: this.ended.timeout,
    };
  }

  /**
   * Queues a request; resolves when it finishes (also when cancelled or timed out). A request that
   * cannot be queued (bad ids, unknown adapter, full queue) throws here, synchronously.
   */
  submit(req: EngineRequest): Promise<EngineResult> {
    if (this.closed) throw new GenerationError('the server is shutting down');
    if (req.promptIds.length === 0) throw new GenerationError('the prompt is empty (no tokens)');
    for (const id of req.promptIds) {
      if (!Number.isInteger(id) || id < 0 || id >= this.vocabSize)
        throw new GenerationError(`token id ${id} is outside the vocabulary [0, ${this.vocabSize})`);
    }
    if (!Number.isInteger(req.maxTokens) || req.maxTokens < 1)
      throw new GenerationError(`maxTokens must be an integer >= 1, got ${req.maxTokens}`);
    // As Generator: no prompt beyond the model's positions; learned absolute positions (GPT-2) have
    // no row for a token fed beyond them either. Checked here, not left to the session run, whose
    // failure would end every running request.
    const base = this.model.base;
    const maxPos = base.config.maxPositionEmbeddings;
    const fed = req.promptIds.length + (descriptorOf(base).positions === 'absolute' ? req.maxTokens - 1 : 0);
    if (fed > maxPos)
      throw new GenerationError(
        `${req.promptIds.length} prompt tokens${fed > req.promptIds.length ? ` + ${req.maxTokens} new tokens` : ''} exceed the model's ${maxPos} positions (max_position_embeddings); shorten the prompt or lower maxTokens`,
      );
    if (this.queue.length >= this.maxQueue && this.rows.length + this.queue.length >= this.maxBatch)
      throw new QueueFullError(this.maxQueue);
    // The adapter is resolved now and held until the request ends: a later swap does not touch it.
    const slot = this.model.acquire(req.adapter);
    return new Promise<EngineResult>((resolve, reject) => {
      this.queue.push({ req, slot, resolve, reject });
      this.kick();
    });
  }

  private kick(): void {
    if (this.loop) return;
    this.loop = this.run()
      .catch((e: unknown) => this.failAll(e))
      .finally(() => {
        this.loop = null;
        if (this.queue.length || this.rows.length) this.kick();
      });
  }

  private failAll(e: unknown): void {
    for (const r of [...this.rows, ...this.queue]) {
      this.model.release(r.slot);
      r.reject(e);
    }
    this.rows = [];
    this.queue.length = 0;
    this.cache = null;
  }

  private async run(): Promise<void> {
    while (this.rows.length || this.queue.length) {
      // Let the HTTP side accept requests and notice disconnects between steps.
      await new Promise<void>((r) => setImmediate(r));
      this.dropEnded();
      const room = this.maxBatch - this.rows.length;
      if (room > 0 && this.queue.length) {
        const joining = this.queue.splice(0, room).filter((p) => !this.endedBeforeStart(p));
        if (joining.length) await this.prefill(joining);
      }
      if (this.rows.length) await this.decode();
    }
    this.cache = null;
  }

  /** A queued request that was cancelled or timed out before it got a row. */
  private endedBeforeStart(p: Pending): boolean {
    const reason = this.endReason(p.req);
    if (!reason) return false;
    this.ended[reason]++;
    this.model.release(p.slot);
    p.resolve({ tokenIds: [], text: '', finishReason: reason, promptTokens: p.req.promptIds.length });
    return true;
  }

  private endReason(req: EngineRequest): 'cancelled' | 'timeout' | null {
    if (req.signal?.aborted) return 'cancelled';
    if (req.deadline !== undefined && Date.now() > req.deadline) return 'timeout';
    return null;
  }

  private dropEnded(): void {
    for (let i = this.queue.length - 1; i >= 0; i--) if (this.endedBeforeStart(this.queue[i]!)) this.queue.splice(i, 1);
    const leaving = this.rows.filter((r) => this.endReason(r.req));
    for (const r of leaving) {
      const reason = this.endReason(r.req)!;
      this.ended[reason]++;
      this.finish(r, reason);
    }
    if (leaving.length) this.keep(this.rows.filter((r) => !leaving.includes(r)));
  }

  private finish(r: Row, reason: FinishReason): void {
    if (!r.text.stopped) r.text.update(r.tokens);
    const rest = r.text.flush();
    if (rest && reason !== 'cancelled') r.req.onText?.(rest);
    this.model.release(r.slot);
    r.resolve({ tokenIds: r.tokens, text: r.text.text, finishReason: reason, promptTokens: r.req.promptIds.length });
  }

  /** Picks a row's next token from its logits; true when the row is done. */
  private advance(r: Row, logits: Float32Array): boolean {
    const { temperature, topP } = r.req;
    const id = temperature > 0 ? sampleToken(logits, { temperature, topK: 0, topP }, r.rng) : argmax(logits);
    r.tokens.push(id);
    r.next = id;
    const piece = r.text.update(r.tokens);
    if (piece) r.req.onText?.(piece);
    if (this.defaults.eosTokenIds.includes(id) || r.text.stopped) {
      this.finish(r, 'stop');
      return true;
    }
    if (r.tokens.length >= r.req.maxTokens) {
      this.finish(r, 'length');
      return true;
    }
    return false;
  }

  /** Prefills the joining requests together, then merges their caches into the running batch. */
  private async prefill(joining: Pending[]): Promise<void> {
    const n = joining.length;
    const width = Math.max(...joining.map((p) => p.req.promptIds.length));
    const ids = new BigInt64Array(n * width);
    const mask = new BigInt64Array(n * width);
    const pos = new BigInt64Array(n * width);
    joining.forEach((p, b) => {
      const pad = width - p.req.promptIds.length;
      for (let t = 0; t < width; t++) {
        ids[b * width + t] = BigInt(t < pad ? 0 : p.req.promptIds[t - pad]!);
        mask[b * width + t] = t < pad ? 0n : 1n;
        pos[b * width + t] = BigInt(t < pad ? 1 : t - pad);
      }
    });
    let out: StepOutput;
    try {
      out = await this.sessions.prefill({
        batch: n,
        seq: width,
        inputIds: ids,
        attentionMask: mask,
        positionIds: pos,
        adapterIndex: BigInt64Array.from(joining.map((p) => BigInt(p.slot))),
      });
    } catch (e) {
      for (const p of joining) {
        this.model.release(p.slot);
        p.reject(e);
      }
      return;
    }
    const vocab = this.vocabSize;
    const decode = (x: readonly number[]) => this.tokenizer.decode(x, { skipSpecialTokens: true });
    const staying: { row: Row; b: number }[] = [];
    joining.forEach((p, b) => {
      const seed = p.req.seed ?? Math.floor(Math.random() * 2 ** 31);
      const pad = width - p.req.promptIds.length;
      const row: Row = {
        ...p,
        rng: Rng.fromSeed(seed),
        tokens: [],
        text: new RowText(decode, p.req.stop),
        mask: Array.from({ length: width }, (_, t) => (t < pad ? 0 : 1)),
        pos: p.req.promptIds.length,
        next: 0,
      };
      if (!this.advance(row, out.logits.subarray(b * vocab, (b + 1) * vocab))) staying.push({ row, b });
    });
    if (!staying.length) return;
    const fresh = staying.length === n ? out.cache : out.cache.selectRows(staying.map((s) => s.b));
    this.merge(
      staying.map((s) => s.row),
      fresh,
    );
  }

  /** Appends rows (with their own cache) to the running batch, left-padding the shorter side. */
  private merge(rows: Row[], cache: KVCache): void {
    if (!this.cache || this.rows.length === 0) {
      this.rows = rows;
      this.cache = cache;
      return;
    }
    const L = Math.max(this.cache.length, cache.length);
    const a = this.cache.padLeft(L);
    const b = cache.padLeft(L);
    for (const r of this.rows) r.mask = [...new Array<number>(L - this.cache.length).fill(0), ...r.mask];
    for (const r of rows) r.mask = [...new Array<number>(L - cache.length).fill(0), ...r.mask];
    this.cache = KVCache.concatRows(a, b);
    this.rows = [...this.rows, ...rows];
  }

  /** Keeps only `rows` (a subset of the running ones, in order) and trims padding no row needs. */
  private keep(rows: Row[]): void {
    if (rows.length === 0) {
      this.rows = [];
      this.cache = null;
      return;
    }
    const idx = rows.map((r) => this.rows.indexOf(r));
    const cache = this.cache!.selectRows(idx);
    let lead = 0;
    while (lead < cache.length - 1 && rows.every((r) => r.mask[lead] === 0)) lead++;
    if (lead > 0) {
      cache.dropLeading(lead);
      for (const r of rows) r.mask = r.mask.slice(lead);
    }
    this.rows = rows;
    this.cache = cache;
  }

  private async decode(): Promise<void> {
    const rows = this.rows;
    const B = rows.length;
    this.peak = Math.max(this.peak, B);
    for (const r of rows) r.mask.push(1);
    const L = rows[0]!.mask.length;
    const mask = new BigInt64Array(B * L);
    rows.forEach((r, b) => r.mask.forEach((m, t) => (mask[b * L + t] = BigInt(m))));
    const out = await this.sessions.decode(
      {
        batch: B,
        seq: 1,
        inputIds: BigInt64Array.from(rows.map((r) => BigInt(r.next))),
        attentionMask: mask,
        positionIds: BigInt64Array.from(rows.map((r) => BigInt(r.pos))),
        adapterIndex: BigInt64Array.from(rows.map((r) => BigInt(r.slot))),
      },
      this.cache!,
    );
    this.stepCount++;
    const vocab = this.vocabSize;
    const staying: Row[] = [];
    rows.forEach((r, b) => {
      r.pos++;
      if (!this.advance(r, out.logits.subarray(b * vocab, (b + 1) * vocab))) staying.push(r);
    });
    if (staying.length !== rows.length) this.keep(staying);
  }

  /** Stops taking requests, lets running ones finish, frees the sessions. */
  async close(): Promise<void> {
    this.closed = true;
    while (this.loop) await this.loop;
    await this.sessions.dispose();
  }
}

export { BASE_ADAPTER };
