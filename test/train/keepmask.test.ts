// The bulk keep-mask generator against the per-element loop it replaces: the same bytes and the
// same generator state afterwards, for ratios and lengths that cross its chunking and edge cases.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { drawKeepMask } from '../../src/train/keepmask.js';
import { Rng } from '../../src/train/rng.js';

function loopMask(rng: Rng, n: number, ratio: number): Uint8Array {
  const keep = new Uint8Array(n);
  for (let i = 0; i < n; i++) keep[i] = rng.nextFloat() >= ratio ? 1 : 0;
  return keep;
}

test('drawKeepMask draws exactly what nextFloat() >= ratio draws, in order', () => {
  const cases: [number, number][] = [[0, 0.1], [1, 0.5], [7, 0.05], [1000, 0], [4097, 0.1], [100003, 0.3], [(1 << 24) + 5, 0.05], [333, 0.999999]];
  for (const [n, ratio] of cases) {
    const a = Rng.fromSeed(42, 3);
    const b = Rng.fromSeed(42, 3);
    const want = loopMask(a, n, ratio);
    const got = drawKeepMask(b, n, ratio);
    assert.equal(got.length, n);
    assert.ok(Buffer.from(got.buffer, got.byteOffset, n).equals(Buffer.from(want.buffer, want.byteOffset, n)), `n=${n} ratio=${ratio}`);
    assert.deepEqual(b.state(), a.state(), `state after n=${n}`);
    // consecutive masks continue the same stream
    assert.deepEqual(drawKeepMask(b, 17, ratio), loopMask(a, 17, ratio));
  }
});

test('drawKeepMask keeps about 1 - ratio and handles ratios next to 1', () => {
  const keep = drawKeepMask(Rng.fromSeed(7), 1_000_000, 0.25);
  const share = keep.reduce((s, x) => s + x, 0) / keep.length;
  assert.ok(Math.abs(share - 0.75) < 0.003, `kept ${share}`);
  const a = Rng.fromSeed(9);
  const b = Rng.fromSeed(9);
  const almostOne = 1 - 2 ** -40;
  assert.deepEqual(drawKeepMask(a, 50, almostOne), loopMask(b, 50, almostOne));
  assert.deepEqual(a.state(), b.state());
  assert.throws(() => drawKeepMask(a, 4, 1), RangeError);
  assert.throws(() => drawKeepMask(a, 4, -0.1), RangeError);
});
