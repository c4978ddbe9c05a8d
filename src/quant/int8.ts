// 8-bit absmax quantization for small matrices kept on disk (compressed adapters): symmetric int8
// codes round(x / s) with s = absmax / 127, one scale per row or per block of consecutive values.
// Host-side typed-array loops; the error bound is s / 2 per value.

import { QuantizationError } from './errors.js';

export type Int8Granularity = 'row' | 'block';

export interface Int8Quantized {
  /** int8 codes, row-major, same element count as the input */
  codes: Int8Array;
  /** float32 scales: one per row ('row') or per block of `blockSize` values ('block') */
  scales: Float32Array;
  granularity: Int8Granularity;
  /** values per scale: the row length, or the block size */
  groupSize: number;
}

/**
 * Quantizes `data` (row-major, `shape` [rows, cols] or any shape whose last dim is a row) to int8.
 * 'block' groups `blockSize` consecutive values of the flattened tensor (the last group may be short).
 */
export function quantizeInt8(data: Float32Array, shape: readonly number[], granularity: Int8Granularity, blockSize = 64): Int8Quantized {
  const n = data.length;
  const cols = shape.length ? shape[shape.length - 1]! : 1;
  if (shape.reduce((a, b) => a * b, 1) !== n) throw new QuantizationError(`int8: ${n} values do not fill shape [${shape.join(', ')}]`);
  if (granularity === 'block' && !(Number.isInteger(blockSize) && blockSize > 0))
    throw new QuantizationError(`int8: block size ${blockSize} must be a positive integer`);
  const group = granularity === 'row' ? Math.max(cols, 1) : blockSize;
  const groups = Math.ceil(n / group);
  const scales = new Float32Array(groups);
  const codes = new Int8Array(n);
  for (let g = 0; g < groups; g++) {
    const start = g * group;
    const end = Math.min(n, start + group);
    let m = 0;
    for (let i = start; i < end; i++) m = Math.max(m, Math.abs(data[i]!));
    if (!(m < Infinity))
      throw new QuantizationError(
        `int8: the values ${start}..${end - 1} hold NaN or infinity; the adapter is corrupt (check the training run)`,
      );
    const s = Math.fround(m / 127);
    scales[g] = s;
    if (s === 0) continue;
    for (let i = start; i < end; i++) codes[i] = Math.max(-127, Math.min(127, Math.round(data[i]! / s)));
  }
  return { codes, scales, granularity, groupSize: group };
}

/** codes * scale in float32. */
export function dequantizeInt8(q: Int8Quantized): Float32Array {
  const out = new Float32Array(q.codes.length);
  const g = q.groupSize;
  if (q.scales.length !== Math.ceil(q.codes.length / g)) {
    throw new QuantizationError(`int8: ${q.scales.length} scales for ${q.codes.length} values in groups of ${g}; the file is inconsistent`);
  }
  for (let i = 0; i < out.length; i++) out[i] = q.codes[i]! * q.scales[Math.floor(i / g)]!;
  return out;
}
