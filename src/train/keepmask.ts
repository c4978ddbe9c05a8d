// Dropout keep-masks drawn from the trainer's RNG in bulk. A mask is one Bernoulli(1 - ratio) byte
// per element of the dropped tensor: 150M bytes a step for LoRA with dropout on every linear layer
// of a 135M-parameter model at 4 x 256 tokens. Drawn one `Rng.nextFloat()` call at a time that was
// ~8 ns an element (1.3 s a step); this file runs the same xoshiro128** recurrence in a 200-byte
// WebAssembly function (~1 ns an element), drawing exactly the numbers the per-element loop draws,
// in the same order, so masks, checkpoints and resumed runs are unchanged.
//
// The module is written out below byte by byte (no toolchain): one exported function
//   fill(out: i32, n: i32, threshold: i32, state: i32)
// that for i in [0, n) steps xoshiro128** from the four u32 words at `state` and stores
// out[i] = (draw >=u threshold), then writes the advanced state back; plus an exported memory.
// draw / 2^32 >= ratio  <=>  draw >= ratio * 2^32  <=>  draw >= ceil(ratio * 2^32) for an integer
// draw (ratio * 2^32 is exact in float64), so the byte equals the loop's `nextFloat() >= ratio`.

import type { Rng } from './rng.js';

const I32 = 0x7f;
const get = (i: number) => [0x20, i];
const set = (i: number) => [0x21, i];
const tee = (i: number) => [0x22, i];
const c32 = (v: number) => [0x41, v]; // i32.const, 0 <= v < 64 (one LEB128 byte)
const [ADD, MUL, SHL, ROTL, XOR, GE_U, NE, EQZ] = [0x6a, 0x6c, 0x74, 0x77, 0x73, 0x4f, 0x47, 0x45];
const load = (off: number) => [0x28, 2, off]; // i32.load align=4
const store = (off: number) => [0x36, 2, off]; // i32.store align=4
const STORE8 = [0x3a, 0, 0];

// params 0 out, 1 n, 2 threshold, 3 state; locals 4 s0, 5 s1, 6 s2, 7 s3, 8 i, 9 m, 10 t, 11 end
const [OUT, N, THR, ST, S0, S1, S2, S3, I, M, T, END] = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11];
const xor = (into: number, other: number) => [...get(into), ...get(other), XOR, ...set(into)];
const BODY = [
  1, 8, I32, // 8 i32 locals
  ...get(ST), ...load(0), ...set(S0),
  ...get(ST), ...load(4), ...set(S1),
  ...get(ST), ...load(8), ...set(S2),
  ...get(ST), ...load(12), ...set(S3),
  ...get(OUT), ...get(N), ADD, ...set(END),
  ...get(OUT), ...set(I),
  0x02, 0x40, // block
  ...get(N), EQZ, 0x0d, 0, // n == 0: skip the loop
  0x03, 0x40, // loop
  ...get(S1), ...c32(5), MUL, ...set(M), // m = s1 * 5
  ...get(S1), ...c32(9), SHL, ...set(T), // t = s1 << 9
  ...get(I), ...get(M), ...c32(7), ROTL, ...c32(9), MUL, ...get(THR), GE_U, ...STORE8, // out[i] = rotl(m, 7) * 9 >=u thr
  ...xor(S2, S0), ...xor(S3, S1), ...xor(S1, S2), ...xor(S0, S3), ...xor(S2, T),
  ...get(S3), ...c32(11), ROTL, ...set(S3),
  ...get(I), ...c32(1), ADD, ...tee(I), ...get(END), NE, 0x0d, 0, // while (++i != end)
  0x0b, // end loop
  0x0b, // end block
  ...get(ST), ...get(S0), ...store(0),
  ...get(ST), ...get(S1), ...store(4),
  ...get(ST), ...get(S2), ...store(8),
  ...get(ST), ...get(S3), ...store(12),
  0x0b,
];

const section = (id: number, content: number[]): number[] => [id, ...leb(content.length), ...content];
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
const name = (s: string) => [s.length, ...Array.from(s, (ch) => ch.charCodeAt(0))];

const MODULE = Uint8Array.from([
  0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00,
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

let filler: Filler | undefined;
function instance(): Filler {
  if (!filler) filler = new WebAssembly.Instance(new WebAssembly.Module(MODULE)).exports as unknown as Filler;
  return filler;
}

const PAGE = 65536;
/** Bytes filled per call: bounds the module's memory whatever the mask size. */
const CHUNK = 1 << 20;
const STATE_AT = 0;
const OUT_AT = 16;

/**
 * A dropout keep-mask of n bytes drawn from rng: byte i is 1 with probability 1 - ratio, exactly as
 * `rng.nextFloat() >= ratio` drawn n times in order, and rng advances by n draws.
 */
export function drawKeepMask(rng: Rng, n: number, ratio: number): Uint8Array {
  if (!(ratio >= 0 && ratio < 1)) throw new RangeError(`a dropout ratio is in [0, 1), got ${ratio}`);
  const keep = new Uint8Array(n);
  const threshold = Math.ceil(ratio * 4294967296);
  if (threshold > 0xffffffff) {
    // ratio within 2^-32 of 1: no draw reaches it; every byte stays 0, the stream still advances
    for (let i = 0; i < n; i++) rng.nextUint32();
    return keep;
  }
  const f = instance();
  const need = OUT_AT + Math.min(n, CHUNK);
  if (f.mem.buffer.byteLength < need) f.mem.grow(Math.ceil((need - f.mem.buffer.byteLength) / PAGE));
  const words = new Uint32Array(f.mem.buffer, STATE_AT, 4);
  words.set(rng.state());
  for (let at = 0; at < n; at += CHUNK) {
    const len = Math.min(CHUNK, n - at);
    f.fill(OUT_AT, len, threshold | 0, STATE_AT);
    keep.set(new Uint8Array(f.mem.buffer, OUT_AT, len), at);
  }
  rng.setState([words[0]!, words[1]!, words[2]!, words[3]!]);
  return keep;
}
