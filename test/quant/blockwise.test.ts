// bitsandbytes NF4 reference (fixtures/nf4): packed bytes, absmax and the nested quantization are
// byte-identical, dequantized values match to 1e-6 (in fact exactly), the serialized layout and its
// quant_state JSON match byte for byte; the lookup-table fast path agrees with the exact rules.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { toFloat32, type RawTensor } from '../../src/io/safetensors.js';
import {
  DYNAMIC_MAP_SIGNED,
  FP4_CODE,
  NF4_CODE,
  LUT_MIXED,
  LUT_SCALE,
  nf4Midpoint,
  fp4Midpoint,
  rounderFor,
} from '../../src/quant/codes.js';
import { blockAbsmax, dequantize4bit, quantize4bit, torchMeanF32 } from '../../src/quant/blockwise.js';
import { decodeQuantState, fromBnbTensors, toBnbTensors } from '../../src/quant/bnb.js';
import { QuantizationError } from '../../src/quant/errors.js';
import { maxAbsDiff, readTensors } from '../helpers/fixtures.js';

const ref = await readTensors('nf4', 'nf4_reference.safetensors');
const t = (k: string): RawTensor => ref.get(k) ?? assert.fail(`fixture lacks ${k}`);
const f32 = (k: string): Float32Array => toFloat32(t(k));
const bits = (a: Float32Array): Uint32Array => new Uint32Array(a.buffer, a.byteOffset, a.length);
const sameBits = (a: Float32Array, b: Float32Array, what: string) => assert.deepEqual(bits(a), bits(b), what);

test('code tables equal bitsandbytes (NF4 codebook, signed dynamic map)', () => {
  sameBits(NF4_CODE, f32('nf4_codebook'), 'nf4');
  sameBits(DYNAMIC_MAP_SIGNED, f32('dynamic_map_signed'), 'dynamic map');
  for (let i = 0; i < 4; i++) {
    sameBits(NF4_CODE, f32(`m${i}.serialized.quant_map`), `m${i} quant_map`);
    sameBits(DYNAMIC_MAP_SIGNED, f32(`m${i}.serialized.nested_quant_map`), `m${i} nested_quant_map`);
  }
  assert.equal(FP4_CODE[3], 1);
  assert.equal(FP4_CODE[1], Math.fround(0.0625 / 12));
});

for (let i = 0; i < 4; i++) {
  test(`m${i}: single NF4 quantization is byte-identical, dequantization exact`, () => {
    const w = f32(`m${i}.weight`);
    const shape = t(`m${i}.weight`).shape;
    const q = quantize4bit(w, shape, { type: 'nf4', blockSize: 64, doubleQuant: false });
    assert.deepEqual(q.packed, t(`m${i}.packed`).data);
    assert.equal(q.absmax.kind, 'plain');
    sameBits(blockAbsmax(q.absmax), f32(`m${i}.absmax`), 'absmax');
    const dq = dequantize4bit(q);
    assert.ok(maxAbsDiff(dq, f32(`m${i}.dequant`)) <= 1e-6);
    sameBits(dq, f32(`m${i}.dequant`), 'dequant (bit-exact)');
    // the CUDA decision tree gives the same codes on this data (no value sits on a midpoint)
    const qm = quantize4bit(w, shape, { doubleQuant: false, rounding: 'midpoint' });
    assert.deepEqual(qm.packed, q.packed);
  });

  test(`m${i}: double quantization (nested absmax, offset) is byte-identical`, () => {
    const w = f32(`m${i}.weight`);
    const q = quantize4bit(w, t(`m${i}.weight`).shape, { type: 'nf4', blockSize: 64, doubleQuant: true });
    assert.deepEqual(q.packed, t(`m${i}.packed`).data);
    const a = q.absmax;
    assert.equal(a.kind, 'double');
    if (a.kind !== 'double') return;
    assert.deepEqual(a.codes, t(`m${i}.dq.absmax_quantized`).data);
    sameBits(a.nestedAbsmax, f32(`m${i}.dq.nested_absmax`), 'nested absmax');
    assert.equal(a.offset, f32(`m${i}.dq.offset`)[0]);
    assert.equal(torchMeanF32(f32(`m${i}.absmax`)), f32(`m${i}.dq.offset`)[0]);
    sameBits(blockAbsmax(a), f32(`m${i}.dq.absmax_dequant`), 'absmax dequant');
    const dq = dequantize4bit(q);
    assert.ok(maxAbsDiff(dq, f32(`m${i}.dq.dequant`)) <= 1e-6);
    sameBits(dq, f32(`m${i}.dq.dequant`), 'dequant (bit-exact)');
  });

  test(`m${i}: bitsandbytes serialization (as_dict(packed=True)) matches byte for byte and reads back`, async () => {
    const q = quantize4bit(f32(`m${i}.weight`), t(`m${i}.weight`).shape);
    const tensors = toBnbTensors('w', q);
    const expect: Record<string, string> = {
      w: `m${i}.packed`,
      'w.absmax': `m${i}.serialized.absmax`,
      'w.quant_map': `m${i}.serialized.quant_map`,
      'w.nested_absmax': `m${i}.serialized.nested_absmax`,
      'w.nested_quant_map': `m${i}.serialized.nested_quant_map`,
      'w.quant_state.bitsandbytes__nf4': `m${i}.serialized.quant_state.bitsandbytes__nf4`,
    };
    assert.deepEqual([...tensors.keys()].sort(), Object.keys(expect).sort());
    for (const [k, fk] of Object.entries(expect)) {
      const mine = tensors.get(k)!;
      assert.equal(mine.dtype, t(fk).dtype, k);
      assert.deepEqual(mine.shape, t(fk).shape, k);
      assert.deepEqual(mine.data, t(fk).data, k);
    }
    const back = await fromBnbTensors('w', async (k) => tensors.get(k));
    assert.deepEqual(dequantize4bit(back), dequantize4bit(q));
    const st = decodeQuantState(t(`m${i}.serialized.quant_state.bitsandbytes__nf4`).data, 'fixture');
    assert.deepEqual(st.shape, t(`m${i}.weight`).shape);
  });
}

test('lookup-table rounding equals the exact rules, also right at and next to every boundary', () => {
  const probe: number[] = [];
  const near = (x: number) => {
    const f = new Float32Array([x]);
    const u = new Int32Array(f.buffer);
    const base = u[0]!;
    for (let d = -4; d <= 4; d++) {
      u[0] = base + d;
      if (Math.abs(f[0]!) <= 1) probe.push(f[0]!);
    }
  };
  for (let k = 0; k <= 2 * LUT_SCALE; k++) near(k / LUT_SCALE - 1);
  for (const c of [...NF4_CODE, ...FP4_CODE]) near(c);
  for (let a = 0; a < 16; a++) {
    for (let b = 0; b < 16; b++) {
      near((NF4_CODE[a]! + NF4_CODE[b]!) / 2);
      near((FP4_CODE[a]! + FP4_CODE[b]!) / 2);
    }
  }
  for (const x of [0.8614784181118011, 0.03979014977812767, 0.00260417, 0.0859375, 0.8333333, 0.583333]) {
    near(x);
    near(-x);
  }
  probe.push(0, -0, 1, -1, 1e-30, -1e-30);
  for (let i = 0; i < 20000; i++) probe.push(Math.fround(Math.random() * 2 - 1));
  for (const type of ['nf4', 'fp4'] as const) {
    for (const rounding of ['argmin', 'midpoint'] as const) {
      const r = rounderFor(type, rounding);
      let mixed = 0;
      for (const x of probe) {
        const c = r.lut[((x + 1) * LUT_SCALE) | 0]!;
        if (c === LUT_MIXED) mixed++;
        else assert.equal(c, r.exact(x), `${type}/${rounding} at ${x}`);
      }
      assert.ok(mixed < probe.length / 4, 'most probes resolve from the table');
    }
  }
});

test('quantize4bit (fast path) packs exactly what the reference rule gives, values on boundaries included', () => {
  // blocks whose absmax is 1 or 0.75 put values exactly on, and one ulp around, every decision point
  const vals: number[] = [];
  const around = (x: number) => {
    if (x === 0) return void vals.push(0, -0, 1e-45, -1e-45, 3e-45, -3e-45);
    const f = new Float32Array([x]);
    const u = new Int32Array(f.buffer);
    const b = u[0]!;
    for (let d = -2; d <= 2; d++) {
      u[0] = b + d;
      vals.push(f[0]!);
    }
  };
  for (const t of [...NF4_CODE, ...FP4_CODE]) for (const v of [...NF4_CODE, ...FP4_CODE]) around((t + v) / 2);
  for (let i = 0; i < 3000; i++) vals.push(Math.fround(Math.random() * 2 - 1));
  const blocks: number[] = [];
  for (let i = 0; i < vals.length; i += 63) {
    const scale = (i / 63) % 2 ? 1 : 0.75;
    blocks.push(scale, ...vals.slice(i, i + 63).map((v) => Math.fround(Math.max(-1, Math.min(1, v)) * scale)));
  }
  const data = Float32Array.from(blocks.slice(0, blocks.length - (blocks.length % 2) - 1));
  for (const type of ['nf4', 'fp4'] as const) {
    for (const rounding of ['argmin', 'midpoint'] as const) {
      const q = quantize4bit(data, [data.length], { type, rounding, doubleQuant: false });
      const exact = rounderFor(type, rounding).exact;
      const absmax = blockAbsmax(q.absmax);
      for (let i = 0; i < data.length; i++) {
        const inv = Math.fround(1 / absmax[Math.floor(i / 64)]!);
        const s = Math.max(-1, Math.min(1, Math.fround(data[i]! * inv)));
        const nib = i % 2 ? q.packed[i >> 1]! & 15 : q.packed[i >> 1]! >> 4;
        assert.equal(nib, exact(s), `${type}/${rounding} element ${i} (${data[i]})`);
      }
      assert.equal(q.packed[q.packed.length - 1]! & 15, exact(0), 'padding');
    }
  }
});

test('rounding rules: argmin ties go to the lowest index, the CUDA trees compare with ">"', () => {
  const argmin = rounderFor('nf4', 'argmin').exact;
  for (let j = 0; j < 16; j++) assert.equal(argmin(NF4_CODE[j]!), j);
  // at a float32 threshold the tree stays below it
  assert.equal(nf4Midpoint(Math.fround(0.8614784181118011)), 14);
  assert.equal(nf4Midpoint(1), 15);
  assert.equal(nf4Midpoint(NaN), 0);
  assert.equal(fp4Midpoint(-0.001), 0b1000);
  assert.equal(fp4Midpoint(-0), 0);
  assert.equal(fp4Midpoint(1), 0b0011);
  assert.equal(fp4Midpoint(-0.5), 0b1101);
  // FP4 argmin (bitsandbytes CPU table): 0 and the second 0 tie, index 0 wins
  assert.equal(rounderFor('fp4', 'argmin').exact(-0.001), 0);
});

test('FP4: every code decodes to its table value, round trip error is within half a step', () => {
  const n = 64 * 50 + 7;
  const w = new Float32Array(n);
  for (let i = 0; i < n; i++) w[i] = Math.sin(i * 12.9898) * 0.3;
  for (const rounding of ['argmin', 'midpoint'] as const) {
    const q = quantize4bit(w, [n], { type: 'fp4', rounding });
    const dq = dequantize4bit(q);
    const absmax = blockAbsmax(q.absmax);
    for (let i = 0; i < n; i++) {
      const a = absmax[Math.floor(i / 64)]!;
      // widest FP4 gap is 1 - 2/3 (and 2/3 - 1/2); the double-quantized absmax adds a little
      assert.ok(Math.abs(dq[i]! - w[i]!) <= a * 0.17 + 1e-3, `${rounding} ${i}: ${dq[i]} vs ${w[i]}`);
    }
  }
});

test('edge cases: all-zero blocks, odd sizes, partial blocks, invalid input', () => {
  const w = new Float32Array(131);
  for (let i = 70; i < 131; i++) w[i] = (i % 7) - 3;
  const q = quantize4bit(w, [131], { doubleQuant: false });
  assert.equal(q.packed.length, 66);
  assert.equal(q.packed[0], 0x00, 'all-zero block: code 0, as both bitsandbytes paths give');
  assert.equal(q.packed[65]! & 15, 7, 'padding nibble codes 0.0');
  const dq = dequantize4bit(q);
  for (let i = 0; i < 64; i++) assert.equal(Math.abs(dq[i]!), 0);
  for (let i = 64; i < 131; i++) assert.ok(Math.abs(dq[i]! - w[i]!) < 0.5);
  assert.throws(() => quantize4bit(Float32Array.from([1, NaN]), [2]), QuantizationError);
  assert.throws(() => quantize4bit(Float32Array.from([1, Infinity]), [2]), QuantizationError);
  assert.throws(() => quantize4bit(new Float32Array(64), [64], { blockSize: 48 }), QuantizationError);
  assert.throws(() => quantize4bit(new Float32Array(64), [65]), QuantizationError);
  for (const bs of [16, 128, 4096]) {
    const r = quantize4bit(
      Float32Array.from({ length: 5000 }, (_, i) => Math.cos(i)),
      [50, 100],
      { blockSize: bs },
    );
    assert.equal(blockAbsmax(r.absmax).length, Math.ceil(5000 / bs));
  }
});
