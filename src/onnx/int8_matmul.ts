// int8 weights for inference sessions (RuntimeOptions.quantize = 'int8'): every product x @ W with
// W a large frozen float32 matrix (MatMul with a [K, N] constant, or our x @ Wᵀ FusedMatMul with an
// [N, K] constant) becomes ONNX Runtime's com.microsoft MatMulNBits with 8-bit weights: symmetric
// codes round(w / s) + 128 in blocks of INT8_BLOCK along K, one float scale per block, and
// accuracy_level 4 (activations quantized to int8 per block too, so MLAS runs int8 dot products).
// Decoding one token reads every weight once; a quarter of the bytes is what makes it faster.
// Trainable params (LoRA A/B, ...) are graph inputs, not constants, and stay float32 (so do a frozen
// adapter's, baked into a decoding session as constants: the caller names them in `keep`); so do
// constants used by anything but such a product (embedding lookups keep their float copy).

import { readSync, openSync, closeSync } from '../storage/index.js';
import type { Value } from '../graph/ir.js';
import { MAX_INLINE_BYTES, type ExternalBlob, type LoweredGraph } from './export.js';
import type { AttrValue, NodeSpec, TensorSpec } from './model.js';
import { PeftError } from '../errors.js';

class Int8WeightsError extends PeftError {
  constructor(message: string) {
    super(message);
    this.name = 'Int8WeightsError';
  }
}

/** values of K per scale */
export const INT8_BLOCK = 128;
/** matrices smaller than this (elements) stay float32 */
const INT8_MIN_ELEMENTS = 4096;

const FLOAT = 1;
const UINT8 = 2;

export interface Int8Matrix {
  /** uint8 [N, blocks, INT8_BLOCK]: code + 128, K padded with zeros to whole blocks */
  codes: Uint8Array;
  /** float32 [N * blocks] */
  scales: Float32Array;
  n: number;
  k: number;
  blocks: number;
}

/**
 * Quantizes W for y = x @ W: `layout` 'kn' is a [K, N] matrix (MatMul's B), 'nk' an [N, K] one
 * (a linear layer's weight, x @ Wᵀ). Exported for tests (dequantize and compare).
 */
export function quantizeInt8Blocks(w: Float32Array, rows: number, cols: number, layout: 'kn' | 'nk', block = INT8_BLOCK): Int8Matrix {
  const [n, k] = layout === 'nk' ? [rows, cols] : [cols, rows];
  const blocks = Math.ceil(k / block);
  const codes = new Uint8Array(n * blocks * block).fill(128);
  const scales = new Float32Array(n * blocks);
  // element (n, k) of W's [N, K] view
  const at = layout === 'nk' ? (r: number, c: number) => w[r * k + c]! : (r: number, c: number) => w[c * n + r]!;
  const tmp = new Float32Array(block);
  for (let r = 0; r < n; r++) {
    for (let b = 0; b < blocks; b++) {
      const start = b * block;
      const len = Math.min(k, start + block) - start;
      let m = 0;
      for (let i = 0; i < len; i++) {
        const v = at(r, start + i);
        tmp[i] = v;
        const a = Math.abs(v);
        if (a > m || a !== a) m = a;
      }
      if (!(m < Infinity))
        throw new Int8WeightsError(
          `a weight matrix holds NaN or infinity (row ${r}); int8 weights need finite weights: check the checkpoint, or leave quantize unset`,
        );
      const s = m / 127;
      scales[r * blocks + b] = s;
      if (s === 0) continue;
      const o = (r * blocks + b) * block;
      for (let i = 0; i < len; i++) codes[o + i] = Math.max(-127, Math.min(127, Math.round(tmp[i]! / s))) + 128;
    }
  }
  return { codes, scales, n, k, blocks };
}

/** The float32 W an Int8Matrix stands for, as [N, K] (for tests and error bounds). */
export function dequantizeInt8Blocks(q: Int8Matrix, block = INT8_BLOCK): Float32Array {
  const out = new Float32Array(q.n * q.k);
  for (let r = 0; r < q.n; r++) {
    for (let c = 0; c < q.k; c++) {
      const b = Math.floor(c / block);
      out[r * q.k + c] = (q.codes[(r * q.blocks + b) * block + (c % block)]! - 128) * q.scales[r * q.blocks + b]!;
    }
  }
  return out;
}

const intAttr = (n: NodeSpec, k: string, d: number): number => {
  const a = n.attributes?.[k];
  return a && a.type === 'int' ? a.value : d;
};

/** Which layout of B the node multiplies by, if it is a plain x @ B (or x @ Bᵀ) product. */
function productLayout(n: NodeSpec, name: string): 'kn' | 'nk' | undefined {
  if (n.inputs[1] !== name || n.inputs[0] === name || n.inputs.length !== 2) return undefined;
  if (n.opType === 'MatMul' && !n.domain) return 'kn';
  if (n.opType === 'FusedMatMul' && n.domain === 'com.microsoft') {
    const alpha = n.attributes?.alpha;
    if (alpha && alpha.type === 'float' && alpha.value !== 1) return undefined;
    if (intAttr(n, 'transA', 0) || intAttr(n, 'transBatchA', 0) || intAttr(n, 'transBatchB', 0)) return undefined;
    return intAttr(n, 'transB', 0) === 1 ? 'nk' : 'kn';
  }
  return undefined;
}

function floatsOf(bytes: Uint8Array): Float32Array {
  // copy when the bytes are not 4-byte aligned inside their buffer
  return bytes.byteOffset % 4 === 0
    ? new Float32Array(bytes.buffer, bytes.byteOffset, bytes.byteLength / 4)
    : new Float32Array(bytes.slice().buffer);
}

function readFileRange(path: string, offset: number, length: number): Uint8Array {
  const out = new Uint8Array(length);
  const fd = openSync(path, 'r');
  try {
    let done = 0;
    while (done < length) {
      const n = readSync(fd, out, done, length - done, offset + done);
      if (n <= 0)
        throw new Int8WeightsError(`${path} ended before the ${length} bytes of a weight at offset ${offset}; the checkpoint is truncated`);
      done += n;
    }
  } finally {
    closeSync(fd);
  }
  return out;
}

// Both sessions of a decoder (prefill, decode) quantize the same in-memory weights: one result per
// array, dropped with it. File-backed weights are read and quantized per session.
const cache = new WeakMap<object, Map<string, Int8Matrix>>();

export interface Int8Report {
  /** matrices now held as int8 */
  matrices: number;
  /** float32 bytes those products no longer read */
  floatBytes: number;
  /** int8 codes + scales */
  int8Bytes: number;
}

/** Rewrites a lowered graph's weight products to MatMulNBits (see the file comment); constants named in `keep` stay float32. */
export function int8Matmuls(lowered: LoweredGraph, keep: ReadonlySet<string> = new Set()): { lowered: LoweredGraph; report: Int8Report } {
  const spec = lowered.spec;
  const users = new Map<string, NodeSpec[]>();
  for (const n of spec.nodes) for (const i of n.inputs) if (i) users.set(i, [...(users.get(i) ?? []), n]);
  const outputs = new Set(spec.outputs.map((o) => o.name));
  const blobs = new Map(lowered.externalData.map((b) => [b.path, b.data]));
  const constInputs = new Map(lowered.constantInputs.map((v) => [v.name, v]));

  interface Candidate {
    name: string;
    dims: number[];
    data: () => Float32Array;
    key: () => [object | string, string];
  }
  const candidates: Candidate[] = [];
  for (const t of spec.initializers) {
    if (t.dataType !== FLOAT || t.dims.length !== 2) continue;
    if (t.raw) {
      const raw = t.raw;
      candidates.push({ name: t.name, dims: t.dims, data: () => floatsOf(raw), key: () => [raw.buffer, `${raw.byteOffset}`] });
    } else if (t.external) {
      const ext = t.external;
      const blob = blobs.get(ext.location);
      if (blob)
        candidates.push({
          name: t.name,
          dims: t.dims,
          data: () => floatsOf(blob.subarray(ext.offset, ext.offset + ext.length)),
          key: () => [blob.buffer, `${blob.byteOffset + ext.offset}`],
        });
      else
        candidates.push({
          name: t.name,
          dims: t.dims,
          data: () => floatsOf(readFileRange(ext.location, ext.offset, ext.length)),
          key: () => [`${ext.location}`, `${ext.offset}`],
        });
    }
  }
  for (const v of lowered.constantInputs) {
    const src = v.source;
    if (v.dtype !== 'float32' || v.rank !== 2 || src?.kind !== 'array') continue;
    const data = src.data as Float32Array;
    candidates.push({ name: v.name, dims: v.shape as number[], data: () => data, key: () => [data.buffer, `${data.byteOffset}`] });
  }

  const replaced = new Map<NodeSpec, NodeSpec>();
  const dropped = new Set<string>();
  const added: TensorSpec[] = [];
  const addedBlobs: ExternalBlob[] = [];
  const filesBacked = lowered.externalFiles.length > 0;
  let inlineBytes = spec.initializers.reduce((s, t) => s + (t.raw?.byteLength ?? 0), 0);
  const report: Int8Report = { matrices: 0, floatBytes: 0, int8Bytes: 0 };
  for (const c of candidates) {
    const [rows, cols] = c.dims as [number, number];
    if (rows * cols < INT8_MIN_ELEMENTS || outputs.has(c.name) || keep.has(c.name)) continue;
    const us = users.get(c.name) ?? [];
    const products = us.map((u) => [u, productLayout(u, c.name)] as const).filter(([, l]) => l !== undefined) as [NodeSpec, 'kn' | 'nk'][];
    if (!products.length) continue;
    let floats: Float32Array | undefined;
    const made = new Map<string, { q: string; s: string; m: Int8Matrix }>();
    for (const [u, layout] of products) {
      let entry = made.get(layout);
      if (!entry) {
        const [owner, off] = c.key();
        const id = `${off}|${rows}x${cols}|${layout}`;
        let m: Int8Matrix | undefined;
        if (typeof owner !== 'string') m = cache.get(owner)?.get(id);
        if (!m) {
          floats ??= c.data();
          m = quantizeInt8Blocks(floats, rows, cols, layout);
          if (typeof owner !== 'string') {
            if (!cache.has(owner)) cache.set(owner, new Map());
            cache.get(owner)!.set(id, m);
          }
        }
        const q = `${c.name}__int8_${layout}`;
        const s = `${c.name}__int8_${layout}_scales`;
        const codes = new Uint8Array(m.codes.buffer, m.codes.byteOffset, m.codes.byteLength);
        const scales = new Uint8Array(m.scales.buffer, m.scales.byteOffset, m.scales.byteLength);
        const qt: TensorSpec = { name: q, dataType: UINT8, dims: [m.n, m.blocks, INT8_BLOCK] };
        const st: TensorSpec = { name: s, dataType: FLOAT, dims: [m.n * m.blocks] };
        if (!filesBacked) {
          // in-memory external data: ONNX Runtime reads the JS array, nothing goes through the ModelProto
          for (const [t, d] of [
            [qt, codes],
            [st, scales],
          ] as const) {
            const path = `__peft_int8_${addedBlobs.length}.bin`;
            addedBlobs.push({ path, data: d });
            t.external = { location: path, offset: 0, length: d.byteLength };
          }
        } else {
          // next to file-backed constants ONNX Runtime takes no in-memory blobs: inline while there is room
          inlineBytes += codes.byteLength + scales.byteLength;
          if (inlineBytes > MAX_INLINE_BYTES) {
            throw new Int8WeightsError(
              `the int8 weights do not fit the 2 GB ModelProto next to file-backed weights; this model is too large for quantize: 'int8' (leave it unset)`,
            );
          }
          qt.raw = codes;
          st.raw = scales;
        }
        added.push(qt, st);
        entry = { q, s, m };
        made.set(layout, entry);
        report.matrices++;
        report.int8Bytes += codes.byteLength + scales.byteLength;
        report.floatBytes += rows * cols * 4;
      }
      const attrs: Record<string, AttrValue> = {
        K: { type: 'int', value: entry.m.k },
        N: { type: 'int', value: entry.m.n },
        bits: { type: 'int', value: 8 },
        block_size: { type: 'int', value: INT8_BLOCK },
        accuracy_level: { type: 'int', value: 4 },
      };
      replaced.set(u, {
        opType: 'MatMulNBits',
        domain: 'com.microsoft',
        name: u.name,
        inputs: [u.inputs[0]!, entry.q, entry.s],
        outputs: u.outputs,
        attributes: attrs,
      });
    }
    if (products.length === us.length) dropped.add(c.name);
  }
  if (!report.matrices) return { lowered, report };
  const keepConst = (v: Value) => !dropped.has(v.name);
  const out: LoweredGraph = {
    ...lowered,
    spec: {
      ...spec,
      nodes: spec.nodes.map((n) => replaced.get(n) ?? n),
      inputs: spec.inputs.filter((i) => !(dropped.has(i.name) && constInputs.has(i.name))),
      initializers: [...spec.initializers.filter((t) => !dropped.has(t.name)), ...added],
    },
    constantInputs: lowered.constantInputs.filter(keepConst),
    externalData: [...lowered.externalData, ...addedBlobs],
  };
  // blobs only the dropped initializers referenced are no longer needed
  const referenced = new Set(out.spec.initializers.map((t) => t.external?.location).filter((l): l is string => !!l));
  out.externalData = out.externalData.filter((b) => referenced.has(b.path));
  return { lowered: out, report };
}
