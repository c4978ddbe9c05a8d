// The bitsandbytes 4-bit layout transformers saves for load_in_4bit models: next to each quantized
// '<w>' (uint8 [ceil(n/2), 1]) sit '<w>.absmax', '<w>.quant_map', '<w>.nested_absmax',
// '<w>.nested_quant_map' and '<w>.quant_state.bitsandbytes__<type>' (QuantState.as_dict(packed=True)).

import { type RawTensor, toFloat32 } from '../io/safetensors.js';
import { type AbsmaxState, type Quantized4bit, NESTED_BLOCK_SIZE, numel, validateQuantized } from './blockwise.js';
import type { QuantType } from './codes.js';
import { QuantizationError } from './errors.js';
import { RawNumber, type RawJson, pyFloatRepr } from './pyjson.js';

const QUANT_STATE_KEY = 'quant_state.bitsandbytes__';
/** Suffixes of the tensors a quantized weight brings along, after '<w>.'. */
export const BNB_COMPONENTS = [
  'absmax',
  'quant_map',
  'nested_absmax',
  'nested_quant_map',
  `${QUANT_STATE_KEY}nf4`,
  `${QUANT_STATE_KEY}fp4`,
] as const;

/** The part of QuantState that lives in the JSON tensor. */
export interface QuantStateJson {
  quant_type: QuantType;
  blocksize: number;
  dtype: string;
  shape: number[];
  nested_blocksize?: number;
  nested_dtype?: string;
  nested_offset?: number;
}

const bytesOf = (a: Float32Array | Uint8Array): Uint8Array => new Uint8Array(a.buffer, a.byteOffset, a.byteLength);

/** json.dumps of the non-tensor quant state entries, in the order QuantState.as_dict inserts them. */
function encodeQuantState(q: Quantized4bit): Uint8Array {
  const parts = [`"quant_type": "${q.type}"`, `"blocksize": ${q.blockSize}`, `"dtype": "${q.dtype}"`, `"shape": [${q.shape.join(', ')}]`];
  if (q.absmax.kind === 'double') {
    parts.push(
      `"nested_blocksize": ${q.absmax.nestedBlockSize}`,
      '"nested_dtype": "float32"',
      `"nested_offset": ${pyFloatRepr(q.absmax.offset)}`,
    );
  }
  return new TextEncoder().encode(`{${parts.join(', ')}}`);
}

export function decodeQuantState(bytes: Uint8Array, what: string): QuantStateJson {
  let v: unknown;
  try {
    v = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(bytes));
  } catch (e) {
    throw new QuantizationError(`${what}: the quant_state tensor is not UTF-8 JSON (${(e as Error).message}); the checkpoint is damaged`);
  }
  if (typeof v !== 'object' || v === null || Array.isArray(v)) throw new QuantizationError(`${what}: quant_state is not a JSON object`);
  const o = v as Record<string, unknown>;
  const bad = (k: string, want: string): never => {
    throw new QuantizationError(`${what}: quant_state field "${k}" must be ${want}, got ${JSON.stringify(o[k])}`);
  };
  const isInt = (x: unknown): x is number => typeof x === 'number' && Number.isSafeInteger(x) && x > 0;
  if (o.quant_type !== 'nf4' && o.quant_type !== 'fp4') bad('quant_type', '"nf4" or "fp4"');
  if (!isInt(o.blocksize)) bad('blocksize', 'a positive integer');
  if (typeof o.dtype !== 'string') bad('dtype', 'a dtype name');
  if (!Array.isArray(o.shape) || o.shape.length === 0 || !o.shape.every(isInt)) bad('shape', 'a list of positive integers');
  const out: QuantStateJson = {
    quant_type: o.quant_type as QuantType,
    blocksize: o.blocksize as number,
    dtype: o.dtype as string,
    shape: [...(o.shape as number[])],
  };
  if ('nested_offset' in o || 'nested_blocksize' in o) {
    if (typeof o.nested_offset !== 'number') bad('nested_offset', 'a number');
    if (!isInt(o.nested_blocksize)) bad('nested_blocksize', 'a positive integer');
    if (o.nested_dtype !== undefined && o.nested_dtype !== 'float32') bad('nested_dtype', '"float32"');
    out.nested_offset = o.nested_offset as number;
    out.nested_blocksize = o.nested_blocksize as number;
    out.nested_dtype = 'float32';
  }
  return out;
}

/** The tensors transformers writes for one quantized weight named `name` (e.g. "model.layers.0.mlp.up_proj.weight"). */
export function toBnbTensors(name: string, q: Quantized4bit): Map<string, RawTensor> {
  validateQuantized(q, name);
  const out = new Map<string, RawTensor>();
  out.set(name, { dtype: 'U8', shape: [q.packed.length, 1], data: q.packed });
  const a = q.absmax;
  if (a.kind === 'plain') {
    out.set(`${name}.absmax`, { dtype: 'F32', shape: [a.absmax.length], data: bytesOf(a.absmax) });
  } else {
    out.set(`${name}.absmax`, { dtype: 'U8', shape: [a.codes.length], data: a.codes });
  }
  out.set(`${name}.quant_map`, { dtype: 'F32', shape: [16], data: bytesOf(q.code) });
  if (a.kind === 'double') {
    out.set(`${name}.nested_absmax`, { dtype: 'F32', shape: [a.nestedAbsmax.length], data: bytesOf(a.nestedAbsmax) });
    out.set(`${name}.nested_quant_map`, { dtype: 'F32', shape: [a.code.length], data: bytesOf(a.code) });
  }
  const json = encodeQuantState(q);
  out.set(`${name}.${QUANT_STATE_KEY}${q.type}`, { dtype: 'U8', shape: [json.length], data: json });
  return out;
}

/** The quant_state key of `name` among the available tensor names, if it is a bitsandbytes 4-bit weight. */
export function quantStateKey(name: string, has: (key: string) => boolean): string | undefined {
  for (const t of ['nf4', 'fp4']) if (has(`${name}.${QUANT_STATE_KEY}${t}`)) return `${name}.${QUANT_STATE_KEY}${t}`;
  return undefined;
}

/** True for the companion tensors ('<w>.absmax', ...) of a quantized weight. */
export function isBnbComponent(key: string): boolean {
  return BNB_COMPONENTS.some((c) => key.endsWith(`.${c}`));
}

/** Rebuilds a quantized weight from its bitsandbytes tensors; `read` returns undefined for absent ones. */
export async function fromBnbTensors(name: string, read: (key: string) => Promise<RawTensor | undefined>): Promise<Quantized4bit> {
  const need = async (key: string): Promise<RawTensor> => {
    const t = await read(key);
    if (!t)
      throw new QuantizationError(
        `${name}: the 4-bit checkpoint lacks "${key}"; it was not saved by transformers/bitsandbytes, or is incomplete`,
      );
    return t;
  };
  let stateTensor: RawTensor | undefined;
  let type: QuantType | undefined;
  for (const t of ['nf4', 'fp4'] as const) {
    stateTensor = await read(`${name}.${QUANT_STATE_KEY}${t}`);
    if (stateTensor) {
      type = t;
      break;
    }
  }
  if (!stateTensor || !type)
    throw new QuantizationError(`${name}: no "${name}.${QUANT_STATE_KEY}nf4" (or fp4) tensor; not a bitsandbytes 4-bit weight`);
  if (stateTensor.dtype !== 'U8') throw new QuantizationError(`${name}: quant_state must be a U8 tensor, got ${stateTensor.dtype}`);
  const st = decodeQuantState(stateTensor.data, name);
  if (st.quant_type !== type)
    throw new QuantizationError(`${name}: quant_state says "${st.quant_type}" but is stored under bitsandbytes__${type}`);
  const packedT = await need(name);
  if (packedT.dtype !== 'U8') {
    throw new QuantizationError(
      `${name}: packed 4-bit data must be U8, got ${packedT.dtype} (bnb_4bit_quant_storage other than uint8 is not supported)`,
    );
  }
  const n = numel(st.shape);
  const mapT = await need(`${name}.quant_map`);
  const absT = await need(`${name}.absmax`);
  let absmax: AbsmaxState;
  if (st.nested_offset !== undefined) {
    if (absT.dtype !== 'U8') throw new QuantizationError(`${name}: double-quantized absmax must be U8, got ${absT.dtype}`);
    absmax = {
      kind: 'double',
      codes: absT.data,
      nestedAbsmax: copyF32(toFloat32(await need(`${name}.nested_absmax`))),
      code: copyF32(toFloat32(await need(`${name}.nested_quant_map`))),
      nestedBlockSize: st.nested_blocksize ?? NESTED_BLOCK_SIZE,
      offset: Math.fround(st.nested_offset),
    };
  } else {
    absmax = { kind: 'plain', absmax: copyF32(toFloat32(absT)) };
  }
  const q: Quantized4bit = {
    type,
    blockSize: st.blocksize,
    shape: st.shape,
    dtype: st.dtype,
    packed: packedT.data,
    code: copyF32(toFloat32(mapT)),
    absmax,
  };
  if (packedT.data.length !== Math.ceil(n / 2)) {
    throw new QuantizationError(
      `${name}: ${packedT.data.length} packed bytes but quant_state shape [${st.shape.join(', ')}] needs ${Math.ceil(n / 2)}`,
    );
  }
  validateQuantized(q, name);
  return q;
}

// toFloat32 of an F32 tensor is a view into the read buffer; small tables are copied so they own their memory.
function copyF32(a: Float32Array): Float32Array {
  return a.byteOffset === 0 && a.byteLength === a.buffer.byteLength ? a : a.slice();
}

export interface BnbConfigOptions {
  type: QuantType;
  doubleQuant: boolean;
  /** modules kept in full precision that transformers should not convert (llm_int8_skip_modules) */
  skipModules?: string[] | null;
  computeDtype?: string;
}

/** config.json's quantization_config as transformers' BitsAndBytesConfig.to_dict() writes it. */
export function bnbQuantizationConfig(o: BnbConfigOptions): { [key: string]: RawJson } {
  return {
    _load_in_4bit: true,
    _load_in_8bit: false,
    bnb_4bit_compute_dtype: o.computeDtype ?? 'float32',
    bnb_4bit_quant_storage: 'uint8',
    bnb_4bit_quant_type: o.type,
    bnb_4bit_use_double_quant: o.doubleQuant,
    llm_int8_enable_fp32_cpu_offload: false,
    llm_int8_has_fp16_weight: false,
    llm_int8_skip_modules: o.skipModules && o.skipModules.length ? [...o.skipModules] : null,
    llm_int8_threshold: new RawNumber('6.0'),
    load_in_4bit: true,
    load_in_8bit: false,
    quant_method: 'bitsandbytes',
  };
}

/** What a config.json quantization_config says, when it describes bitsandbytes 4-bit weights. */
export function parseBnbQuantizationConfig(raw: unknown): { type: QuantType; doubleQuant: boolean; skipModules: string[] } | undefined {
  if (typeof raw !== 'object' || raw === null) return undefined;
  const o = raw as Record<string, unknown>;
  if (o.quant_method !== 'bitsandbytes') return undefined;
  if (o.load_in_8bit === true || o._load_in_8bit === true) {
    throw new QuantizationError(
      'this checkpoint is bitsandbytes 8-bit (load_in_8bit); only 4-bit (load_in_4bit) checkpoints can be loaded; load the original weights and quantize to 4-bit instead',
    );
  }
  if (o.load_in_4bit !== true && o._load_in_4bit !== true) return undefined;
  const type = o.bnb_4bit_quant_type ?? 'fp4';
  if (type !== 'nf4' && type !== 'fp4')
    throw new QuantizationError(`quantization_config.bnb_4bit_quant_type "${String(type)}" is not supported; use nf4 or fp4`);
  const storage = o.bnb_4bit_quant_storage ?? 'uint8';
  if (storage !== 'uint8')
    throw new QuantizationError(`quantization_config.bnb_4bit_quant_storage "${String(storage)}" is not supported; only uint8 packing is`);
  const skip = Array.isArray(o.llm_int8_skip_modules) ? o.llm_int8_skip_modules.filter((s): s is string => typeof s === 'string') : [];
  return { type, doubleQuant: o.bnb_4bit_use_double_quant === true, skipModules: skip };
}
