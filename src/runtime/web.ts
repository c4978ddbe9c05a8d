// The browser runtime backend: onnxruntime-web (WebAssembly with SIMD and, when the page is
// cross-origin isolated, threads; WebGPU where the browser has it). The browser bundle puts this
// module in place of ./node.ts; the page sets ort.env.wasm (paths of the .wasm files, threads).

import * as ortWeb from 'onnxruntime-web';
import type * as ort from 'onnxruntime-node';
import type { RuntimeBackend } from './backend.js';

export const defaultBackend: RuntimeBackend = {
  name: 'onnxruntime-web',
  // the same onnxruntime-common API; the node typings are the ones the sessions are written against
  ort: ortWeb as unknown as typeof ort,
  cpuCount: () => globalThis.navigator?.hardwareConcurrency ?? 1,
  realpath: (file) => file,
  cwd: () => '/',
  providers: () => (globalThis.navigator && 'gpu' in globalThis.navigator ? ['cpu', 'webgpu'] : ['cpu']),
  // the page switches to 'webgpu' when an adapter is found (examples/browser/worker.ts)
  defaultProvider: 'cpu',
};
