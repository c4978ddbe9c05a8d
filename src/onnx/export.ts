// Lowers an IR graph to an ONNX model description: keeps only the nodes the requested outputs
// need, runs each op's registered lowering, turns constants into initializers (inline bytes or
// references into the files they were read from) and names the outputs as asked.

import type { Graph, Value } from '../graph/ir.js';
import { OPS, type LowerContext, type OnnxAttr, onnxDtype } from '../graph/registry.js';
import { type DType, GraphShapeError } from '../graph/types.js';
import { hostArrayOf } from '../graph/ir.js';
import type { AttrValue, ModelSpec, NodeSpec, TensorSpec, ValueInfoSpec } from './model.js';

export const OPSET = 18;

export interface LoweredGraph {
  spec: ModelSpec;
  /** graph inputs and trainable params the session must be fed, in declaration order */
  feeds: Value[];
  outputNames: string[];
}

function bytesOf(v: Value): Uint8Array | undefined {
  const s = v.source!;
  if (s.kind !== 'array') return undefined;
  return new Uint8Array(s.data.buffer, s.data.byteOffset, s.data.byteLength);
}

function toAttr(a: OnnxAttr): AttrValue {
  if (a.type !== 'tensor') return a;
  const arr = hostArrayOf(a.dtype, a.values);
  return { type: 'tensor', tensor: { name: 'value', dataType: onnxDtype(a.dtype), dims: a.dims, raw: new Uint8Array(arr.buffer, arr.byteOffset, arr.byteLength) } };
}

function dimInfo(d: number | string): number | string | null {
  if (typeof d === 'number') return d;
  return /^[A-Za-z_][A-Za-z0-9_]*$/.test(d) ? d : null;
}

export function lowerGraph(graph: Graph, outputs: Record<string, Value>, name = 'peft'): LoweredGraph {
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
        initializers.push({ name: n, dataType: onnxDtype(dtype), dims: [], raw: new Uint8Array(arr.buffer, arr.byteOffset, arr.byteLength) });
        int64Cache.set(key, n);
      }
      return n;
    },
    tmp(hint) {
      return `__t${tmpCount++}_${hint}`;
    },
  };

  for (const n of graph.nodes) {
    if (!liveNodes.has(n.id)) continue;
    ctx.scopeName = n.scope || 'root';
    const def = OPS[n.op];
    def.lower(ctx, n.inputs.map((v) => v.name), n.outputs.map((v) => v.name), n.attrs as never, n);
  }

  for (const c of graph.consts) {
    if (!needed.has(c.id)) continue;
    const s = c.source!;
    const t: TensorSpec = { name: c.name, dataType: onnxDtype(c.dtype), dims: c.shape as number[] };
    if (s.kind === 'file') t.external = { location: s.path, offset: s.offset, length: s.length };
    else t.raw = bytesOf(c);
    initializers.push(t);
  }

  const info = (v: Value, nameAs = v.name): ValueInfoSpec => ({ name: nameAs, elemType: onnxDtype(v.dtype), shape: v.shape.map(dimInfo) });
  const feeds = [...graph.inputs, ...graph.params].filter((v) => needed.has(v.id)).sort((a, b) => a.id - b.id);
  const outputNames: string[] = [];
  const outputInfos: ValueInfoSpec[] = [];
  const claimed = new Set<string>();
  for (const [outName, v] of outs) {
    // A graph output must be a node output with a unique name; add an Identity where needed.
    if (v.name !== outName || v.kind !== 'node' || claimed.has(v.name)) {
      nodes.push({ opType: 'Identity', inputs: [v.name], outputs: [outName], name: `output/${outName}` });
    }
    claimed.add(outName);
    outputNames.push(outName);
    outputInfos.push(info(v, outName));
  }

  return {
    spec: {
      graphName: name,
      nodes,
      inputs: feeds.map((v) => info(v)),
      outputs: outputInfos,
      initializers,
      opsets: [{ domain: '', version: OPSET }, { domain: 'com.microsoft', version: 1 }],
    },
    feeds,
    outputNames,
  };
}
