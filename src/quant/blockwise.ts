// Host-side blockwise quantization, byte-identical to bitsandbytes: 4-bit NF4/FP4 with an absmax per
// block, two codes per byte (element 2k in the high nibble), and double quantization of the absmax
// values (8-bit dynamic map, blocks of 256, mean offset subtracted). Tight typed-array loops.

import { DYNAMIC_MAP_SIGNED, LUT_MIXED, LUT_SCALE, NearestCode, type QuantType, type Rounding, codeTable, rounderFor } from './codes.js';
import { QuantizationError } from './errors.js';

/** Absmax values as bitsandbytes keeps them: plain float32, or themselves 8-bit quantized. */
export type AbsmaxState =
  | { kind: 'plain'; absmax: Float32Array }
  | {
      kind: 'double';
      /** one 8-bit code per block (index into `code`) */
      codes: Uint8Array;
      /** float32 absmax of each nested block of codes */
      nestedAbsmax: Float32Array;
      /** the 256-entry nested code table (quant_state nested_quant_map) */
      code: Float32Array;
      nestedBlockSize: number;
      /** the mean that was subtracted before quantizing (float32 value) */
      offset: number;
    };

/** One 4-bit quantized tensor: bitsandbytes' packed data and QuantState. */
export interface Quantized4bit {
  type: QuantType;
  blockSize: number;
  /** logical shape of the quantized matrix (quant_state "shape"); torch nn.Linear layout [out, in] */
  shape: number[];
  /** dtype the tensor had before quantization, as quant_state names it ("float32", "float16", "bfloat16") */
  dtype: string;
  /** ceil(n / 2) bytes: element 2k in the high nibble, 2k + 1 in the low nibble */
  packed: Uint8Array;
  /** the 16-entry code table (quant_state quant_map) */
  code: Float32Array;
  absmax: AbsmaxState;
}

export interface QuantizeOptions {
  /** 'nf4' (default) or 'fp4' */
  type?: QuantType;
  /** elements per absmax block (default 64); a power of two from 16 to 4096 */
  blockSize?: number;
  /** quantize the absmax values too (default true, bnb_4bit_use_double_quant) */
  doubleQuant?: boolean;
  /** how a value picks its code (default 'argmin', bitsandbytes' default backend) */
  rounding?: Rounding;
  /** the dtype recorded in the quant state (default "float32") */
  dtype?: string;
}

/** bitsandbytes' nested block size for double quantization. */
export const NESTED_BLOCK_SIZE = 256;

export function checkBlockSize(blockSize: number): void {
  if (!Number.isInteger(blockSize) || blockSize < 16 || blockSize > 4096 || (blockSize & (blockSize - 1)) !== 0) {
    throw new QuantizationError(`block size ${blockSize} is not supported; use a power of two from 16 to 4096 (bitsandbytes uses 64)`);
  }
}

export function numel(shape: readonly number[]): number {
  let n = 1;
  for (const d of shape) n *= d;
  return n;
}

/**
 * torch's float32 CPU sum of a contiguous vector (cascade_sum with 8-lane vectors, 4-way ILP and
 * leveled accumulators, one thread), then the division mean() does: how bitsandbytes' offset is
 * computed, reproduced add for add so the offset matches to the bit.
 */
export function torchMeanF32(a: Float32Array): number {
  const W = 8;
  const n = a.length;
  const vecs = Math.floor(n / W);
  const rows = Math.floor(vecs / 4);
  // acc[level][k] is an 8-lane vector, stored flat: ((level * 4) + k) * W + lane
  const acc = new Float32Array(4 * 4 * W);
  const levelPower = Math.max(4, Math.floor(ceilLog2(rows) / 4));
  const levelStep = 2 ** levelPower;
  const levelMask = levelStep - 1;
  const addRow = (i: number): void => {
    for (let k = 0; k < 4; k++) {
      const base = (i * 4 + k) * W;
      for (let l = 0; l < W; l++) acc[k * W + l] = acc[k * W + l]! + a[base + l]!;
    }
  };
  let i = 0;
  while (i + levelStep <= rows) {
    for (let j = 0; j < levelStep; j++, i++) addRow(i);
    for (let j = 1; j < 4; j++) {
      for (let k = 0; k < 4; k++) {
        for (let l = 0; l < W; l++) {
          acc[(j * 4 + k) * W + l] = acc[(j * 4 + k) * W + l]! + acc[((j - 1) * 4 + k) * W + l]!;
          acc[((j - 1) * 4 + k) * W + l] = 0;
        }
      }
      if ((i & (levelMask * 2 ** (j * levelPower))) !== 0) break;
    }
  }
  for (; i < rows; i++) addRow(i);
  for (let j = 1; j < 4; j++) {
    for (let k = 0; k < 4; k++) for (let l = 0; l < W; l++) acc[k * W + l] = acc[k * W + l]! + acc[(j * 4 + k) * W + l]!;
  }
  // leftover whole vectors go to partial 0, then partials 1..3 fold into it
  for (let v = rows * 4; v < vecs; v++) for (let l = 0; l < W; l++) acc[l] = acc[l]! + a[v * W + l]!;
  for (let k = 1; k < 4; k++) for (let l = 0; l < W; l++) acc[l] = acc[l]! + acc[k * W + l]!;
  let total = 0;
  for (let k = vecs * W; k < n; k++) total = Math.fround(total + a[k]!);
  for (let l = 0; l < W; l++) total = Math.fround(total + acc[l]!);
  return Math.fround(total / n);
}

function ceilLog2(x: number): number {
  return x <= 1 ? 0 : Math.ceil(Math.log2(x));
}

const dynamicNearest = new NearestCode(DYNAMIC_MAP_SIGNED);

/**
 * bitsandbytes' quantize_blockwise (default backend) with its dynamic map: per block the absmax,
 * x * (1 / absmax) clamped to [-1, 1], and the argmin code. Used on the absmax values.
 */
function quantizeBlockwise8bit(
  a: Float32Array,
  blockSize = NESTED_BLOCK_SIZE,
  code: Float32Array = DYNAMIC_MAP_SIGNED,
): { codes: Uint8Array; absmax: Float32Array } {
  const near = code === DYNAMIC_MAP_SIGNED ? dynamicNearest : new NearestCode(code);
  const n = a.length;
  const blocks = Math.ceil(n / blockSize);
  const absmax = new Float32Array(blocks);
  const codes = new Uint8Array(n);
  for (let b = 0; b < blocks; b++) {
    const start = b * blockSize;
    const end = Math.min(n, start + blockSize);
    let m = 0;
    for (let i = start; i < end; i++) m = Math.max(m, Math.abs(a[i]!));
    absmax[b] = m;
    const inv = Math.fround(1 / m);
    for (let i = start; i < end; i++) {
      let s = Math.fround(a[i]! * inv);
      if (s > 1) s = 1;
      else if (s < -1) s = -1;
      codes[i] = near.find(s);
    }
  }
  return { codes, absmax };
}

/** dequantize_blockwise: code[q] * absmax[block] in float32. */
function dequantizeBlockwise8bit(codes: Uint8Array, absmax: Float32Array, code: Float32Array, blockSize: number): Float32Array {
  const out = new Float32Array(codes.length);
  for (let i = 0; i < codes.length; i++) out[i] = code[codes[i]!]! * absmax[Math.floor(i / blockSize)]!;
  return out;
}

/** The per-block float32 absmax, reconstructed from the nested quantization where there is one. */
export function blockAbsmax(state: AbsmaxState): Float32Array {
  if (state.kind === 'plain') return state.absmax;
  const out = dequantizeBlockwise8bit(state.codes, state.nestedAbsmax, state.code, state.nestedBlockSize);
  const off = Math.fround(state.offset);
  for (let i = 0; i < out.length; i++) out[i] = out[i]! + off;
  return out;
}

/** Double quantization of absmax values: offset = mean, then 8-bit blockwise of absmax - offset. */
function doubleQuantize(absmax: Float32Array): AbsmaxState {
  const offset = torchMeanF32(absmax);
  const centered = new Float32Array(absmax.length);
  for (let i = 0; i < absmax.length; i++) centered[i] = absmax[i]! - offset;
  const { codes, absmax: nested } = quantizeBlockwise8bit(centered, NESTED_BLOCK_SIZE);
  return { kind: 'double', codes, nestedAbsmax: nested, code: DYNAMIC_MAP_SIGNED.slice(), nestedBlockSize: NESTED_BLOCK_SIZE, offset };
}

/**
 * quantize_4bit(A, blocksize, compress_statistics, quant_type): `data` is the tensor flattened
 * row-major, `shape` its shape. Every value must be finite.
 */
export function quantize4bit(data: Float32Array, shape: readonly number[], opts: QuantizeOptions = {}): Quantized4bit {
  const type = opts.type ?? 'nf4';
  if (type !== 'nf4' && type !== 'fp4')
    throw new QuantizationError(`quantization type "${String(type)}" is not supported; use "nf4" or "fp4"`);
  const rounding = opts.rounding ?? 'argmin';
  if (rounding !== 'argmin' && rounding !== 'midpoint')
    throw new QuantizationError(`rounding "${String(rounding)}" is not supported; use "argmin" or "midpoint"`);
  const blockSize = opts.blockSize ?? 64;
  checkBlockSize(blockSize);
  const n = data.length;
  if (numel(shape) !== n) throw new QuantizationError(`tensor has ${n} values but shape [${shape.join(', ')}] needs ${numel(shape)}`);
  if (n === 0) throw new QuantizationError('cannot quantize an empty tensor');
  const { exact, lut } = rounderFor(type, rounding);
  const blocks = Math.ceil(n / blockSize);
  const absmax = new Float32Array(blocks);
  const packed = new Uint8Array(Math.ceil(n / 2));
  // The reference rule on float32 values: s = fround(x * fround(1 / absmax)) clamped to [-1, 1].
  const slow = (x: number, inv: number): number => {
    let s = Math.fround(x * inv);
    if (s > 1) s = 1;
    else if (s < -1) s = -1;
    return exact(s);
  };
  const zero = exact(0);
  for (let b = 0; b < blocks; b++) {
    const start = b * blockSize;
    const end = Math.min(n, start + blockSize);
    let m = 0;
    // Math.max propagates NaN, so a NaN or an infinity leaves m non-finite
    for (let i = start; i < end; i++) m = Math.max(m, Math.abs(data[i]!));
    if (!(m < Infinity)) {
      throw new QuantizationError(
        `value ${firstNonFinite(data, start, end)} at flat index ${start}..${end - 1} cannot be quantized; the weights contain NaN or infinity (check the checkpoint)`,
      );
    }
    absmax[b] = m;
    // Blocks are even-sized, so a byte never straddles two blocks.
    let p = start >> 1;
    let i = start;
    if (m === 0) {
      // 0 * (1/0) is NaN: both bitsandbytes paths then pick code 0.
      for (; i + 1 < end; i += 2) packed[p++] = 0;
      if (i < end) packed[p] = zero;
      continue;
    }
    const inv = Math.fround(1 / m);
    if (inv === Infinity) {
      // absmax below 2^-128: x * inf is +-inf (clamped to +-1) or NaN, only the exact rule handles it
      for (; i + 1 < end; i += 2) packed[p++] = (slow(data[i]!, inv) << 4) | slow(data[i + 1]!, inv);
      if (i < end) packed[p] = (slow(data[i]!, inv) << 4) | zero;
      continue;
    }
    // Fast path: a bucket of [-1, 1] that holds no decision boundary answers for every value in it.
    // The product is taken in float64 here; it differs from the float32 one by less than an ulp,
    // which can only move a value across a bucket edge where both buckets give the same code (edges
    // near a boundary belong to mixed buckets), and values past +-1 land in the end buckets.
    for (; i + 1 < end; i += 2) {
      const x0 = data[i]!;
      const x1 = data[i + 1]!;
      let c0 = lut[((x0 * inv + 1) * LUT_SCALE) | 0]!;
      let c1 = lut[((x1 * inv + 1) * LUT_SCALE) | 0]!;
      if (c0 === LUT_MIXED) c0 = slow(x0, inv);
      if (c1 === LUT_MIXED) c1 = slow(x1, inv);
      packed[p++] = (c0 << 4) | c1;
    }
    // An odd total leaves a last byte whose low nibble codes the padding value 0.
    if (i < end) {
      const x0 = data[i]!;
      let c0 = lut[((x0 * inv + 1) * LUT_SCALE) | 0]!;
      if (c0 === LUT_MIXED) c0 = slow(x0, inv);
      packed[p] = (c0 << 4) | zero;
    }
  }
  return {
    type,
    blockSize,
    shape: [...shape],
    dtype: opts.dtype ?? 'float32',
    packed,
    code: codeTable(type).slice(),
    absmax: opts.doubleQuant === false ? { kind: 'plain', absmax } : doubleQuantize(absmax),
  };
}

function firstNonFinite(data: Float32Array, start: number, end: number): number {
  for (let i = start; i < end; i++) if (!Number.isFinite(data[i]!)) return data[i]!;
  return NaN;
}

/** dequantize_4bit: code[nibble] * absmax[block] in float32, in the quantized tensor's shape. */
export function dequantize4bit(q: Quantized4bit, out?: Float32Array): Float32Array {
  const n = numel(q.shape);
  validateQuantized(q);
  const absmax = blockAbsmax(q.absmax);
  const res = out ?? new Float32Array(n);
  if (res.length !== n) throw new QuantizationError(`output buffer has ${res.length} values, the tensor ${n}`);
  const code = q.code;
  const bs = q.blockSize;
  const packed = q.packed;
  for (let b = 0; b < absmax.length; b++) {
    const a = absmax[b]!;
    const start = b * bs;
    const end = Math.min(n, start + bs);
    for (let i = start; i < end; i += 2) {
      const byte = packed[i >> 1]!;
      res[i] = code[byte >> 4]! * a;
      if (i + 1 < end) res[i + 1] = code[byte & 15]! * a;
    }
  }
  return res;
}

/** Checks that a quantized tensor's pieces agree with each other (sizes, table, block counts). */
export function validateQuantized(q: Quantized4bit, what = 'quantized tensor'): void {
  checkBlockSize(q.blockSize);
  const n = numel(q.shape);
  if (!(n > 0)) throw new QuantizationError(`${what}: shape [${q.shape.join(', ')}] is empty`);
  if (q.packed.length !== Math.ceil(n / 2)) {
    throw new QuantizationError(
      `${what}: ${q.packed.length} packed bytes, but shape [${q.shape.join(', ')}] needs ${Math.ceil(n / 2)}; the checkpoint is inconsistent`,
    );
  }
  if (q.code.length !== 16) throw new QuantizationError(`${what}: quant_map has ${q.code.length} entries, expected 16`);
  const blocks = Math.ceil(n / q.blockSize);
  const a = q.absmax;
  if (a.kind === 'plain') {
    if (a.absmax.length !== blocks)
      throw new QuantizationError(`${what}: ${a.absmax.length} absmax values for ${blocks} blocks of ${q.blockSize}`);
  } else {
    if (a.codes.length !== blocks)
      throw new QuantizationError(`${what}: ${a.codes.length} absmax codes for ${blocks} blocks of ${q.blockSize}`);
    const nested = Math.ceil(blocks / a.nestedBlockSize);
    if (a.nestedAbsmax.length !== nested)
      throw new QuantizationError(`${what}: ${a.nestedAbsmax.length} nested absmax values, expected ${nested}`);
    if (a.code.length !== 256) throw new QuantizationError(`${what}: nested_quant_map has ${a.code.length} entries, expected 256`);
    if (!Number.isFinite(a.offset)) throw new QuantizationError(`${what}: nested_offset ${a.offset} is not a finite number`);
  }
}

/** Bytes held for one quantized tensor (packed codes, absmax state, code tables). */
export function quantizedBytes(q: Quantized4bit): number {
  const a = q.absmax;
  const scales = a.kind === 'plain' ? a.absmax.byteLength : a.codes.byteLength + a.nestedAbsmax.byteLength + a.code.byteLength + 4;
  return q.packed.byteLength + scales + q.code.byteLength;
}
