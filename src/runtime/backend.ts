// Which ONNX Runtime the sessions run on: onnxruntime-node (node.ts, the default) or
// onnxruntime-web (web.ts, which the browser bundle puts in node.ts's place). Both expose the same
// onnxruntime-common API; the rest is what the host offers (cores, real paths of mapped weights).

import type * as ort from 'onnxruntime-node';
import { defaultBackend } from './node.js';

export interface RuntimeBackend {
  /** 'onnxruntime-node' or 'onnxruntime-web' */
  readonly name: string;
  /** the package's API (InferenceSession, Tensor, env, listSupportedBackends) */
  readonly ort: typeof ort;
  /** the most intra-op threads a session may ask for */
  cpuCount(): number;
  /** the real path of a weights file ONNX Runtime maps (external data; Node only) */
  realpath(file: string): string;
  /** the working directory relative weight paths resolve against */
  cwd(): string;
  /** execution providers this host can run ('cpu' is WebAssembly on the web) */
  providers(): ExecutionProvider[];
  /** the provider of sessions whose options name none */
  defaultProvider: ExecutionProvider;
  /**
   * A full garbage collection, so large arrays just dropped (the float32 weights training on an
   * int8 base releases) are freed before the step's activations are allocated; absent where the
   * host offers none.
   */
  collectGarbage?(): void;
}

export type ExecutionProvider = 'cpu' | 'cuda' | 'webgpu';

let current: RuntimeBackend = defaultBackend;

export function runtimeBackend(): RuntimeBackend {
  return current;
}

/** Makes every later session run on `b`; returns the previous backend. */
export function setRuntimeBackend(b: RuntimeBackend): RuntimeBackend {
  const previous = current;
  current = b;
  return previous;
}
