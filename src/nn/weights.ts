// Frozen model weights as the process holds them: float32 host arrays keyed by their Hugging Face
// state-dict names, upcast once from float16/bfloat16 checkpoints, plus where each came from on
// disk so a session can map float32 tensors straight from the file instead of copying them.

import type { TensorSource } from '../io/safetensors.js';
import { toFloat32 } from '../io/safetensors.js';
import type { ConstSource } from '../graph/ir.js';

export interface WeightTensor {
  shape: number[];
  data: Float32Array;
  /** the byte range of this tensor in a float32 safetensors file, when it is stored that way */
  file?: { path: string; offset: number; length: number };
}

export class WeightStore {
  private readonly map = new Map<string, WeightTensor>();
  /** tied weights: lm_head.weight -> transformer.wte.weight, held once */
  private readonly aliases = new Map<string, string>();

  static async fromSource(source: TensorSource, path: (name: string) => string | undefined = () => undefined): Promise<WeightStore> {
    const store = new WeightStore();
    for (const name of source.names()) {
      const info = source.info(name);
      const raw = await source.read(name);
      const file = path(name);
      store.set(name, {
        shape: [...raw.shape],
        data: toFloat32(raw),
        file: info.dtype === 'F32' && file ? { path: file, offset: info.byteOffset, length: info.byteLength } : undefined,
      });
    }
    return store;
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
    return this.map.has(this.resolve(name));
  }
  get(name: string): WeightTensor {
    const w = this.map.get(this.resolve(name));
    if (!w) throw new Error(`weight "${name}" is not loaded`);
    return w;
  }
  set(name: string, w: WeightTensor): void {
    this.aliases.delete(name);
    this.map.set(name, w);
  }
  delete(name: string): boolean {
    return this.map.delete(name);
  }
  names(): string[] {
    return [...this.map.keys()];
  }
  /** Number of float parameters held. */
  numel(filter: (name: string) => boolean = () => true): number {
    let n = 0;
    for (const [k, w] of this.map) if (filter(k)) n += w.data.length;
    return n;
  }
  constSource(name: string): ConstSource {
    return { kind: 'array', data: this.get(name).data };
  }
}
