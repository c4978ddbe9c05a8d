// The graph IR: values (typed, shaped), nodes (an op applied to values), and the Graph that owns
// them in topological (creation) order. Shape and dtype are inferred the moment a node is made,
// through the op table's inference rules (infer.ts), so a mismatch fails where the model code builds it, not in a session.

import { type DType, type HostArray, type Shape, GraphShapeError, shapeToString, staticSize } from './types.js';
import type { OpAttrs, OpName } from './attrs.js';
import { INFER, type ValueInfo } from './infer.js';

export type ValueKind = 'input' | 'param' | 'const' | 'node';

/** Where the bytes of a constant come from: in memory, or a byte range of a file on disk. */
export type ConstSource =
  | {
      kind: 'array';
      data: HostArray;
      /**
       * Always fed to the session as an input from `data`, never an initializer, so ONNX Runtime
       * cannot constant-fold what is computed from it (4-bit weights dequantized in the graph).
       */
      feed?: boolean;
    }
  | { kind: 'file'; path: string; offset: number; length: number };

export class Value {
  constructor(
    readonly graph: Graph,
    readonly id: number,
    readonly dtype: DType,
    readonly shape: Shape,
    readonly kind: ValueKind,
    public name: string,
    readonly producer: Node | null = null,
    readonly outputIndex = 0,
    readonly source: ConstSource | null = null,
  ) {}

  get rank(): number {
    return this.shape.length;
  }

  toString(): string {
    return `${this.name}: ${this.dtype}${shapeToString(this.shape)}`;
  }
}

export class Node {
  outputs: Value[] = [];
  constructor(
    readonly id: number,
    readonly op: OpName,
    readonly inputs: readonly Value[],
    readonly attrs: unknown,
    readonly scope: string,
  ) {}
}

export class Graph {
  readonly values: Value[] = [];
  readonly nodes: Node[] = [];
  readonly inputs: Value[] = [];
  readonly params: Value[] = [];
  readonly consts: Value[] = [];
  private readonly scopes: string[] = [];
  private readonly usedNames = new Set<string>();
  private readonly scalarCache = new Map<string, Value>();

  /** Runs fn with a name scope pushed, so nodes and errors carry "model.layers.0.mlp" etc. */
  scope<T>(name: string, fn: () => T): T {
    this.scopes.push(name);
    try {
      return fn();
    } finally {
      this.scopes.pop();
    }
  }

  get currentScope(): string {
    return this.scopes.join('.');
  }

  private uniqueName(base: string): string {
    let name = base;
    let i = 1;
    while (this.usedNames.has(name)) name = `${base}_${i++}`;
    this.usedNames.add(name);
    return name;
  }

  private push(v: Value): Value {
    this.values.push(v);
    return v;
  }

  /** A runtime input (batch data). Symbolic dims are strings. */
  input(name: string, dtype: DType, shape: Shape): Value {
    if (this.usedNames.has(name)) throw new GraphShapeError(`graph input name "${name}" is already used`);
    const v = new Value(this, this.values.length, dtype, [...shape], 'input', this.uniqueName(name));
    this.inputs.push(v);
    return this.push(v);
  }

  /** A trainable tensor: fed at every run, gets a gradient from autodiff. */
  param(name: string, dtype: DType, shape: Shape): Value {
    if (this.usedNames.has(name)) throw new GraphShapeError(`parameter name "${name}" is already used`);
    if (staticSize(shape) === undefined) throw new GraphShapeError(`parameter "${name}" needs a static shape, got ${shapeToString(shape)}`);
    const v = new Value(this, this.values.length, dtype, [...shape], 'param', this.uniqueName(name));
    this.params.push(v);
    return this.push(v);
  }

  /** A frozen tensor baked into the session as an initializer. */
  constant(name: string, dtype: DType, shape: Shape, source: ConstSource | HostArray): Value {
    const size = staticSize(shape);
    if (size === undefined) throw new GraphShapeError(`constant "${name}" needs a static shape, got ${shapeToString(shape)}`);
    const src: ConstSource =
      'kind' in source && !ArrayBuffer.isView(source) ? (source as ConstSource) : { kind: 'array', data: source as HostArray };
    if (src.kind === 'array' && src.data.length !== size) {
      throw new GraphShapeError(`constant "${name}" has ${src.data.length} elements but shape ${shapeToString(shape)} needs ${size}`);
    }
    const v = new Value(this, this.values.length, dtype, [...shape], 'const', this.uniqueName(name), null, 0, src);
    this.consts.push(v);
    return this.push(v);
  }

  /** A scalar constant of a dtype, shared by every use in the graph. */
  scalar(value: number, dtype: DType = 'float32'): Value {
    const key = `${dtype}:${Object.is(value, -0) ? '-0' : value}`;
    const hit = this.scalarCache.get(key);
    if (hit) return hit;
    const v = this.constant(`const_${dtype}_${this.scalarCache.size}`, dtype, [], hostArrayOf(dtype, [value]));
    this.scalarCache.set(key, v);
    return v;
  }

  /** A small constant tensor from JS numbers (positions tables, masks, lookup tables). */
  tensor(name: string, dtype: DType, shape: Shape, values: ArrayLike<number> | HostArray): Value {
    const data = ArrayBuffer.isView(values) ? (values as HostArray) : hostArrayOf(dtype, Array.from(values as ArrayLike<number>));
    return this.constant(name, dtype, shape, data);
  }

  /** Applies a registered op; shapes and dtypes are checked and inferred here. */
  op<K extends OpName>(op: K, inputs: readonly Value[], attrs: OpAttrs[K]): Value[] {
    for (const v of inputs) {
      if (v.graph !== this) throw new GraphShapeError(`${op}: input ${v.name} belongs to another graph`);
    }
    let infos: ValueInfo[];
    try {
      infos = INFER[op](inputs, attrs as never);
    } catch (e) {
      if (e instanceof GraphShapeError) {
        const where = this.currentScope ? ` in ${this.currentScope}` : '';
        const ins = inputs.map((v) => `${v.dtype}${shapeToString(v.shape)}`).join(', ');
        throw new GraphShapeError(`${op}${where}: ${e.message} (inputs: ${ins})`);
      }
      throw e;
    }
    const node = new Node(this.nodes.length, op, inputs, attrs, this.currentScope);
    const base = this.currentScope ? `${this.currentScope}/${op}` : op;
    node.outputs = infos.map(
      (info, i) =>
        new Value(
          this,
          this.values.length + i,
          info.dtype,
          info.shape,
          'node',
          this.uniqueName(`${base}_${node.id}${infos.length > 1 ? `_${i}` : ''}`),
          node,
          i,
        ),
    );
    for (const o of node.outputs) this.push(o);
    this.nodes.push(node);
    return node.outputs;
  }

  /** Renames a value so it appears under a stable name in the session (graph outputs, gradients). */
  rename(v: Value, name: string): Value {
    if (v.name === name) return v;
    if (this.usedNames.has(name)) throw new GraphShapeError(`name "${name}" is already used in the graph`);
    if (v.kind !== 'node') throw new GraphShapeError(`only computed values can be renamed, not ${v.kind} "${v.name}"`);
    this.usedNames.delete(v.name);
    this.usedNames.add(name);
    v.name = name;
    return v;
  }
}

export function hostArrayOf(dtype: DType, values: number[]): HostArray {
  switch (dtype) {
    case 'float32':
      return Float32Array.from(values);
    case 'float64':
      return Float64Array.from(values);
    case 'int64':
      return BigInt64Array.from(values.map((x) => BigInt(Math.trunc(x))));
    case 'int32':
      return Int32Array.from(values);
    case 'uint8':
    case 'bool':
      return Uint8Array.from(values);
    case 'int8':
      return Int8Array.from(values);
    case 'float16':
      return Uint16Array.from(values.map(float32ToFloat16Bits));
  }
}

/** IEEE half-precision bits of a number, round-to-nearest-even. */
export function float32ToFloat16Bits(x: number): number {
  const f = new Float32Array([x]);
  const u = new Uint32Array(f.buffer)[0]!;
  const sign = (u >>> 16) & 0x8000;
  const exp = (u >>> 23) & 0xff;
  let mant = u & 0x7fffff;
  if (exp === 0xff) return sign | 0x7c00 | (mant ? 0x200 : 0);
  const e = exp - 127 + 15;
  if (e >= 0x1f) return sign | 0x7c00;
  if (e <= 0) {
    if (e < -10) return sign;
    mant |= 0x800000;
    const shift = 14 - e;
    let half = mant >>> shift;
    const rem = mant & ((1 << shift) - 1);
    const halfway = 1 << (shift - 1);
    if (rem > halfway || (rem === halfway && half & 1)) half++;
    return sign | half;
  }
  let half = (e << 10) | (mant >>> 13);
  const rem = mant & 0x1fff;
  if (rem > 0x1000 || (rem === 0x1000 && half & 1)) half++;
  return sign | half;
}
