// Batches for the step: examples right-padded to the longest row (pad positions masked out and
// labelled -100; classification examples keep one class id per row), drawn in a seeded per-epoch
// shuffled order. The stream's position (epoch, index
// into that order) is all a checkpoint needs to continue with the very next batch.

import { type Example, IGNORE_INDEX, type TokenizedExample, isClassificationExample } from './data.js';
import { TrainError } from './errors.js';
import { Rng, permutation } from './rng.js';

/** One batch as the step session takes it: [batch, seq] int64 tensors, row-major. */
export interface Batch {
  size: number;
  seq: number;
  inputIds: BigInt64Array;
  attentionMask: BigInt64Array;
  /** [batch, seq] token labels, or with labelKind 'classes' [batch] class ids */
  labels: BigInt64Array;
  /** 'classes': one class id per row (sequence classification); absent or 'tokens': a label per position */
  labelKind?: 'tokens' | 'classes';
  /** real (unpadded) tokens */
  tokens: number;
}

/**
 * Right-pads rows to the longest one: pad id where there is no token, mask 0, label -100.
 * Classification rows give labels [batch] (their class ids) instead.
 */
export function collate(rows: readonly Example[], padId: number): Batch {
  if (rows.length === 0) throw new Error('collate needs at least one example');
  const classes = rows.filter(isClassificationExample);
  if (classes.length === rows.length) return collateClasses(classes, padId);
  if (classes.length > 0)
    throw new TrainError('a batch mixes classification examples ({"text","label"}) with language-modelling ones; use one kind per run');
  return collateTokens(rows as readonly TokenizedExample[], padId);
}

function collateTokens(rows: readonly TokenizedExample[], padId: number): Batch {
  const seq = rows.reduce((m, r) => Math.max(m, r.inputIds.length), 0);
  const n = rows.length * seq;
  const inputIds = new BigInt64Array(n).fill(BigInt(padId));
  const attentionMask = new BigInt64Array(n);
  const labels = new BigInt64Array(n).fill(BigInt(IGNORE_INDEX));
  let tokens = 0;
  rows.forEach((r, b) => {
    const off = b * seq;
    for (let i = 0; i < r.inputIds.length; i++) {
      inputIds[off + i] = BigInt(r.inputIds[i]!);
      attentionMask[off + i] = 1n;
      labels[off + i] = BigInt(r.labels[i]!);
    }
    tokens += r.inputIds.length;
  });
  return { size: rows.length, seq, inputIds, attentionMask, labels, tokens };
}

function collateClasses(rows: readonly { inputIds: number[]; label: number }[], padId: number): Batch {
  const seq = rows.reduce((m, r) => Math.max(m, r.inputIds.length), 0);
  const inputIds = new BigInt64Array(rows.length * seq).fill(BigInt(padId));
  const attentionMask = new BigInt64Array(rows.length * seq);
  let tokens = 0;
  rows.forEach((r, b) => {
    for (let i = 0; i < r.inputIds.length; i++) {
      inputIds[b * seq + i] = BigInt(r.inputIds[i]!);
      attentionMask[b * seq + i] = 1n;
    }
    tokens += r.inputIds.length;
  });
  const labels = BigInt64Array.from(rows, (r) => BigInt(r.label));
  return { size: rows.length, seq, inputIds, attentionMask, labels, labelKind: 'classes', tokens };
}

/** Where a batch stream stands: the epoch, and how many examples of its order were consumed. */
export interface DataPosition {
  epoch: number;
  index: number;
}

/**
 * An endless stream of training batches: epoch e visits every example once in the order of a
 * permutation seeded by (seed, e); the last batch of an epoch may be smaller.
 */
export class BatchStream<T = Example> {
  private order: Uint32Array;
  private pos: DataPosition;

  /** `collateRows` makes a batch of `batchSize` items (default: collate, for examples; preference pairs give two rows each) */
  constructor(
    private readonly examples: readonly T[],
    private readonly batchSize: number,
    private readonly padId: number,
    private readonly seed: number,
    private readonly shuffle = true,
    start: DataPosition = { epoch: 0, index: 0 },
    private readonly collateRows: (rows: readonly T[], padId: number) => Batch = collate as unknown as (
      rows: readonly T[],
      padId: number,
    ) => Batch,
  ) {
    if (examples.length === 0) throw new Error('a batch stream needs examples');
    if (!(Number.isInteger(batchSize) && batchSize > 0)) throw new Error(`batch size must be a positive integer, got ${batchSize}`);
    if (start.index < 0 || start.index > examples.length)
      throw new Error(`data position ${start.index} is outside an epoch of ${examples.length} examples`);
    this.pos = { ...start };
    this.order = this.orderOf(start.epoch);
  }

  get batchesPerEpoch(): number {
    return Math.ceil(this.examples.length / this.batchSize);
  }

  get position(): DataPosition {
    return { ...this.pos };
  }

  /** Fractional epochs consumed, as transformers logs "epoch". */
  get epochProgress(): number {
    return this.pos.epoch + this.pos.index / this.examples.length;
  }

  private orderOf(epoch: number): Uint32Array {
    if (!this.shuffle) return Uint32Array.from(this.examples.keys());
    return permutation(this.examples.length, Rng.fromSeed(this.seed, 1000 + epoch));
  }

  next(): Batch {
    if (this.pos.index >= this.examples.length) {
      this.pos = { epoch: this.pos.epoch + 1, index: 0 };
      this.order = this.orderOf(this.pos.epoch);
    }
    const end = Math.min(this.pos.index + this.batchSize, this.examples.length);
    const rows: T[] = [];
    for (let i = this.pos.index; i < end; i++) rows.push(this.examples[this.order[i]!]!);
    this.pos.index = end;
    return this.collateRows(rows, this.padId);
  }
}

/** Evaluation batches: every example once, in file order. */
export function* evalBatches(examples: readonly Example[], batchSize: number, padId: number): Generator<Batch> {
  for (let s = 0; s < examples.length; s += batchSize) yield collate(examples.slice(s, s + batchSize), padId);
}
