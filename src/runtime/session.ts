// The only module that runs onnxruntime (through backend.ts: onnxruntime-node or -web): creates a session from a lowered graph, picks the
// execution provider and threads, converts host tensors to and from ORT tensors, and disposes.

import type * as ort from 'onnxruntime-node';
import { path } from '../storage/index.js';
import { runtimeBackend } from './backend.js';
import type { Graph, Value } from '../graph/ir.js';
import { type DType, type HostArray, type Shape, shapeToString } from '../graph/types.js';
import { DEFAULT_LARGE_CONSTANT_BYTES, lowerGraph, type LoweredGraph, type LowerOptions } from '../onnx/export.js';
import { encodeModel } from '../onnx/model.js';
import { int8Matmuls } from '../onnx/int8_matmul.js';
import { PeftError } from '../errors.js';

export type { ExecutionProvider } from './backend.js';
import type { ExecutionProvider } from './backend.js';

/**
 * How frozen constants (Graph.constant) are held; docs/MEMORY.md has the measurements.
 * - 'shared' (default): each weight is resident once per process, however many sessions use it.
 *   File-backed constants are memory-mapped by ONNX Runtime straight from the file they were read
 *   from (the page cache is shared by every session, and every process), with weight prepacking
 *   turned off for sessions that have them; large in-memory constants are fed as inputs straight
 *   from their JS arrays (no copy).
 * - 'prepacked': ONNX Runtime prepacks every constant weight for MLAS in each session and for each
 *   MatMul that uses it (faster GEMMs, about 4 bytes per parameter per use, per session). Large
 *   in-memory constants go in as in-memory external data, never through the ModelProto.
 */
export type WeightMode = 'shared' | 'prepacked';

export interface RuntimeOptions {
  executionProvider?: ExecutionProvider;
  /** intra-op threads; default: ORT's choice (all physical cores) */
  threads?: number;
  graphOptimization?: 'disabled' | 'basic' | 'extended' | 'all';
  /** name for logs and errors */
  name?: string;
  /** how frozen constants are held (default 'shared') */
  weights?: WeightMode;
  /** in-memory constants of at least this many bytes are handled as weights (default 1 MiB) */
  largeConstantBytes?: number;
  /** where large in-memory constants go; overrides what `weights` picks (the bench uses 'inline') */
  largeConstants?: LowerOptions['largeConstants'];
  /** ONNX Runtime's CPU memory arena for activations (default true) */
  cpuMemArena?: boolean;
  /** ONNX Runtime's memory-pattern planning (default true) */
  memPattern?: boolean;
  /**
   * 'int8': every product with a large frozen float32 matrix runs as MatMulNBits on 8-bit weights
   * (blocks of 128 along K, activations quantized to int8 too; src/onnx/int8_matmul.ts). About 4x
   * fewer weight bytes per token for decoding; logits move by a small amount (see
   * test/onnx/int8_matmul.test.ts). Trainable params stay float32. Default: unset (float32).
   */
  quantize?: 'int8';
  /** constants (by name) that quantize 'int8' leaves float32: a frozen adapter's factors (src/generate/sessions.ts) */
  floatConstants?: readonly string[];
  /**
   * Whether ONNX Runtime's intra-op threads spin while waiting for work (ORT's default: true).
   * false = 'session.intra_op.allow_spinning' 0, as OMP_WAIT_POLICY=PASSIVE for PyTorch: on a
   * machine shared with other jobs, spinning threads burn the cores the work needs (bench/RESULTS.md,
   * "Decode" section).
   */
  spinning?: boolean;
  /** extra ONNX Runtime session config entries, e.g. { 'session.disable_prepacking': '1' } */
  sessionConfig?: Record<string, string>;
  /** list output-only nodes last, earliest-built at the end, for ONNX Runtime's execution order (LowerOptions.outputsLast; training steps) */
  outputsLast?: boolean;
}

/** What a session holds and how, for memory reports. */
export interface SessionMemoryInfo {
  weights: WeightMode;
  prepacking: boolean;
  /** real paths of the files ONNX Runtime maps external initializers from */
  mappedFiles: string[];
  /** the folder those locations are relative to (ONNX Runtime refuses absolute locations) */
  externalFolder: string | null;
  /** constants fed as inputs from their JS arrays */
  constantInputs: number;
  /** in-memory external data blobs (ONNX Runtime copies these) */
  externalBlobs: number;
  /** bytes of the encoded ModelProto */
  modelBytes: number;
  /** products run on int8 weights (MatMulNBits; RuntimeOptions.quantize 'int8') */
  int8Products: number;
}

export interface HostTensor {
  dtype: DType;
  shape: readonly number[];
  data: HostArray;
}

/** {'session.a': '1', 'session.b.c': '2'} -> {session: {a: '1', 'b.c': '2'}} (onnxruntime-node's `extra`). */
function nestConfig(config: Record<string, string>): Record<string, unknown> {
  const out: Record<string, Record<string, string>> = {};
  for (const [k, v] of Object.entries(config)) {
    const dot = k.indexOf('.');
    if (dot < 0) throw new RuntimeError(`session config key "${k}" needs a prefix such as "session."`);
    (out[k.slice(0, dot)] ??= {})[k.slice(dot + 1)] = v;
  }
  return out;
}

export class RuntimeError extends PeftError {
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
  int8: 'int8',
  bool: 'bool',
};
const FROM_ORT: Partial<Record<string, DType>> = Object.fromEntries(Object.entries(ORT_TYPE).map(([k, v]) => [v, k as DType]));

export function toOrtTensor(t: HostTensor): ort.Tensor {
  return new (runtimeBackend().ort.Tensor)(ORT_TYPE[t.dtype], t.data as never, t.shape as number[]);
}

export function fromOrtTensor(t: ort.Tensor): HostTensor {
  const dtype = FROM_ORT[t.type];
  if (!dtype) throw new RuntimeError(`unsupported output tensor type ${t.type}`);
  return { dtype, shape: [...t.dims], data: t.data as HostArray };
}

export function availableProviders(): ExecutionProvider[] {
  return runtimeBackend().providers();
}

/**
 * ONNX Runtime resolves external-data locations against one folder and refuses absolute paths,
 * '..' escapes and symlinks that leave it. So the folder is the deepest common ancestor of the
 * files' real paths and each location is the real path relative to it (with '/').
 */
export function externalDataFolder(files: readonly string[]): { folder: string; location: (file: string) => string } {
  const real = new Map<string, string>();
  for (const f of files) {
    try {
      real.set(f, runtimeBackend().realpath(f));
    } catch (e) {
      throw new RuntimeError(`a constant reads from ${f}, which cannot be opened (${(e as Error).message}); check the weights path`);
    }
  }
  let folder: string | null = null;
  for (const r of real.values()) {
    const dir = path.dirname(r);
    if (folder === null) folder = dir;
    while (folder !== null && path.relative(folder, dir).startsWith('..')) {
      const up: string = path.dirname(folder);
      folder = up === folder ? null : up;
    }
    if (folder === null || path.isAbsolute(path.relative(folder, dir))) {
      throw new RuntimeError(
        `constants read from files on different drives (${[...real.values()].join(', ')}); put the weights on one drive`,
      );
    }
  }
  const base = folder ?? runtimeBackend().cwd();
  return {
    folder: base,
    location: (file: string) => {
      const r = real.get(file) ?? runtimeBackend().realpath(file);
      return path.relative(base, r).split(path.sep).join('/');
    },
  };
}

/** One input of a session: a graph input or trainable param, by name. */
type SessionFeed = { name: string; dtype: DType; shape: Shape; rank: number };

export class RuntimeSession {
  private constructor(
    private readonly session: ort.InferenceSession,
    /** what the session must be fed (plain copies: a session does not keep its graph, nor the graph's constant arrays, alive) */
    readonly feeds: readonly SessionFeed[],
    readonly outputNames: readonly string[],
    readonly name: string,
    /** constants fed from their JS arrays at every run (weights: 'shared') */
    private readonly constantFeeds: Readonly<Record<string, ort.Tensor>>,
    readonly memory: SessionMemoryInfo,
  ) {}

  /** Compiles the graph's outputs into one session. */
  static async fromGraph(graph: Graph, outputs: Record<string, Value>, opts: RuntimeOptions = {}): Promise<RuntimeSession> {
    const weights = opts.weights ?? 'shared';
    const lowered = lowerGraph(graph, outputs, opts.name, {
      largeConstantBytes: opts.largeConstantBytes ?? DEFAULT_LARGE_CONSTANT_BYTES,
      largeConstants: opts.largeConstants ?? (weights === 'shared' ? 'input' : 'external'),
      outputsLast: opts.outputsLast,
    });
    if (opts.quantize !== undefined && opts.quantize !== 'int8')
      throw new RuntimeError(`unknown quantize "${String(opts.quantize)}"; the only choice is 'int8' (or leave it unset)`);
    const final = opts.quantize === 'int8' ? int8Matmuls(lowered, new Set(opts.floatConstants ?? [])).lowered : lowered;
    return RuntimeSession.fromLowered(final, { ...opts, weights });
  }

  /** Creates a session from an already lowered graph (see fromGraph). */
  static async fromLowered(lowered: LoweredGraph, opts: RuntimeOptions = {}): Promise<RuntimeSession> {
    // File-backed initializers: rewrite their locations relative to one folder ONNX Runtime accepts.
    let externalFolder: string | null = null;
    let spec = lowered.spec;
    if (lowered.externalFiles.length) {
      const ext = externalDataFolder(lowered.externalFiles);
      externalFolder = ext.folder;
      const files = new Set(lowered.externalFiles);
      spec = {
        ...spec,
        initializers: spec.initializers.map((t) =>
          t.external && files.has(t.external.location)
            ? { ...t, external: { ...t.external, location: ext.location(t.external.location) } }
            : t,
        ),
      };
    }
    const bytes = encodeModel(spec);
    const ep = opts.executionProvider ?? runtimeBackend().defaultProvider;
    if (ep !== 'cpu' && !availableProviders().includes(ep)) {
      const hint =
        ep === 'cuda'
          ? 'install the CUDA provider with `ONNXRUNTIME_NODE_INSTALL=cuda12 npm rebuild onnxruntime-node` on a Linux x64 machine with CUDA 12'
          : 'WebGPU needs a platform where onnxruntime-node ships its WebGPU provider';
      throw new RuntimeError(
        `execution provider "${ep}" is not available here (have: ${availableProviders().join(', ')}); ${hint}; or leave executionProvider unset to run on the CPU (the default; no peft command selects another provider)`,
      );
    }
    const options: ort.InferenceSession.SessionOptions = {
      executionProviders: [ep],
      graphOptimizationLevel: opts.graphOptimization ?? 'all',
      logSeverityLevel: 3,
    };
    if (opts.threads !== undefined) {
      // ONNX Runtime would start every thread asked for (--threads 100000 exhausts the machine).
      const cores = runtimeBackend().cpuCount();
      if (!Number.isInteger(opts.threads) || opts.threads < 1 || opts.threads > cores) {
        throw new RuntimeError(
          `threads must be an integer from 1 to ${cores} (the CPU cores of this machine), got ${opts.threads}; lower --threads`,
        );
      }
      options.intraOpNumThreads = opts.threads;
      options.interOpNumThreads = 1;
    }
    if (opts.cpuMemArena !== undefined) options.enableCpuMemArena = opts.cpuMemArena;
    if (opts.memPattern !== undefined) options.enableMemPattern = opts.memPattern;
    const weights = opts.weights ?? 'shared';
    const config: Record<string, string> = {};
    // Prepacking copies each mapped weight into per-session packed buffers (and unmaps it): off
    // when weights are to be held once and some come from files.
    const mapped = lowered.externalFiles.length > 0;
    // MatMulNBits needs its weights prepacked (int8 weights are held once per session anyway).
    if (weights === 'shared' && mapped && opts.quantize !== 'int8') config['session.disable_prepacking'] = '1';
    if (externalFolder) config['session.model_external_initializers_file_folder_path'] = externalFolder;
    if (opts.spinning !== undefined) config['session.intra_op.allow_spinning'] = opts.spinning ? '1' : '0';
    Object.assign(config, opts.sessionConfig ?? {});
    if (Object.keys(config).length) options.extra = nestConfig(config);
    if (lowered.externalData.length) {
      (options as { externalData?: { path: string; data: Uint8Array }[] }).externalData = lowered.externalData.map((b) => ({
        path: b.path,
        data: b.data,
      }));
    }
    const constantFeeds: Record<string, ort.Tensor> = {};
    for (const c of lowered.constantInputs) {
      const src = c.source;
      if (src?.kind !== 'array') throw new RuntimeError(`constant "${c.name}" is fed as an input but has no array`);
      constantFeeds[c.name] = toOrtTensor({ dtype: c.dtype, shape: c.shape as number[], data: src.data });
    }
    let session: ort.InferenceSession;
    try {
      session = await runtimeBackend().ort.InferenceSession.create(bytes, options);
    } catch (e) {
      throw new RuntimeError(
        `ONNX Runtime rejected the ${opts.name ?? 'graph'} (${lowered.spec.nodes.length} nodes): ${(e as Error).message}`,
      );
    }
    const memory: SessionMemoryInfo = {
      weights,
      prepacking: config['session.disable_prepacking'] !== '1',
      mappedFiles: lowered.externalFiles.map((f) => {
        try {
          return runtimeBackend().realpath(f);
        } catch {
          return f;
        }
      }),
      externalFolder,
      constantInputs: lowered.constantInputs.length,
      externalBlobs: lowered.externalData.length,
      modelBytes: bytes.byteLength,
      int8Products: spec.nodes.filter((n) => n.opType === 'MatMulNBits' && n.domain === 'com.microsoft').length,
    };
    const feeds = lowered.feeds.map((v): SessionFeed => ({ name: v.name, dtype: v.dtype, shape: [...v.shape], rank: v.rank }));
    return new RuntimeSession(session, feeds, lowered.outputNames, opts.name ?? 'session', constantFeeds, memory);
  }

  /** Runs with host tensors keyed by value name; returns the requested outputs (all by default). */
  async run(feeds: Record<string, HostTensor | ort.Tensor>, fetches?: readonly string[]): Promise<Record<string, HostTensor>> {
    const ortFeeds: Record<string, ort.Tensor> = { ...this.constantFeeds };
    for (const v of this.feeds) {
      const t = feeds[v.name];
      if (!t) throw new RuntimeError(`${this.name}: missing input "${v.name}" (${v.dtype}${shapeToString(v.shape)})`);
      if (t instanceof runtimeBackend().ort.Tensor) ortFeeds[v.name] = t;
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
