// The demo page's Web Worker: holds the in-memory file system, runs onnxruntime-web, fine-tunes,
// generates and serializes the adapter, so the page stays responsive. Messages in: init, files,
// train, load-adapter; out: ready, status, step, done, adapter-loaded, error (examples/browser/app.js).
// /opfs is mirrored into the Origin Private File System: an adapter trained into /opfs/adapter is
// still there after a reload.

import {
  MemoryStorage,
  OpfsMirror,
  PeftError,
  Tokenizer,
  finetune,
  generate,
  loadAdapter,
  loadModel,
  runtimeBackend,
  setStorage,
  type FinetuneOptions,
} from '../../src/browser/index.js';

const files = new MemoryStorage();
setStorage(files);
/** where the adapter is kept across reloads */
const SAVED_ADAPTER = '/opfs/adapter';
let opfs: OpfsMirror | undefined;

interface WorkerScope {
  postMessage(message: unknown, transfer?: Transferable[]): void;
  onmessage: ((e: MessageEvent) => void) | null;
  crossOriginIsolated: boolean;
  navigator: Navigator & { gpu?: { requestAdapter(): Promise<unknown> } };
}
const scope = globalThis as unknown as WorkerScope;
const post = (message: unknown, transfer: Transferable[] = []): void => scope.postMessage(message, transfer);

/** Configures onnxruntime-web: .wasm files next to this script, threads when cross-origin isolated, WebGPU when asked and present. */
async function init(o: { wasmPaths: string; threads?: number; webgpu?: boolean }): Promise<Record<string, unknown>> {
  const backend = runtimeBackend();
  const ort = backend.ort as unknown as { env: { wasm: { wasmPaths: string; numThreads: number; simd?: boolean }; logLevel?: string } };
  ort.env.wasm.wasmPaths = o.wasmPaths;
  const isolated = scope.crossOriginIsolated === true;
  const cores = scope.navigator.hardwareConcurrency ?? 1;
  ort.env.wasm.numThreads = isolated ? Math.max(1, Math.min(o.threads ?? 4, cores)) : 1;
  ort.env.logLevel = 'error';
  let webgpu = false;
  let webgpuReason = 'not requested';
  if (o.webgpu) {
    try {
      const adapter = scope.navigator.gpu ? await scope.navigator.gpu.requestAdapter() : null;
      webgpu = !!adapter;
      webgpuReason = scope.navigator.gpu ? (adapter ? 'adapter found' : 'navigator.gpu has no adapter') : 'no navigator.gpu';
    } catch (e) {
      webgpuReason = `requestAdapter failed: ${(e as Error).message}`;
    }
  }
  backend.defaultProvider = webgpu ? 'webgpu' : 'cpu';
  let opfsReason = 'mounted at /opfs';
  try {
    opfs = await OpfsMirror.mount(files, '/opfs');
    if (!opfs) opfsReason = 'navigator.storage.getDirectory is missing';
  } catch (e) {
    opfsReason = `cannot open it: ${(e as Error).message}`;
  }
  return {
    opfs: opfs !== undefined,
    opfsReason,
    savedAdapter: savedAdapter(),
    runtime: backend.name,
    provider: webgpu ? 'webgpu' : 'wasm',
    threads: ort.env.wasm.numThreads,
    crossOriginIsolated: isolated,
    cores,
    webgpuReason,
  };
}

function savedAdapter(): boolean {
  return (
    opfs !== undefined &&
    files.existsSync(`${SAVED_ADAPTER}/adapter_config.json`) &&
    files.existsSync(`${SAVED_ADAPTER}/adapter_model.safetensors`)
  );
}

async function handle(msg: { type: string; [k: string]: unknown }): Promise<void> {
  switch (msg.type) {
    case 'init':
      post({ type: 'ready', ...(await init(msg as never)) });
      return;
    case 'files':
      for (const f of msg.files as { path: string; data: ArrayBuffer | Blob | string }[])
        files.addFile(f.path, f.data instanceof ArrayBuffer ? new Uint8Array(f.data) : f.data);
      post({ type: 'files-added', count: (msg.files as unknown[]).length });
      return;
    case 'train': {
      const o = msg.options as Omit<FinetuneOptions, 'onStep' | 'onStatus'>;
      await files.rm(o.outputDir, { recursive: true, force: true });
      const t0 = performance.now();
      const result = await finetune({
        ...o,
        onStatus: (text) => post({ type: 'status', text }),
        onStep: (record, total) => post({ type: 'step', record, total }),
      });
      const config = await files.readFile(`${o.outputDir}/adapter_config.json`, 'utf8');
      const weights = await files.readFile(`${o.outputDir}/adapter_model.safetensors`);
      // an output folder under /opfs is persisted before the page is told it is saved
      if (opfs && o.outputDir.startsWith(`${opfs.at}/`)) await opfs.flush();
      post(
        {
          type: 'done',
          result,
          seconds: (performance.now() - t0) / 1000,
          adapter: { config, safetensors: weights.buffer },
          savedAdapter: o.outputDir === SAVED_ADAPTER && savedAdapter(),
        },
        [weights.buffer as ArrayBuffer],
      );
      return;
    }
    case 'load-adapter': {
      // the adapter saved in OPFS, or the two files the user chose
      let dir = SAVED_ADAPTER;
      if (msg.from !== 'opfs') {
        dir = '/loaded-adapter';
        await files.rm(dir, { recursive: true, force: true });
        files.addFile(`${dir}/adapter_config.json`, msg.config as string | Blob);
        files.addFile(`${dir}/adapter_model.safetensors`, msg.safetensors as Blob);
      } else if (!savedAdapter()) throw new PeftError('no adapter is saved in this browser yet; train one first');
      const modelDir = msg.modelDir as string;
      const base = await loadModel(modelDir);
      const tokenizer = await Tokenizer.fromDir(modelDir);
      const adapted = await loadAdapter(base, dir);
      const out = await generate(adapted, tokenizer, msg.prompts as string[], {
        maxNewTokens: (msg.maxNewTokens as number) ?? 16,
        doSample: false,
        stopStrings: ['\n'],
      });
      post({ type: 'adapter-loaded', peftType: adapted.peftType, generations: out.sequences.map((s) => s.text ?? '') });
      return;
    }
    default:
      throw new PeftError(`unknown message ${msg.type}`);
  }
}

scope.onmessage = (e: MessageEvent) => {
  const msg = e.data as { type: string; id?: number };
  handle(msg).catch((err: unknown) => {
    const error = err as Error;
    post({ type: 'error', request: msg.type, name: error?.name, message: error?.message ?? String(err), stack: error?.stack });
  });
};
