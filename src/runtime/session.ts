// The only module that imports onnxruntime: creates a session from a lowered graph, picks the
// execution provider and threads, converts host tensors to and from ORT tensors, and disposes.

import * as ort from 'onnxruntime-node';
import type { Graph, Value } from '../graph/ir.js';
import { type DType, type HostArray, shapeToString } from '../graph/types.js';
import { lowerGraph, type LoweredGraph } from '../onnx/export.js';
import { encodeModel } from '../onnx/model.js';

export type ExecutionProvider = 'cpu' | 'cuda' | 'webgpu';

export interface RuntimeOptions {
  executionProvider?: ExecutionProvider;
  /** intra-op threads; default: ORT's choice (all physical cores) */
  threads?: number;
  graphOptimization?: 'disabled' | 'basic' | 'extended' | 'all';
  /** name for logs and errors */
  name?: string;
}

export interface HostTensor {
  dtype: DType;
  shape: readonly number[];
  data: HostArray;
}

export class RuntimeError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'RuntimeError';
  }
}

const ORT_TYPE: Record<DType, ort.Tensor.Type> = {
  float32: 'float32',
  float16: 'float16',
  float64: 'float64',
  int64: 'int64',
  int32: 'int32',
  uint8: 'uint8',
  bool: 'bool',
};
const FROM_ORT: Partial<Record<string, DType>> = Object.fromEntries(Object.entries(ORT_TYPE).map(([k, v]) => [v, k as DType]));

export function toOrtTensor(t: HostTensor): ort.Tensor {
  return new ort.Tensor(ORT_TYPE[t.dtype], t.data as never, t.shape as number[]);
}

export function fromOrtTensor(t: ort.Tensor): HostTensor {
  const dtype = FROM_ORT[t.type];
  if (!dtype) throw new RuntimeError(`unsupported output tensor type ${t.type}`);
  return { dtype, shape: [...t.dims], data: t.data as HostArray };
}

export function availableProviders(): ExecutionProvider[] {
  const list = (ort as unknown as { listSupportedBackends?: () => { name: string }[] }).listSupportedBackends?.();
  const names = new Set((list ?? [{ name: 'cpu' }]).map((b) => b.name));
  return (['cpu', 'cuda', 'webgpu'] as const).filter((p) => names.has(p));
}

export class RuntimeSession {
  private constructor(
    private readonly session: ort.InferenceSession,
    readonly feeds: readonly Value[],
    readonly outputNames: readonly string[],
    readonly name: string,
  ) {}

  /** Compiles the graph's outputs into one session. */
  static async fromGraph(graph: Graph, outputs: Record<string, Value>, opts: RuntimeOptions = {}): Promise<RuntimeSession> {
    return RuntimeSession.fromLowered(lowerGraph(graph, outputs, opts.name), opts);
  }

  static async fromLowered(lowered: LoweredGraph, opts: RuntimeOptions = {}): Promise<RuntimeSession> {
    const bytes = encodeModel(lowered.spec);
    const ep = opts.executionProvider ?? 'cpu';
    if (ep !== 'cpu' && !availableProviders().includes(ep)) {
      const hint =
        ep === 'cuda'
          ? 'install the CUDA provider with `ONNXRUNTIME_NODE_INSTALL=cuda12 npm rebuild onnxruntime-node` on a Linux x64 machine with CUDA 12'
          : 'WebGPU needs a platform where onnxruntime-node ships its WebGPU provider';
      throw new RuntimeError(`execution provider "${ep}" is not available here (have: ${availableProviders().join(', ')}); ${hint}, or use --device cpu`);
    }
    const options: ort.InferenceSession.SessionOptions = {
      executionProviders: [ep],
      graphOptimizationLevel: opts.graphOptimization ?? 'all',
      logSeverityLevel: 3,
    };
    if (opts.threads) {
      options.intraOpNumThreads = opts.threads;
      options.interOpNumThreads = 1;
    }
    let session: ort.InferenceSession;
    try {
      session = await ort.InferenceSession.create(bytes, options);
    } catch (e) {
      throw new RuntimeError(`ONNX Runtime rejected the ${opts.name ?? 'graph'} (${lowered.spec.nodes.length} nodes): ${(e as Error).message}`);
    }
    return new RuntimeSession(session, lowered.feeds, lowered.outputNames, opts.name ?? 'session');
  }

  /** Runs with host tensors keyed by value name; returns the requested outputs (all by default). */
  async run(feeds: Record<string, HostTensor | ort.Tensor>, fetches?: readonly string[]): Promise<Record<string, HostTensor>> {
    const ortFeeds: Record<string, ort.Tensor> = {};
    for (const v of this.feeds) {
      const t = feeds[v.name];
      if (!t) throw new RuntimeError(`${this.name}: missing input "${v.name}" (${v.dtype}${shapeToString(v.shape)})`);
      if (t instanceof ort.Tensor) ortFeeds[v.name] = t;
      else {
        const h = t as HostTensor;
        if (h.dtype !== v.dtype) throw new RuntimeError(`${this.name}: input "${v.name}" must be ${v.dtype}, got ${h.dtype}`);
        if (h.shape.length !== v.rank || h.shape.some((d, i) => typeof v.shape[i] === 'number' && v.shape[i] !== d)) {
          throw new RuntimeError(`${this.name}: input "${v.name}" has shape ${shapeToString(h.shape)}, expected ${shapeToString(v.shape)}`);
        }
        ortFeeds[v.name] = toOrtTensor(h);
      }
    }
    let result: ort.InferenceSession.OnnxValueMapType;
    try {
      result = await this.session.run(ortFeeds, fetches ? [...fetches] : [...this.outputNames]);
    } catch (e) {
      throw new RuntimeError(`${this.name}: run failed: ${(e as Error).message}`);
    }
    const out: Record<string, HostTensor> = {};
    for (const [k, v] of Object.entries(result)) out[k] = fromOrtTensor(v as ort.Tensor);
    return out;
  }

  async dispose(): Promise<void> {
    await this.session.release();
  }
}
