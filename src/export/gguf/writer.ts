// A GGUF (version 3) file writer, after the specification in ggml-org/ggml docs/gguf.md:
//   header: magic "GGUF", version u32, tensor count u64, metadata count u64
//   metadata: key (u64 length + UTF-8), value type u32, value (arrays: element type u32, count u64, elements)
//   tensor infos: name, n_dims u32, dims u64 (ggml order: innermost first, the reverse of a
//                 row-major shape), ggml type u32, offset u64 into the data section
//   padding to general.alignment (32), then every tensor's bytes, each aligned.
// Everything is little-endian. The file is assembled as a list of chunks: tensor bytes are never
// copied into one big buffer.

import { float32ToFloat16 } from '../../io/safetensors/dtype.js';

const GGUF_MAGIC = 0x46554747; // "GGUF"
const GGUF_VERSION = 3;
const ALIGNMENT = 32;

export enum ValueType {
  UINT8 = 0,
  INT8 = 1,
  UINT16 = 2,
  INT16 = 3,
  UINT32 = 4,
  INT32 = 5,
  FLOAT32 = 6,
  BOOL = 7,
  STRING = 8,
  ARRAY = 9,
  UINT64 = 10,
  INT64 = 11,
  FLOAT64 = 12,
}

/** ggml tensor types this writer produces. */
export enum GgmlType {
  F32 = 0,
  F16 = 1,
  Q8_0 = 8,
}

/** general.file_type (llama_ftype) for a file whose matrices are all of one type. */
export const FILE_TYPE: Record<GgmlType, number> = { [GgmlType.F32]: 0, [GgmlType.F16]: 1, [GgmlType.Q8_0]: 7 };

export type MetaValue =
  | { type: ValueType.STRING; value: string }
  | { type: ValueType.BOOL; value: boolean }
  | {
      type:
        | ValueType.UINT32
        | ValueType.INT32
        | ValueType.FLOAT32
        | ValueType.UINT8
        | ValueType.INT8
        | ValueType.UINT16
        | ValueType.INT16
        | ValueType.FLOAT64;
      value: number;
    }
  | { type: ValueType.UINT64 | ValueType.INT64; value: bigint }
  | { type: ValueType.ARRAY; elementType: ValueType.STRING; value: string[] }
  | { type: ValueType.ARRAY; elementType: ValueType.INT32 | ValueType.UINT32 | ValueType.FLOAT32; value: number[] };

export const str = (value: string): MetaValue => ({ type: ValueType.STRING, value });
export const u32 = (value: number): MetaValue => ({ type: ValueType.UINT32, value });
export const f32 = (value: number): MetaValue => ({ type: ValueType.FLOAT32, value });
export const bool = (value: boolean): MetaValue => ({ type: ValueType.BOOL, value });
export const strings = (value: string[]): MetaValue => ({ type: ValueType.ARRAY, elementType: ValueType.STRING, value });
export const i32s = (value: number[]): MetaValue => ({ type: ValueType.ARRAY, elementType: ValueType.INT32, value });

export interface GgufTensor {
  name: string;
  /** row-major shape as in the state dict ([rows, cols]); written reversed, as ggml's ne */
  shape: number[];
  type: GgmlType;
  data: Uint8Array;
}

/** Bytes of one ggml tensor of `shape` in `type`. */
function tensorBytes(shape: readonly number[], type: GgmlType): number {
  const n = shape.reduce((a, b) => a * b, 1);
  if (type === GgmlType.F32) return n * 4;
  if (type === GgmlType.F16) return n * 2;
  return (n / 32) * 34;
}

const bytesOf = (a: ArrayBufferView): Uint8Array => new Uint8Array(a.buffer, a.byteOffset, a.byteLength);

/** float32 data in a ggml type: F32 as is, F16 rounded to nearest even, Q8_0 in blocks of 32 along rows. */
export function encodeTensor(x: Float32Array, type: GgmlType): Uint8Array {
  if (type === GgmlType.F32) return bytesOf(x);
  if (type === GgmlType.F16) {
    const h = new Uint16Array(x.length);
    for (let i = 0; i < x.length; i++) h[i] = float32ToFloat16(x[i]!);
    return bytesOf(h);
  }
  // Q8_0: per block of 32, d = max|x| / 127 stored as f16, q = round(x / d) as int8 (ggml's quantize_row_q8_0_ref)
  if (x.length % 32 !== 0) throw new Error(`Q8_0 needs a multiple of 32 elements, got ${x.length}`);
  const out = new Uint8Array((x.length / 32) * 34);
  const view = new DataView(out.buffer);
  for (let b = 0; b < x.length / 32; b++) {
    let amax = 0;
    for (let i = 0; i < 32; i++) amax = Math.max(amax, Math.abs(x[b * 32 + i]!));
    const d = amax / 127;
    const id = d ? 1 / d : 0;
    view.setUint16(b * 34, float32ToFloat16(d), true);
    for (let i = 0; i < 32; i++) {
      const v = x[b * 32 + i]! * id;
      view.setInt8(b * 34 + 2 + i, Math.sign(v) * Math.round(Math.abs(v))); // roundf: half away from zero
    }
  }
  return out;
}

class Chunks {
  readonly parts: Uint8Array[] = [];
  private buf = new Uint8Array(1 << 16);
  private view = new DataView(this.buf.buffer);
  private pos = 0;
  length = 0;

  private room(n: number): void {
    if (this.pos + n <= this.buf.length) return;
    this.flush();
    if (n > this.buf.length) {
      this.buf = new Uint8Array(n);
      this.view = new DataView(this.buf.buffer);
    }
  }
  flush(): void {
    if (this.pos) this.parts.push(this.buf.slice(0, this.pos));
    this.pos = 0;
  }
  u8(v: number): void {
    this.room(1);
    this.view.setUint8(this.pos, v);
    this.pos += 1;
    this.length += 1;
  }
  u32(v: number): void {
    this.room(4);
    this.view.setUint32(this.pos, v, true);
    this.pos += 4;
    this.length += 4;
  }
  i32(v: number): void {
    this.room(4);
    this.view.setInt32(this.pos, v, true);
    this.pos += 4;
    this.length += 4;
  }
  f32(v: number): void {
    this.room(4);
    this.view.setFloat32(this.pos, v, true);
    this.pos += 4;
    this.length += 4;
  }
  f64(v: number): void {
    this.room(8);
    this.view.setFloat64(this.pos, v, true);
    this.pos += 8;
    this.length += 8;
  }
  u64(v: number | bigint): void {
    this.room(8);
    this.view.setBigUint64(this.pos, BigInt(v), true);
    this.pos += 8;
    this.length += 8;
  }
  i64(v: bigint): void {
    this.room(8);
    this.view.setBigInt64(this.pos, v, true);
    this.pos += 8;
    this.length += 8;
  }
  raw(b: Uint8Array): void {
    if (b.length > 4096) {
      this.flush();
      this.parts.push(b);
      this.length += b.length;
      return;
    }
    this.room(b.length);
    this.buf.set(b, this.pos);
    this.pos += b.length;
    this.length += b.length;
  }
  string(s: string): void {
    const b = new TextEncoder().encode(s);
    this.u64(b.length);
    this.raw(b);
  }
  pad(): void {
    while (this.length % ALIGNMENT) this.u8(0);
  }
}

function writeScalar(c: Chunks, type: ValueType, v: number | bigint | boolean | string): void {
  switch (type) {
    case ValueType.UINT8:
    case ValueType.INT8:
      return c.u8(Number(v) & 0xff);
    case ValueType.UINT16:
    case ValueType.INT16: {
      const n = Number(v) & 0xffff;
      c.u8(n & 0xff);
      return c.u8(n >> 8);
    }
    case ValueType.UINT32:
      return c.u32(Number(v));
    case ValueType.INT32:
      return c.i32(Number(v));
    case ValueType.FLOAT32:
      return c.f32(Number(v));
    case ValueType.FLOAT64:
      return c.f64(Number(v));
    case ValueType.BOOL:
      return c.u8(v ? 1 : 0);
    case ValueType.STRING:
      return c.string(String(v));
    case ValueType.UINT64:
      return c.u64(BigInt(v as bigint));
    case ValueType.INT64:
      return c.i64(BigInt(v as bigint));
    case ValueType.ARRAY:
      throw new Error('nested arrays are not written');
  }
}

/** The whole file as chunks (header, metadata, tensor infos, aligned tensor data). */
export function encodeGguf(metadata: ReadonlyMap<string, MetaValue>, tensors: readonly GgufTensor[]): Uint8Array[] {
  const c = new Chunks();
  c.u32(GGUF_MAGIC);
  c.u32(GGUF_VERSION);
  c.u64(tensors.length);
  c.u64(metadata.size);
  for (const [key, m] of metadata) {
    c.string(key);
    c.u32(m.type);
    if (m.type === ValueType.ARRAY) {
      c.u32(m.elementType);
      c.u64(m.value.length);
      for (const e of m.value) writeScalar(c, m.elementType, e);
    } else {
      writeScalar(c, m.type, m.value);
    }
  }
  let offset = 0;
  const offsets: number[] = [];
  const names = new Set<string>();
  for (const t of tensors) {
    if (names.has(t.name)) throw new Error(`tensor ${t.name} is written twice`);
    names.add(t.name);
    const expected = tensorBytes(t.shape, t.type);
    if (t.data.byteLength !== expected)
      throw new Error(`tensor ${t.name}: ${t.data.byteLength} bytes, ${GgmlType[t.type]} [${t.shape}] needs ${expected}`);
    c.string(t.name);
    c.u32(t.shape.length);
    for (const d of [...t.shape].reverse()) c.u64(d);
    c.u32(t.type);
    c.u64(offset);
    offsets.push(offset);
    offset += Math.ceil(t.data.byteLength / ALIGNMENT) * ALIGNMENT;
  }
  c.pad();
  for (const t of tensors) {
    c.raw(t.data);
    c.pad();
  }
  c.flush();
  return c.parts;
}
