// The other dtypes of a transformers.js export, made from the float32 ModelSpec by rewriting its
// initializers, under the file names transformers.js picks for each `dtype` option:
//   fp16 (model_fp16.onnx): matrices stored as float16, Cast to float32 where the graph reads them
//        (the arithmetic stays float32, so inputs, outputs and the KV cache keep their dtype);
//   q8   (model_quantized.onnx): matrices stored int8, one scale per row (symmetric), read through
//        DequantizeLinear;
//   q4   (model_q4.onnx): weights of x @ Wᵀ products stored 4-bit in blocks of 32 along the input
//        dim (one float scale per block, zero point 8) and run by ONNX Runtime's MatMulNBits, as
//        transformers.js q4 models are; matrices used otherwise (embedding lookups, tied heads)
//        are stored as in q8.
// Vectors (norm weights, biases, rotary frequencies) stay float32 in every dtype.

import { float32ToFloat16 } from '../io/safetensors/dtype.js';
import type { NodeSpec, ModelSpec, TensorSpec } from '../onnx/model.js';

export type OnnxDtype = 'fp32' | 'fp16' | 'q8' | 'q4';
export const ONNX_DTYPES: readonly OnnxDtype[] = ['fp32', 'fp16', 'q8', 'q4'];
export const ONNX_FILE_NAMES: Record<OnnxDtype, string> = {
  fp32: 'model.onnx',
  fp16: 'model_fp16.onnx',
  q8: 'model_quantized.onnx',
  q4: 'model_q4.onnx',
};

const FLOAT = 1;
const UINT8 = 2;
const INT8 = 3;
const FLOAT16 = 10;
/** q4 block length along the input dim */
const Q4_BLOCK = 32;

function floats(t: TensorSpec): Float32Array {
  const raw = t.raw!;
  // copy: the raw bytes may not be 4-byte aligned inside their buffer
  return new Float32Array(raw.slice().buffer);
}

const bytes = (a: ArrayBufferView): Uint8Array => new Uint8Array(a.buffer, a.byteOffset, a.byteLength);

/** A float32 matrix initializer (what the dtypes compress). */
function isMatrix(t: TensorSpec): boolean {
  return t.dataType === FLOAT && t.dims.length === 2 && t.raw !== undefined && t.dims[0]! * t.dims[1]! >= 64;
}

function toFp16(t: TensorSpec): { init: TensorSpec[]; node: NodeSpec } {
  const x = floats(t);
  const h = new Uint16Array(x.length);
  for (let i = 0; i < x.length; i++) h[i] = float32ToFloat16(x[i]!);
  const name = `${t.name}_fp16`;
  return {
    init: [{ name, dataType: FLOAT16, dims: t.dims, raw: bytes(h) }],
    node: {
      opType: 'Cast',
      inputs: [name],
      outputs: [t.name],
      attributes: { to: { type: 'int', value: FLOAT } },
      name: `export/${t.name}/Cast`,
    },
  };
}

/** Symmetric int8 with one scale per row (axis 0). */
function quantizeRowsInt8(x: Float32Array, rows: number, cols: number): { q: Int8Array; scales: Float32Array } {
  const q = new Int8Array(x.length);
  const scales = new Float32Array(rows);
  for (let r = 0; r < rows; r++) {
    let m = 0;
    for (let c = 0; c < cols; c++) m = Math.max(m, Math.abs(x[r * cols + c]!));
    const s = m > 0 ? m / 127 : 1;
    scales[r] = s;
    for (let c = 0; c < cols; c++) q[r * cols + c] = Math.max(-127, Math.min(127, Math.round(x[r * cols + c]! / s)));
  }
  return { q, scales };
}

function toQ8(t: TensorSpec): { init: TensorSpec[]; node: NodeSpec } {
  const [rows, cols] = t.dims as [number, number];
  const { q, scales } = quantizeRowsInt8(floats(t), rows, cols);
  const qn = `${t.name}_quantized`;
  const sn = `${t.name}_scale`;
  return {
    init: [
      { name: qn, dataType: INT8, dims: t.dims, raw: bytes(q) },
      { name: sn, dataType: FLOAT, dims: [rows], raw: bytes(scales) },
    ],
    node: {
      opType: 'DequantizeLinear',
      inputs: [qn, sn],
      outputs: [t.name],
      attributes: { axis: { type: 'int', value: 0 } },
      name: `export/${t.name}/DequantizeLinear`,
    },
  };
}

/** MatMulNBits operands of W [N, K]: uint8 [N, blocks, 16] (low nibble first), scales [N * blocks]. */
function quantizeBlocks4(
  x: Float32Array,
  n: number,
  k: number,
  block = Q4_BLOCK,
): { packed: Uint8Array; scales: Float32Array; blocks: number } {
  const blocks = Math.ceil(k / block);
  const blob = block / 2;
  const packed = new Uint8Array(n * blocks * blob);
  const scales = new Float32Array(n * blocks);
  for (let r = 0; r < n; r++) {
    for (let b = 0; b < blocks; b++) {
      const start = b * block;
      const end = Math.min(k, start + block);
      let m = 0;
      for (let c = start; c < end; c++) m = Math.max(m, Math.abs(x[r * k + c]!));
      const s = m > 0 ? m / 7 : 1;
      scales[r * blocks + b] = s;
      for (let c = start; c < start + block; c++) {
        const v = c < end ? Math.max(-8, Math.min(7, Math.round(x[r * k + c]! / s))) + 8 : 8;
        const at = (r * blocks + b) * blob + ((c - start) >> 1);
        packed[at] = packed[at]! | ((c - start) & 1 ? v << 4 : v);
      }
    }
  }
  return { packed, scales, blocks };
}

/** A FusedMatMul that is exactly x @ Wᵀ with W an initializer (what our linear layers lower to). */
function isLinearProduct(n: NodeSpec): boolean {
  if (n.opType !== 'FusedMatMul' || n.domain !== 'com.microsoft') return false;
  const a = n.attributes ?? {};
  const int = (k: string, d: number) => (a[k] && a[k]!.type === 'int' ? (a[k] as { value: number }).value : d);
  const alpha = a.alpha && a.alpha.type === 'float' ? a.alpha.value : 1;
  return int('transB', 0) === 1 && int('transA', 0) === 0 && int('transBatchA', 0) === 0 && int('transBatchB', 0) === 0 && alpha === 1;
}

export function applyDtype(spec: ModelSpec, dtype: OnnxDtype): ModelSpec {
  if (dtype === 'fp32') return spec;
  const consumers = new Map<string, NodeSpec[]>();
  for (const n of spec.nodes) for (const i of n.inputs) consumers.set(i, [...(consumers.get(i) ?? []), n]);
  const initializers: TensorSpec[] = [];
  const prelude: NodeSpec[] = [];
  const replaced = new Map<NodeSpec, NodeSpec>();
  for (const t of spec.initializers) {
    if (!isMatrix(t)) {
      initializers.push(t);
      continue;
    }
    const users = consumers.get(t.name) ?? [];
    if (dtype === 'q4' && users.length > 0 && users.every((u) => isLinearProduct(u) && u.inputs[1] === t.name && u.inputs[0] !== t.name)) {
      const [n, k] = t.dims as [number, number];
      const { packed, scales, blocks } = quantizeBlocks4(floats(t), n, k);
      const qn = `${t.name}_q4`;
      const sn = `${t.name}_q4_scales`;
      initializers.push(
        { name: qn, dataType: UINT8, dims: [n, blocks, Q4_BLOCK / 2], raw: packed },
        { name: sn, dataType: FLOAT, dims: [n * blocks], raw: bytes(scales) },
      );
      for (const u of users) {
        replaced.set(u, {
          opType: 'MatMulNBits',
          domain: 'com.microsoft',
          name: u.name,
          inputs: [u.inputs[0]!, qn, sn],
          outputs: u.outputs,
          attributes: {
            K: { type: 'int', value: k },
            N: { type: 'int', value: n },
            bits: { type: 'int', value: 4 },
            block_size: { type: 'int', value: Q4_BLOCK },
          },
        });
      }
      continue;
    }
    const r = dtype === 'fp16' ? toFp16(t) : toQ8(t);
    initializers.push(...r.init);
    prelude.push(r.node);
  }
  return { ...spec, initializers, nodes: [...prelude, ...spec.nodes.map((n) => replaced.get(n) ?? n)] };
}
