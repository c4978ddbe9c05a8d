// Lowers an IR graph to an ONNX model description: keeps only the nodes the requested outputs
// need, runs each op's lowering rule (lower.ts), turns constants into initializers (inline bytes or
// references into the files they were read from) and names the outputs as asked.
//
// Where a constant's bytes go (see docs/MEMORY.md for the measurements behind the choices):
// - file-backed constants ({kind:'file'}) are always external data pointing into the file they were
//   read from, so ONNX Runtime memory-maps them and several sessions share the page cache;
// - small in-memory constants are inlined into the ModelProto;
// - large in-memory constants (>= largeConstantBytes) either become graph inputs that the runtime
//   feeds from the one JS array (largeConstants: 'input', zero copies), or in-memory external data
//   handed to ONNX Runtime next to the model bytes ('external'; keeps the ModelProto far below its
//   2 GB protobuf limit), or stay inline ('inline', the old behaviour).

import type { Graph, Value } from '../graph/ir.js';
import { LOWER, type LowerContext, type OnnxAttr, onnxDtype } from './lower.js';
import { type DType, GraphShapeError, dtypeByteSize, shapeToString, staticSize } from '../graph/types.js';
import { hostArrayOf } from '../graph/ir.js';
import type { AttrValue, ModelSpec, NodeSpec, TensorSpec, ValueInfoSpec } from './model.js';

const OPSET = 18;

/** A ModelProto must stay below 2 GiB (protobuf limit); inline bytes above this are refused. */
export const MAX_INLINE_BYTES = 2 ** 31 - 64 * 2 ** 20;
/** Default size from which an in-memory constant leaves the ModelProto. */
export const DEFAULT_LARGE_CONSTANT_BYTES = 1 << 20;

export interface LowerOptions {
  /** in-memory constants of at least this many bytes are "large" (default 1 MiB) */
  largeConstantBytes?: number;
  /**
   * where large in-memory constants go (default 'external'). 'external' falls back to 'inline' in a
   * graph that also has file-backed constants (ONNX Runtime cannot mix in-memory blobs and files),
   * and to 'input' where inlining would pass the 2 GB ModelProto limit.
   */
  largeConstants?: 'inline' | 'external' | 'input';
  /**
   * Order the nodes that only produce outputs (no node reads them: a training step's parameter
   * gradients) last, the earliest-built one at the very end (see `outputsLast`). Default false.
   */
  outputsLast?: boolean;
}

/** In-memory external data: an initializer's location names one of these blobs. */
export interface ExternalBlob {
  path: string;
  data: Uint8Array;
}

export interface LoweredGraph {
  spec: ModelSpec;
  /** graph inputs and trainable params the session must be fed, in declaration order */
  feeds: Value[];
  outputNames: string[];
  /** large in-memory constants lowered as graph inputs; the runtime feeds them from their arrays */
  constantInputs: Value[];
  /** in-memory external data referenced by initializers (largeConstants: 'external') */
  externalData: ExternalBlob[];
  /** files (as given in the constants' sources) that external initializers point into */
  externalFiles: string[];
  /** bytes of constants inlined into the ModelProto */
  inlineBytes: number;
}

function bytesOf(v: Value): Uint8Array | undefined {
  const s = v.source!;
  if (s.kind !== 'array') return undefined;
  return new Uint8Array(s.data.buffer, s.data.byteOffset, s.data.byteLength);
}

function toAttr(a: OnnxAttr): AttrValue {
  if (a.type !== 'tensor') return a;
  const arr = hostArrayOf(a.dtype, a.values);
  return {
    type: 'tensor',
    tensor: { name: 'value', dataType: onnxDtype(a.dtype), dims: a.dims, raw: new Uint8Array(arr.buffer, arr.byteOffset, arr.byteLength) },
  };
}

function dimInfo(d: number | string): number | string | null {
  if (typeof d === 'number') return d;
  return /^[A-Za-z_][A-Za-z0-9_]*$/.test(d) ? d : null;
}

const SUM_DTYPES: ReadonlySet<DType> = new Set(['float32', 'float64', 'float16']);

const sameShape = (a: Value, b: Value): boolean => a.shape.length === b.shape.length && a.shape.every((d, i) => d === b.shape[i]);

/**
 * Chains of same-shaped Adds, Add(Add(a, b), c), whose inner sum is used nowhere else: each chain
 * becomes one ONNX Sum(a, b, c) (map value: its inputs' names; null: an inner Add that the Sum
 * absorbed). ONNX Runtime's Sum adds its inputs left to right, ((a + b) + c), as the Adds did, so
 * the result is the same to the bit; what goes is one node per absorbed Add, which in a batch-1
 * decode step costs more than its arithmetic (an unmerged LoRA's delta added to the module output
 * and then the residual: bench/RESULTS.md, "Decode: unmerged LoRA vs merged"). Broadcasting Adds
 * (biases, masks) are left alone, so ONNX Runtime's own fusions of them still apply.
 */
function addChains(graph: Graph, live: ReadonlySet<number>, outputs: readonly Value[]): Map<number, string[] | null> {
  const uses = new Map<number, number>();
  for (const n of graph.nodes) if (live.has(n.id)) for (const v of n.inputs) uses.set(v.id, (uses.get(v.id) ?? 0) + 1);
  for (const v of outputs) uses.set(v.id, Infinity);
  const plan = new Map<number, string[] | null>();
  const isAdd = (v: Value): boolean => v.producer?.op === 'Add' && SUM_DTYPES.has(v.dtype);
  for (const n of graph.nodes) {
    if (!live.has(n.id) || !isAdd(n.outputs[0]!)) continue;
    const [p, q] = n.inputs as [Value, Value];
    const y = n.outputs[0]!;
    if (!sameShape(p, y) || !sameShape(q, y)) continue;
    // the inner sum must be one whose terms are all of y's shape, and used only here
    const inner = (v: Value): boolean =>
      isAdd(v) && uses.get(v.id) === 1 && v.producer!.inputs.every((t) => sameShape(t, y) && t.dtype === y.dtype);
    // Add(c, Add(a, b)) = (a + b) + c: addition of two floats commutes exactly
    const [chain, other] = inner(p) ? [p, q] : inner(q) ? [q, p] : [undefined, undefined];
    if (!chain) continue;
    const inNode = chain.producer!;
    const terms = plan.get(inNode.id) ?? inNode.inputs.map((t) => t.name);
    plan.set(inNode.id, null);
    plan.set(n.id, [...terms, other!.name]);
  }
  return plan;
}

/**
 * `nodes` with those whose outputs no node reads moved to the end, in reverse order. ONNX Runtime's
 * default execution order is a depth-first walk back from such leaf nodes, the last-listed first:
 * each leaf's ancestry runs before the next leaf's rest. A training step's leaves are its
 * parameter gradients, built as the backward pass reaches each parameter (last layer first); as
 * built, the last-built one (the first layer's) came last and was walked first, so the whole
 * backward pass ran before any other gradient's own nodes (IA3's sum of the incoming gradient times
 * the activation, per layer), and the inputs of all those stayed alive to the end: GPT-2 IA3 peaked
 * 250 MiB above LoRA's. Reversed, each gradient is finished as soon as the backward pass reaches
 * its parameter. Same nodes, same results; only the order ONNX Runtime picks changes. Nodes ONNX
 * Runtime's optimizer creates (fusions) are numbered after all of these, so a training step gives
 * each gradient a node of its own first (addGradientOutputs in src/train/step.ts).
 */
function outputsLast(nodes: NodeSpec[]): NodeSpec[] {
  const read = new Set(nodes.flatMap((n) => n.inputs));
  const leaves = nodes.filter((n) => n.outputs.every((o) => !read.has(o)));
  if (leaves.length < 2) return nodes;
  const leaf = new Set(leaves);
  return [...nodes.filter((n) => !leaf.has(n)), ...leaves.reverse()];
}

export function lowerGraph(graph: Graph, outputs: Record<string, Value>, name = 'peft', opts: LowerOptions = {}): LoweredGraph {
  const largeBytes = opts.largeConstantBytes ?? DEFAULT_LARGE_CONSTANT_BYTES;
  const largeMode = opts.largeConstants ?? 'external';
  const outs = Object.entries(outputs);
  if (outs.length === 0) throw new GraphShapeError('a session needs at least one output');

  // Which nodes and leaf values the outputs depend on.
  const needed = new Set<number>();
  const stack = outs.map(([, v]) => v);
  const liveNodes = new Set<number>();
  while (stack.length) {
    const v = stack.pop()!;
    if (needed.has(v.id)) continue;
    needed.add(v.id);
    if (v.producer && !liveNodes.has(v.producer.id)) {
      liveNodes.add(v.producer.id);
      stack.push(...v.producer.inputs);
    }
  }

  const nodes: NodeSpec[] = [];
  const initializers: TensorSpec[] = [];
  const int64Cache = new Map<string, string>();
  let tmpCount = 0;
  const ctx: LowerContext & { scopeName: string } = {
    scopeName: '',
    emit(opType, inputs, outputs, attrs, domain) {
      const attributes: Record<string, AttrValue> = {};
      for (const [k, a] of Object.entries(attrs ?? {})) attributes[k] = toAttr(a);
      nodes.push({ opType, inputs, outputs, attributes, domain, name: `${this.scopeName}/${opType}_${nodes.length}` });
    },
    int64s(values) {
      const key = `i64:${values.join(',')}`;
      let n = int64Cache.get(key);
      if (!n) {
        n = `__i64_${int64Cache.size}`;
        const arr = BigInt64Array.from(values.map((x) => BigInt(x)));
        initializers.push({ name: n, dataType: onnxDtype('int64'), dims: [values.length], raw: new Uint8Array(arr.buffer) });
        int64Cache.set(key, n);
      }
      return n;
    },
    scalar(value: number, dtype: DType) {
      const key = `s:${dtype}:${value}`;
      let n = int64Cache.get(key);
      if (!n) {
        n = `__scalar_${int64Cache.size}`;
        const arr = hostArrayOf(dtype, [value]);
        initializers.push({
          name: n,
          dataType: onnxDtype(dtype),
          dims: [],
          raw: new Uint8Array(arr.buffer, arr.byteOffset, arr.byteLength),
        });
        int64Cache.set(key, n);
      }
      return n;
    },
    tmp(hint) {
      return `__t${tmpCount++}_${hint}`;
    },
    live(v) {
      return needed.has(v.id);
    },
  };

  const sums = addChains(
    graph,
    liveNodes,
    outs.map(([, v]) => v),
  );
  for (const n of graph.nodes) {
    if (!liveNodes.has(n.id)) continue;
    ctx.scopeName = n.scope || 'root';
    const sum = sums.get(n.id);
    if (sum === null) continue;
    if (sum) {
      ctx.emit('Sum', sum, [n.outputs[0]!.name]);
      continue;
    }
    LOWER[n.op](
      ctx,
      n.inputs.map((v) => v.name),
      n.outputs.map((v) => v.name),
      n.attrs as never,
      n,
    );
  }

  const constantInputs: Value[] = [];
  const externalData: ExternalBlob[] = [];
  const externalFiles = new Set<string>();
  let inlineBytes = 0;
  const hasFiles = graph.consts.some((c) => needed.has(c.id) && c.source?.kind === 'file');
  for (const c of graph.consts) {
    if (!needed.has(c.id)) continue;
    const s = c.source!;
    const t: TensorSpec = { name: c.name, dataType: onnxDtype(c.dtype), dims: c.shape as number[] };
    if (s.kind === 'file') {
      const expected = (staticSize(c.shape) ?? 0) * dtypeByteSize(c.dtype);
      if (s.length !== expected) {
        throw new GraphShapeError(
          `constant "${c.name}" reads ${s.length} bytes of ${s.path} but ${c.dtype}${shapeToString(c.shape)} needs ${expected}`,
        );
      }
      externalFiles.add(s.path);
      // the path as given; the runtime rewrites it relative to the folder ONNX Runtime is told about
      t.external = { location: s.path, offset: s.offset, length: s.length };
    } else {
      const raw = bytesOf(c)!;
      let mode = s.feed ? 'input' : raw.byteLength >= largeBytes ? largeMode : 'inline';
      // ONNX Runtime takes in-memory external data only when it then finds *every* external
      // location among the blobs, so next to file-backed constants a large array is inlined while
      // the ModelProto has room, and fed as an input beyond that.
      if (mode === 'external' && hasFiles) mode = inlineBytes + raw.byteLength <= MAX_INLINE_BYTES ? 'inline' : 'input';
      if (mode === 'inline' && inlineBytes + raw.byteLength > MAX_INLINE_BYTES && largeMode !== 'inline') mode = 'input';
      if (mode === 'input') {
        constantInputs.push(c);
        continue;
      }
      if (mode === 'external') {
        // One blob per constant: ONNX Runtime matches the location string to the blob, so the
        // JS array is handed over as it is, never concatenated into a second buffer.
        const path = `__peft_const_${externalData.length}.bin`;
        externalData.push({ path, data: raw });
        t.external = { location: path, offset: 0, length: raw.byteLength };
      } else {
        t.raw = raw;
        inlineBytes += raw.byteLength;
      }
    }
    initializers.push(t);
  }
  if (inlineBytes > MAX_INLINE_BYTES) {
    throw new GraphShapeError(
      `${inlineBytes} bytes of constants would be inlined, above the 2 GB ModelProto limit; lower largeConstantBytes or use largeConstants 'external' or 'input'`,
    );
  }

  const info = (v: Value, nameAs = v.name): ValueInfoSpec => ({ name: nameAs, elemType: onnxDtype(v.dtype), shape: v.shape.map(dimInfo) });
  // Constants fed as inputs keep their (static) shapes; they follow the user's feeds.
  const feeds = [...graph.inputs, ...graph.params].filter((v) => needed.has(v.id)).sort((a, b) => a.id - b.id);
  const outputNames: string[] = [];
  const outputInfos: ValueInfoSpec[] = [];
  const claimed = new Set<string>();
  // A graph output must be a node output with its own name. A node output that is not an output
  // yet is renamed to the output name rather than copied by an Identity (ONNX Runtime keeps an
  // Identity that feeds a graph output, and it copies the tensor at every run: a decode step's
  // presents would be copied twice). Identities remain for inputs, constants and values output
  // under a second name.
  const used = new Set<string>([...nodes.flatMap((n) => [...n.inputs, ...n.outputs]), ...initializers.map((t) => t.name)]);
  for (const v of [...feeds, ...constantInputs]) used.add(v.name);
  const rename = new Map<string, string>();
  const outNames = new Set(outs.map(([n]) => n));
  for (const [outName, v] of outs) {
    if (v.kind === 'node' && v.name !== outName && !rename.has(v.name) && !outNames.has(v.name) && !used.has(outName)) {
      rename.set(v.name, outName);
      used.add(outName);
    }
  }
  if (rename.size) {
    const to = (n: string): string => rename.get(n) ?? n;
    for (const n of nodes) {
      n.inputs = n.inputs.map(to);
      n.outputs = n.outputs.map(to);
    }
  }
  for (const [outName, v] of outs) {
    const source = rename.get(v.name) ?? v.name;
    if (source !== outName || v.kind !== 'node' || claimed.has(source)) {
      nodes.push({ opType: 'Identity', inputs: [source], outputs: [outName], name: `output/${outName}` });
    }
    claimed.add(outName);
    outputNames.push(outName);
    outputInfos.push(info(v, outName));
  }

  return {
    spec: {
      graphName: name,
      nodes: opts.outputsLast ? outputsLast(nodes) : nodes,
      inputs: [...feeds, ...constantInputs].map((v) => info(v)),
      outputs: outputInfos,
      initializers,
      opsets: [
        { domain: '', version: OPSET },
        { domain: 'com.microsoft', version: 1 },
      ],
    },
    feeds,
    outputNames,
    constantInputs,
    externalData,
    externalFiles: [...externalFiles],
    inlineBytes,
  };
}
