// The fuzz harness: seeded generators feed corrupt inputs to the library's real entry points; each
// case must either succeed or throw a PeftError (a typed, user-fixable error), within a time bound,
// and a whole run must stay within a memory bound. Anything else (another exception, a slow case,
// runaway memory) fails the test with the seed and case number, so it can be replayed.

import assert from 'node:assert/strict';
import { PeftError } from '../../../src/errors.js';
import { mulberry32 } from '../../../src/nn/random.js';
import type { LooseJson } from '../../helpers/json.js';

/** mulberry32 (src/nn/random.ts) with the draws a fuzzer needs: small, seeded, reproducible. */
export class FuzzRng {
  readonly next: () => number;
  constructor(seed: number) {
    this.next = mulberry32(seed);
  }
  int(n: number): number {
    return Math.floor(this.next() * n);
  }
  bool(p = 0.5): boolean {
    return this.next() < p;
  }
  pick<T>(xs: readonly T[]): T {
    return xs[this.int(xs.length)]!;
  }
}

export interface FuzzStats {
  kind: string;
  seed: number;
  tried: number;
  /** cases that raised a PeftError */
  rejected: number;
  /** cases the library accepted (the mutation left the input valid) */
  accepted: number;
  crashes: string[];
  hangs: string[];
  slowestMs: number;
  totalMs: number;
  rssGrowthMB: number;
}

/** Values that break naive parsers: wrong types, huge and tiny numbers, empty containers. */
export const HOSTILE_VALUES: readonly unknown[] = [
  1e9,
  -1,
  0,
  1.5,
  2 ** 53,
  1e308,
  -1e308,
  '12',
  '',
  'x'.repeat(1000),
  null,
  true,
  false,
  [],
  {},
  [1, 2],
  { a: 1 },
  [[[]]],
  4294967296,
  -0.0,
];

/**
 * Runs `count` cases of `fn` (given a per-case rng and the case number), each bounded by `caseMs`,
 * the whole run by `rssMB` of resident-memory growth. Returns the figures; assertions fail with
 * the first offending cases.
 */
export async function fuzz(
  kind: string,
  seed: number,
  count: number,
  fn: (rng: FuzzRng, i: number) => Promise<unknown> | unknown,
  opts: { caseMs?: number; rssMB?: number } = {},
): Promise<FuzzStats> {
  const caseMs = opts.caseMs ?? 2000;
  const rssMB = opts.rssMB ?? 512;
  const stats: FuzzStats = {
    kind,
    seed,
    tried: 0,
    rejected: 0,
    accepted: 0,
    crashes: [],
    hangs: [],
    slowestMs: 0,
    totalMs: 0,
    rssGrowthMB: 0,
  };
  const start = performance.now();
  const rss0 = process.memoryUsage().rss;
  let peak = rss0;
  for (let i = 0; i < count; i++) {
    const rng = new FuzzRng((seed * 1_000_003 + i) >>> 0);
    const t0 = performance.now();
    stats.tried++;
    try {
      await fn(rng, i);
      stats.accepted++;
    } catch (e) {
      if (e instanceof PeftError) stats.rejected++;
      else stats.crashes.push(`${kind} seed ${seed} case ${i}: ${(e as Error)?.name}: ${String((e as Error)?.message ?? e).slice(0, 300)}`);
    }
    const ms = performance.now() - t0;
    stats.slowestMs = Math.max(stats.slowestMs, ms);
    if (ms > caseMs) stats.hangs.push(`${kind} seed ${seed} case ${i}: ${ms.toFixed(0)} ms`);
    if ((i & 15) === 0) peak = Math.max(peak, process.memoryUsage().rss);
  }
  stats.totalMs = Math.round(performance.now() - start);
  peak = Math.max(peak, process.memoryUsage().rss);
  stats.rssGrowthMB = Math.round((peak - rss0) / 1e6);
  // One line per suite; docs/RELIABILITY.md quotes these.
  console.log(
    `FUZZ ${JSON.stringify({ ...stats, crashes: stats.crashes.length, hangs: stats.hangs.length, slowestMs: Math.round(stats.slowestMs) })}`,
  );
  assert.deepEqual(stats.crashes, [], `${kind}: cases raised something other than a PeftError`);
  assert.deepEqual(stats.hangs, [], `${kind}: cases took longer than ${caseMs} ms`);
  assert.ok(stats.rssGrowthMB < rssMB, `${kind}: resident memory grew by ${stats.rssGrowthMB} MB (bound ${rssMB})`);
  assert.ok(stats.rejected > 0, `${kind}: no case was rejected, the generator is not hostile`);
  return stats;
}

/** A random path into a JSON value, and a setter for it. */
export function mutateJson(rng: FuzzRng, root: unknown, values: readonly unknown[] = HOSTILE_VALUES): unknown {
  const clone = structuredClone(root);
  const depth = 1 + rng.int(4);
  let parent: LooseJson = undefined;
  let key: string | number | undefined;
  let node: LooseJson = clone;
  for (let d = 0; d < depth; d++) {
    if (node === null || typeof node !== 'object') break;
    const keys = Array.isArray(node) ? node.map((_, i) => i) : Object.keys(node);
    if (keys.length === 0) break;
    parent = node;
    key = rng.pick(keys as (string | number)[]);
    node = node[key];
  }
  if (parent === undefined || key === undefined) return rng.pick(values);
  const op = rng.int(10);
  if (op === 0 && !Array.isArray(parent)) delete parent[key];
  else if (op === 1 && Array.isArray(parent)) parent.splice(Number(key), 1);
  else parent[key] = structuredClone(rng.pick(values));
  return clone;
}

/** Byte-level damage: truncation, flipped bytes, appended junk. */
export function damageBytes(rng: FuzzRng, bytes: Uint8Array): Uint8Array {
  const out = Uint8Array.from(bytes);
  switch (rng.int(3)) {
    case 0:
      return out.subarray(0, rng.int(out.length));
    case 1: {
      const n = 1 + rng.int(8);
      for (let k = 0; k < n; k++) out[rng.int(out.length)] = rng.int(256);
      return out;
    }
    default: {
      const junk = new Uint8Array(1 + rng.int(64)).map(() => rng.int(256));
      const r = new Uint8Array(out.length + junk.length);
      r.set(out);
      r.set(junk, out.length);
      return r;
    }
  }
}
