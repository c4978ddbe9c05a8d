// Adapter compression on save (the seed's Q = q(L)): lora_A/lora_B stored quantized (int8 with an
// absmax per row or per block, or NF4 with a float32 absmax per block), dequantized to float32 when
// the adapter is loaded. Magnitude vectors and base-weight copies stay float32.
//
// On disk (peft cannot read this form; `peft decompress` writes a standard adapter back):
// - adapter_model.safetensors: "<key>.q8" (I8, the tensor's shape) + "<key>.q8_scale" (F32), or
//   "<key>.nf4" (U8 packed, two codes per byte) + "<key>.nf4_absmax" (F32); the original key is absent;
//   __metadata__ "peft_ts.compression" holds the method, shapes, sizes and the measured output drift;
// - adapter_config.json: an extra "compression" entry, so Python peft refuses the folder loudly
//   (LoraConfig has no such field) instead of loading it with lora_B silently left at zero.

import type { RawTensor } from '../../io/safetensors.js';
import { type Quantized4bit, dequantize4bit, quantize4bit } from '../../quant/blockwise.js';
import { NF4_CODE } from '../../quant/codes.js';
import { dequantizeInt8, quantizeInt8 } from '../../quant/int8.js';
import { AdapterError, PeftConfigError, type TrainableTensor } from '../types.js';

export const COMPRESSION_METHODS = ['int8-row', 'int8-block', 'nf4'] as const;
export type AdapterCompression = (typeof COMPRESSION_METHODS)[number];

/** The safetensors __metadata__ key of a compressed adapter, and the adapter_config.json key. */
export const COMPRESSION_METADATA_KEY = 'peft_ts.compression';
export const COMPRESSION_CONFIG_KEY = 'compression';
/** safetensors __metadata__ key recording the 4-bit base an adapter was trained on (QLoRA). */
export const BASE_QUANTIZATION_METADATA_KEY = 'peft_ts.base_quantization';

export interface CompressionSpec {
  method: AdapterCompression;
  /** values per scale for int8-block and nf4 (default 64) */
  blockSize: number;
}

/** What a compressed adapter records about itself (metadata JSON; `peft info` shows it). */
export interface CompressionReport {
  method: AdapterCompression;
  block_size: number | null;
  /** tensors stored compressed, and their parameters */
  tensors: number;
  parameters: number;
  /** bytes those tensors take in float32, and compressed (codes + scales) */
  float32_bytes: number;
  stored_bytes: number;
  /** max |logit difference| of the model with the compressed vs the float32 adapter on `sample` */
  max_abs_logit_diff: number | null;
  sample: string | null;
  /** shapes of the compressed tensors by their saved key (the packed data does not carry them) */
  shapes: Record<string, number[]>;
}

export function compressionSpec(method: string, blockSize = 64): CompressionSpec {
  if (!(COMPRESSION_METHODS as readonly string[]).includes(method)) {
    throw new PeftConfigError(`adapter compression "${method}" is not supported; use one of ${COMPRESSION_METHODS.join(', ')}`);
  }
  if (!(Number.isInteger(blockSize) && blockSize >= 2 && blockSize % 2 === 0))
    throw new PeftConfigError(`compression block size ${blockSize} must be an even integer >= 2`);
  if (method === 'nf4' && !(blockSize >= 16 && blockSize <= 4096 && (blockSize & (blockSize - 1)) === 0)) {
    throw new PeftConfigError(`nf4 compression needs a power-of-two block size from 16 to 4096, got ${blockSize}`);
  }
  return { method: method as AdapterCompression, blockSize };
}

const bytesOf = (a: Float32Array | Int8Array | Uint8Array): Uint8Array => new Uint8Array(a.buffer, a.byteOffset, a.byteLength);

function nf4(t: TrainableTensor, spec: CompressionSpec): Quantized4bit {
  return quantize4bit(t.data, [t.data.length], { type: 'nf4', blockSize: spec.blockSize, doubleQuant: false });
}

/** The stored tensors for one float32 tensor saved under `key`. */
export function compressTensor(key: string, t: TrainableTensor, spec: CompressionSpec): Map<string, RawTensor> {
  const out = new Map<string, RawTensor>();
  if (spec.method === 'nf4') {
    const q = nf4(t, spec);
    const absmax = (q.absmax as { absmax: Float32Array }).absmax;
    out.set(`${key}.nf4`, { dtype: 'U8', shape: [q.packed.length], data: q.packed });
    out.set(`${key}.nf4_absmax`, { dtype: 'F32', shape: [absmax.length], data: bytesOf(absmax) });
    return out;
  }
  const q = quantizeInt8(t.data, t.shape, spec.method === 'int8-row' ? 'row' : 'block', spec.blockSize);
  out.set(`${key}.q8`, { dtype: 'I8', shape: [...t.shape], data: bytesOf(q.codes) });
  out.set(`${key}.q8_scale`, { dtype: 'F32', shape: [q.scales.length], data: bytesOf(q.scales) });
  return out;
}

/** What loading the compressed form of `t` gives back (float32). */
export function roundTrip(t: TrainableTensor, spec: CompressionSpec): Float32Array {
  if (spec.method === 'nf4') return dequantize4bit(nf4(t, spec));
  const q = quantizeInt8(t.data, t.shape, spec.method === 'int8-row' ? 'row' : 'block', spec.blockSize);
  return dequantizeInt8(q);
}

function f32(t: RawTensor, what: string): Float32Array {
  if (t.dtype !== 'F32') throw new AdapterError(`${what} must be F32, got ${t.dtype}`);
  const v = new Float32Array(t.data.byteLength / 4);
  new Uint8Array(v.buffer).set(t.data);
  return v;
}

/** Parses and checks the metadata entry of a compressed adapter file. */
export function parseCompressionReport(text: string, path: string): CompressionReport {
  let r: unknown;
  try {
    r = JSON.parse(text);
  } catch (e) {
    throw new AdapterError(`${path}: metadata "${COMPRESSION_METADATA_KEY}" is not JSON (${(e as Error).message}); the file is damaged`);
  }
  const o = r as Partial<CompressionReport>;
  if (
    typeof o !== 'object' ||
    o === null ||
    !(COMPRESSION_METHODS as readonly string[]).includes(o.method as string) ||
    typeof o.shapes !== 'object' ||
    o.shapes === null
  ) {
    throw new AdapterError(
      `${path}: metadata "${COMPRESSION_METADATA_KEY}" does not describe a compression this library knows (${COMPRESSION_METHODS.join(', ')})`,
    );
  }
  return o as CompressionReport;
}

/**
 * The float32 tensors of a compressed adapter file, by their standard saved keys: compressed pairs
 * are dequantized, every other float tensor passes through.
 */
export function decompressTensors(
  raw: Map<string, RawTensor>,
  report: CompressionReport,
  path: string,
  toFloat: (t: RawTensor, key: string) => Float32Array,
): Map<string, TrainableTensor> {
  const out = new Map<string, TrainableTensor>();
  const used = new Set<string>();
  const blockSize = report.block_size ?? 64;
  for (const [key, shape] of Object.entries(report.shapes)) {
    const n = shape.reduce((a, b) => a * b, 1);
    const need = (k: string): RawTensor => {
      const t = raw.get(k);
      if (!t) throw new AdapterError(`${path}: the compressed adapter lacks "${k}"; the file is incomplete`);
      used.add(k);
      return t;
    };
    let data: Float32Array;
    if (report.method === 'nf4') {
      const packed = need(`${key}.nf4`);
      if (packed.dtype !== 'U8') throw new AdapterError(`${path}: ${key}.nf4 must be U8, got ${packed.dtype}`);
      const absmax = f32(need(`${key}.nf4_absmax`), `${path}: ${key}.nf4_absmax`);
      const q: Quantized4bit = {
        type: 'nf4',
        blockSize,
        shape: [n],
        dtype: 'float32',
        packed: packed.data,
        code: NF4_CODE.slice(),
        absmax: { kind: 'plain', absmax },
      };
      try {
        data = dequantize4bit(q);
      } catch (e) {
        throw new AdapterError(`${path}: ${key}: ${(e as Error).message}`);
      }
    } else {
      const codes = need(`${key}.q8`);
      if (codes.dtype !== 'I8' || codes.data.byteLength !== n) throw new AdapterError(`${path}: ${key}.q8 must be I8 with ${n} values`);
      const scales = f32(need(`${key}.q8_scale`), `${path}: ${key}.q8_scale`);
      const group = report.method === 'int8-row' ? shape[shape.length - 1]! : blockSize;
      try {
        data = dequantizeInt8({
          codes: new Int8Array(codes.data.buffer, codes.data.byteOffset, n),
          scales,
          granularity: report.method === 'int8-row' ? 'row' : 'block',
          groupSize: group,
        });
      } catch (e) {
        throw new AdapterError(`${path}: ${key}: ${(e as Error).message}`);
      }
    }
    out.set(key, { shape: [...shape], data });
  }
  for (const [k, t] of raw) {
    if (used.has(k)) continue;
    out.set(k, { shape: [...t.shape], data: toFloat(t, k) });
  }
  return out;
}

/** adapter_config.json text with the "compression" entry inserted where json.dumps(sort_keys=True) puts it. */
export function withCompressionEntry(configText: string, spec: CompressionSpec): string {
  const value = `{\n    "block_size": ${spec.method === 'int8-row' ? 'null' : spec.blockSize},\n    "decompress": "peft decompress --adapter DIR --out DIR",\n    "method": "${spec.method}",\n    "tool": "peft-ts"\n  }`;
  const lines = configText.split('\n');
  const at = lines.findIndex((l) => {
    const m = /^ {2}"([^"]+)":/.exec(l);
    return m !== null && m[1]! > COMPRESSION_CONFIG_KEY;
  });
  const entry = `  "${COMPRESSION_CONFIG_KEY}": ${value},`;
  if (at < 0) {
    // the last entry: the previous one needs a comma
    const close = lines.lastIndexOf('}');
    lines[close - 1] = `${lines[close - 1]},`;
    lines.splice(close, 0, entry.slice(0, -1));
  } else lines.splice(at, 0, entry);
  return lines.join('\n');
}
