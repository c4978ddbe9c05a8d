// The Node runtime backend: onnxruntime-node (native, CPU and CUDA). The browser bundle replaces
// this module with ./web.ts (scripts/build_browser.ts).

import { realpathSync } from 'node:fs';
import os from 'node:os';
import * as path from 'node:path';
import v8 from 'node:v8';
import vm from 'node:vm';
import * as ort from 'onnxruntime-node';
import type { RuntimeBackend } from './backend.js';

let gc: (() => void) | undefined;

export const defaultBackend: RuntimeBackend = {
  name: 'onnxruntime-node',
  ort,
  cpuCount: () => os.availableParallelism(),
  realpath: (file) => realpathSync(path.resolve(file)),
  cwd: () => process.cwd(),
  providers() {
    const list = (ort as unknown as { listSupportedBackends?: () => { name: string }[] }).listSupportedBackends?.();
    const names = new Set((list ?? [{ name: 'cpu' }]).map((b) => b.name));
    return (['cpu', 'cuda', 'webgpu'] as const).filter((p) => names.has(p));
  },
  defaultProvider: 'cpu',
  collectGarbage() {
    // V8's gc(), which node exposes only with --expose-gc: the flag set now holds for new contexts.
    if (!gc) {
      v8.setFlagsFromString('--expose-gc');
      gc = vm.runInNewContext('gc') as () => void;
    }
    gc();
  },
};
