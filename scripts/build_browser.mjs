// Builds the browser bundle (npm run build:browser): the library as one ESM file with
// onnxruntime-web and an in-memory storage in place of the Node modules, the demo page's worker,
// and the ONNX Runtime WebAssembly files the sessions load, into dist-browser/.
import { build } from 'esbuild';
import { copyFileSync, mkdirSync, readdirSync, rmSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const out = join(root, 'dist-browser');

/** The two host-picking modules get their browser versions (src/storage/browser.ts, src/runtime/web.ts). */
const browserHost = {
  name: 'browser-host',
  setup(b) {
    b.onResolve({ filter: /^\.\/node\.js$/ }, (args) => {
      const dir = args.resolveDir.split('\\').join('/');
      if (dir.endsWith('/src/storage')) return { path: join(args.resolveDir, 'browser.ts') };
      if (dir.endsWith('/src/runtime')) return { path: join(args.resolveDir, 'web.ts') };
      return undefined;
    });
  },
};

export async function buildBrowser({ minify = true, quiet = false } = {}) {
  rmSync(out, { recursive: true, force: true });
  mkdirSync(out, { recursive: true });
  const common = {
    bundle: true,
    format: 'esm',
    platform: 'browser',
    target: 'es2022',
    minify,
    sourcemap: true,
    plugins: [browserHost],
    logLevel: quiet ? 'error' : 'warning',
    // onnxruntime-web's own bundle loads its .wasm next to it unless told otherwise (env.wasm.wasmPaths)
    external: [],
  };
  await build({ ...common, entryPoints: { peft: join(root, 'src/browser/index.ts') }, outdir: out });
  await build({ ...common, entryPoints: { worker: join(root, 'examples/browser/worker.ts') }, outdir: out });
  const ortDist = join(root, 'node_modules/onnxruntime-web/dist');
  for (const f of readdirSync(ortDist))
    if (/^ort-wasm-simd-threaded\.jsep\.(wasm|mjs)$/.test(f)) copyFileSync(join(ortDist, f), join(out, f));
  return out;
}

if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const dir = await buildBrowser();
  console.log(`browser bundle in ${dir}: ${readdirSync(dir).join(', ')}`);
}
