// Exercises the Hub downloader against a real HTTP server on 127.0.0.1 that speaks the Hub's API
// (repo info, resolve with ETags, LFS-style redirects to a "CDN" route, Range requests) and serves
// the fixture gpt2 files, checking the huggingface_hub cache layout, resume and offline behaviour.

import { test, after, before } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { lstat, mkdir, mkdtemp, readFile, readdir, readlink, rm, stat, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import {
  HubAuthError,
  HubNotFoundError,
  HubOfflineError,
  HubSizeError,
  HubTimeoutError,
  HubUnsafePathError,
  ModelPathError,
  hubCacheDir,
  repoFolderName,
  resolveModelDir,
  snapshotDownload,
} from '../../src/io/hub.js';

import { FIXTURES, fixture2026Path } from '../helpers/fixtures.js';
import { ForwardSession } from '../../src/generate/index.js';
import { loadModel } from '../../src/models/load.js';
import { readSafetensors, toFloat32 } from '../../src/io/safetensors.js';
const SOURCE_DIR = path.join(FIXTURES, 'models', 'gpt2');
const REPO = 'fixture-org/tiny-gpt2';
// A model of a family added with the 2026 fixtures (Gemma 3 text), served as a repo of its own.
const GEMMA_DIR = fixture2026Path('models', 'gemma3_text');
const GEMMA_REPO = 'fixture-org/tiny-gemma3';
const GATED = 'fixture-org/gated-gpt2';
const TOKEN = 'hf_fixture_token';
const COMMIT = createHash('sha1').update('peft-ts fixture commit').digest('hex');
// Files above this size are served the way the Hub serves LFS files: a redirect to a CDN URL.
const LFS_THRESHOLD = 100_000;

// Keep the developer's environment out of these tests.
for (const key of ['HF_HUB_OFFLINE', 'HF_TOKEN', 'HF_ENDPOINT', 'HF_HUB_CACHE', 'HF_HOME']) delete process.env[key];

interface ServedFile {
  name: string;
  data: Buffer;
  lfs: boolean;
  gitSha1: string;
  sha256: string;
}

interface RequestLog {
  method: string;
  url: string;
  range?: string;
  authorization?: string;
}

let server: http.Server;
let endpoint: string;
// LFS downloads go to a separate origin, as the Hub's CDN is a different host.
let cdnServer: http.Server;
let cdnEndpoint: string;
let files: ServedFile[];
let gemmaFiles: ServedFile[];
const log: RequestLog[] = [];

function sendBytes(req: http.IncomingMessage, res: http.ServerResponse, data: Buffer, headers: Record<string, string>): void {
  const range = req.headers.range;
  const base = { ...headers, 'accept-ranges': 'bytes' };
  if (range !== undefined) {
    const m = /^bytes=(\d+)-(\d*)$/.exec(range);
    const start = m ? Number(m[1]) : NaN;
    const end = m && m[2] !== '' ? Math.min(Number(m[2]), data.length - 1) : data.length - 1;
    if (!m || start >= data.length || start > end) {
      res.writeHead(416, { ...base, 'content-range': `bytes */${data.length}` }).end();
      return;
    }
    res.writeHead(206, { ...base, 'content-length': String(end - start + 1), 'content-range': `bytes ${start}-${end}/${data.length}` });
    res.end(req.method === 'HEAD' ? undefined : data.subarray(start, end + 1));
    return;
  }
  res.writeHead(200, { ...base, 'content-length': String(data.length) });
  res.end(req.method === 'HEAD' ? undefined : data);
}

function handle(req: http.IncomingMessage, res: http.ServerResponse): void {
  const url = new URL(req.url ?? '/', endpoint);
  log.push({ method: req.method ?? '', url: url.pathname, range: req.headers.range, authorization: req.headers.authorization });
  const notFound = (code: string) => res.writeHead(404, { 'x-error-code': code, 'x-error-message': `${code} (fake hub)` }).end();
  const segments = url.pathname.split('/').slice(1).map(decodeURIComponent);

  if (segments[0] === 'cdn' && segments.length === 2) {
    const f = [...files, ...gemmaFiles].find((x) => x.sha256 === segments[1]);
    if (!f) return void notFound('EntryNotFound');
    return sendBytes(req, res, f.data, { etag: `"${f.sha256}"` });
  }

  const isApi = segments[0] === 'api' && segments[1] === 'models';
  const repo = isApi ? `${segments[2]}/${segments[3]}` : `${segments[0]}/${segments[1]}`;
  if (repo !== REPO && repo !== GATED && repo !== GEMMA_REPO) return void notFound('RepoNotFound');
  const served = repo === GEMMA_REPO ? gemmaFiles : files;
  if (repo === GATED && req.headers.authorization !== `Bearer ${TOKEN}`) {
    return void res.writeHead(403, { 'x-error-code': 'GatedRepo', 'x-error-message': 'Access to this model is restricted.' }).end();
  }

  if (isApi && segments[4] === 'revision' && segments.length === 6) {
    if (segments[5] !== 'main' && segments[5] !== COMMIT) return void notFound('RevisionNotFound');
    const body = JSON.stringify({ id: repo, sha: COMMIT, siblings: served.map((f) => ({ rfilename: f.name })) });
    return void res.writeHead(200, { 'content-type': 'application/json' }).end(body);
  }

  if (segments[2] === 'resolve' && segments.length >= 5) {
    if (segments[3] !== 'main' && segments[3] !== COMMIT) return void notFound('RevisionNotFound');
    const f = served.find((x) => x.name === segments.slice(4).join('/'));
    if (!f) return void notFound('EntryNotFound');
    if (f.lfs) {
      // The Hub answers LFS files with a redirect to its CDN and puts the real metadata in X-Linked-*.
      return void res
        .writeHead(302, {
          location: `${cdnEndpoint}/cdn/${f.sha256}`,
          'x-repo-commit': COMMIT,
          'x-linked-etag': `"${f.sha256}"`,
          'x-linked-size': String(f.data.length),
          etag: `"${f.gitSha1}"`,
          'content-length': '0',
        })
        .end();
    }
    return sendBytes(req, res, f.data, { 'x-repo-commit': COMMIT, etag: `"${f.gitSha1}"` });
  }
  notFound('EntryNotFound');
}

before(async () => {
  const names = (await readdir(SOURCE_DIR)).sort();
  files = [];
  for (const name of names) {
    const data = await readFile(path.join(SOURCE_DIR, name));
    const gitSha1 = createHash('sha1').update(`blob ${data.length}\0`).update(data).digest('hex');
    const sha256 = createHash('sha256').update(data).digest('hex');
    files.push({ name, data, lfs: data.length > LFS_THRESHOLD, gitSha1, sha256 });
  }
  assert.ok(files.some((f) => f.lfs) && files.some((f) => !f.lfs), 'fixture needs both small and LFS-sized files');
  // Real repos also hold empty files and files in sub-folders.
  for (const [name, data] of [
    ['empty.txt', Buffer.alloc(0)],
    ['onnx/notes.md', Buffer.from('# nested file\n')],
  ] as const) {
    const gitSha1 = createHash('sha1').update(`blob ${data.length}\0`).update(data).digest('hex');
    files.push({ name, data, lfs: false, gitSha1, sha256: createHash('sha256').update(data).digest('hex') });
  }
  files.sort((a, b) => (a.name < b.name ? -1 : 1));
  gemmaFiles = [];
  for (const name of (await readdir(GEMMA_DIR)).sort()) {
    const data = await readFile(path.join(GEMMA_DIR, name));
    const gitSha1 = createHash('sha1').update(`blob ${data.length}\0`).update(data).digest('hex');
    gemmaFiles.push({ name, data, lfs: data.length > LFS_THRESHOLD, gitSha1, sha256: createHash('sha256').update(data).digest('hex') });
  }
  server = http.createServer(handle);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  endpoint = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  cdnServer = http.createServer(handle);
  await new Promise<void>((resolve) => cdnServer.listen(0, '127.0.0.1', resolve));
  cdnEndpoint = `http://127.0.0.1:${(cdnServer.address() as AddressInfo).port}`;
});

after(async () => {
  await new Promise<void>((resolve) => server.close(() => resolve()));
  await new Promise<void>((resolve) => cdnServer.close(() => resolve()));
});

async function tempCache(): Promise<string> {
  return mkdtemp(path.join(os.tmpdir(), 'peft-hub-cache-'));
}

/** A port nothing listens on: bind one, then close it. */
async function closedPortEndpoint(): Promise<string> {
  const s = http.createServer();
  await new Promise<void>((resolve) => s.listen(0, '127.0.0.1', resolve));
  const port = (s.address() as AddressInfo).port;
  await new Promise<void>((resolve) => s.close(() => resolve()));
  return `http://127.0.0.1:${port}`;
}

async function withEnv<T>(vars: Record<string, string>, fn: () => Promise<T>): Promise<T> {
  const saved = Object.fromEntries(Object.keys(vars).map((k) => [k, process.env[k]]));
  Object.assign(process.env, vars);
  try {
    return await fn();
  } finally {
    for (const [k, v] of Object.entries(saved)) {
      if (v === undefined) delete process.env[k];
      else process.env[k] = v;
    }
  }
}

test('full download: byte-identical files, huggingface_hub cache layout, progress reports', async () => {
  const cacheDir = await tempCache();
  try {
    const progress = new Map<string, { done: number; total: number | undefined; calls: number }>();
    const snapshot = await snapshotDownload(REPO, {
      cacheDir,
      endpoint,
      onProgress: (done, total, file) => {
        const prev = progress.get(file);
        assert.ok(prev === undefined || done >= prev.done, 'progress never goes backwards');
        progress.set(file, { done, total, calls: (prev?.calls ?? 0) + 1 });
      },
    });
    const repoDir = path.join(cacheDir, 'models--fixture-org--tiny-gpt2');
    assert.equal(snapshot, path.join(repoDir, 'snapshots', COMMIT));
    assert.equal(await readFile(path.join(repoDir, 'refs', 'main'), 'utf8'), COMMIT);
    assert.deepEqual(
      (await readdir(snapshot, { recursive: true })).filter((n) => n !== 'onnx').sort(),
      files.map((f) => f.name),
    );
    for (const f of files) {
      const pointer = path.join(snapshot, f.name);
      assert.ok(Buffer.from(await readFile(pointer)).equals(f.data), `${f.name} differs`);
      const etag = f.lfs ? f.sha256 : f.gitSha1;
      assert.ok((await lstat(pointer)).isSymbolicLink());
      assert.equal(await readlink(pointer), path.relative(path.dirname(pointer), path.join(repoDir, 'blobs', etag)));
      assert.equal((await stat(path.join(repoDir, 'blobs', etag))).size, f.data.length);
      const p = progress.get(f.name);
      assert.deepEqual([p?.done, p?.total], [f.data.length, f.data.length], `${f.name} final progress`);
    }
    const blobs = await readdir(path.join(repoDir, 'blobs'));
    assert.ok(!blobs.some((b) => b.endsWith('.incomplete')));
    // The token-free CDN route served the LFS files.
    assert.ok(log.some((r) => r.method === 'GET' && r.url.startsWith('/cdn/')));

    // A second call reuses the snapshot: only the repo-info request goes out.
    const before = log.length;
    assert.equal(await snapshotDownload(REPO, { cacheDir, endpoint, revision: COMMIT }), snapshot);
    assert.deepEqual(
      log.slice(before).map((r) => r.url),
      [`/api/models/${REPO}/revision/${COMMIT}`],
    );
  } finally {
    await rm(cacheDir, { recursive: true, force: true });
  }
});

test('allowPatterns limits the files', async () => {
  const cacheDir = await tempCache();
  try {
    const snapshot = await snapshotDownload(REPO, {
      cacheDir,
      endpoint,
      allowPatterns: ['*.json', 'merges.txt'],
      ignorePatterns: 'tokenizer_cases*',
    });
    const expected = files
      .map((f) => f.name)
      .filter((n) => (n.endsWith('.json') || n === 'merges.txt') && !n.startsWith('tokenizer_cases'));
    assert.deepEqual((await readdir(snapshot)).sort(), expected);
  } finally {
    await rm(cacheDir, { recursive: true, force: true });
  }
});

test('resume: an existing .incomplete file is continued with a Range request', async () => {
  const cacheDir = await tempCache();
  try {
    const big = files.find((f) => f.lfs) as ServedFile;
    const blobsDir = path.join(cacheDir, repoFolderName(REPO), 'blobs');
    await mkdir(blobsDir, { recursive: true });
    const partial = 12_345;
    await writeFile(path.join(blobsDir, `${big.sha256}.incomplete`), big.data.subarray(0, partial));
    const firstProgress: number[] = [];
    const before = log.length;
    const snapshot = await snapshotDownload(REPO, {
      cacheDir,
      endpoint,
      allowPatterns: big.name,
      onProgress: (done) => {
        if (firstProgress.length === 0) firstProgress.push(done);
      },
    });
    const gets = log.slice(before).filter((r) => r.method === 'GET' && r.url === `/cdn/${big.sha256}`);
    assert.deepEqual(
      gets.map((r) => r.range),
      [`bytes=${partial}-`],
    );
    assert.equal(firstProgress[0], partial);
    assert.ok(Buffer.from(await readFile(path.join(snapshot, big.name))).equals(big.data));
    assert.deepEqual(await readdir(blobsDir), [big.sha256]);
  } finally {
    await rm(cacheDir, { recursive: true, force: true });
  }
});

test('resume also works for small files served directly by resolve', async () => {
  const cacheDir = await tempCache();
  try {
    const small = files.find((f) => f.name === 'vocab.json') as ServedFile;
    const blobsDir = path.join(cacheDir, repoFolderName(REPO), 'blobs');
    await mkdir(blobsDir, { recursive: true });
    await writeFile(path.join(blobsDir, `${small.gitSha1}.incomplete`), small.data.subarray(0, 100));
    const before = log.length;
    const snapshot = await snapshotDownload(REPO, { cacheDir, endpoint, allowPatterns: 'vocab.json' });
    const gets = log.slice(before).filter((r) => r.method === 'GET' && r.url.endsWith('/vocab.json'));
    assert.deepEqual(
      gets.map((r) => r.range),
      ['bytes=100-'],
    );
    assert.ok(Buffer.from(await readFile(path.join(snapshot, 'vocab.json'))).equals(small.data));
  } finally {
    await rm(cacheDir, { recursive: true, force: true });
  }
});

test('unreachable endpoint with an empty cache: HubOfflineError explaining what to do', async () => {
  const cacheDir = await tempCache();
  try {
    await assert.rejects(snapshotDownload(REPO, { cacheDir, endpoint: await closedPortEndpoint() }), (err: unknown) => {
      assert.ok(err instanceof HubOfflineError);
      assert.match(err.message, /connection refused/);
      assert.match(err.message, /local model folder/);
      assert.match(err.message, /HF_HUB_OFFLINE/);
      return true;
    });
    await assert.rejects(
      withEnv({ HF_HUB_OFFLINE: '1' }, () => snapshotDownload(REPO, { cacheDir, endpoint })),
      HubOfflineError,
    );
  } finally {
    await rm(cacheDir, { recursive: true, force: true });
  }
});

test('offline (HF_HUB_OFFLINE=1 or unreachable Hub) returns a complete cached snapshot, not an incomplete one', async () => {
  const cacheDir = await tempCache();
  try {
    const snapshot = await snapshotDownload(REPO, { cacheDir, endpoint, allowPatterns: ['*.json', '*.txt'] });
    const closed = await closedPortEndpoint();
    const before = log.length;
    await withEnv({ HF_HUB_OFFLINE: '1', HF_ENDPOINT: closed }, async () => {
      assert.equal(await snapshotDownload(REPO, { cacheDir, allowPatterns: ['*.json', '*.txt'] }), snapshot);
      assert.equal(await snapshotDownload(REPO, { cacheDir, revision: COMMIT, allowPatterns: 'config.json' }), snapshot);
      // The cache lacks the .safetensors files, so asking for everything is not satisfied offline.
      await assert.rejects(snapshotDownload(REPO, { cacheDir }), HubOfflineError);
      await assert.rejects(snapshotDownload(REPO, { cacheDir, revision: 'v2' }), HubOfflineError);
    });
    assert.equal(await snapshotDownload(REPO, { cacheDir, endpoint: closed, allowPatterns: '*.json' }), snapshot);
    assert.equal(log.length, before, 'offline calls must not reach the server');

    // A snapshot written by Python huggingface_hub (no manifest of ours) is trusted as it is.
    await rm(path.join(cacheDir, repoFolderName(REPO), '.peft-ts'), { recursive: true });
    await withEnv({ HF_HUB_OFFLINE: 'true' }, async () => {
      assert.equal(await snapshotDownload(REPO, { cacheDir, endpoint: closed }), snapshot);
    });
  } finally {
    await rm(cacheDir, { recursive: true, force: true });
  }
});

test('a Hub that goes away after the repo info call: HubOfflineError, finished files kept', async () => {
  const cacheDir = await tempCache();
  // Answers repo info like the fake Hub, then closes every other connection without a response.
  const flaky = http.createServer((req, res) => {
    if (req.url?.startsWith('/api/')) return handle(req, res);
    req.socket.destroy();
  });
  await new Promise<void>((resolve) => flaky.listen(0, '127.0.0.1', resolve));
  const flakyEndpoint = `http://127.0.0.1:${(flaky.address() as AddressInfo).port}`;
  try {
    await assert.rejects(snapshotDownload(REPO, { cacheDir, endpoint: flakyEndpoint, allowPatterns: 'config.json' }), (err: unknown) => {
      assert.ok(err instanceof HubOfflineError);
      assert.match(err.message, /config\.json/);
      return true;
    });
  } finally {
    await new Promise<void>((resolve) => flaky.close(() => resolve()));
    await rm(cacheDir, { recursive: true, force: true });
  }
});

test('unknown repo, revision or file: HubNotFoundError', async () => {
  const cacheDir = await tempCache();
  try {
    await assert.rejects(snapshotDownload('fixture-org/missing', { cacheDir, endpoint }), (err: unknown) => {
      assert.ok(err instanceof HubNotFoundError);
      assert.equal(err.kind, 'repo');
      assert.match(err.message, /HF_TOKEN/);
      return true;
    });
    await assert.rejects(snapshotDownload(REPO, { cacheDir, endpoint, revision: 'no-such-branch' }), (err: unknown) => {
      assert.ok(err instanceof HubNotFoundError);
      assert.equal(err.kind, 'revision');
      return true;
    });
  } finally {
    await rm(cacheDir, { recursive: true, force: true });
  }
});

test('gated repo: HubAuthError without a token, download with HF_TOKEN (never sent to the CDN)', async () => {
  const cacheDir = await tempCache();
  try {
    await assert.rejects(snapshotDownload(GATED, { cacheDir, endpoint }), (err: unknown) => {
      assert.ok(err instanceof HubAuthError);
      assert.equal(err.status, 403);
      assert.match(err.message, /HF_TOKEN/);
      return true;
    });
    const before = log.length;
    const snapshot = await withEnv({ HF_TOKEN: TOKEN }, () =>
      snapshotDownload(GATED, { cacheDir, endpoint, allowPatterns: ['config.json', 'model.safetensors'] }),
    );
    const big = files.find((f) => f.name === 'model.safetensors') as ServedFile;
    assert.ok(Buffer.from(await readFile(path.join(snapshot, 'model.safetensors'))).equals(big.data));
    const requests = log.slice(before);
    assert.ok(requests.filter((r) => !r.url.startsWith('/cdn/')).every((r) => r.authorization === `Bearer ${TOKEN}`));
    assert.ok(requests.filter((r) => r.url.startsWith('/cdn/')).every((r) => r.authorization === undefined));
  } finally {
    await rm(cacheDir, { recursive: true, force: true });
  }
});

test('resolveModelDir: local folders pass through unchanged, repo ids download', async () => {
  const cacheDir = await tempCache();
  try {
    assert.equal(await resolveModelDir(SOURCE_DIR, { cacheDir, endpoint }), SOURCE_DIR);
    const snapshot = await resolveModelDir(REPO, { cacheDir, endpoint, allowPatterns: 'config.json' });
    assert.equal(snapshot, path.join(cacheDir, repoFolderName(REPO), 'snapshots', COMMIT));
    await assert.rejects(resolveModelDir('./no/such/folder', { cacheDir, endpoint }), ModelPathError);
    await assert.rejects(resolveModelDir(path.join(SOURCE_DIR, 'config.json'), { cacheDir, endpoint }), ModelPathError);
    await assert.rejects(resolveModelDir('bad--id/x', { cacheDir, endpoint }), ModelPathError);
  } finally {
    await rm(cacheDir, { recursive: true, force: true });
  }
});

test("a Gemma 3 model (a family added with the 2026 fixtures) loads through the Hub client and reproduces transformers' logits", async () => {
  const cacheDir = await tempCache();
  try {
    const snapshot = await resolveModelDir(GEMMA_REPO, { cacheDir, endpoint });
    assert.equal(snapshot, path.join(cacheDir, repoFolderName(GEMMA_REPO), 'snapshots', COMMIT));
    assert.ok(
      log.some((l) => l.url.startsWith('/cdn/')),
      'model.safetensors came the LFS way (CDN redirect)',
    );
    const model = await loadModel(snapshot);
    assert.equal(model.config.modelType, 'gemma3_text');
    const batch = await readSafetensors(path.join(snapshot, 'batch.safetensors'));
    const expected = toFloat32((await readSafetensors(path.join(snapshot, 'expected_outputs.safetensors'))).get('logits')!);
    const ids = batch.get('input_ids')!;
    const mask = batch.get('attention_mask')!;
    const host = (t: typeof ids) => ({
      dtype: 'int64' as const,
      shape: t.shape,
      data: new BigInt64Array(t.data.buffer.slice(t.data.byteOffset, t.data.byteOffset + t.data.byteLength)),
    });
    const session = await ForwardSession.create(model, { runtime: { threads: 1 } });
    try {
      const m = host(mask).data;
      const got = (await session.run({ inputIds: host(ids), attentionMask: host(mask) })).logits.data as Float32Array;
      const V = got.length / m.length;
      let checked = 0;
      // compared where attention_mask is 1 (the fixture README: padded Gemma 3 rows follow SDPA's zero rows)
      for (let i = 0; i < m.length; i++) {
        if (m[i] !== 1n) continue;
        for (let j = 0; j < V; j++) {
          const d = Math.abs(got[i * V + j]! - expected[i * V + j]!);
          assert.ok(d <= 1e-4 + 1e-4 * Math.abs(expected[i * V + j]!), `logit ${i},${j}: ${got[i * V + j]} vs ${expected[i * V + j]}`);
          checked++;
        }
      }
      assert.ok(checked > 0);
    } finally {
      await session.dispose();
    }
  } finally {
    await rm(cacheDir, { recursive: true, force: true });
  }
});

test('cache location follows HF_HUB_CACHE, then HF_HOME', async () => {
  await withEnv({ HF_HUB_CACHE: '/tmp/x-hub-cache', HF_HOME: '/tmp/x-hf-home' }, async () => {
    assert.equal(hubCacheDir(), '/tmp/x-hub-cache');
    assert.equal(hubCacheDir('/explicit'), '/explicit');
  });
  await withEnv({ HF_HOME: '/tmp/x-hf-home' }, async () => {
    assert.equal(hubCacheDir(), path.join('/tmp/x-hf-home', 'hub'));
  });
  assert.equal(repoFolderName('gpt2'), 'models--gpt2');
});

// ---- A hostile or broken server: every answer below comes from a server we do not trust. ----

type Hostile = (req: http.IncomingMessage, res: http.ServerResponse, segments: string[]) => void;

/** Runs `fn` against a server whose answers `behave` decides; closes it (and any stalled sockets) afterwards. */
async function withHostile<T>(behave: Hostile, fn: (endpoint: string) => Promise<T>): Promise<T> {
  const sockets = new Set<import('node:net').Socket>();
  const srv = http.createServer((req, res) => {
    const url = new URL(req.url ?? '/', 'http://x');
    behave(req, res, url.pathname.split('/').slice(1).map(decodeURIComponent));
  });
  srv.on('connection', (s) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
  });
  await new Promise<void>((resolve) => srv.listen(0, '127.0.0.1', resolve));
  try {
    return await fn(`http://127.0.0.1:${(srv.address() as AddressInfo).port}`);
  } finally {
    for (const s of sockets) s.destroy();
    await new Promise<void>((resolve) => srv.close(() => resolve()));
  }
}

const PAYLOAD = Buffer.from('0123456789'.repeat(100));

/** A well-formed repo-info answer with the given sha and files, and per-file resolve answers from `file`. */
function hubLike(opts: {
  sha?: unknown;
  names?: unknown[];
  file?: (req: http.IncomingMessage, res: http.ServerResponse) => void;
}): Hostile {
  return (req, res, seg) => {
    if (seg[0] === 'api') {
      const body = JSON.stringify({ sha: opts.sha ?? COMMIT, siblings: (opts.names ?? ['config.json']).map((n) => ({ rfilename: n })) });
      return void res.writeHead(200, { 'content-type': 'application/json' }).end(body);
    }
    if (opts.file) return opts.file(req, res);
    res
      .writeHead(200, { etag: `"${'a'.repeat(40)}"`, 'content-length': String(PAYLOAD.length) })
      .end(req.method === 'HEAD' ? undefined : PAYLOAD);
  };
}

/** A cache folder two levels inside a scratch folder, so writes that escape it can be seen. */
async function nestedCache(): Promise<{ root: string; cacheDir: string }> {
  const root = await mkdtemp(path.join(os.tmpdir(), 'peft-hub-hostile-'));
  const cacheDir = path.join(root, 'a', 'b', 'cache');
  await mkdir(cacheDir, { recursive: true });
  return { root, cacheDir };
}

/** Every file under `dir`, relative. */
async function listAll(dir: string): Promise<string[]> {
  return (await readdir(dir, { recursive: true })).map(String).sort();
}

test('hostile Hub: a commit sha like ../../../../x is refused before anything is written', async () => {
  const { root, cacheDir } = await nestedCache();
  try {
    for (const sha of ['../../../../x', '..', `${COMMIT}/../../x`, COMMIT.toUpperCase(), COMMIT.slice(1), '', 42]) {
      await withHostile(hubLike({ sha }), async (ep) => {
        await assert.rejects(snapshotDownload(REPO, { cacheDir, endpoint: ep }), (err: unknown) => {
          assert.ok(
            err instanceof HubUnsafePathError || (typeof sha !== 'string' && err instanceof Error && err.name === 'HubError'),
            String(err),
          );
          return true;
        });
      });
    }
    // Nothing at all was created: not in the cache, and not beside it.
    assert.deepEqual(await listAll(root), ['a', path.join('a', 'b'), path.join('a', 'b', 'cache')]);
  } finally {
    await rm(root, { recursive: true, force: true });
  }
});

test('hostile Hub: file names with traversal, absolute paths or empty parts are refused, nothing written', async () => {
  const { root, cacheDir } = await nestedCache();
  try {
    for (const name of ['../../x', 'a/../../x', '/etc/passwd', 'a//b', './x', 'a\\..\\x', 'x\0y', '']) {
      await withHostile(hubLike({ names: ['config.json', name] }), async (ep) => {
        await assert.rejects(snapshotDownload(REPO, { cacheDir, endpoint: ep }), HubUnsafePathError);
      });
    }
    assert.deepEqual(await listAll(root), ['a', path.join('a', 'b'), path.join('a', 'b', 'cache')]);
  } finally {
    await rm(root, { recursive: true, force: true });
  }
});

test("hostile Hub: an ETag of '..' (or with a separator) is refused; a revision with '..' too", async () => {
  const { root, cacheDir } = await nestedCache();
  try {
    for (const etag of ['".."', '..', '"."', '"../x"', '"a/b"', '"x.incomplete"', '""', '".hidden"']) {
      await withHostile(
        hubLike({
          file: (req, res) => res.writeHead(200, { etag, 'content-length': '4' }).end(req.method === 'HEAD' ? undefined : 'abcd'),
        }),
        async (ep) => {
          await assert.rejects(snapshotDownload(REPO, { cacheDir, endpoint: ep }), (err: unknown) => {
            assert.ok(err instanceof HubUnsafePathError, `${etag}: ${String(err)}`);
            return true;
          });
        },
      );
    }
    const repoDir = path.join(cacheDir, repoFolderName(REPO));
    // No blob was written and nothing escaped the repo folder.
    assert.deepEqual(await readdir(path.join(repoDir, 'blobs')).catch(() => []), []);
    assert.deepEqual(await readdir(root), ['a']);
    assert.deepEqual(await readdir(cacheDir), [repoFolderName(REPO)]);
    await assert.rejects(snapshotDownload(REPO, { cacheDir, endpoint, revision: '../../../x' }), HubUnsafePathError);
    await assert.rejects(snapshotDownload(REPO, { cacheDir, endpoint, revision: 'a/../../b' }), HubUnsafePathError);
    // Weak ETags and quoted ones are normalised as huggingface_hub does.
    await withHostile(
      hubLike({
        file: (req, res) =>
          res.writeHead(200, { etag: `W/"${'b'.repeat(40)}"`, 'content-length': '4' }).end(req.method === 'HEAD' ? undefined : 'abcd'),
      }),
      async (ep) => {
        const snap = await snapshotDownload(REPO, { cacheDir, endpoint: ep });
        assert.equal(await readFile(path.join(snap, 'config.json'), 'utf8'), 'abcd');
        assert.equal(await readlink(path.join(snap, 'config.json')), path.join('..', '..', 'blobs', 'b'.repeat(40)));
      },
    );
  } finally {
    await rm(root, { recursive: true, force: true });
  }
});

test('hostile Hub: a server that stalls mid-file fails with HubTimeoutError in bounded time; the partial file is resumed later', async () => {
  const { root, cacheDir } = await nestedCache();
  try {
    // Headers and the first 100 bytes, then silence with the connection held open.
    const stallBody = hubLike({
      file: (req, res) => {
        res.writeHead(200, { etag: `"${'c'.repeat(40)}"`, 'content-length': String(PAYLOAD.length) });
        if (req.method === 'HEAD') return void res.end();
        res.write(PAYLOAD.subarray(0, 100));
      },
    });
    const t0 = Date.now();
    await withHostile(stallBody, async (ep) => {
      await assert.rejects(snapshotDownload(REPO, { cacheDir, endpoint: ep, readTimeoutMs: 300 }), (err: unknown) => {
        assert.ok(err instanceof HubTimeoutError, String(err));
        assert.match(err.message, /100 bytes are kept/);
        return true;
      });
    });
    assert.ok(Date.now() - t0 < 5000, `timeout took ${Date.now() - t0} ms`);
    const repoDir = path.join(cacheDir, repoFolderName(REPO));
    assert.deepEqual(await readdir(path.join(repoDir, 'blobs')), [`${'c'.repeat(40)}.incomplete`]);
    assert.deepEqual(await readdir(path.join(repoDir, 'snapshots', COMMIT)), [], 'no partial file in snapshots/');

    // A server that accepts the request and never answers it (not even headers), on the env variable.
    const t1 = Date.now();
    await withHostile(
      hubLike({
        file: (req, res) =>
          req.method === 'HEAD' ? res.writeHead(200, { etag: `"${'d'.repeat(40)}"`, 'content-length': '10' }).end() : undefined,
      }),
      async (ep) => {
        await withEnv({ HF_HUB_DOWNLOAD_TIMEOUT: '0.3' }, async () => {
          await assert.rejects(snapshotDownload(REPO, { cacheDir, endpoint: ep }), HubTimeoutError);
        });
      },
    );
    assert.ok(Date.now() - t1 < 5000);
    // And one that never answers the repo-info or HEAD request: the metadata timeout.
    await withHostile(
      (req, res, seg) => (seg[0] === 'api' ? undefined : res.end()),
      async (ep) => {
        const t2 = Date.now();
        await assert.rejects(snapshotDownload(REPO, { cacheDir, endpoint: ep, timeoutMs: 300 }), HubOfflineError);
        assert.ok(Date.now() - t2 < 5000);
      },
    );

    // The honest server later serves the rest: the partial file is resumed with a Range request.
    const ranges: (string | undefined)[] = [];
    await withHostile(
      hubLike({
        file: (req, res) => {
          if (req.method === 'GET') ranges.push(req.headers.range);
          sendBytes(req, res, PAYLOAD, { etag: `"${'c'.repeat(40)}"` });
        },
      }),
      async (ep) => {
        const snap = await snapshotDownload(REPO, { cacheDir, endpoint: ep });
        assert.ok((await readFile(path.join(snap, 'config.json'))).equals(PAYLOAD));
      },
    );
    assert.deepEqual(ranges, ['bytes=100-']);
  } finally {
    await rm(root, { recursive: true, force: true });
  }
});

test('hostile Hub: more bytes than declared are refused and discarded; a declared size over the cap is refused unread', async () => {
  const { root, cacheDir } = await nestedCache();
  try {
    const etag = `"${'e'.repeat(40)}"`;
    // HEAD declares 1000 bytes; the GET streams (chunked, no length) 1 MB.
    let sent = 0;
    await withHostile(
      hubLike({
        file: (req, res) => {
          if (req.method === 'HEAD') return void res.writeHead(200, { etag, 'content-length': String(PAYLOAD.length) }).end();
          res.writeHead(200, { etag });
          const chunk = Buffer.alloc(64 * 1024, 7);
          const pump = () => {
            while (sent < 1 << 20) {
              sent += chunk.length;
              if (!res.write(chunk)) return void res.once('drain', pump);
            }
            res.end();
          };
          pump();
        },
      }),
      async (ep) => {
        await assert.rejects(snapshotDownload(REPO, { cacheDir, endpoint: ep }), (err: unknown) => {
          assert.ok(err instanceof HubSizeError, String(err));
          assert.match(err.message, /more than the 1000 bytes it declared/);
          return true;
        });
      },
    );
    const repoDir = path.join(cacheDir, repoFolderName(REPO));
    assert.deepEqual(await readdir(path.join(repoDir, 'blobs')), [], 'the oversized partial file is deleted');
    assert.deepEqual(await readdir(path.join(repoDir, 'snapshots', COMMIT)), []);

    // No declared size at all: the cap (maxFileBytes) bounds it.
    await withHostile(
      hubLike({
        file: (req, res) => {
          res.writeHead(200, { etag: `"${'f'.repeat(40)}"` });
          res.end(req.method === 'HEAD' ? undefined : Buffer.alloc(5000));
        },
      }),
      async (ep) => {
        await assert.rejects(snapshotDownload(REPO, { cacheDir, endpoint: ep, maxFileBytes: 4096 }), HubSizeError);
      },
    );
    // A declared size above the cap: refused before any GET.
    let gets = 0;
    await withHostile(
      hubLike({
        file: (req, res) => {
          if (req.method === 'GET') gets++;
          res.writeHead(200, { etag: `"${'9'.repeat(40)}"`, 'x-linked-size': '999999999999', 'content-length': '0' }).end();
        },
      }),
      async (ep) => {
        await assert.rejects(snapshotDownload(REPO, { cacheDir, endpoint: ep, maxFileBytes: 1 << 20 }), HubSizeError);
      },
    );
    assert.equal(gets, 0);
    assert.deepEqual(await readdir(path.join(repoDir, 'blobs')), []);
    // An endless repo listing is cut off too (not read into memory without bound).
    await withHostile(
      (req, res, seg) => {
        if (seg[0] !== 'api') return void res.end();
        res.writeHead(200, { 'content-type': 'application/json', 'content-length': String(1 << 30) });
        res.write('{');
      },
      async (ep) => {
        await assert.rejects(snapshotDownload(REPO, { cacheDir, endpoint: ep }), HubSizeError);
      },
    );
  } finally {
    await rm(root, { recursive: true, force: true });
  }
});
