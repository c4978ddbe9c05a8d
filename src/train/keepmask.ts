// Dropout keep-masks drawn from the trainer's RNG in bulk. A mask is one Bernoulli(1 - ratio) byte
// per element of the dropped tensor: 150M bytes a step for LoRA with dropout on every linear layer
// of a 135M-parameter model at 4 x 256 tokens, far too many for a per-element JavaScript loop
// (12.7 ns an element on the 2-core development machine: 1.95 s a step; 0.5 ns here).
//
// The masks come from 16 xoshiro128** streams run side by side in WebAssembly SIMD (four vectors of
// four 32-bit lanes), 16 mask bytes per loop turn. Each mask seeds its 16 streams with 64 draws from
// the trainer's Rng, so the trainer's stream advances by a fixed 64 draws per mask whatever its
// size, and masks, checkpoints (which store that Rng's state) and resumed runs are reproducible.
// Byte 16k + s of a mask is 1 when stream s's k-th draw is >= ceil(ratio * 2^32), i.e. when that
// draw / 2^32 >= ratio, the same test as Rng.nextFloat() >= ratio (ratio * 2^32 is exact in
// float64, so the ceiling is the exact threshold for an integer draw). referenceKeepMask() is the
// same computation written plainly in JavaScript, which the tests compare the module against.
//
// The module is written out below byte by byte (no toolchain): one exported function
//   fill(out: i32, n: i32, threshold: i32, state: i32)   n a multiple of 16
// that steps the 16 streams whose state sits at `state` (256 bytes: vector 4g + w holds word w of
// streams 4g..4g+3), writes n mask bytes at `out` and stores the advanced state back; plus an
// exported memory.

import { Rng } from './rng.js';

/** Names how masks are drawn from the trainer's Rng; runs record it so a resume never mixes two schemes. */
export const KEEP_MASK_SCHEME = 'xoshiro128** x16, 64 seed draws per mask';

const STREAMS = 16;
const I32 = 0x7f;
const V128 = 0x7b;
const get = (i: number) => [0x20, i];
const set = (i: number) => [0x21, i];
const tee = (i: number) => [0x22, i];
const c32 = (v: number) => [0x41, v]; // i32.const, 0 <= v < 64 (one signed-LEB128 byte)
const [ADD, NE, EQZ] = [0x6a, 0x47, 0x45];

function leb(v: number): number[] {
  const out: number[] = [];
  do {
    let b = v & 0x7f;
    v >>>= 7;
    if (v) b |= 0x80;
    out.push(b);
  } while (v);
  return out;
}
const simd = (op: number, ...imm: number[]) => [0xfd, ...leb(op), ...imm];
const LOAD = (off: number) => simd(0x00, 0, ...leb(off)); // v128.load align=1
const STORE = (off: number) => simd(0x0b, 0, ...leb(off)); // v128.store align=1
const I8_SPLAT = simd(0x0f);
const I32_SPLAT = simd(0x11);
const I32_GE_U = simd(0x40);
const AND = simd(0x4e);
const OR = simd(0x50);
const XOR = simd(0x51);
const I8_NARROW_I16_S = simd(0x65);
const I16_NARROW_I32_S = simd(0x85);
const I32_SHL = simd(0xab);
const I32_SHR_U = simd(0xad);
const I32_MUL = simd(0xb5);

// params 0 out, 1 n, 2 threshold, 3 state; i32 locals 4 i, 5 end; v128 locals from 6
const [OUT, N, THR, ST, I, END] = [0, 1, 2, 3, 4, 5];
const [THRV, ONE, FIVE, NINE] = [6, 7, 8, 9];
const S = (g: number, w: number) => 10 + 4 * g + w; // state word w of group g: 10..25
const M = (g: number) => 26 + g;
const T = (g: number) => 30 + g;
const CMP = (g: number) => 34 + g;
const V128_LOCALS = 38 - 6;
const GROUPS = [0, 1, 2, 3];

/** Every 32-bit lane of the v128 local x rotated left by k. */
const rotl = (x: number, k: number) => [...get(x), ...c32(k), ...I32_SHL, ...get(x), ...c32(32 - k), ...I32_SHR_U, ...OR];
const xorInto = (into: number, other: number) => [...get(into), ...get(other), ...XOR, ...set(into)];

const BODY = [
  2,
  2,
  I32,
  V128_LOCALS,
  V128,
  ...get(THR),
  ...I32_SPLAT,
  ...set(THRV),
  ...c32(1),
  ...I8_SPLAT,
  ...set(ONE),
  ...c32(5),
  ...I32_SPLAT,
  ...set(FIVE),
  ...c32(9),
  ...I32_SPLAT,
  ...set(NINE),
  ...GROUPS.flatMap((g) => [0, 1, 2, 3].flatMap((w) => [...get(ST), ...LOAD(16 * (4 * g + w)), ...set(S(g, w))])),
  ...get(OUT),
  ...get(N),
  ADD,
  ...set(END),
  ...get(OUT),
  ...set(I),
  0x02,
  0x40, // block
  ...get(N),
  EQZ,
  0x0d,
  0, // n == 0: skip the loop
  0x03,
  0x40, // loop
  ...GROUPS.flatMap((g) => [
    ...get(S(g, 1)),
    ...get(FIVE),
    ...I32_MUL,
    ...set(M(g)), // m = s1 * 5
    ...get(S(g, 1)),
    ...c32(9),
    ...I32_SHL,
    ...set(T(g)), // t = s1 << 9
    ...rotl(M(g), 7),
    ...get(NINE),
    ...I32_MUL,
    ...get(THRV),
    ...I32_GE_U,
    ...set(CMP(g)), // draw = rotl(m, 7) * 9; draw >=u thr
    ...xorInto(S(g, 2), S(g, 0)),
    ...xorInto(S(g, 3), S(g, 1)),
    ...xorInto(S(g, 1), S(g, 2)),
    ...xorInto(S(g, 0), S(g, 3)),
    ...xorInto(S(g, 2), T(g)),
    ...rotl(S(g, 3), 11),
    ...set(S(g, 3)),
  ]),
  // 16 lanes of 0 / -1 -> 16 bytes of 0 / 1, stream order 0..15
  ...get(I),
  ...get(CMP(0)),
  ...get(CMP(1)),
  ...I16_NARROW_I32_S,
  ...get(CMP(2)),
  ...get(CMP(3)),
  ...I16_NARROW_I32_S,
  ...I8_NARROW_I16_S,
  ...get(ONE),
  ...AND,
  ...STORE(0),
  ...get(I),
  ...c32(16),
  ADD,
  ...tee(I),
  ...get(END),
  NE,
  0x0d,
  0, // while ((i += 16) != end)
  0x0b, // end loop
  0x0b, // end block
  ...GROUPS.flatMap((g) => [0, 1, 2, 3].flatMap((w) => [...get(ST), ...get(S(g, w)), ...STORE(16 * (4 * g + w))])),
  0x0b,
];

const section = (id: number, content: number[]): number[] => [id, ...leb(content.length), ...content];
const name = (s: string) => [s.length, ...Array.from(s, (ch) => ch.charCodeAt(0))];

const MODULE = Uint8Array.from([
  0x00,
  0x61,
  0x73,
  0x6d,
  0x01,
  0x00,
  0x00,
  0x00,
  ...section(1, [1, 0x60, 4, I32, I32, I32, I32, 0]), // type: (i32, i32, i32, i32) -> ()
  ...section(3, [1, 0]), // function 0 has type 0
  ...section(5, [1, 0x00, 1]), // memory: min 1 page, no max
  ...section(7, [2, ...name('fill'), 0x00, 0, ...name('mem'), 0x02, 0]),
  ...section(10, [1, ...leb(BODY.length), ...BODY]),
]);

interface Filler {
  fill(out: number, n: number, threshold: number, state: number): void;
  mem: WebAssembly.Memory;
}

let filler: Filler | null | undefined;
/** The compiled module, or null where WebAssembly or its SIMD extension is not available. */
function instance(): Filler | null {
  if (filler === undefined) {
    try {
      filler = new WebAssembly.Instance(new WebAssembly.Module(MODULE)).exports as unknown as Filler;
    } catch {
      filler = null;
    }
  }
  return filler;
}

const PAGE = 65536;
/** Bytes filled per call: bounds the module's memory whatever the mask size (a multiple of 16). */
const CHUNK = 1 << 20;
const STATE_AT = 0;
const OUT_AT = 16 * STREAMS;

type NodeBuffer = { from(b: ArrayBuffer, at: number, len: number): { copy(to: Uint8Array, at: number): number } };
const NODE_BUFFER = (globalThis as { Buffer?: NodeBuffer }).Buffer;

/**
 * Copies len bytes out of the module's memory. TypedArray.set from a WebAssembly memory takes
 * ~3 ns a byte in V8 (more than drawing the mask); Node's Buffer.copy is a memcpy (~0.06 ns).
 */
function copyOut(from: ArrayBuffer, at: number, len: number, to: Uint8Array, toAt: number): void {
  if (NODE_BUFFER) NODE_BUFFER.from(from, at, len).copy(to, toAt);
  else to.set(new Uint8Array(from, at, len), toAt);
}

/** The 16 streams' states for one mask, drawn from rng (64 draws; an all-zero state is moved off zero by Rng). */
function streamStates(rng: Rng): Rng[] {
  const out: Rng[] = [];
  for (let s = 0; s < STREAMS; s++) out.push(Rng.fromState([rng.nextUint32(), rng.nextUint32(), rng.nextUint32(), rng.nextUint32()]));
  return out;
}

function checkRatio(ratio: number): number {
  if (!(ratio >= 0 && ratio < 1)) throw new RangeError(`a dropout ratio is in [0, 1), got ${ratio}`);
  return Math.ceil(ratio * 4294967296);
}

/**
 * A dropout keep-mask of n bytes drawn from rng: each byte is 1 with probability 1 - ratio.
 * rng advances by 64 draws whatever n is. Pass a buffer of at least n bytes (the previous step's)
 * as `into` to draw into its first n bytes (the returned view): on a fresh allocation the first
 * touch of every page costs more than drawing the mask (about 3 ns a byte on the development VM,
 * against 0.5 ns for the draw). Without WebAssembly SIMD the same bytes come from the JavaScript
 * reference, ~20x slower.
 */
export function drawKeepMask(rng: Rng, n: number, ratio: number, into?: Uint8Array): Uint8Array {
  const threshold = checkRatio(ratio);
  if (into && into.length < n) throw new RangeError(`a keep-mask buffer of ${into.length} bytes cannot hold a mask of ${n}`);
  const streams = streamStates(rng);
  const keep = into ? into.subarray(0, n) : new Uint8Array(n);
  // ratio within 2^-32 of 1: no draw reaches the threshold, every byte is 0
  if (threshold > 0xffffffff || n === 0) return keep.fill(0);
  const f = instance();
  if (!f) return fillReference(streams, threshold, keep);
  const need = OUT_AT + Math.min(CHUNK, Math.ceil(n / STREAMS) * STREAMS);
  if (f.mem.buffer.byteLength < need) f.mem.grow(Math.ceil((need - f.mem.buffer.byteLength) / PAGE));
  const words = new Uint32Array(f.mem.buffer, STATE_AT, 4 * STREAMS);
  streams.forEach((r, s) => r.state().forEach((x, w) => (words[4 * (4 * (s >> 2) + w) + (s & 3)] = x)));
  for (let at = 0; at < n; at += CHUNK) {
    const len = Math.min(CHUNK, n - at);
    f.fill(OUT_AT, Math.ceil(len / STREAMS) * STREAMS, threshold | 0, STATE_AT);
    copyOut(f.mem.buffer, OUT_AT, len, keep, at);
  }
  return keep;
}

/** Byte 16k + s is stream s's k-th draw >= threshold (drawKeepMask's chunks are multiples of 16, so they keep this order). */
function fillReference(streams: readonly Rng[], threshold: number, keep: Uint8Array): Uint8Array {
  for (let i = 0; i < keep.length; i++) keep[i] = streams[i % STREAMS]!.nextUint32() >= threshold ? 1 : 0;
  return keep;
}

/** drawKeepMask in plain JavaScript, one draw at a time (for tests; same bytes, same rng advance). */
export function referenceKeepMask(rng: Rng, n: number, ratio: number): Uint8Array {
  const threshold = checkRatio(ratio);
  const streams = streamStates(rng);
  const keep = new Uint8Array(n);
  return threshold > 0xffffffff ? keep : fillReference(streams, threshold, keep);
}
