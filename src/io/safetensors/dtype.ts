// Element types of the safetensors format and the conversions between raw little-endian tensor
// bytes and JS typed arrays. F16/BF16 are decoded bit-exactly (there is no Float16Array in Node
// 20), and views are only made over suitably aligned memory; otherwise the bytes are copied first.

export type SafetensorsDtype = 'F32' | 'F16' | 'BF16' | 'F64' | 'I64' | 'I32' | 'I8' | 'U8' | 'BOOL';

/** A tensor as stored in a file: dtype, shape and its little-endian bytes (row-major). */
export interface RawTensor {
  dtype: SafetensorsDtype;
  shape: number[];
  data: Uint8Array;
}

export const DTYPE_BYTES: Readonly<Record<SafetensorsDtype, number>> = {
  F64: 8,
  I64: 8,
  F32: 4,
  I32: 4,
  F16: 2,
  BF16: 2,
  I8: 1,
  U8: 1,
  BOOL: 1,
};

// Position in the Rust crate's `Dtype` enum: its writer orders tensors by this, descending, which
// is what puts wide types first and keeps every tensor aligned in the data buffer.
export const DTYPE_RANK: Readonly<Record<SafetensorsDtype, number>> = {
  BOOL: 0,
  U8: 1,
  I8: 2,
  F16: 7,
  BF16: 8,
  I32: 9,
  F32: 11,
  F64: 12,
  I64: 13,
};

/** Dtype names that are valid safetensors but that this library does not handle. */
export const UNSUPPORTED_DTYPES: ReadonlySet<string> = new Set([
  'I16',
  'U16',
  'U32',
  'U64',
  'F8_E5M2',
  'F8_E4M3',
  'F8_E4M3FN',
  'F8_E4M3FNUZ',
  'F8_E5M2FNUZ',
  'F8_E8M0',
  'F4',
  'F6_E2M3',
  'F6_E3M2',
  'C64',
]);

export function isSafetensorsDtype(s: unknown): s is SafetensorsDtype {
  return typeof s === 'string' && Object.prototype.hasOwnProperty.call(DTYPE_BYTES, s);
}

/** Number of elements of a shape; 1 for a scalar (empty shape). */
export function elementCount(shape: readonly number[]): number {
  let n = 1;
  for (const d of shape) n *= d;
  return n;
}

const LITTLE_ENDIAN = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;

// Scratch cell for reinterpreting float32 bits.
const F32 = new Float32Array(1);
const U32 = new Uint32Array(F32.buffer);

/** Decodes IEEE binary16 bits to the (exactly representable) number, NaN payloads aside. */
export function float16ToFloat32(bits: number): number {
  return f16Table()[bits & 0xffff]!;
}

/** Encodes x (first rounded to float32) as binary16 bits, rounding to nearest even. */
export function float32ToFloat16(x: number): number {
  F32[0] = x;
  const b = U32[0]!;
  const sign = (b >>> 16) & 0x8000;
  const exp = (b >>> 23) & 0xff;
  let mant = b & 0x7fffff;
  if (exp === 0xff) return sign | 0x7c00 | (mant !== 0 ? 0x200 | (mant >>> 13) : 0);
  const e = exp - 127 + 15;
  if (e >= 31) return sign | 0x7c00;
  if (e <= 0) {
    // Below 2^-25 everything rounds to zero, including the tie at exactly 2^-25 (to even 0).
    if (e < -10) return sign;
    mant |= 0x800000;
    const shift = 14 - e;
    const half = mant >>> shift;
    const rem = mant & ((1 << shift) - 1);
    const mid = 1 << (shift - 1);
    // A carry out of the subnormal range correctly yields the smallest normal (0x400).
    return sign | (rem > mid || (rem === mid && (half & 1) !== 0) ? half + 1 : half);
  }
  const h = (e << 10) | (mant >>> 13);
  const rem = mant & 0x1fff;
  // A carry may run into the exponent, which is the correct rounding (up to infinity at the top).
  return sign | (rem > 0x1000 || (rem === 0x1000 && (h & 1) !== 0) ? h + 1 : h);
}

/** Decodes bfloat16 bits: they are the high half of a float32, so this is exact. */
export function bfloat16ToFloat32(bits: number): number {
  U32[0] = (bits & 0xffff) << 16;
  return F32[0]!;
}

/** Encodes x (first rounded to float32) as bfloat16 bits, rounding to nearest even. */
export function float32ToBFloat16(x: number): number {
  F32[0] = x;
  const b = U32[0]!;
  if ((b & 0x7fffffff) > 0x7f800000) return (b >>> 16) | 0x40;
  return Math.floor((b + 0x7fff + ((b >>> 16) & 1)) / 0x10000);
}

let F16_TABLE: Float32Array | undefined;

// 256 KiB once, then a half-precision tensor decodes with one lookup per element.
function f16Table(): Float32Array {
  if (F16_TABLE) return F16_TABLE;
  const bits = new Uint32Array(65536);
  for (let h = 0; h < 65536; h++) {
    const sign = (h & 0x8000) << 16;
    const exp = (h >>> 10) & 0x1f;
    let mant = h & 0x3ff;
    if (exp === 0x1f) {
      bits[h] = sign | 0x7f800000 | (mant << 13);
    } else if (exp !== 0) {
      bits[h] = sign | ((exp - 15 + 127) << 23) | (mant << 13);
    } else if (mant === 0) {
      bits[h] = sign;
    } else {
      // Subnormal half: renormalise, every one is a normal float32.
      let e = -14;
      while ((mant & 0x400) === 0) {
        mant <<= 1;
        e--;
      }
      bits[h] = sign | ((e + 127) << 23) | ((mant & 0x3ff) << 13);
    }
  }
  F16_TABLE = new Float32Array(bits.buffer);
  return F16_TABLE;
}

type ViewCtor<T> = {
  new (buffer: ArrayBufferLike, byteOffset: number, length: number): T;
  readonly BYTES_PER_ELEMENT: number;
};

function checkedLength(t: RawTensor): number {
  const size = DTYPE_BYTES[t.dtype];
  const n = elementCount(t.shape);
  if (t.data.byteLength !== n * size) {
    throw new RangeError(`${t.dtype} tensor of shape [${t.shape.join(', ')}] needs ${n * size} bytes, has ${t.data.byteLength}`);
  }
  return n;
}

function swapped(data: Uint8Array, size: number): Uint8Array {
  const out = new Uint8Array(data.byteLength);
  for (let i = 0; i < data.byteLength; i += size) {
    for (let j = 0; j < size; j++) out[i + j] = data[i + size - 1 - j]!;
  }
  return out;
}

/**
 * A typed view of little-endian bytes. Shares memory with `data` when it is aligned (and the host
 * is little-endian); otherwise reads from a fresh copy, since a misaligned offset would make the
 * typed-array constructor throw.
 */
function viewOf<T>(data: Uint8Array, ctor: ViewCtor<T>): T {
  const size = ctor.BYTES_PER_ELEMENT;
  let bytes = data;
  if (!LITTLE_ENDIAN && size > 1) bytes = swapped(data, size);
  else if (bytes.byteOffset % size !== 0) bytes = bytes.slice();
  return new ctor(bytes.buffer, bytes.byteOffset, bytes.byteLength / size);
}

/**
 * The tensor's values as float32. F32 data is returned as a view when aligned (it shares memory
 * with `t.data`); F16 and BF16 decode exactly; F64 rounds to nearest; integer and BOOL tensors
 * convert by value (I64 beyond 2^24 loses precision, as any float32 would).
 */
export function toFloat32(t: RawTensor): Float32Array {
  const n = checkedLength(t);
  switch (t.dtype) {
    case 'F32':
      return viewOf(t.data, Float32Array);
    case 'F16': {
      const bits = viewOf(t.data, Uint16Array);
      const table = f16Table();
      const out = new Float32Array(n);
      for (let i = 0; i < n; i++) out[i] = table[bits[i]!]!;
      return out;
    }
    case 'BF16': {
      const bits = viewOf(t.data, Uint16Array);
      const out = new Float32Array(n);
      const outBits = new Uint32Array(out.buffer);
      for (let i = 0; i < n; i++) outBits[i] = bits[i]! << 16;
      return out;
    }
    case 'F64':
      return Float32Array.from(viewOf(t.data, Float64Array));
    case 'I64': {
      const v = viewOf(t.data, BigInt64Array);
      const out = new Float32Array(n);
      for (let i = 0; i < n; i++) out[i] = Number(v[i]!);
      return out;
    }
    case 'I32':
      return Float32Array.from(viewOf(t.data, Int32Array));
    case 'I8':
      return Float32Array.from(viewOf(t.data, Int8Array));
    case 'U8':
      return Float32Array.from(t.data);
    case 'BOOL':
      return Float32Array.from(t.data, (b) => (b !== 0 ? 1 : 0));
  }
}

/** The tensor's values as int64. I64 is a view when aligned; narrower integers and BOOL widen. */
export function toBigInt64(t: RawTensor): BigInt64Array {
  checkedLength(t);
  switch (t.dtype) {
    case 'I64':
      return viewOf(t.data, BigInt64Array);
    case 'I32':
      return BigInt64Array.from(viewOf(t.data, Int32Array), (v) => BigInt(v));
    case 'I8':
      return BigInt64Array.from(viewOf(t.data, Int8Array), (v) => BigInt(v));
    case 'U8':
      return BigInt64Array.from(t.data, (v) => BigInt(v));
    case 'BOOL':
      return BigInt64Array.from(t.data, (v) => (v !== 0 ? 1n : 0n));
    default:
      throw new TypeError(`toBigInt64: ${t.dtype} is not an integer dtype`);
  }
}

/** The tensor's values as int32. I32 is a view when aligned; I64 narrows, throwing if out of range. */
export function toInt32(t: RawTensor): Int32Array {
  const n = checkedLength(t);
  switch (t.dtype) {
    case 'I32':
      return viewOf(t.data, Int32Array);
    case 'I64': {
      const v = viewOf(t.data, BigInt64Array);
      const out = new Int32Array(n);
      for (let i = 0; i < n; i++) {
        const x = v[i]!;
        if (x < -2147483648n || x > 2147483647n) throw new RangeError(`toInt32: value ${x} at index ${i} overflows int32`);
        out[i] = Number(x);
      }
      return out;
    }
    case 'I8':
      return Int32Array.from(viewOf(t.data, Int8Array));
    case 'U8':
      return Int32Array.from(t.data);
    case 'BOOL':
      return Int32Array.from(t.data, (b) => (b !== 0 ? 1 : 0));
    default:
      throw new TypeError(`toInt32: ${t.dtype} is not an integer dtype`);
  }
}

export type TensorTypedArray = Float32Array | Float64Array | BigInt64Array | Int32Array | Int8Array | Uint8Array | Uint16Array;

function bytesOf(a: Exclude<TensorTypedArray, Uint8Array> | Uint8Array): Uint8Array {
  const bytes = new Uint8Array(a.buffer, a.byteOffset, a.byteLength);
  return LITTLE_ENDIAN || a.BYTES_PER_ELEMENT === 1 ? bytes : swapped(bytes, a.BYTES_PER_ELEMENT);
}

/**
 * Wraps a typed array as a RawTensor without copying where the bytes can be shared. The dtype
 * defaults to the array's natural one. Conversions that are exact or correctly rounded are also
 * accepted: Float32Array -> F16/BF16 (round to nearest even) or F64, Float64Array -> F32,
 * Int32Array -> I64, Uint8Array -> BOOL; a Uint16Array holds raw F16 or BF16 bits and needs the
 * dtype named.
 */
export function fromTypedArray(array: TensorTypedArray, shape: readonly number[], dtype?: SafetensorsDtype): RawTensor {
  for (const d of shape) {
    if (!Number.isSafeInteger(d) || d < 0) throw new RangeError(`fromTypedArray: invalid dimension ${d} in shape [${shape.join(', ')}]`);
  }
  if (elementCount(shape) !== array.length) {
    throw new RangeError(`fromTypedArray: shape [${shape.join(', ')}] needs ${elementCount(shape)} elements, array has ${array.length}`);
  }
  const mk = (dt: SafetensorsDtype, data: Uint8Array): RawTensor => ({ dtype: dt, shape: [...shape], data });
  const bad = (): never => {
    throw new TypeError(`fromTypedArray: cannot store a ${array.constructor.name} as ${dtype}`);
  };
  if (array instanceof Float32Array) {
    switch (dtype ?? 'F32') {
      case 'F32':
        return mk('F32', bytesOf(array));
      case 'F64':
        return mk('F64', bytesOf(Float64Array.from(array)));
      case 'F16':
        return mk('F16', bytesOf(Uint16Array.from(array, float32ToFloat16)));
      case 'BF16':
        return mk('BF16', bytesOf(Uint16Array.from(array, float32ToBFloat16)));
      default:
        return bad();
    }
  }
  if (array instanceof Float64Array) {
    if (dtype === undefined || dtype === 'F64') return mk('F64', bytesOf(array));
    if (dtype === 'F32') return mk('F32', bytesOf(Float32Array.from(array)));
    return bad();
  }
  if (array instanceof BigInt64Array) {
    return dtype === undefined || dtype === 'I64' ? mk('I64', bytesOf(array)) : bad();
  }
  if (array instanceof Int32Array) {
    if (dtype === undefined || dtype === 'I32') return mk('I32', bytesOf(array));
    if (dtype === 'I64') return mk('I64', bytesOf(BigInt64Array.from(array, (v) => BigInt(v))));
    return bad();
  }
  if (array instanceof Int8Array) {
    return dtype === undefined || dtype === 'I8' ? mk('I8', bytesOf(array)) : bad();
  }
  if (array instanceof Uint8Array) {
    if (dtype === undefined || dtype === 'U8') return mk('U8', bytesOf(array));
    if (dtype === 'BOOL') return mk('BOOL', bytesOf(array));
    return bad();
  }
  if (array instanceof Uint16Array) {
    return dtype === 'F16' || dtype === 'BF16' ? mk(dtype, bytesOf(array)) : bad();
  }
  return bad();
}
