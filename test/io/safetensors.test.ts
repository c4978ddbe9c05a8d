// Tests of safetensors reading/writing: dtype round trips, the reference byte layout, validation of
// corrupt files (hand-made cases plus a seeded fuzz over real fixtures), sharded checkpoints, and
// every fixture file under shared/fixtures checked against MANIFEST.json and an independent parse.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readFileSync, readdirSync, statSync } from 'node:fs';
import { cp, mkdtemp, readFile, readdir, rm, truncate, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, relative } from 'node:path';
import {
  DTYPE_BYTES,
  type RawTensor,
  SafetensorsError,
  SafetensorsFile,
  type SafetensorsDtype,
  ShardedSafetensors,
  bfloat16ToFloat32,
  deserializeSafetensors,
  elementCount,
  float16ToFloat32,
  float32ToBFloat16,
  float32ToFloat16,
  fromTypedArray,
  openCheckpoint,
  readSafetensors,
  serializeSafetensors,
  toBigInt64,
  toFloat32,
  toInt32,
  writeSafetensors,
  writeShardedSafetensors,
} from '../../src/io/safetensors.js';
import { mulberry32 } from '../../src/nn/random.js';

import { FIXTURES } from '../helpers/fixtures.js';
import type { LooseJson } from '../helpers/json.js';
const HAVE_FIXTURES = existsSync(join(FIXTURES, 'MANIFEST.json'));
const NO_FIXTURES = HAVE_FIXTURES ? false : `fixtures not found at ${FIXTURES}`;

async function tempDir(): Promise<string> {
  return mkdtemp(join(tmpdir(), 'peft-safetensors-'));
}

function bytesOf(a: ArrayBufferView): Uint8Array {
  return new Uint8Array(a.buffer, a.byteOffset, a.byteLength);
}

/** An independent reading of the header, to check the library against. */
function rawHeader(file: Uint8Array): { n: number; header: Record<string, LooseJson> } {
  const n = Number(Buffer.from(file.buffer, file.byteOffset, 8).readBigUInt64LE(0));
  return { n, header: JSON.parse(Buffer.from(file.subarray(8, 8 + n)).toString('utf8')) };
}

function isSafetensorsError(e: unknown, message?: RegExp, tensor?: string): boolean {
  assert.ok(e instanceof SafetensorsError, `expected a SafetensorsError, got ${String(e)}`);
  if (message) assert.match(e.message, message);
  if (tensor !== undefined) assert.equal(e.tensor, tensor);
  return true;
}

/** A file image with a raw header string (unpadded) and the given data bytes. */
function image(header: string | Uint8Array, data: Uint8Array | number = 0, declaredLength?: bigint): Uint8Array {
  const h = typeof header === 'string' ? new TextEncoder().encode(header) : header;
  const d = typeof data === 'number' ? new Uint8Array(data) : data;
  const out = new Uint8Array(8 + h.byteLength + d.byteLength);
  new DataView(out.buffer).setBigUint64(0, declaredLength ?? BigInt(h.byteLength), true);
  out.set(h, 8);
  out.set(d, 8 + h.byteLength);
  return out;
}

// ---------------------------------------------------------------------------------------------
// dtypes and codecs

test('every dtype round trips through memory and through a file, bit for bit', async () => {
  const f32 = new Float32Array([0, -0, 1.5, -2.25, Infinity, -Infinity, NaN, 1e-45, 3.4028234663852886e38, Math.PI]);
  const f64 = new Float64Array([0, -0, Math.PI, -1e308, 5e-324, Infinity, NaN, 2 ** 53 + 2]);
  const i64 = new BigInt64Array([0n, -1n, 2n ** 53n + 1n, 2n ** 62n + 12345n, -(2n ** 63n), 2n ** 63n - 1n]);
  const i32 = new Int32Array([0, -1, 2147483647, -2147483648, 42, 7]);
  const i8 = new Int8Array([-128, -1, 0, 1, 127, 5]);
  const u8 = new Uint8Array([0, 1, 128, 255]);
  const bool = new Uint8Array([1, 0, 0, 1, 1, 0]);
  const f16bits = new Uint16Array(65536).map((_, i) => i);
  const bf16bits = new Uint16Array(65536).map((_, i) => 65535 - i);
  const tensors: Record<string, RawTensor> = {
    f32: fromTypedArray(f32, [2, 5]),
    f64: fromTypedArray(f64, [8]),
    i64: fromTypedArray(i64, [3, 2]),
    i32: fromTypedArray(i32, [6]),
    i8: fromTypedArray(i8, [2, 3]),
    u8: fromTypedArray(u8, [4]),
    bool: fromTypedArray(bool, [6], 'BOOL'),
    f16: fromTypedArray(f16bits, [256, 256], 'F16'),
    bf16: fromTypedArray(bf16bits, [65536], 'BF16'),
    scalar: fromTypedArray(new Float32Array([7]), []),
    empty: fromTypedArray(new Float32Array(0), [0, 3]),
  };
  const bytes = serializeSafetensors(tensors);
  const dir = await tempDir();
  try {
    const path = join(dir, 'all.safetensors');
    await writeSafetensors(path, tensors);
    assert.deepEqual(new Uint8Array(await readFile(path)), bytes, 'file and in-memory images are identical');
    for (const back of [deserializeSafetensors(bytes).tensors, await readSafetensors(path)]) {
      assert.deepEqual([...back.keys()].sort(), Object.keys(tensors).sort());
      for (const [name, t] of Object.entries(tensors)) {
        const b = back.get(name)!;
        assert.equal(b.dtype, t.dtype, name);
        assert.deepEqual(b.shape, t.shape, name);
        assert.deepEqual(b.data, t.data, name);
      }
      assert.deepEqual(toBigInt64(back.get('i64')!), i64);
      assert.deepEqual(toInt32(back.get('i32')!), i32);
      assert.deepEqual(toFloat32(back.get('f32')!), f32);
      assert.deepEqual(toFloat32(back.get('bool')!), new Float32Array([1, 0, 0, 1, 1, 0]));
      assert.deepEqual(toInt32(back.get('i8')!), Int32Array.from(i8));
      assert.deepEqual(toFloat32(back.get('scalar')!), new Float32Array([7]));
      assert.equal(toFloat32(back.get('empty')!).length, 0);
    }
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test('F16 and BF16 decode exactly, for all 65536 bit patterns', () => {
  const f16 = toFloat32(
    fromTypedArray(
      new Uint16Array(65536).map((_, i) => i),
      [65536],
      'F16',
    ),
  );
  const bf16 = toFloat32(
    fromTypedArray(
      new Uint16Array(65536).map((_, i) => i),
      [65536],
      'BF16',
    ),
  );
  const bf16Bits = new Uint32Array(bf16.buffer, bf16.byteOffset, bf16.length);
  for (let h = 0; h < 65536; h++) {
    const sign = h & 0x8000 ? -1 : 1;
    const e = (h >> 10) & 0x1f;
    const m = h & 0x3ff;
    const want = e === 0x1f ? (m ? NaN : sign * Infinity) : e === 0 ? sign * m * 2 ** -24 : sign * (1 + m / 1024) * 2 ** (e - 15);
    assert.ok(Object.is(f16[h], want), `f16 0x${h.toString(16)}: ${f16[h]} != ${want}`);
    assert.ok(Object.is(float16ToFloat32(h), want));
    if (!Number.isNaN(want)) assert.equal(float32ToFloat16(want), h, `f16 re-encode 0x${h.toString(16)}`);
    else assert.equal(float32ToFloat16(want) & 0x7c00, 0x7c00);
    assert.equal(bf16Bits[h], (h << 16) >>> 0, `bf16 0x${h.toString(16)}`);
    assert.ok(Object.is(bfloat16ToFloat32(h), bf16[h]));
    if (!Number.isNaN(bf16[h]!)) assert.equal(float32ToBFloat16(bf16[h]!), h);
  }
});

test('F16 and BF16 encoding rounds to nearest even', () => {
  assert.equal(float32ToFloat16(1 + 2 ** -11), 0x3c00, 'tie rounds down to even');
  assert.equal(float32ToFloat16(1 + 3 * 2 ** -11), 0x3c02, 'tie rounds up to even');
  assert.equal(float32ToFloat16(1 + 2 ** -11 + 2 ** -20), 0x3c01, 'above the tie rounds up');
  assert.equal(float32ToFloat16(65504), 0x7bff);
  assert.equal(float32ToFloat16(65519.99), 0x7bff);
  assert.equal(float32ToFloat16(65520), 0x7c00, 'rounds to infinity');
  assert.equal(float32ToFloat16(-1e10), 0xfc00);
  assert.equal(float32ToFloat16(2 ** -25), 0x0000, 'half the smallest subnormal ties to zero');
  assert.equal(float32ToFloat16(2 ** -25 * 1.5), 0x0001);
  assert.equal(float32ToFloat16(3 * 2 ** -25), 0x0002, 'subnormal tie to even');
  assert.equal(float32ToFloat16(2 ** -14 - 2 ** -25), 0x0400, 'carry into the smallest normal');
  assert.equal(float32ToFloat16(-0), 0x8000);
  assert.equal(float32ToBFloat16(1 + 2 ** -8), 0x3f80, 'bf16 tie down');
  assert.equal(float32ToBFloat16(1 + 3 * 2 ** -8), 0x3f82, 'bf16 tie up');
  assert.equal(float32ToBFloat16(3.4028234663852886e38), 0x7f80, 'bf16 overflow to infinity');
  assert.ok(Number.isNaN(bfloat16ToFloat32(float32ToBFloat16(NaN))));
  const t = fromTypedArray(new Float32Array([0.1, -3.14159, 1e-7, 1e-8]), [4], 'F16');
  assert.deepEqual(Array.from(toFloat32(t)), [0.0999755859375, -3.140625, 1.1920928955078125e-7, 0]);
  const b = fromTypedArray(new Float32Array([0.1, -3.14159]), [2], 'BF16');
  assert.deepEqual(Array.from(toFloat32(b)), [0.10009765625, -3.140625]);
});

test('typed views are aligned: shared when possible, copied when the offset is misaligned', () => {
  const bytes = serializeSafetensors({
    x: fromTypedArray(new Float32Array([1, 2, 3]), [3]),
    y: fromTypedArray(new BigInt64Array([2n ** 60n, -5n]), [2]),
  });
  const shifted = new Uint8Array(bytes.byteLength + 3);
  shifted.set(bytes, 3);
  const odd = deserializeSafetensors(shifted.subarray(3)).tensors;
  assert.notEqual(odd.get('x')!.data.byteOffset % 4, 0, 'the view really is misaligned');
  assert.deepEqual(toFloat32(odd.get('x')!), new Float32Array([1, 2, 3]));
  assert.deepEqual(toBigInt64(odd.get('y')!), new BigInt64Array([2n ** 60n, -5n]));
  assert.throws(() => toInt32(odd.get('y')!), RangeError, 'int64 beyond int32 refuses to narrow');

  const aligned = deserializeSafetensors(bytes).tensors.get('x')!;
  const view = toFloat32(aligned);
  view[0] = 42;
  assert.equal(toFloat32(aligned)[0], 42, 'aligned F32 data is viewed, not copied');
  assert.throws(() => toFloat32({ dtype: 'F32', shape: [2], data: new Uint8Array(4) }), RangeError);
  assert.throws(() => toBigInt64({ dtype: 'F32', shape: [1], data: new Uint8Array(4) }), TypeError);
  assert.throws(() => fromTypedArray(new Float32Array(3), [2, 2]), RangeError);
  assert.throws(() => fromTypedArray(new Int8Array(3), [3], 'F32'), TypeError);
  assert.deepEqual(toBigInt64(fromTypedArray(new Int32Array([-3, 4]), [2], 'I64')), new BigInt64Array([-3n, 4n]));
});

// ---------------------------------------------------------------------------------------------
// layout

test('serialization matches the reference writer byte for byte', () => {
  const enc = (s: string): number[] => [...new TextEncoder().encode(s)];
  const le64 = (n: number): number[] => [n, 0, 0, 0, 0, 0, 0, 0];
  const floats = [...bytesOf(new Float32Array([0, 1, 2, 3, 4, 5]))];
  const data = new Uint8Array(floats);

  // The unpadded header happens to be 64 bytes: no padding.
  const a = serializeSafetensors({ 'attn.0': { dtype: 'F32', shape: [1, 2, 3], data } });
  const ha = '{"attn.0":{"dtype":"F32","shape":[1,2,3],"data_offsets":[0,24]}}';
  assert.deepEqual([...a], [...le64(64), ...enc(ha), ...floats]);

  // 65 bytes of JSON: seven spaces bring it to 72 so the data stays 8-aligned.
  const b = serializeSafetensors({ attn0: { dtype: 'F32', shape: [1, 1, 2, 3], data } });
  const hb = '{"attn0":{"dtype":"F32","shape":[1,1,2,3],"data_offsets":[0,24]}}';
  assert.deepEqual([...b], [...le64(72), ...enc(hb), ...enc(' '.repeat(7)), ...floats]);

  assert.deepEqual([...serializeSafetensors({})], [...le64(8), ...enc('{}      ')]);
  assert.deepEqual(
    [...serializeSafetensors(new Map(), { framework: 'pt' })],
    [...le64(40), ...enc('{"__metadata__":{"framework":"pt"}}     ')],
  );
});

test('tensors are ordered by dtype then by name, metadata first, header padded to 8', () => {
  const one = (dtype: SafetensorsDtype): RawTensor => ({ dtype, shape: [1], data: new Uint8Array(DTYPE_BYTES[dtype]) });
  const input = new Map<string, RawTensor>([
    ['b', one('U8')],
    ['10', one('F32')],
    ['9', one('F32')],
    ['a', one('BOOL')],
    ['\u{1F600}', one('F16')],
    ['\uFFFD', one('F16')],
    ['z', one('I64')],
    ['m', one('F64')],
    ['k', one('I32')],
    ['j', one('BF16')],
    ['i', one('I8')],
  ]);
  const bytes = serializeSafetensors(input, { format: 'pt', '0': 'numeric-looking key' });
  const { n, header } = rawHeader(bytes);
  assert.equal(n % 8, 0);
  const text = Buffer.from(bytes.subarray(8, 8 + n)).toString('utf8');
  assert.ok(text.startsWith('{"__metadata__":{'), text);
  // JSON.parse would reorder integer-like keys, so read the order from the text itself.
  const order = [...text.matchAll(/"([^"]+)":\{"dtype"/g)].map((m) => m[1]!);
  assert.deepEqual(order, ['z', 'm', '10', '9', 'k', 'j', '\uFFFD', '\u{1F600}', 'i', 'b', 'a']);
  let expectBegin = 0;
  for (const name of order) {
    const [begin, end] = header[name].data_offsets;
    assert.equal(begin, expectBegin, `${name} follows the previous tensor`);
    assert.equal(begin % DTYPE_BYTES[header[name].dtype as SafetensorsDtype], 0, `${name} is aligned`);
    expectBegin = end;
  }
  assert.deepEqual(header.__metadata__, { format: 'pt', '0': 'numeric-looking key' });
  const back = deserializeSafetensors(bytes);
  assert.deepEqual(back.metadata, { format: 'pt', '0': 'numeric-looking key' });
  assert.equal(back.tensors.size, 11);
});

test('metadata round trips through a file, and its absence is preserved', async () => {
  const dir = await tempDir();
  try {
    const t = { w: fromTypedArray(new Float32Array([1, 2]), [2]) };
    const meta = { format: 'pt', note: 'quotes " and \\ and \n newlines, ünïcödé' };
    await writeSafetensors(join(dir, 'a.safetensors'), t, meta);
    await writeSafetensors(join(dir, 'b.safetensors'), t);
    const a = await SafetensorsFile.open(join(dir, 'a.safetensors'));
    const b = await SafetensorsFile.open(join(dir, 'b.safetensors'));
    assert.deepEqual(a.metadata, meta);
    assert.equal(b.metadata, undefined);
    assert.deepEqual(a.names(), ['w']);
    const info = a.info('w');
    assert.equal(info.byteLength, 8);
    assert.equal(info.byteOffset, a.fileSize - 8);
    assert.equal((info.byteOffset - 8) % 8, 0, 'header is padded to 8 bytes');
    await a.close();
    await b.close();
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test('writes are atomic: no temp files left, failures leave the old file intact', async () => {
  const dir = await tempDir();
  try {
    const path = join(dir, 'w.safetensors');
    await writeSafetensors(path, { a: fromTypedArray(new Int32Array([1]), [1]) });
    await writeSafetensors(path, { a: fromTypedArray(new Int32Array([2, 3]), [2]) });
    assert.deepEqual(await readdir(dir), ['w.safetensors']);
    assert.deepEqual(toInt32((await readSafetensors(path)).get('a')!), new Int32Array([2, 3]));

    const bad: Array<[string, Record<string, RawTensor>, Record<string, string>?, RegExp?]> = [
      ['length mismatch', { a: { dtype: 'F32', shape: [3], data: new Uint8Array(8) } }, undefined, /needs 12 bytes/],
      ['reserved name', { __metadata__: fromTypedArray(new Int32Array([1]), [1]) }, undefined, /reserved/],
      ['unknown dtype', { a: { dtype: 'I16' as SafetensorsDtype, shape: [1], data: new Uint8Array(2) } }, undefined, /unknown dtype/],
      ['bad shape', { a: { dtype: 'U8', shape: [-1], data: new Uint8Array(0) } }, undefined, /shape/],
      ['lone surrogate', { ['x\uD800']: fromTypedArray(new Uint8Array(1), [1]) }, undefined, /surrogate/],
      ['metadata value', { a: fromTypedArray(new Uint8Array(1), [1]) }, { k: 5 as unknown as string }, /not a string/],
    ];
    for (const [label, tensors, meta, re] of bad) {
      await assert.rejects(writeSafetensors(path, tensors, meta), (e) => isSafetensorsError(e, re), label);
      assert.throws(
        () => serializeSafetensors(tensors, meta),
        (e) => isSafetensorsError(e, re),
        label,
      );
    }
    await assert.rejects(writeSafetensors(join(dir, 'missing', 'x.safetensors'), {}), (e) => isSafetensorsError(e, /write failed/));
    assert.deepEqual(await readdir(dir), ['w.safetensors']);
    assert.deepEqual(toInt32((await readSafetensors(path)).get('a')!), new Int32Array([2, 3]));
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

// ---------------------------------------------------------------------------------------------
// validation

const F32x2 = (offsets: string): string => `{"dtype":"F32","shape":[2],"data_offsets":${offsets}}`;
const CORRUPT: Array<{ label: string; bytes: Uint8Array; re: RegExp; tensor?: string }> = [
  { label: 'empty file', bytes: new Uint8Array(0), re: /shorter than the 8-byte/ },
  { label: '7 bytes', bytes: new Uint8Array(7), re: /shorter than the 8-byte/ },
  { label: 'length past EOF', bytes: image('{}', 0, 100n), re: /runs past the end/ },
  { label: 'length 2^64-1', bytes: image('{}', 0, 2n ** 64n - 1n), re: /exceeds the 100000000-byte limit/ },
  { label: 'length just over the limit', bytes: image('{}', 0, 100_000_001n), re: /limit/ },
  { label: 'invalid UTF-8', bytes: image(new Uint8Array([0x7b, 0xff, 0x7d])), re: /not valid UTF-8/ },
  { label: 'truncated JSON', bytes: image('{"a":'), re: /not valid JSON/ },
  { label: 'JSON array', bytes: image('[]'), re: /does not start with/ },
  { label: 'byte order mark', bytes: image('\uFEFF{}'), re: /does not start with/ },
  { label: 'entry not an object', bytes: image('{"a":3}'), re: /not an object/, tensor: 'a' },
  { label: 'missing dtype', bytes: image('{"a":{"shape":[1],"data_offsets":[0,4]}}', 4), re: /missing dtype/, tensor: 'a' },
  { label: 'missing shape', bytes: image('{"a":{"dtype":"F32","data_offsets":[0,4]}}', 4), re: /missing shape/, tensor: 'a' },
  { label: 'missing offsets', bytes: image('{"a":{"dtype":"F32","shape":[1]}}', 4), re: /missing data_offsets/, tensor: 'a' },
  {
    label: 'unknown dtype',
    bytes: image('{"a":{"dtype":"F33","shape":[1],"data_offsets":[0,4]}}', 4),
    re: /unknown dtype "F33"/,
    tensor: 'a',
  },
  {
    label: 'dtype not a string',
    bytes: image('{"a":{"dtype":4,"shape":[1],"data_offsets":[0,4]}}', 4),
    re: /unknown dtype 4/,
    tensor: 'a',
  },
  {
    label: 'unsupported dtype',
    bytes: image('{"a":{"dtype":"I16","shape":[2],"data_offsets":[0,4]}}', 4),
    re: /unsupported dtype I16/,
    tensor: 'a',
  },
  { label: 'shape not a list', bytes: image('{"a":{"dtype":"F32","shape":"2","data_offsets":[0,8]}}', 8), re: /shape "2"/, tensor: 'a' },
  {
    label: 'negative dim',
    bytes: image('{"a":{"dtype":"F32","shape":[-2],"data_offsets":[0,8]}}', 8),
    re: /non-negative integers/,
    tensor: 'a',
  },
  {
    label: 'fractional dim',
    bytes: image('{"a":{"dtype":"F32","shape":[1.5],"data_offsets":[0,8]}}', 8),
    re: /non-negative integers/,
    tensor: 'a',
  },
  { label: 'one offset', bytes: image(`{"a":${F32x2('[0]')}}`, 8), re: /not a pair/, tensor: 'a' },
  { label: 'string offset', bytes: image(`{"a":${F32x2('[0,"8"]')}}`, 8), re: /not a pair/, tensor: 'a' },
  { label: 'negative offset', bytes: image(`{"a":${F32x2('[-8,0]')}}`, 8), re: /not a pair/, tensor: 'a' },
  { label: 'huge offset', bytes: image(`{"a":${F32x2('[0,1e300]')}}`, 8), re: /not a pair/, tensor: 'a' },
  { label: 'end before begin', bytes: image(`{"a":${F32x2('[8,0]')}}`, 8), re: /end before they begin/, tensor: 'a' },
  { label: 'byte count', bytes: image(`{"a":${F32x2('[0,4]')}}`, 4), re: /needs 8 bytes .* span 4/, tensor: 'a' },
  { label: 'past the data', bytes: image(`{"a":${F32x2('[0,8]')}}`, 4), re: /run past the 4-byte data buffer/, tensor: 'a' },
  {
    label: 'overflowing shape',
    bytes: image('{"a":{"dtype":"F32","shape":[1099511627776,1099511627776],"data_offsets":[0,8]}}', 8),
    re: /overflowing/,
    tensor: 'a',
  },
  { label: 'overlap', bytes: image(`{"a":${F32x2('[0,8]')},"b":${F32x2('[4,12]')}}`, 12), re: /overlap tensor "a"/, tensor: 'b' },
  { label: 'duplicate range', bytes: image(`{"a":${F32x2('[0,8]')},"b":${F32x2('[0,8]')}}`, 8), re: /overlap/ },
  {
    label: 'hole',
    bytes: image(`{"a":${F32x2('[0,8]')},"b":${F32x2('[12,20]')}}`, 20),
    re: /bytes 8\.\.12 .*belong to no tensor/,
    tensor: 'b',
  },
  { label: 'hole at start', bytes: image(`{"a":${F32x2('[4,12]')}}`, 12), re: /bytes 0\.\.4/, tensor: 'a' },
  { label: 'trailing bytes', bytes: image(`{"a":${F32x2('[0,8]')}}`, 12), re: /last 4 bytes/ },
  { label: 'metadata not an object', bytes: image('{"__metadata__":[1]}'), re: /__metadata__ is not an object/ },
  { label: 'metadata value', bytes: image('{"__metadata__":{"k":1}}'), re: /value for "k" is not a string/ },
];

test('corrupt, truncated or inconsistent headers raise SafetensorsError naming file and tensor', async () => {
  const dir = await tempDir();
  try {
    for (const [i, c] of CORRUPT.entries()) {
      assert.throws(
        () => deserializeSafetensors(c.bytes, 'mem'),
        (e) => isSafetensorsError(e, c.re, c.tensor),
        c.label,
      );
      const path = join(dir, `case${i}.safetensors`);
      await writeFile(path, c.bytes);
      await assert.rejects(SafetensorsFile.open(path), (e) => {
        isSafetensorsError(e, c.re, c.tensor);
        const err = e as SafetensorsError;
        assert.equal(err.file, path, c.label);
        assert.ok(err.message.includes(path), `${c.label}: message names the file`);
        if (c.tensor !== undefined) assert.ok(err.message.includes(`"${c.tensor}"`), `${c.label}: message names the tensor`);
        return true;
      });
    }
    // Accepted edge cases: zero-sized tensors sharing an offset, null metadata, extra entry fields.
    const ok = image(
      `{"__metadata__":null,"e":{"dtype":"F32","shape":[0],"data_offsets":[0,0]},"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8],"extra":1}}`,
      8,
    );
    const parsed = deserializeSafetensors(ok);
    assert.equal(parsed.metadata, undefined);
    assert.deepEqual([...parsed.tensors.keys()], ['e', 'a']);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test('file-level failures are typed too: missing file, folder, unknown tensor, closed, truncated', async () => {
  const dir = await tempDir();
  try {
    await assert.rejects(SafetensorsFile.open(join(dir, 'nope.safetensors')), (e) => isSafetensorsError(e, /open failed/));
    await assert.rejects(SafetensorsFile.open(dir), (e) => isSafetensorsError(e, /not a regular file/));
    const path = join(dir, 't.safetensors');
    const w = new Float32Array(1000).map((_, i) => i);
    await writeSafetensors(path, { w: fromTypedArray(w, [10, 100]), b: fromTypedArray(new Float32Array(4), [4]) });
    const f = await SafetensorsFile.open(path);
    await assert.rejects(f.read('missing'), (e) => isSafetensorsError(e, /no such tensor/, 'missing'));
    assert.throws(
      () => f.info('missing'),
      (e) => isSafetensorsError(e, /no such tensor/, 'missing'),
    );
    const [wb, bb] = await Promise.all([f.read('w'), f.read('b')]);
    assert.deepEqual(toFloat32(wb), w);
    assert.deepEqual(toFloat32(bb), new Float32Array(4));
    await truncate(path, f.fileSize - 100);
    await assert.rejects(f.read('w'), (e) => isSafetensorsError(e, /file ends at byte/, 'w'));
    await f.close();
    await f.close();
    await assert.rejects(f.read('b'), (e) => isSafetensorsError(e, /closed/, 'b'));
    await assert.rejects(SafetensorsFile.open(path), (e) => isSafetensorsError(e, /run past/));
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

/** Damaged variants of a safetensors file, drawn from a seeded generator so fuzz failures reproduce. */
function mutations(base: Uint8Array, seed: number): Array<{ label: string; bytes: Uint8Array }> {
  const rand = mulberry32(seed);
  const int = (n: number): number => Math.floor(rand() * n);
  const n = Number(new DataView(base.buffer, base.byteOffset, 8).getBigUint64(0, true));
  const out: Array<{ label: string; bytes: Uint8Array }> = [];
  const lengths = new Set([0, 1, 7, 8, 9, 8 + n - 1, 8 + n, 8 + n + 1, base.byteLength - 1]);
  while (lengths.size < 80) lengths.add(int(base.byteLength));
  for (const len of lengths) out.push({ label: `truncated to ${len}`, bytes: base.slice(0, len) });
  const json = '{}[],:"0123456789-.eE ';
  for (let i = 0; i < 200; i++) {
    const b = base.slice();
    const k = 1 + int(3);
    const at: number[] = [];
    for (let j = 0; j < k; j++) {
      const p = 8 + int(n);
      at.push(p);
      // Half the flips use JSON punctuation and digits, which keeps more variants parseable.
      b[p] = i % 2 ? int(256) : json.charCodeAt(int(json.length));
    }
    out.push({ label: `header bytes changed at ${at.join(',')}`, bytes: b });
  }
  for (let i = 0; i < 60; i++) {
    const b = base.slice();
    const p = int(8);
    b[p] = b[p]! ^ (1 << int(8));
    out.push({ label: `length prefix bit flip at byte ${p}`, bytes: b });
  }
  const declared = [
    2n ** 64n - 1n,
    2n ** 63n,
    2n ** 53n + 1n,
    100_000_000n,
    100_000_001n,
    BigInt(n - 1),
    BigInt(n + 1),
    BigInt(base.byteLength),
  ];
  for (const d of declared) {
    const b = base.slice();
    new DataView(b.buffer).setBigUint64(0, d, true);
    out.push({ label: `header length set to ${d}`, bytes: b });
  }
  for (let i = 0; i < 20 && base.byteLength > 8 + n; i++) {
    const b = base.slice();
    const p = 8 + n + int(base.byteLength - 8 - n);
    b[p] = b[p]! ^ 0xff;
    out.push({ label: `data byte flipped at ${p}`, bytes: b });
  }
  return out;
}

function fuzzBases(): Array<{ label: string; bytes: Uint8Array }> {
  const synthetic = serializeSafetensors(
    {
      w: fromTypedArray(
        new Float32Array(12).map((_, i) => i / 7),
        [3, 4],
      ),
      h: fromTypedArray(new Float32Array([0.5, -1]), [2], 'F16'),
      ids: fromTypedArray(new BigInt64Array([1n, 2n, 3n]), [3]),
      mask: fromTypedArray(new Uint8Array([1, 0]), [2], 'BOOL'),
    },
    { format: 'pt' },
  );
  const bases = [{ label: 'synthetic', bytes: synthetic }];
  if (HAVE_FIXTURES) {
    for (const rel of ['models/gpt2/batch.safetensors', 'adapters/gpt2/prompt_tuning_random/adapter_model.safetensors']) {
      const p = join(FIXTURES, rel);
      if (existsSync(p)) bases.push({ label: rel, bytes: new Uint8Array(readFileSync(p)) });
    }
  }
  return bases;
}

test('fuzz: mutated files either load consistently or raise SafetensorsError', { timeout: 60_000 }, async () => {
  const dir = await tempDir();
  const started = Date.now();
  let variants = 0;
  let loaded = 0;
  try {
    for (const [b, base] of fuzzBases().entries()) {
      for (const [i, m] of mutations(base.bytes, 0x5afe + b).entries()) {
        const what = `${base.label}: ${m.label}`;
        variants++;
        let memory: Map<string, RawTensor> | undefined;
        try {
          memory = deserializeSafetensors(m.bytes).tensors;
        } catch (e) {
          assert.ok(e instanceof SafetensorsError, `${what}: threw ${String(e)}`);
        }
        if (memory) {
          loaded++;
          for (const [name, t] of memory) {
            assert.equal(t.data.byteLength, elementCount(t.shape) * DTYPE_BYTES[t.dtype], `${what}: ${name}`);
            assert.equal(toFloat32(t).length, elementCount(t.shape));
          }
        }
        // Every fifth variant also goes through the file API, which must agree with the in-memory parse.
        if (i % 5 === 0) {
          const path = join(dir, `v${b}_${i}.safetensors`);
          await writeFile(path, m.bytes);
          let fromFile: Map<string, RawTensor> | undefined;
          try {
            fromFile = await readSafetensors(path);
          } catch (e) {
            assert.ok(e instanceof SafetensorsError, `${what} (file): threw ${String(e)}`);
          }
          assert.equal(fromFile !== undefined, memory !== undefined, `${what}: file and memory parses disagree`);
          if (fromFile && memory) {
            for (const [name, t] of memory) assert.deepEqual(fromFile.get(name)!.data, t.data, `${what}: ${name}`);
          }
          await rm(path);
        }
      }
    }
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
  assert.ok(variants >= 300, `only ${variants} variants`);
  assert.ok(loaded > 0, 'some variants (data flips at least) load');
  assert.ok(Date.now() - started < 30_000, `fuzz took ${Date.now() - started} ms`);
});

// ---------------------------------------------------------------------------------------------
// sharded checkpoints

test('sharded checkpoints: split by size, index written, tensors read lazily from the right shard', async () => {
  const dir = await tempDir();
  try {
    const vec = (seed: number, n: number): RawTensor =>
      fromTypedArray(
        new Float32Array(n).map((_, i) => seed + i / 8),
        [n],
      );
    const tensors = new Map<string, RawTensor>([
      ['layer.0.a', vec(1, 16)],
      ['layer.0.b', vec(2, 16)],
      ['big', vec(3, 64)],
      ['layer.1.a', vec(4, 16)],
      ['10', vec(5, 16)],
    ]);
    const ckpt = join(dir, 'ckpt');
    const res = await writeShardedSafetensors(ckpt, tensors, { maxShardBytes: 150, metadata: { format: 'pt' } });
    const shardNames = ['model-00001-of-00003.safetensors', 'model-00002-of-00003.safetensors', 'model-00003-of-00003.safetensors'];
    assert.deepEqual(
      res.files,
      shardNames.map((f) => join(ckpt, f)),
    );
    assert.equal(res.indexPath, join(ckpt, 'model.safetensors.index.json'));
    assert.equal(res.totalSize, 4 * 64 + 256);
    assert.deepEqual((await readdir(ckpt)).sort(), [...shardNames, 'model.safetensors.index.json'].sort());

    const index = JSON.parse(await readFile(res.indexPath!, 'utf8'));
    assert.deepEqual(index.metadata, { total_size: 512 });
    assert.deepEqual(index.weight_map, {
      'layer.0.a': shardNames[0],
      'layer.0.b': shardNames[0],
      big: shardNames[1],
      'layer.1.a': shardNames[2],
      '10': shardNames[2],
    });

    const cp1 = await openCheckpoint(ckpt);
    assert.ok(cp1 instanceof ShardedSafetensors);
    assert.deepEqual(cp1.names(), ['10', 'big', 'layer.0.a', 'layer.0.b', 'layer.1.a']);
    assert.deepEqual(cp1.metadata, { total_size: 512 });
    assert.equal(cp1.shardOf('big'), join(ckpt, shardNames[1]!));
    assert.deepEqual(cp1.info('big').shape, [64]);
    for (const [name, t] of tensors) assert.deepEqual(await cp1.read(name), t, name);
    assert.deepEqual(await cp1.readAll(), new Map(cp1.names().map((n) => [n, tensors.get(n)!])));
    await assert.rejects(cp1.read('nope'), (e) => isSafetensorsError(e, /weight_map/, 'nope'));
    await cp1.close();
    const shard = await SafetensorsFile.open(join(ckpt, shardNames[0]!));
    assert.deepEqual(shard.metadata, { format: 'pt' });
    await shard.close();

    // Broken copies of the checkpoint.
    const broken = async (label: string, edit: (d: string) => Promise<void>, re: RegExp, tensor?: string): Promise<void> => {
      const d = join(dir, label);
      await cp(ckpt, d, { recursive: true });
      await edit(d);
      await assert.rejects(openCheckpoint(d), (e) => isSafetensorsError(e, re, tensor), label);
    };
    const editIndex = (f: (ix: LooseJson) => void) => async (d: string) => {
      const p = join(d, 'model.safetensors.index.json');
      const ix = JSON.parse(await readFile(p, 'utf8'));
      f(ix);
      await writeFile(p, JSON.stringify(ix));
    };
    await broken('missing-shard', (d) => rm(join(d, shardNames[1]!)), /open failed.*shard listed in/);
    await broken(
      'wrong-shard',
      editIndex((ix) => (ix.weight_map['big'] = shardNames[0])),
      /not in this shard/,
      'big',
    );
    await broken(
      'escape',
      editIndex((ix) => (ix.weight_map['big'] = '../x.safetensors')),
      /not a path inside/,
      'big',
    );
    await broken(
      'no-map',
      editIndex((ix) => delete ix.weight_map),
      /no "weight_map"/,
    );
    await broken('not-json', (d) => writeFile(join(d, 'model.safetensors.index.json'), '{"weight_map":'), /not valid JSON/);
    await broken('corrupt-shard', (d) => truncate(join(d, shardNames[2]!), 20), /run past|runs past/);

    // Saving again as a single file removes the index and shards, and vice versa.
    const single = await writeShardedSafetensors(ckpt, tensors);
    assert.equal(single.indexPath, undefined);
    assert.deepEqual(await readdir(ckpt), ['model.safetensors']);
    const cp2 = await openCheckpoint(ckpt);
    assert.ok(cp2 instanceof SafetensorsFile);
    assert.deepEqual(await cp2.readAll(), tensors);
    await cp2.close();
    await writeShardedSafetensors(ckpt, tensors, { maxShardBytes: 400 });
    assert.deepEqual((await readdir(ckpt)).sort(), [
      'model-00001-of-00002.safetensors',
      'model-00002-of-00002.safetensors',
      'model.safetensors.index.json',
    ]);
    await assert.rejects(openCheckpoint(join(dir, 'missing-shard-none')), (e) => isSafetensorsError(e));
    await assert.rejects(openCheckpoint(dir), (e) => isSafetensorsError(e, /neither model\.safetensors nor/));
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

// ---------------------------------------------------------------------------------------------
// fixtures

function walk(dir: string): string[] {
  const out: string[] = [];
  for (const e of readdirSync(dir).sort()) {
    const p = join(dir, e);
    if (statSync(p).isDirectory()) out.push(...walk(p));
    else if (e.endsWith('.safetensors')) out.push(p);
  }
  return out;
}

interface ManifestFile {
  path: string;
  bytes: number;
  tensors: Record<string, { dtype: string; shape: number[] }>;
  metadata?: Record<string, string>;
}

function manifestFiles(): Map<string, ManifestFile> {
  const found = new Map<string, ManifestFile>();
  const visit = (o: unknown): void => {
    if (Array.isArray(o)) o.forEach(visit);
    else if (typeof o === 'object' && o !== null) {
      const r = o as Record<string, unknown>;
      if (typeof r.path === 'string' && r.path.endsWith('.safetensors') && typeof r.tensors === 'object') {
        found.set(r.path, r as unknown as ManifestFile);
      }
      Object.values(r).forEach(visit);
    }
  };
  visit(JSON.parse(readFileSync(join(FIXTURES, 'MANIFEST.json'), 'utf8')));
  return found;
}

test(
  'every fixture file opens, reads back consistently, matches MANIFEST.json and re-serializes identically',
  { skip: NO_FIXTURES },
  async () => {
    const files = walk(FIXTURES);
    const manifest = manifestFiles();
    assert.ok(files.length > 0);
    for (const path of files) {
      const rel = relative(FIXTURES, path).split('\\').join('/');
      const raw = new Uint8Array(readFileSync(path));
      const { header } = rawHeader(raw);
      const f = await SafetensorsFile.open(path);
      try {
        const names = Object.keys(header).filter((k) => k !== '__metadata__');
        assert.deepEqual(f.names().slice().sort(), names.slice().sort(), rel);
        assert.deepEqual(f.metadata, header.__metadata__, rel);
        const m = manifest.get(rel);
        if (m) {
          assert.equal(raw.byteLength, m.bytes, `${rel}: size`);
          assert.deepEqual(Object.keys(m.tensors).sort(), names.slice().sort(), `${rel}: names`);
          if (m.metadata) assert.deepEqual(f.metadata, m.metadata, `${rel}: metadata`);
        }
        for (const name of f.names()) {
          const info = f.info(name);
          const t = await f.read(name);
          assert.equal(t.dtype, header[name].dtype, `${rel}:${name}`);
          assert.deepEqual(t.shape, header[name].shape, `${rel}:${name}`);
          assert.equal(t.data.byteLength, elementCount(t.shape) * DTYPE_BYTES[t.dtype], `${rel}:${name}`);
          assert.equal(info.byteLength, t.data.byteLength);
          assert.deepEqual(t.data, raw.subarray(info.byteOffset, info.byteOffset + info.byteLength), `${rel}:${name}`);
          if (m) assert.deepEqual({ dtype: t.dtype, shape: t.shape }, m.tensors[name], `${rel}:${name} vs MANIFEST`);
        }
        // The fixtures were written in the reference layout, so a rewrite must be byte-identical.
        assert.deepEqual(serializeSafetensors(await f.readAll(), f.metadata), raw, `${rel}: re-serialized`);
      } finally {
        await f.close();
      }
    }
    assert.equal(manifest.size, files.length, 'MANIFEST.json lists every fixture file');
  },
);

test('gpt2 fixtures hold the documented batch and outputs', { skip: NO_FIXTURES }, async () => {
  const batchPath = join(FIXTURES, 'models/gpt2/batch.safetensors');
  const raw = new Uint8Array(readFileSync(batchPath));
  const { n, header } = rawHeader(raw);
  assert.deepEqual(Object.keys(header), ['attention_mask', 'input_ids', 'labels']);
  const batch = await readSafetensors(batchPath);
  for (const name of ['attention_mask', 'input_ids', 'labels']) {
    const t = batch.get(name)!;
    assert.equal(t.dtype, 'I64');
    assert.deepEqual(t.shape, [3, 12]);
    const [b, e] = header[name].data_offsets;
    const independent = Array.from({ length: 36 }, (_, i) => Buffer.from(raw.buffer, raw.byteOffset).readBigInt64LE(8 + n + b + 8 * i));
    assert.equal(e - b, 288);
    assert.deepEqual(Array.from(toBigInt64(t)), independent, name);
  }
  const mask = toBigInt64(batch.get('attention_mask')!);
  const ids = toBigInt64(batch.get('input_ids')!);
  const labels = toBigInt64(batch.get('labels')!);
  // Right padding with pad id 556; labels are the ids, -100 at padding (MANIFEST models[gpt2].padding).
  assert.deepEqual(
    [0, 1, 2].map((r) => mask.subarray(12 * r, 12 * r + 12).reduce((s, v) => s + v, 0n)),
    [12n, 9n, 6n],
  );
  for (let i = 0; i < 36; i++) {
    assert.equal(labels[i], mask[i] ? ids[i] : -100n);
    if (!mask[i]) assert.equal(ids[i], 556n);
  }
  assert.deepEqual(Array.from(toInt32(batch.get('input_ids')!).subarray(0, 6)), [303, 384, 262, 421, 285, 275]);

  const out = await SafetensorsFile.open(join(FIXTURES, 'models/gpt2/expected_outputs.safetensors'));
  try {
    assert.deepEqual(out.info('logits').shape, [3, 12, 557]);
    const loss = toFloat32(await out.read('loss'));
    assert.equal(loss.length, 1);
    assert.ok(Math.abs(loss[0]! - 6.32136536) < 1e-6, `loss ${loss[0]}`);
    // The generation prompt is the first 6 tokens of batch row 0, and the greedy ids extend it.
    const prompt = toBigInt64(await out.read('generate.prompt_ids'));
    const greedy = toBigInt64(await out.read('generate.greedy_ids'));
    assert.deepEqual(Array.from(prompt), Array.from(ids.subarray(0, 6)));
    assert.deepEqual(Array.from(greedy.subarray(0, 6)), Array.from(prompt));
    assert.equal(greedy.length, 14);
  } finally {
    await out.close();
  }

  const model = await openCheckpoint(join(FIXTURES, 'models/gpt2'));
  try {
    assert.ok(model instanceof SafetensorsFile);
    assert.deepEqual(model.metadata, { format: 'pt' });
    assert.deepEqual(model.info('transformer.wte.weight').shape, [557, 64]);
    assert.equal(toFloat32(await model.read('transformer.wpe.weight')).length, 128 * 64);
  } finally {
    await model.close();
  }
  const adapter = await openCheckpoint(join(FIXTURES, 'adapters/gpt2/lora_attn'), { weightsName: 'adapter_model.safetensors' });
  try {
    assert.ok(adapter.has('base_model.model.transformer.h.0.attn.c_attn.lora_A.weight'));
  } finally {
    await adapter.close();
  }
});

test('nf4 fixture mixes U8 and F32 tensors', { skip: NO_FIXTURES }, async () => {
  const f = await SafetensorsFile.open(join(FIXTURES, 'nf4/nf4_reference.safetensors'));
  try {
    const packed = await f.read('m0.packed');
    assert.equal(packed.dtype, 'U8');
    assert.deepEqual(packed.shape, [2048, 1]);
    assert.deepEqual(toInt32(packed).length, 2048);
    const map = toFloat32(await f.read('dynamic_map_signed'));
    assert.equal(map.length, 256);
    assert.ok(map.every((v) => v >= -1 && v <= 1));
  } finally {
    await f.close();
  }
});
