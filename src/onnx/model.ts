// ONNX ModelProto encoding: plain TypeScript descriptions of nodes, tensors and value infos,
// written with the field numbers of onnx.proto (IR version 8). Initializers are raw little-endian
// bytes, inline or as external-data references (offset/length into a file beside the model).

import { PbWriter } from './protobuf.js';

export type AttrValue =
  | { type: 'int'; value: number }
  | { type: 'float'; value: number }
  | { type: 'ints'; value: number[] }
  | { type: 'floats'; value: number[] }
  | { type: 'string'; value: string }
  | { type: 'tensor'; tensor: TensorSpec };

export interface NodeSpec {
  opType: string;
  domain?: string;
  name?: string;
  inputs: string[];
  outputs: string[];
  attributes?: Record<string, AttrValue>;
}

export interface TensorSpec {
  name: string;
  /** onnx.TensorProto.DataType */
  dataType: number;
  dims: number[];
  raw?: Uint8Array;
  external?: { location: string; offset: number; length: number };
}

export interface ValueInfoSpec {
  name: string;
  elemType: number;
  /** number: fixed; string: a named symbolic dim; null: unknown */
  shape: (number | string | null)[];
}

export interface ModelSpec {
  graphName: string;
  nodes: NodeSpec[];
  inputs: ValueInfoSpec[];
  outputs: ValueInfoSpec[];
  initializers: TensorSpec[];
  opsets: { domain: string; version: number }[];
  producerName?: string;
  producerVersion?: string;
}

const IR_VERSION = 8;

function attribute(name: string, a: AttrValue): PbWriter {
  const w = new PbWriter().string(1, name);
  switch (a.type) {
    case 'float':
      return w.float(2, a.value).varint(20, 1);
    case 'int':
      return w.varint(3, a.value).varint(20, 2);
    case 'string':
      return w.string(4, a.value).varint(20, 3);
    case 'tensor':
      return w.message(5, tensor(a.tensor)).varint(20, 4);
    case 'floats':
      return w.packedFloats(7, a.value).varint(20, 6);
    case 'ints':
      return w.packedVarints(8, a.value).varint(20, 7);
  }
}

function node(n: NodeSpec): PbWriter {
  const w = new PbWriter();
  for (const i of n.inputs) w.string(1, i);
  for (const o of n.outputs) w.string(2, o);
  if (n.name) w.string(3, n.name);
  w.string(4, n.opType);
  for (const [k, v] of Object.entries(n.attributes ?? {})) w.message(5, attribute(k, v));
  if (n.domain) w.string(7, n.domain);
  return w;
}

function tensor(t: TensorSpec): PbWriter {
  const w = new PbWriter();
  if (t.dims.length) w.packedVarints(1, t.dims);
  w.varint(2, t.dataType);
  w.string(8, t.name);
  if (t.external) {
    const entry = (k: string, v: string) => new PbWriter().string(1, k).string(2, v);
    w.message(13, entry('location', t.external.location));
    w.message(13, entry('offset', String(t.external.offset)));
    w.message(13, entry('length', String(t.external.length)));
    w.varint(14, 1);
  } else {
    w.bytes(9, t.raw ?? new Uint8Array(0));
  }
  return w;
}

function valueInfo(v: ValueInfoSpec): PbWriter {
  const shape = new PbWriter();
  for (const d of v.shape) {
    const dim = new PbWriter();
    if (typeof d === 'number') dim.varint(1, d);
    else if (typeof d === 'string') dim.string(2, d);
    shape.message(1, dim);
  }
  const tensorType = new PbWriter().varint(1, v.elemType).message(2, shape);
  const type = new PbWriter().message(1, tensorType);
  return new PbWriter().string(1, v.name).message(2, type);
}

export function encodeModel(m: ModelSpec): Uint8Array {
  const g = new PbWriter();
  for (const n of m.nodes) g.message(1, node(n));
  g.string(2, m.graphName);
  for (const t of m.initializers) g.message(5, tensor(t));
  for (const i of m.inputs) g.message(11, valueInfo(i));
  for (const o of m.outputs) g.message(12, valueInfo(o));

  const w = new PbWriter().varint(1, IR_VERSION);
  w.string(2, m.producerName ?? 'peft-ts');
  w.string(3, m.producerVersion ?? '0.1.0');
  w.message(7, g);
  for (const op of m.opsets) {
    const os = new PbWriter();
    if (op.domain) os.string(1, op.domain);
    os.varint(2, op.version);
    w.message(8, os);
  }
  return w.finish();
}
