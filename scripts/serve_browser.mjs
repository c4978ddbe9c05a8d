// The demo page's static server (npm run demo:browser): serves examples/browser/, the browser
// bundle (dist-browser/), the bundled tiny Llama and tasks, on 127.0.0.1 only. Every response is
// cross-origin isolated (COOP/COEP), which WebAssembly threads (SharedArrayBuffer) need.
import { createReadStream, existsSync, readFileSync, readdirSync, statSync } from 'node:fs';
import { createServer } from 'node:http';
import { extname, join, resolve, sep } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = resolve(fileURLToPath(new URL('..', import.meta.url)));
const TYPES = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.mjs': 'text/javascript; charset=utf-8',
  '.json': 'application/json; charset=utf-8',
  '.jsonl': 'application/jsonl; charset=utf-8',
  '.wasm': 'application/wasm',
  '.map': 'application/json; charset=utf-8',
  '.md': 'text/markdown; charset=utf-8',
};
/** URL prefix -> folder; nothing outside these folders is served. */
const MOUNTS = [
  ['/dist-browser/', join(root, 'dist-browser')],
  ['/models/', join(root, 'models')],
  ['/data/tasks/', join(root, 'data/tasks')],
  ['/', join(root, 'examples/browser')],
];

function manifest() {
  const model = readdirSync(join(root, 'models/tiny-llama')).filter((f) => !f.startsWith('.') && f !== 'README.md');
  // tasks the page trains on: supervised rows (prompt/completion, text, messages), not preference pairs
  const supervised = (t) => {
    const file = join(root, 'data/tasks', t, 'train.jsonl');
    if (!existsSync(file)) return false;
    const first = JSON.parse(readFileSync(file, 'utf8').split('\n')[0] || '{}');
    return !('chosen' in first) && ['prompt', 'text', 'messages'].some((k) => k in first);
  };
  const tasks = readdirSync(join(root, 'data/tasks')).filter(supervised);
  return { model, tasks };
}

function fileFor(pathname) {
  for (const [prefix, dir] of MOUNTS) {
    if (!pathname.startsWith(prefix)) continue;
    const rel = decodeURIComponent(pathname.slice(prefix.length)) || 'index.html';
    const file = resolve(dir, rel);
    if (file !== dir && !file.startsWith(dir + sep)) return null;
    return file;
  }
  return null;
}

/** Starts the server; resolves to { url, close }. Port 0 picks a free port. */
export function startDemoServer({ port = 8080, host = '127.0.0.1', log = false } = {}) {
  if (!existsSync(join(root, 'dist-browser/worker.js'))) throw new Error('dist-browser/ is missing: run `npm run build:browser` first');
  const server = createServer((req, res) => {
    const url = new URL(req.url ?? '/', 'http://localhost');
    const headers = {
      'Cross-Origin-Opener-Policy': 'same-origin',
      'Cross-Origin-Embedder-Policy': 'require-corp',
      'Cross-Origin-Resource-Policy': 'same-origin',
      'Cache-Control': 'no-cache',
    };
    if (log) console.log(`${req.method} ${url.pathname}`);
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      res.writeHead(405, headers).end();
      return;
    }
    if (url.pathname === '/manifest.json') {
      res.writeHead(200, { ...headers, 'Content-Type': TYPES['.json'] }).end(JSON.stringify(manifest()));
      return;
    }
    const file = fileFor(url.pathname);
    if (!file || !existsSync(file) || !statSync(file).isFile()) {
      res.writeHead(404, { ...headers, 'Content-Type': 'text/plain' }).end('not found');
      return;
    }
    res.writeHead(200, {
      ...headers,
      'Content-Type': TYPES[extname(file)] ?? 'application/octet-stream',
      'Content-Length': statSync(file).size,
    });
    if (req.method === 'HEAD') res.end();
    else createReadStream(file).pipe(res);
  });
  return new Promise((ok, fail) => {
    server.once('error', fail);
    server.listen(port, host, () => {
      const address = server.address();
      ok({ url: `http://${host}:${address.port}/`, close: () => new Promise((done) => server.close(() => done())) });
    });
  });
}

if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const port = Number(process.env.PORT ?? 8080);
  const { url } = await startDemoServer({ port });
  console.log(`peft-ts browser demo: ${url} (Ctrl-C to stop)`);
}
