// Frozen model weights as the process holds them: float32 host arrays keyed by their Hugging Face
// state-dict names, upcast once from float16/bfloat16 checkpoints, plus where each came from on
// disk so a session can map float32 tensors straight from the file instead of copying them; and
// 4-bit quantized weights (bitsandbytes NF4/FP4), quantized tensor by tensor while loading.

import type { RawTensor, TensorSource } from '../io/safetensors.js';
import { SafetensorsError, toFloat32 } from '../io/safetensors.js';
import { closeSync, openSync, readSync } from '../storage/index.js';
import type { ConstSource } from '../graph/ir.js';
import {
  type QuantizeOptions,
  type Quantized4bit,
  dequantize4bit,
  numel as numelOf,
  quantize4bit,
  quantizedBytes,
} from '../quant/blockwise.js';
import { BNB_COMPONENTS, fromBnbTensors, quantStateKey } from '../quant/bnb.js';
import { QuantizationError } from '../quant/errors.js';
import { type Int8Base, int8Base } from '../quant/int8_base.js';

/** Where a weight's values lie in a safetensors file: its byte range and stored dtype. */
export interface WeightFile {
  path: string;
  offset: number;
  length: number;
  /** how the file stores it (float32 when absent) */
  dtype?: 'F32' | 'F16' | 'BF16';
}

export interface WeightTensor {
  shape: number[];
  data: Float32Array;
  /** the byte range of this tensor in a safetensors file it was read from, when it is stored as F32, F16 or BF16 */
  file?: WeightFile;
}

/** The float32 values of a weight read back from its safetensors file (float16/bfloat16 upcast as when loading). */
export function readWeightFile(file: WeightFile, shape: readonly number[]): Float32Array {
  const dtype = file.dtype ?? 'F32';
  const bytes = new Uint8Array(file.length);
  const fd = openSync(file.path, 'r');
  try {
    let done = 0;
    while (done < bytes.length) {
      const n = readSync(fd, bytes.subarray(done), 0, bytes.length - done, file.offset + done);
      if (n <= 0)
        throw new SafetensorsError(
          file.path,
          `ended before a weight could be read back from it; do not change a model's files while it is loaded`,
        );
      done += n;
    }
  } finally {
    closeSync(fd);
  }
  return toFloat32({ dtype, shape: [...shape], data: bytes });
}

/** A weight held 4-bit quantized. */
export interface QuantizedWeightTensor {
  /** its shape in the state dict (what the float32 weight would have) */
  shape: number[];
  quant: Quantized4bit;
  /**
   * The quantized matrix is the transpose of the state-dict weight: GPT-2's Conv1D stores [in, out]
   * and transformers quantizes it as an nn.Linear weight [out, in].
   */
  transposed: boolean;
}

/** How weights are held while they are read. */
export interface WeightLoadOptions {
  /** quantization for a tensor (by checkpoint name and shape), or undefined to keep it float32 */
  quantize?: (name: string, shape: readonly number[]) => (QuantizeOptions & { transpose?: boolean }) | undefined;
  /** for weights the checkpoint already holds quantized (bitsandbytes layout): is the matrix transposed (Conv1D)? */
  transposed?: (name: string) => boolean;
  /**
   * Weights not read while loading (by checkpoint name and shape): a float32, float16 or bfloat16
   * tensor of a file is only registered, and get() reads it when it is first asked for. Training
   * on the int8 base defers the linear layers' matrices, whose int8 copies are then quantized from
   * one transient float32 matrix at a time (int8()).
   */
  defer?: (name: string, shape: readonly number[]) => boolean;
}

const FILE_FLOAT: ReadonlySet<string> = new Set(['F32', 'F16', 'BF16']);

const DTYPE_NAMES: Record<string, string> = { F32: 'float32', F16: 'float16', BF16: 'bfloat16', F64: 'float64' };

/** The floating-point dtypes a model folder is written in (config.json's "dtype" / "torch_dtype" spelling). */
export type CheckpointDtype = 'float32' | 'float16' | 'bfloat16';
export const CHECKPOINT_DTYPES: readonly CheckpointDtype[] = ['float32', 'float16', 'bfloat16'];
const FILE_DTYPE: Record<string, CheckpointDtype> = { F32: 'float32', F16: 'float16', BF16: 'bfloat16', F64: 'float32' };

/** int8 copies of a released weight: the codes held weakly (the sessions fed from them keep them alive), the rest kept. */
interface WeakInt8 {
  codes: [WeakRef<Int8Array>, WeakRef<Int8Array>];
  forward: Omit<Int8Base['forward'], 'codes'>;
  backward: Omit<Int8Base['backward'], 'codes'>;
}

export class WeightStore {
  private readonly map = new Map<string, WeightTensor>();
  private readonly quantized = new Map<string, QuantizedWeightTensor>();
  /** float32 weights whose arrays were dropped (releaseFloat) or never read (WeightLoadOptions.defer): read back from their file when asked for */
  private readonly released = new Map<string, { shape: number[]; file: WeightFile }>();
  /**
   * int8 copies quantized from a released weight (int8()), by name and layout. Weakly held: they
   * live as long as a session feeds them, and are quantized again (from the file) after that.
   */
  private readonly int8Copies = new Map<string, WeakInt8>();
  /** tied weights: lm_head.weight -> transformer.wte.weight, held once */
  private readonly aliases = new Map<string, string>();
  /**
   * The dtype the checkpoint stores its floating-point weights in (the one holding most elements;
   * float64 counts as float32), whatever they are held as here (float32, or 4-bit). Undefined for a
   * store not read from a file. Saving a model writes this dtype unless told otherwise.
   */
  checkpointDtype?: CheckpointDtype;

  static async fromSource(
    source: TensorSource,
    path: (name: string) => string | undefined = () => undefined,
    opts: WeightLoadOptions = {},
  ): Promise<WeightStore> {
    const store = new WeightStore();
    await store.load(source, path, opts);
    return store;
  }

  /**
   * Reads every tensor of `source` into this store. Weights the checkpoint holds in the
   * bitsandbytes 4-bit layout stay quantized; others that `opts.quantize` selects are quantized
   * as they are read, so only one tensor is ever held in full precision.
   */
  async load(
    source: TensorSource,
    path: (name: string) => string | undefined = () => undefined,
    opts: WeightLoadOptions = {},
  ): Promise<void> {
    const names = source.names();
    const has = (k: string) => source.has(k);
    const companions = new Set<string>();
    const prequantized = new Set<string>();
    for (const name of names) {
      if (!quantStateKey(name, has)) continue;
      prequantized.add(name);
      for (const c of BNB_COMPONENTS) companions.add(`${name}.${c}`);
    }
    const elements = new Map<CheckpointDtype, number>();
    const count = (dtype: string, shape: readonly number[]) => {
      const d = FILE_DTYPE[dtype];
      if (d) elements.set(d, (elements.get(d) ?? 0) + numelOf(shape));
    };
    for (const name of names) {
      if (companions.has(name)) continue;
      if (prequantized.has(name)) {
        const quant = await fromBnbTensors(name, async (k) => (source.has(k) ? source.read(k) : undefined));
        const transposed = (opts.transposed?.(name) ?? false) && quant.shape.length === 2;
        this.setQuantized(name, { shape: transposed ? [...quant.shape].reverse() : [...quant.shape], quant, transposed });
        continue;
      }
      const info = source.info(name);
      count(info.dtype, info.shape);
      const spec = opts.quantize?.(name, info.shape);
      const at = path(name);
      if (!spec && at && FILE_FLOAT.has(info.dtype) && opts.defer?.(name, info.shape)) {
        const file: WeightFile = { path: at, offset: info.byteOffset, length: info.byteLength, dtype: info.dtype as WeightFile['dtype'] };
        this.delete(name);
        this.aliases.delete(name);
        this.released.set(name, { shape: [...info.shape], file });
        continue;
      }
      const raw = await source.read(name);
      if (spec) {
        this.setQuantized(name, quantizeRaw(name, raw, spec));
        continue;
      }
      this.set(name, {
        shape: [...raw.shape],
        data: toFloat32(raw),
        file:
          FILE_FLOAT.has(info.dtype) && at
            ? { path: at, offset: info.byteOffset, length: info.byteLength, dtype: info.dtype as WeightFile['dtype'] }
            : undefined,
      });
    }
    // 4-bit weights record the dtype they were quantized from (bitsandbytes quant_state).
    for (const name of prequantized) {
      const q = this.quantized.get(name);
      const d = q && (CHECKPOINT_DTYPES as readonly string[]).includes(q.quant.dtype) ? (q.quant.dtype as CheckpointDtype) : undefined;
      if (q && d) elements.set(d, (elements.get(d) ?? 0) + numelOf(q.shape));
    }
    let best: [CheckpointDtype, number] | undefined;
    for (const e of elements) if (!best || e[1] > best[1]) best = e;
    if (best) this.checkpointDtype = best[0];
  }

  alias(name: string, target: string): void {
    this.aliases.set(name, target);
  }
  /** The stored name a (possibly tied) weight name refers to. */
  resolve(name: string): string {
    return this.aliases.get(name) ?? name;
  }
  isAlias(name: string): boolean {
    return this.aliases.has(name);
  }
  has(name: string): boolean {
    const r = this.resolve(name);
    return this.map.has(r) || this.quantized.has(r) || this.released.has(r);
  }
  /** The float32 weight. A quantized weight has none: use dequantized() or getQuantized(). */
  get(name: string): WeightTensor {
    const r = this.resolve(name);
    let w = this.map.get(r);
    const gone = w ? undefined : this.released.get(r);
    if (gone) {
      w = { shape: gone.shape, data: readWeightFile(gone.file, gone.shape), file: gone.file };
      this.released.delete(r);
      this.map.set(r, w);
    }
    if (!w) {
      if (this.isQuantized(name)) {
        throw new QuantizationError(
          `weight "${name}" is held 4-bit quantized; use dequantized() for a float32 copy, or load the model without quantization to change or train it`,
        );
      }
      throw new Error(`weight "${name}" is not loaded`);
    }
    return w;
  }
  set(name: string, w: WeightTensor): void {
    this.aliases.delete(name);
    this.quantized.delete(name);
    this.released.delete(name);
    this.forgetInt8(name);
    this.map.set(name, w);
  }
  private forgetInt8(name: string): void {
    this.int8Copies.delete(`${name}|linear`);
    this.int8Copies.delete(`${name}|conv1d`);
  }
  /**
   * The int8 copies of a frozen matrix (src/quant/int8_base.ts) stored in `layout`. A weight whose
   * float32 array is held is quantized from it at each call; a released or deferred one is
   * read from its file for this alone and not kept, so it never exists as a float32 array for
   * longer than its quantization takes.
   */
  int8(name: string, layout: 'linear' | 'conv1d'): Int8Base {
    const r = this.resolve(name);
    const w = this.map.get(r);
    if (w) return int8Base(w.data, w.shape, layout, name);
    const gone = this.released.get(r);
    if (!gone) return int8Base(this.get(name).data, this.shapeOf(name), layout, name); // throws the right error
    const key = `${r}|${layout}`;
    const hit = this.int8Copies.get(key);
    const fc = hit?.codes[0].deref();
    const bc = hit?.codes[1].deref();
    if (hit && fc && bc) return { forward: { ...hit.forward, codes: fc }, backward: { ...hit.backward, codes: bc } };
    const q = int8Base(readWeightFile(gone.file, gone.shape), gone.shape, layout, name);
    // The sessions fed from the codes keep them (not this object) alive, so each is held weakly on
    // its own; the scales (4 bytes a column) are kept.
    const { codes: f, ...forward } = q.forward;
    const { codes: b, ...backward } = q.backward;
    this.int8Copies.set(key, { codes: [new WeakRef(f), new WeakRef(b)], forward, backward });
    return q;
  }
  isQuantized(name: string): boolean {
    return this.quantized.has(this.resolve(name));
  }
  getQuantized(name: string): QuantizedWeightTensor | undefined {
    return this.quantized.get(this.resolve(name));
  }
  setQuantized(name: string, w: QuantizedWeightTensor): void {
    this.aliases.delete(name);
    this.map.delete(name);
    this.released.delete(name);
    this.forgetInt8(name);
    this.quantized.set(name, w);
  }
  /** Names of the weights held quantized. */
  quantizedNames(): string[] {
    return [...this.quantized.keys()];
  }
  /** A float32 copy of any weight in its state-dict layout (the 4-bit round trip for quantized ones). */
  dequantized(name: string): WeightTensor {
    const q = this.getQuantized(name);
    if (!q) return this.get(name);
    const flat = dequantize4bit(q.quant);
    return { shape: [...q.shape], data: q.transposed ? transpose2d(flat, q.quant.shape[0]!, q.quant.shape[1]!) : flat };
  }
  /** The state-dict shape of a float or quantized weight. */
  shapeOf(name: string): number[] {
    const q = this.getQuantized(name);
    const gone = this.released.get(this.resolve(name));
    return q ? [...q.shape] : gone ? [...gone.shape] : [...this.get(name).shape];
  }
  /** Moves a weight (float or quantized) to a new name. */
  rename(from: string, to: string): void {
    const q = this.quantized.get(from);
    const gone = this.released.get(from);
    if (q) this.setQuantized(to, q);
    else if (gone) {
      this.delete(to);
      this.aliases.delete(to);
      this.released.set(to, gone);
    } else this.set(to, this.get(from));
    this.delete(from);
  }
  delete(name: string): boolean {
    this.forgetInt8(name);
    const a = this.map.delete(name);
    const b = this.quantized.delete(name);
    const c = this.released.delete(name);
    return a || b || c;
  }
  names(): string[] {
    return [...this.map.keys(), ...this.released.keys(), ...this.quantized.keys()];
  }
  /**
   * Drops the float32 array of a weight read from a safetensors file (WeightTensor.file: stored
   * as float32, float16 or bfloat16), so the process no longer holds it once nothing else does;
   * get() reads it back from that file (upcast as when loading) when it is needed again. Used by
   * training on an int8 base, whose sessions hold int8 copies instead. Returns false (and keeps
   * the array) for a weight with no such file.
   */
  releaseFloat(name: string): boolean {
    const r = this.resolve(name);
    const w = this.map.get(r);
    if (!w?.file) return false;
    this.map.delete(r);
    this.released.set(r, { shape: w.shape, file: w.file });
    return true;
  }
  /** Names of the weights whose float32 arrays are released (releaseFloat) and not read back yet. */
  releasedNames(): string[] {
    return [...this.released.keys()];
  }
  /** Number of parameters held (a quantized weight counts its logical elements). */
  numel(filter: (name: string) => boolean = () => true): number {
    let n = 0;
    for (const [k, w] of this.map) if (filter(k)) n += w.data.length;
    for (const [k, w] of this.released) if (filter(k)) n += numelOf(w.shape);
    for (const [k, w] of this.quantized) if (filter(k)) n += numelOf(w.shape);
    return n;
  }
  /** Bytes held for the weights: float32 arrays, and packed codes plus scales for quantized ones. */
  heldBytes(filter: (name: string) => boolean = () => true): number {
    let n = 0;
    for (const [k, w] of this.map) if (filter(k)) n += w.data.byteLength;
    for (const [k, w] of this.quantized) if (filter(k)) n += quantizedBytes(w.quant);
    return n;
  }
  constSource(name: string): ConstSource {
    return { kind: 'array', data: this.get(name).data };
  }
}

function quantizeRaw(name: string, raw: RawTensor, spec: QuantizeOptions & { transpose?: boolean }): QuantizedWeightTensor {
  const shape = [...raw.shape];
  const transposed = spec.transpose === true;
  if (transposed && shape.length !== 2)
    throw new QuantizationError(`${name}: only a matrix can be quantized transposed, got shape [${shape.join(', ')}]`);
  let data = toFloat32(raw);
  if (transposed) data = transpose2d(data, shape[0]!, shape[1]!);
  const qshape = transposed ? [shape[1]!, shape[0]!] : shape;
  try {
    const quant = quantize4bit(data, qshape, { ...spec, dtype: spec.dtype ?? DTYPE_NAMES[raw.dtype] ?? 'float32' });
    return { shape, quant, transposed };
  } catch (e) {
    if (e instanceof QuantizationError) throw new QuantizationError(`${name}: ${e.message}`);
    throw e;
  }
}

/** [rows, cols] row-major -> [cols, rows] row-major. */
export function transpose2d(a: Float32Array, rows: number, cols: number): Float32Array {
  const out = new Float32Array(a.length);
  for (let r = 0; r < rows; r++) {
    const base = r * cols;
    for (let c = 0; c < cols; c++) out[c * rows + r] = a[base + c]!;
  }
  return out;
}
