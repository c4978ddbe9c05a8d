// The SIMD keep-mask generator against the same computation written plainly in JavaScript: the same
// bytes and the same trainer-RNG state afterwards, for ratios and lengths that cross its 16-byte
// steps, its chunking and the edge cases; and the kept share is 1 - ratio.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { drawKeepMask, referenceKeepMask } from '../../src/train/keepmask.js';
import { Rng } from '../../src/train/rng.js';

const same = (a: Uint8Array, b: Uint8Array) =>
  Buffer.from(a.buffer, a.byteOffset, a.length).equals(Buffer.from(b.buffer, b.byteOffset, b.length));

test('drawKeepMask draws what the plain JavaScript reference draws', () => {
  const cases: [number, number][] = [
    [0, 0.1],
    [1, 0.5],
    [15, 0.05],
    [16, 0.05],
    [17, 0.05],
    [1000, 0],
    [4097, 0.1],
    [100003, 0.3],
    [(1 << 20) + 5, 0.05],
    [(1 << 21) + 32, 0.5],
    [333, 0.999999],
  ];
  for (const [n, ratio] of cases) {
    const a = Rng.fromSeed(42, 3);
    const b = Rng.fromSeed(42, 3);
    const want = referenceKeepMask(a, n, ratio);
    const got = drawKeepMask(b, n, ratio);
    assert.equal(got.length, n);
    assert.ok(same(got, want), `n=${n} ratio=${ratio}`);
    assert.deepEqual(b.state(), a.state(), `trainer RNG state after n=${n}`);
    // the next mask continues from the advanced trainer RNG
    assert.ok(same(drawKeepMask(b, 37, ratio), referenceKeepMask(a, 37, ratio)));
  }
});

test('drawKeepMask keeps 1 - ratio, advances the trainer RNG by a fixed count, handles ratios next to 1', () => {
  for (const ratio of [0.05, 0.25, 0.5]) {
    const keep = drawKeepMask(Rng.fromSeed(7), 2_000_000, ratio);
    const share = keep.reduce((s, x) => s + x, 0) / keep.length;
    assert.ok(Math.abs(share - (1 - ratio)) < 0.002, `ratio ${ratio}: kept ${share}`);
    // no lane or position pattern: every one of the 16 byte positions keeps about the same share
    for (let s = 0; s < 16; s++) {
      let k = 0;
      for (let i = s; i < keep.length; i += 16) k += keep[i]!;
      assert.ok(Math.abs(k / (keep.length / 16) - (1 - ratio)) < 0.006, `ratio ${ratio} position ${s}`);
    }
  }
  const a = Rng.fromSeed(9);
  const b = Rng.fromSeed(9);
  drawKeepMask(a, 10, 0.1);
  drawKeepMask(b, 1_000_000, 0.1);
  assert.deepEqual(a.state(), b.state());
  assert.ok(drawKeepMask(a, 50, 1 - 2 ** -40).every((x) => x === 0));
  assert.ok(drawKeepMask(a, 50, 0).every((x) => x === 1));
  assert.throws(() => drawKeepMask(a, 4, 1), RangeError);
  assert.throws(() => drawKeepMask(a, 4, -0.1), RangeError);
});

test('drawKeepMask draws into the first n bytes of a larger buffer, the same bytes as a fresh draw', () => {
  const a = Rng.fromSeed(5);
  const b = Rng.fromSeed(5);
  const buf = new Uint8Array(5000).fill(7);
  for (const n of [1001, 4999, 17, 5000]) {
    const got = drawKeepMask(a, n, 0.2, buf);
    assert.equal(got.buffer, buf.buffer);
    assert.equal(got.byteOffset, 0);
    assert.equal(got.length, n);
    assert.ok(same(got, drawKeepMask(b, n, 0.2)), `n=${n}`);
  }
  assert.ok(drawKeepMask(a, 1001, 1 - 2 ** -40, buf).every((x) => x === 0));
  assert.throws(() => drawKeepMask(a, 5001, 0.2, buf), RangeError);
});

test('without WebAssembly (node --jitless) drawKeepMask falls back to the same bytes', async () => {
  const { execFileSync } = await import('node:child_process');
  const { fileURLToPath } = await import('node:url');
  const here = fileURLToPath(new URL('../../src/train/', import.meta.url));
  const script = `
    const { drawKeepMask, referenceKeepMask } = await import(${JSON.stringify(here + 'keepmask.js')});
    const { Rng } = await import(${JSON.stringify(here + 'rng.js')});
    if (typeof WebAssembly !== 'undefined') throw new Error('WebAssembly is available under --jitless');
    const a = Rng.fromSeed(3), b = Rng.fromSeed(3);
    const got = drawKeepMask(a, 777, 0.3, new Uint8Array(800)), want = referenceKeepMask(b, 777, 0.3);
    process.stdout.write(String(got.length === 777 && got.every((x, i) => x === want[i]) && a.state().join() === b.state().join()));`;
  const out = execFileSync(process.execPath, ['--jitless', '--input-type=module', '-e', script], { encoding: 'utf8' });
  assert.equal(out, 'true');
});
