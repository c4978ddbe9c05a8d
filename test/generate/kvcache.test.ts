// KVCache: appends grow the capacity by doubling and keep every position; the row surgery of
// continuous batching (select, pad, drop, join) moves each (position, row) slab where it belongs.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { KVCache } from '../../src/generate/index.js';

const H = 2;
const D = 3;
const W = H * D;

/** The value stored for (layer, key or value, position, row, element): unique and recognisable. */
const tag = (layer: number, isValue: number, pos: number, row: number, e: number): number =>
  layer * 100000 + isValue * 50000 + pos * 100 + row * 10 + e / 10;

/** Position-major [n, batch, H, D] blocks of layer `layer` for positions from `start`, rows `rows`. */
function block(layer: number, isValue: number, start: number, n: number, rows: readonly number[]): Float32Array {
  const out = new Float32Array(n * rows.length * W);
  for (let t = 0; t < n; t++)
    rows.forEach((r, b) => {
      for (let e = 0; e < W; e++) out[(t * rows.length + b) * W + e] = tag(layer, isValue, start + t, r, e);
    });
  return out;
}

function filled(layers: number, rows: readonly number[], n: number): KVCache {
  const c = KVCache.empty(layers, rows.length, H, D);
  const step = (start: number, k: number) =>
    c.append(
      Array.from({ length: layers }, (_, l) => block(l, 0, start, k, rows)),
      Array.from({ length: layers }, (_, l) => block(l, 1, start, k, rows)),
    );
  // appended in pieces, as a prefill and decode steps do
  step(0, Math.min(n, 5));
  for (let t = 5; t < n; t++) step(t, 1);
  return c;
}

/** Checks every held slab: expected(pos, row index) gives [source position, source row] or null for zeros. */
function check(c: KVCache, expected: (pos: number, b: number) => [number, number] | null): void {
  for (let l = 0; l < c.numLayers; l++) {
    const { key, value } = c.view(l);
    assert.deepEqual(key.shape, [c.length, c.batch, H, D]);
    for (const [isValue, t] of [
      [0, key],
      [1, value],
    ] as const) {
      const data = t.data as Float32Array;
      for (let p = 0; p < c.length; p++)
        for (let b = 0; b < c.batch; b++) {
          const src = expected(p, b);
          for (let e = 0; e < W; e++) {
            const want = src ? Math.fround(tag(l, isValue, src[0], src[1], e)) : 0;
            assert.equal(data[(p * c.batch + b) * W + e], want, `layer ${l} ${isValue ? 'value' : 'key'} pos ${p} row ${b}`);
          }
        }
    }
  }
}

test('append keeps every position across capacity doublings (16 -> 32 -> 64)', () => {
  const c = filled(2, [0, 1, 2], 40);
  assert.equal(c.length, 40);
  assert.equal(c.capacity, 64);
  check(c, (p, b) => [p, b]);
  // views share the buffer: no copy
  assert.equal(c.view(0).key.data.buffer, c.view(0).key.data.buffer);
});

test('selectRows, padLeft, dropLeading and concatRows move each (position, row) slab', () => {
  const c = filled(2, [0, 1, 2, 3], 9);
  const picked = c.selectRows([3, 0, 1]);
  check(picked, (p, b) => [p, [3, 0, 1][b]!]);
  const padded = picked.padLeft(12);
  assert.equal(padded.length, 12);
  check(padded, (p, b) => (p < 3 ? null : [p - 3, [3, 0, 1][b]!]));
  padded.dropLeading(2);
  check(padded, (p, b) => (p < 1 ? null : [p - 1, [3, 0, 1][b]!]));
  const other = filled(2, [7, 8], 10);
  const joined = KVCache.concatRows(padded, other);
  assert.equal(joined.batch, 5);
  check(joined, (p, b) => (b < 3 ? (p < 1 ? null : [p - 1, [3, 0, 1][b]!]) : [p, [7, 8][b - 3]!]));
  // decoding on after surgery appends at the end
  joined.append(
    [0, 1].map((l) => block(l, 0, 10, 1, [0, 1, 2, 3, 4])),
    [0, 1].map((l) => block(l, 1, 10, 1, [0, 1, 2, 3, 4])),
  );
  assert.equal(joined.length, 11);
  check(joined, (p, b) => (p === 10 ? [10, b] : b < 3 ? (p < 1 ? null : [p - 1, [3, 0, 1][b]!]) : [p, [7, 8][b - 3]!]));
  assert.throws(() => KVCache.concatRows(joined, other), /pad the shorter one first/);
});

test("growth doubles up to the model's positions, then on beyond them; surgery keeps the capacity (no copy at the next step)", () => {
  const c = KVCache.empty(1, 2, H, D, 0, 40);
  const add = (n: number) => c.append([block(0, 0, c.length, n, [0, 1])], [block(0, 1, c.length, n, [0, 1])]);
  add(30);
  assert.equal(c.capacity, 30);
  add(1);
  assert.equal(c.capacity, 40, 'doubling stops at maxPositions (was 60)');
  add(9);
  assert.equal(c.capacity, 40);
  add(1);
  assert.equal(c.capacity, 80, 'past maxPositions (virtual tokens, rotary extrapolation) it doubles on');
  check(c, (p, b) => [p, b]);
  // Rows leaving, padding, joining: the new cache has the capacity the old one had, so the decode
  // steps after it append in place (they doubled right away when surgery gave length + 1).
  const picked = c.selectRows([1]);
  assert.equal(picked.capacity, 80);
  assert.equal(picked.maxPositions, 40);
  const buffer = picked.view(0).key.data.buffer;
  picked.append([block(0, 0, 41, 2, [1])], [block(0, 1, 41, 2, [1])]);
  assert.equal(picked.view(0).key.data.buffer, buffer, 'appended in place');
  assert.equal(KVCache.concatRows(picked, picked).capacity, 80);
  assert.equal(KVCache.empty(1, 1, H, D, 0, 40).padLeft(10).capacity, 20);
  // a batch whose long rows left gives memory back: at most twice the positions it still holds
  const big = filled(1, [0, 1], 40);
  assert.equal(big.capacity, 64);
  big.dropLeading(35);
  const small = big.selectRows([0]);
  assert.equal(small.capacity, 16);
  check(small, (p) => [p + 35, 0]);
});

test('bad arguments are typed errors', () => {
  const c = filled(2, [0, 1], 6);
  assert.throws(() => c.append([block(0, 0, 6, 1, [0, 1])], [block(0, 1, 6, 1, [0, 1])]), { name: 'GenerationError' });
  assert.throws(() => c.append([new Float32Array(5), new Float32Array(5)], [new Float32Array(5), new Float32Array(5)]), {
    name: 'GenerationError',
  });
  assert.throws(() => c.selectRows([0, 2]), { name: 'GenerationError', message: /row 2 is not in the cache's 2 rows/ });
  assert.throws(() => c.padLeft(3), { name: 'GenerationError' });
  assert.throws(() => c.dropLeading(7), { name: 'GenerationError' });
  assert.throws(() => KVCache.empty(2, 0, H, D), { name: 'GenerationError' });
  assert.equal(c.length, 6, 'a refused call leaves the cache as it was');
  check(c, (p, b) => [p, b]);
});
