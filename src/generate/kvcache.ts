// The key/value cache of cached decoding, held in JavaScript-owned buffers that ONNX Runtime reads
// in place. Each layer's keys (and values) live in one Float32Array laid out position-major,
// [capacity, batch, kvHeads, headDim]: the first `length` positions are contiguous for any batch,
// so a decode step feeds them as a zero-copy view [length, batch, kvHeads, headDim] (the decode
// graph Transposes it to [batch, kvHeads, length, headDim]) and gets back only the new positions,
// written in with one `.set` per buffer. Capacity doubles when full (one copy per doubling), up to
// the model's positions (`maxPositions`; beyond it, for rotary models that extrapolate or virtual
// tokens, it doubles on). Row surgery (serve's continuous batching) copies only when rows join or
// leave, into buffers with room to grow (the source's capacity, at most twice the positions held),
// so the next decode step does not copy again.

import type { HostTensor } from '../runtime/session.js';
import { GenerationError } from './config.js';

/** The smallest capacity a cache is given. */
const MIN_CAPACITY = 16;

/** Room for `needed` positions: double `current` (at least MIN_CAPACITY), capped at `limit` while `needed` fits under it. */
function grownCapacity(needed: number, current: number, limit: number): number {
  const doubled = Math.max(needed, 2 * current, MIN_CAPACITY);
  return needed <= limit ? Math.min(doubled, limit) : doubled;
}

export class KVCache {
  private constructor(
    /** per layer: keys [capacity, batch, kvHeads, headDim], positions [0, length) valid */
    private keyBuffers: Float32Array[],
    private valueBuffers: Float32Array[],
    /** positions held */
    public length: number,
    readonly batch: number,
    readonly kvHeads: number,
    readonly headDim: number,
    /** positions the model has (max_position_embeddings, plus virtual tokens): growth stops there while they suffice */
    readonly maxPositions: number,
  ) {}

  /** An empty cache of `layers` layers with room for `capacity` positions (growth capped at `maxPositions`). */
  static empty(
    layers: number,
    batch: number,
    kvHeads: number,
    headDim: number,
    capacity = MIN_CAPACITY,
    maxPositions = Number.POSITIVE_INFINITY,
  ): KVCache {
    for (const [what, v] of [
      ['layers', layers],
      ['batch', batch],
      ['kvHeads', kvHeads],
      ['headDim', headDim],
    ] as const) {
      if (!Number.isInteger(v) || v < 1) throw new GenerationError(`a KV cache needs ${what} >= 1 (an integer), got ${v}`);
    }
    if (!Number.isInteger(capacity) || capacity < 0)
      throw new GenerationError(`a KV cache capacity must be an integer >= 0, got ${capacity}`);
    const n = capacity * batch * kvHeads * headDim;
    const make = (): Float32Array[] => Array.from({ length: layers }, () => new Float32Array(n));
    return new KVCache(make(), make(), 0, batch, kvHeads, headDim, maxPositions);
  }

  /** An empty cache shaped like this one with `batch` rows and room for `capacity` positions. */
  private like(batch: number, capacity: number): KVCache {
    return KVCache.empty(this.numLayers, batch, this.kvHeads, this.headDim, capacity, this.maxPositions);
  }

  get numLayers(): number {
    return this.keyBuffers.length;
  }

  /** Positions the buffers hold room for. */
  get capacity(): number {
    return this.keyBuffers[0]!.length / this.stride;
  }

  /** Floats per position (all rows). */
  get stride(): number {
    return this.batch * this.kvHeads * this.headDim;
  }

  /** Layer i's keys and values over the held positions, [length, batch, kvHeads, headDim], no copy. */
  view(i: number): { key: HostTensor; value: HostTensor } {
    const shape = [this.length, this.batch, this.kvHeads, this.headDim];
    const end = this.length * this.stride;
    return {
      key: { dtype: 'float32', shape, data: this.keyBuffers[i]!.subarray(0, end) },
      value: { dtype: 'float32', shape, data: this.valueBuffers[i]!.subarray(0, end) },
    };
  }

  /** Makes room for `positions` positions in all (a doubling copy when they do not fit). */
  reserve(positions: number): void {
    if (positions <= this.capacity) return;
    const cap = grownCapacity(positions, this.capacity, this.maxPositions);
    const used = this.length * this.stride;
    const grow = (b: Float32Array): Float32Array => {
      const out = new Float32Array(cap * this.stride);
      out.set(b.subarray(0, used));
      return out;
    };
    this.keyBuffers = this.keyBuffers.map(grow);
    this.valueBuffers = this.valueBuffers.map(grow);
  }

  /**
   * Appends new positions: per layer, keys and values position-major [n, batch, kvHeads, headDim]
   * (what the sessions return), all layers the same n.
   */
  append(keys: readonly Float32Array[], values: readonly Float32Array[]): void {
    const n = keys[0]!.length / this.stride;
    const ok = (a: readonly Float32Array[]) => a.length === this.numLayers && a.every((x) => x.length === n * this.stride);
    if (!Number.isInteger(n) || !ok(keys) || !ok(values))
      throw new GenerationError(
        `KVCache.append takes ${this.numLayers} layers of keys and of values, each positions x ${this.batch} rows x ${this.kvHeads} heads x ${this.headDim}, all the same size`,
      );
    this.reserve(this.length + n);
    const at = this.length * this.stride;
    keys.forEach((k, i) => this.keyBuffers[i]!.set(k, at));
    values.forEach((v, i) => this.valueBuffers[i]!.set(v, at));
    this.length += n;
  }

  /** Rows `idx` (in that order) of every buffer, in a new cache. */
  selectRows(idx: readonly number[]): KVCache {
    for (const r of idx)
      if (!Number.isInteger(r) || r < 0 || r >= this.batch) throw new GenerationError(`row ${r} is not in the cache's ${this.batch} rows`);
    const out = this.like(idx.length, this.surgeryCapacity(this.length));
    out.length = this.length;
    const row = this.kvHeads * this.headDim;
    // Runs of consecutive source rows move with one .set per position.
    const runs: { from: number; to: number; count: number }[] = [];
    idx.forEach((r, k) => {
      const last = runs[runs.length - 1];
      if (last && last.from + last.count === r) last.count++;
      else runs.push({ from: r, to: k, count: 1 });
    });
    const copy = (src: Float32Array, dst: Float32Array): void => {
      for (let t = 0; t < this.length; t++) {
        for (const { from, to, count } of runs) {
          const s = (t * this.batch + from) * row;
          dst.set(src.subarray(s, s + count * row), (t * idx.length + to) * row);
        }
      }
    };
    this.keyBuffers.forEach((b, i) => copy(b, out.keyBuffers[i]!));
    this.valueBuffers.forEach((b, i) => copy(b, out.valueBuffers[i]!));
    return out;
  }

  /** A new cache of `length` positions: zeros in front, then this cache's positions. */
  padLeft(length: number): KVCache {
    if (length === this.length) return this;
    if (!Number.isInteger(length) || length < this.length)
      throw new GenerationError(`cannot pad a cache of ${this.length} positions to ${length}`);
    const out = this.like(this.batch, this.surgeryCapacity(length));
    out.length = length;
    const used = this.length * this.stride;
    const at = (length - this.length) * this.stride;
    this.keyBuffers.forEach((b, i) => out.keyBuffers[i]!.set(b.subarray(0, used), at));
    this.valueBuffers.forEach((b, i) => out.valueBuffers[i]!.set(b.subarray(0, used), at));
    return out;
  }

  /** Drops the first n positions, in place. */
  dropLeading(n: number): void {
    if (!Number.isInteger(n) || n < 0 || n > this.length)
      throw new GenerationError(`cannot drop ${n} of a cache's ${this.length} positions`);
    const from = n * this.stride;
    const end = this.length * this.stride;
    for (const b of [...this.keyBuffers, ...this.valueBuffers]) b.copyWithin(0, from, end);
    this.length -= n;
  }

  /**
   * The capacity of a cache rebuilt from this one to hold `length` positions: room to grow (so the
   * decode steps after a join or leave append without a doubling copy), this one's capacity at
   * most unless `length` needs more, and no more than a doubling of `length` (a batch whose long
   * rows left gives the memory back).
   */
  private surgeryCapacity(length: number): number {
    const grown = grownCapacity(length + 1, length, this.maxPositions);
    return this.capacity > length ? Math.min(this.capacity, grown) : grown;
  }

  /** The rows of a, then the rows of b, in a new cache (same length, heads and head size). */
  static concatRows(a: KVCache, b: KVCache): KVCache {
    if (a.length !== b.length || a.numLayers !== b.numLayers || a.kvHeads !== b.kvHeads || a.headDim !== b.headDim)
      throw new GenerationError(`cannot join caches of ${a.length} and ${b.length} positions (pad the shorter one first)`);
    const out = a.like(a.batch + b.batch, Math.max(a.surgeryCapacity(a.length), b.surgeryCapacity(b.length)));
    out.length = a.length;
    const [sa, sb] = [a.stride, b.stride];
    const copy = (x: Float32Array, y: Float32Array, dst: Float32Array): void => {
      for (let t = 0; t < a.length; t++) {
        dst.set(x.subarray(t * sa, (t + 1) * sa), t * (sa + sb));
        dst.set(y.subarray(t * sb, (t + 1) * sb), t * (sa + sb) + sa);
      }
    };
    a.keyBuffers.forEach((k, i) => copy(k, b.keyBuffers[i]!, out.keyBuffers[i]!));
    a.valueBuffers.forEach((v, i) => copy(v, b.valueBuffers[i]!, out.valueBuffers[i]!));
    return out;
  }
}
