// The code tables of bitsandbytes' blockwise quantization (NF4, FP4, the signed 8-bit dynamic map
// used for double quantization) and the rounding rules that map a scaled value to a code index:
// 'argmin' as its default/CPU backend does it, 'midpoint' as its CUDA kernels' decision trees do.

/** NF4 (QLoRA paper) as bitsandbytes' get_4bit_type('nf4'); index i is the 4-bit code i. */
export const NF4_CODE: Float32Array = Float32Array.from([
  -1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453, -0.28444138169288635, -0.18477343022823334, -0.09105003625154495,
  0.0, 0.07958029955625534, 0.16093020141124725, 0.24611230194568634, 0.33791524171829224, 0.44070982933044434, 0.5626170039176941,
  0.7229568362236023, 1.0,
]);

/**
 * FP4 (1 sign, 2 exponent, 1 mantissa bit) as get_4bit_type('fp4'): the values below divided by 12
 * in float32. This is the quant_map bitsandbytes stores and its CUDA kernels decode with. (Index 8
 * is +0: Python's `-0` is the integer 0.)
 */
export const FP4_CODE: Float32Array = Float32Array.from(
  [0, 0.0625, 8, 12, 4, 6, 2, 3, 0, -0.0625, -8, -12, -4, -6, -2, -3].map((v) => Math.fround(v / 12)),
);

/** The rounded FP4 table bitsandbytes' default (CPU) backend takes the argmin over when it quantizes. */
const FP4_ARGMIN_TABLE: Float32Array = Float32Array.from([
  0.0, 0.0052, 0.6667, 1.0, 0.3333, 0.5, 0.1667, 0.25, 0.0, -0.0052, -0.6667, -1.0, -0.3333, -0.5, -0.1667, -0.25,
]);

// Positive half of create_dynamic_map(signed=True, max_exponent_bits=7, total_bits=8) as float32
// (the negative half mirrors it, plus one 0). Checked against bitsandbytes' own table in the tests.
const DYNAMIC_POSITIVE = [
  0.00000055000004, 0.0000032500002, 0.00000775, 0.000021249998, 0.00004375, 0.00006625, 0.00008875, 0.00015625001, 0.00026875004,
  0.00038125002, 0.00049375003, 0.0006062501, 0.00071875006, 0.00083125, 0.0009437501, 0.0012812499, 0.00184375, 0.00240625, 0.00296875,
  0.0035312497, 0.00409375, 0.0046562497, 0.0052187503, 0.00578125, 0.00634375, 0.00690625, 0.00746875, 0.00803125, 0.00859375, 0.009156249,
  0.00971875, 0.01140625, 0.01421875, 0.01703125, 0.01984375, 0.02265625, 0.02546875, 0.028281247, 0.03109375, 0.033906247, 0.036718752,
  0.03953125, 0.042343747, 0.04515625, 0.04796875, 0.05078125, 0.05359375, 0.05640625, 0.059218753, 0.062031247, 0.06484375, 0.067656256,
  0.070468746, 0.07328125, 0.07609375, 0.07890625, 0.08171874, 0.08453125, 0.08734375, 0.09015625, 0.092968754, 0.095781244, 0.09859375,
  0.107031256, 0.12109375, 0.13515624, 0.14921875, 0.16328125, 0.17734374, 0.19140625, 0.20546874, 0.21953125, 0.23359376, 0.24765626,
  0.26171875, 0.27578127, 0.28984374, 0.30390626, 0.31796873, 0.33203125, 0.3460937, 0.36015624, 0.37421876, 0.38828123, 0.40234375,
  0.4164062, 0.43046874, 0.44453126, 0.45859373, 0.47265625, 0.48671877, 0.50078124, 0.51484376, 0.5289062, 0.54296875, 0.5570313,
  0.5710938, 0.58515626, 0.5992187, 0.61328125, 0.6273438, 0.64140624, 0.65546876, 0.6695313, 0.68359375, 0.6976563, 0.7117188, 0.72578126,
  0.7398438, 0.75390625, 0.7679688, 0.78203124, 0.7960937, 0.8101562, 0.82421875, 0.8382812, 0.85234374, 0.8664062, 0.8804687, 0.89453125,
  0.9085938, 0.92265624, 0.9367187, 0.9507812, 0.96484375, 0.9789062, 0.99296874, 1,
];

/** The 256-entry signed dynamic map (sorted ascending) that quantizes absmax values in double quantization. */
export const DYNAMIC_MAP_SIGNED: Float32Array = (() => {
  const neg = DYNAMIC_POSITIVE.slice(0, -1)
    .map((v) => -v)
    .reverse();
  return Float32Array.from([...neg, 0, ...DYNAMIC_POSITIVE]);
})();

export type QuantType = 'nf4' | 'fp4';
/**
 * How a scaled value in [-1, 1] picks its code.
 * - 'argmin': the first index of the smallest float32 |x - code[j]|, as bitsandbytes' default
 *   backend (torch.argmin) computes it; the reference fixtures were made this way.
 * - 'midpoint': the CUDA kernels' decision trees (`x > threshold` against float32 midpoints).
 * The two differ only for values within a few ulps of a midpoint.
 */
export type Rounding = 'argmin' | 'midpoint';

export function codeTable(type: QuantType): Float32Array {
  return type === 'nf4' ? NF4_CODE : FP4_CODE;
}

/** Nearest entry of a code table under float32 |x - code| with ties to the lowest index (torch.argmin). */
export class NearestCode {
  private readonly values: Float64Array;
  private readonly index: Uint8Array;
  /** midpoints between adjacent distinct values: where the answer changes */
  readonly boundaries: number[];

  constructor(readonly table: Float32Array) {
    const order = [...table.keys()].sort((a, b) => table[a]! - table[b]! || a - b);
    const vals: number[] = [];
    const idx: number[] = [];
    for (const i of order) {
      // Equal values (0 and -0 included): the lowest index wins a tie, so keep only the first.
      if (vals.length && vals[vals.length - 1] === table[i]) continue;
      vals.push(table[i]!);
      idx.push(i);
    }
    this.values = Float64Array.from(vals);
    this.index = Uint8Array.from(idx);
    this.boundaries = vals.slice(1).map((v, k) => (v + vals[k]!) / 2);
  }

  /** Code index of a float32 value x; NaN gives 0, as torch.argmin over all-NaN distances does. */
  find(x: number): number {
    if (x !== x) return 0;
    const v = this.values;
    let lo = 0;
    let hi = v.length;
    // first position whose value is >= x
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (v[mid]! < x) lo = mid + 1;
      else hi = mid;
    }
    if (lo === 0) return this.index[0]!;
    if (lo === v.length) return this.index[v.length - 1]!;
    const dl = Math.abs(Math.fround(x - v[lo - 1]!));
    const dr = Math.abs(Math.fround(x - v[lo]!));
    if (dl < dr) return this.index[lo - 1]!;
    if (dr < dl) return this.index[lo]!;
    return Math.min(this.index[lo - 1]!, this.index[lo]!);
  }
}

// The CUDA kernels' thresholds (float literals in dQuantizeNF4 / dQuantizeFP4), ascending.
const NF4_THRESHOLDS = Float32Array.from([
  -0.8480964004993439, -0.6106329262256622, -0.4599952697753906, -0.33967943489551544, -0.23460740596055984, -0.13791173323988914,
  -0.045525018125772476, 0.03979014977812767, 0.1202552504837513, 0.2035212516784668, 0.2920137718319893, 0.3893125355243683,
  0.5016634166240692, 0.6427869200706482, 0.8614784181118011,
]);
// |x| thresholds of dQuantizeFP4 and the magnitude code each interval gets (sign is bit 3).
const FP4_THRESHOLDS = Float32Array.from([0.00260417, 0.0859375, 0.20833333, 0.29166667, 0.4166667, 0.583333, 0.8333333]);
const FP4_MAGNITUDE_CODES = [0b000, 0b001, 0b110, 0b111, 0b100, 0b101, 0b010, 0b011];

/** dQuantizeNF4: the number of thresholds x is above is the code (NaN is above none: 0). */
export function nf4Midpoint(x: number): number {
  let c = 0;
  for (let i = 0; i < 15; i++) if (x > NF4_THRESHOLDS[i]!) c++;
  return c;
}

/** dQuantizeFP4: sign bit from x < 0, then the magnitude tree on |x|. */
export function fp4Midpoint(x: number): number {
  const sign = x < 0 ? 0b1000 : 0;
  const a = Math.abs(x);
  let k = 0;
  for (let i = 0; i < FP4_THRESHOLDS.length; i++) if (a > FP4_THRESHOLDS[i]!) k++;
  return FP4_MAGNITUDE_CODES[k]! + sign;
}

/** A rounding rule for one 4-bit type: the exact rule, and a lookup table over [-1, 1] for speed. */
export interface Rounder {
  /** the reference rule for one float32 value in [-1, 1] */
  exact(x: number): number;
  /** LUT_SIZE buckets of [-1, 1]: the code when the whole bucket rounds alike, else 255 */
  lut: Uint8Array;
}

/** Buckets per unit of the lookup table (the table spans [-1, 1] with 2 * LUT_SCALE buckets). */
export const LUT_SCALE = 2048;
export const LUT_MIXED = 255;

function buildRounder(exact: (x: number) => number, boundaries: readonly number[]): Rounder {
  const lut = new Uint8Array(2 * LUT_SCALE + 1);
  // The rounded decision points sit within a few float32 ulps of the real ones; widening every
  // bucket by much more than that keeps the buckets that hold one answer honest.
  const slack = 1e-6;
  for (let k = 0; k < lut.length; k++) {
    const lo = k / LUT_SCALE - 1;
    const hi = (k + 1) / LUT_SCALE - 1;
    const mixed = boundaries.some((b) => b >= lo - slack && b <= hi + slack);
    lut[k] = mixed ? LUT_MIXED : exact(Math.fround(Math.min(1, (lo + hi) / 2)));
  }
  return { exact, lut };
}

const rounders = new Map<string, Rounder>();

export function rounderFor(type: QuantType, rounding: Rounding): Rounder {
  const key = `${type}:${rounding}`;
  let r = rounders.get(key);
  if (r) return r;
  if (rounding === 'argmin') {
    const near = new NearestCode(type === 'nf4' ? NF4_CODE : FP4_ARGMIN_TABLE);
    r = buildRounder((x) => near.find(x), near.boundaries);
  } else if (type === 'nf4') {
    r = buildRounder(nf4Midpoint, [...NF4_THRESHOLDS]);
  } else {
    const b = [...FP4_THRESHOLDS];
    r = buildRounder(fp4Midpoint, [...b, 0, ...b.map((t) => -t)]);
  }
  rounders.set(key, r);
  return r;
}
