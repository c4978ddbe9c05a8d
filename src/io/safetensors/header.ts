// The safetensors header: validation of what a file declares, and construction of the reference
// layout when writing. The checks follow the Rust `safetensors` crate, the format's reference
// implementation, so a file accepted here loads there and vice versa.

import { SafetensorsError } from './errors.js';
import { DTYPE_BYTES, DTYPE_RANK, type RawTensor, type SafetensorsDtype, UNSUPPORTED_DTYPES, isSafetensorsDtype } from './dtype.js';

/** The Rust crate refuses larger headers; a limit also bounds what a corrupt prefix can allocate. */
export const MAX_HEADER_BYTES = 100_000_000;

/** Where one tensor lives in its file. */
export interface TensorInfo {
  name: string;
  dtype: SafetensorsDtype;
  shape: number[];
  /** Absolute position of the first byte in the file (8 + header length + begin offset). */
  byteOffset: number;
  byteLength: number;
}

export interface ParsedHeader {
  /** In data-buffer order, which for files written by the reference layout is dtype-then-name. */
  tensors: TensorInfo[];
  metadata: Record<string, string> | undefined;
}

const METADATA_KEY = '__metadata__';

/** Reads the u64 length prefix and checks it against the limit and the file size. */
export function headerLength(prefix: Uint8Array, fileSize: number, file: string): number {
  if (fileSize < 8 || prefix.byteLength < 8) {
    throw new SafetensorsError(file, `file is ${fileSize} bytes, shorter than the 8-byte header length prefix`);
  }
  const n = new DataView(prefix.buffer, prefix.byteOffset, 8).getBigUint64(0, true);
  if (n > BigInt(MAX_HEADER_BYTES)) {
    throw new SafetensorsError(file, `header length ${n} exceeds the ${MAX_HEADER_BYTES}-byte limit`);
  }
  if (Number(n) > fileSize - 8) {
    throw new SafetensorsError(file, `header length ${n} runs past the end of the ${fileSize}-byte file`);
  }
  return Number(n);
}

function isPlainObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function isIndex(v: unknown): v is number {
  return typeof v === 'number' && Number.isSafeInteger(v) && v >= 0;
}

const DECODER = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });

/**
 * Parses and validates the JSON header. `fileSize` is the whole file's, so the data buffer is what
 * follows the header; its tensors must tile it exactly, without gaps or overlaps.
 */
export function parseHeader(json: Uint8Array, fileSize: number, file: string): ParsedHeader {
  const dataStart = 8 + json.byteLength;
  const dataSize = fileSize - dataStart;
  let text: string;
  try {
    text = DECODER.decode(json);
  } catch {
    throw new SafetensorsError(file, 'header is not valid UTF-8');
  }
  if (!text.startsWith('{')) throw new SafetensorsError(file, "header does not start with '{'");
  let root: unknown;
  try {
    root = JSON.parse(text);
  } catch (e) {
    throw new SafetensorsError(file, `header is not valid JSON (${e instanceof Error ? e.message : String(e)})`);
  }
  if (!isPlainObject(root)) throw new SafetensorsError(file, 'header JSON is not an object');

  let metadata: Record<string, string> | undefined;
  const tensors: Array<TensorInfo & { begin: number; end: number }> = [];
  for (const [name, entry] of Object.entries(root)) {
    if (name === METADATA_KEY) {
      metadata = parseMetadata(entry, file);
      continue;
    }
    const fail: (detail: string) => never = (detail) => {
      throw new SafetensorsError(file, detail, name);
    };
    if (!isPlainObject(entry)) fail('header entry is not an object');
    const { dtype, shape, data_offsets: offsets } = entry as Record<string, unknown>;
    if (dtype === undefined) fail('missing dtype');
    if (!isSafetensorsDtype(dtype)) {
      if (typeof dtype === 'string' && UNSUPPORTED_DTYPES.has(dtype)) fail(`unsupported dtype ${dtype}`);
      fail(`unknown dtype ${JSON.stringify(dtype)}`);
    }
    if (shape === undefined) fail('missing shape');
    if (!Array.isArray(shape) || !shape.every(isIndex)) {
      fail(`shape ${JSON.stringify(shape)} is not a list of non-negative integers`);
    }
    if (offsets === undefined) fail('missing data_offsets');
    if (!Array.isArray(offsets) || offsets.length !== 2 || !offsets.every(isIndex)) {
      fail(`data_offsets ${JSON.stringify(offsets)} is not a pair of non-negative integers`);
    }
    const dims = shape as number[];
    const [begin, end] = offsets as [number, number];
    if (end < begin) fail(`data_offsets [${begin}, ${end}] end before they begin`);
    if (end > dataSize) fail(`data_offsets [${begin}, ${end}] run past the ${dataSize}-byte data buffer`);
    const dt = dtype as SafetensorsDtype;
    const want = byteSize(dims, dt);
    if (want !== end - begin) {
      fail(
        `${dt} shape [${dims.join(', ')}] needs ${want ?? 'an overflowing number of'} bytes ` +
          `but data_offsets [${begin}, ${end}] span ${end - begin}`,
      );
    }
    tensors.push({ name, dtype: dt, shape: dims, byteOffset: dataStart + begin, byteLength: end - begin, begin, end });
  }

  tensors.sort((a, b) => a.begin - b.begin || a.end - b.end);
  let covered = 0;
  let previous: string | undefined;
  for (const t of tensors) {
    if (t.begin < covered) {
      throw new SafetensorsError(file, `data_offsets [${t.begin}, ${t.end}] overlap tensor ${JSON.stringify(previous)}`, t.name);
    }
    if (t.begin > covered) {
      throw new SafetensorsError(file, `bytes ${covered}..${t.begin} of the data buffer belong to no tensor`, t.name);
    }
    covered = t.end;
    previous = t.name;
  }
  if (covered !== dataSize) {
    throw new SafetensorsError(file, `the last ${dataSize - covered} bytes of the data buffer belong to no tensor`);
  }
  return {
    tensors: tensors.map(({ name, dtype, shape, byteOffset, byteLength }) => ({ name, dtype, shape, byteOffset, byteLength })),
    metadata,
  };
}

function parseMetadata(entry: unknown, file: string): Record<string, string> | undefined {
  if (entry === null) return undefined;
  if (!isPlainObject(entry)) throw new SafetensorsError(file, '__metadata__ is not an object');
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(entry)) {
    if (typeof v !== 'string') throw new SafetensorsError(file, `__metadata__ value for ${JSON.stringify(k)} is not a string`);
    out[k] = v;
  }
  return out;
}

/** Bytes a tensor occupies, or undefined when the element count is not a safe integer. */
function byteSize(shape: readonly number[], dtype: SafetensorsDtype): number | undefined {
  let n = 1;
  for (const d of shape) {
    if (d === 0) return 0;
    if (n > Number.MAX_SAFE_INTEGER / d) n = Infinity;
    else n *= d;
  }
  const bytes = n * DTYPE_BYTES[dtype];
  return Number.isSafeInteger(bytes) ? bytes : undefined;
}

// JS compares strings by UTF-16 unit; Rust (the reference writer) by UTF-8 byte, i.e. by code
// point. The two disagree only between surrogates and units >= 0xE000, so remap those.
export function compareCodePoints(a: string, b: string): number {
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) {
    let x = a.charCodeAt(i);
    let y = b.charCodeAt(i);
    if (x === y) continue;
    if (x >= 0xd800) x = x >= 0xe000 ? x - 0x800 : x + 0x2000;
    if (y >= 0xd800) y = y >= 0xe000 ? y - 0x800 : y + 0x2000;
    return x - y;
  }
  return a.length - b.length;
}

const LONE_SURROGATE = /\p{Surrogate}/u;

function checkString(s: string, what: string, file: string, tensor?: string): void {
  // A lone surrogate has no UTF-8 form; JSON.stringify would escape it and Rust would reject it.
  if (LONE_SURROGATE.test(s)) throw new SafetensorsError(file, `${what} contains a lone UTF-16 surrogate`, tensor);
}

export type TensorInput = Record<string, RawTensor> | ReadonlyMap<string, RawTensor>;

/** The 8-byte prefix plus padded JSON, and the tensors in the order their bytes follow it. */
export interface Layout {
  header: Uint8Array;
  tensors: Array<[string, RawTensor]>;
  dataSize: number;
}

/**
 * Validates what is about to be written and lays it out as the reference writer does: tensors
 * ordered by dtype (widest first) then name, `__metadata__` first in the JSON, and the JSON padded
 * with spaces to a multiple of 8 so every tensor starts aligned in the file.
 */
export function layout(input: TensorInput, metadata: Record<string, string> | undefined, file: string): Layout {
  const entries: Array<[string, RawTensor]> = input instanceof Map ? [...input.entries()] : Object.entries(input);
  for (const [name, t] of entries) {
    if (typeof name !== 'string') throw new SafetensorsError(file, `tensor name ${String(name)} is not a string`);
    if (name === METADATA_KEY) throw new SafetensorsError(file, `${METADATA_KEY} is reserved and cannot name a tensor`, name);
    checkString(name, 'name', file, name);
    if (!isPlainObject(t) || !(t.data instanceof Uint8Array)) {
      throw new SafetensorsError(file, 'not a RawTensor ({dtype, shape, data: Uint8Array})', name);
    }
    if (!isSafetensorsDtype(t.dtype)) throw new SafetensorsError(file, `unknown dtype ${JSON.stringify(t.dtype)}`, name);
    if (!Array.isArray(t.shape) || !t.shape.every(isIndex)) {
      throw new SafetensorsError(file, `shape ${JSON.stringify(t.shape)} is not a list of non-negative integers`, name);
    }
    const want = byteSize(t.shape, t.dtype);
    if (want !== t.data.byteLength) {
      throw new SafetensorsError(file, `${t.dtype} shape [${t.shape.join(', ')}] needs ${want} bytes, data has ${t.data.byteLength}`, name);
    }
  }
  entries.sort(([an, a], [bn, b]) => DTYPE_RANK[b.dtype] - DTYPE_RANK[a.dtype] || compareCodePoints(an, bn));

  const parts: string[] = [];
  if (metadata !== undefined) {
    if (!isPlainObject(metadata)) throw new SafetensorsError(file, 'metadata is not an object');
    const kv: string[] = [];
    for (const [k, v] of Object.entries(metadata)) {
      if (typeof v !== 'string') throw new SafetensorsError(file, `metadata value for ${JSON.stringify(k)} is not a string`);
      checkString(k, `metadata key ${JSON.stringify(k)}`, file);
      checkString(v, `metadata value for ${JSON.stringify(k)}`, file);
      kv.push(`${JSON.stringify(k)}:${JSON.stringify(v)}`);
    }
    parts.push(`${JSON.stringify(METADATA_KEY)}:{${kv.join(',')}}`);
  }
  let offset = 0;
  for (const [name, t] of entries) {
    const end = offset + t.data.byteLength;
    // Built by hand: an object literal would move integer-like keys ("0") to the front.
    parts.push(`${JSON.stringify(name)}:{"dtype":"${t.dtype}","shape":[${t.shape.join(',')}],"data_offsets":[${offset},${end}]}`);
    offset = end;
  }
  const json = new TextEncoder().encode(`{${parts.join(',')}}`);
  const padded = Math.ceil(json.byteLength / 8) * 8;
  if (padded > MAX_HEADER_BYTES)
    throw new SafetensorsError(file, `header would be ${padded} bytes, over the ${MAX_HEADER_BYTES}-byte limit`);
  const header = new Uint8Array(8 + padded).fill(0x20, 8 + json.byteLength);
  new DataView(header.buffer).setBigUint64(0, BigInt(padded), true);
  header.set(json, 8);
  return { header, tensors: entries, dataSize: offset };
}
