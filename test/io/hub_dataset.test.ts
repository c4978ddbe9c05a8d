// Hub dataset repos: hf://datasets/OWNER/NAME[/file.jsonl][@revision] fetched through the Hub client
// (repo type "dataset": /api/datasets/... and /datasets/<id>/resolve/...) from a real HTTP server on
// 127.0.0.1, into huggingface_hub's datasets--org--name cache layout; and `peft train --data hf://...`.

import { test, after, before } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { existsSync, readFileSync } from 'node:fs';
import { mkdtemp, readFile, readdir, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { HubNotFoundError, HubOfflineError, repoFolderName, snapshotDownload } from '../../src/io/hub.js';
import { HubDatasetError, parseHubDatasetSpec, resolveDataFile } from '../../src/io/hub_dataset.js';
import { peft } from '../cli/peft.js';

for (const key of ['HF_HUB_OFFLINE', 'HF_TOKEN', 'HF_ENDPOINT', 'HF_HUB_CACHE', 'HF_HOME']) delete process.env[key];

const REPO = 'fixture-org/prefs';
const COMMITS: Record<string, string> = {
  main: createHash('sha1').update('dataset main').digest('hex'),
  v1: createHash('sha1').update('dataset v1').digest('hex'),
};
const sentiment = readFileSync('data/tasks/sentiment/train.jsonl', 'utf8').split('\n').slice(0, 8).join('\n') + '\n';
/** files per commit: v1 has only an older train file */
const FILES: Record<string, Record<string, string>> = {
  [COMMITS.main!]: {
    'README.md': '# prefs\n',
    'data/train.jsonl': sentiment,
    'data/test.jsonl': sentiment.split('\n').slice(0, 2).join('\n') + '\n',
  },
  [COMMITS.v1!]: { 'train.jsonl': sentiment.split('\n').slice(0, 4).join('\n') + '\n' },
};
const log: { method: string; url: string }[] = [];
let server: http.Server;
let endpoint: string;

before(async () => {
  server = http.createServer((req, res) => {
    const url = decodeURIComponent(req.url ?? '');
    log.push({ method: req.method ?? '', url });
    const info = /^\/api\/datasets\/([^/]+\/[^/]+)\/revision\/(.+)$/.exec(url);
    if (info) {
      const sha = COMMITS[info[2]!] ?? (Object.values(COMMITS).includes(info[2]!) ? info[2] : undefined);
      if (info[1] !== REPO || sha === undefined) {
        res.writeHead(404, { 'x-error-code': info[1] !== REPO ? 'RepoNotFound' : 'RevisionNotFound' }).end();
        return;
      }
      res
        .writeHead(200, { 'content-type': 'application/json' })
        .end(JSON.stringify({ id: REPO, sha, siblings: Object.keys(FILES[sha]!).map((rfilename) => ({ rfilename })) }));
      return;
    }
    const file = /^\/datasets\/([^/]+\/[^/]+)\/resolve\/([0-9a-f]{40})\/(.+)$/.exec(url);
    const body = file && file[1] === REPO ? FILES[file[2]!]?.[file[3]!] : undefined;
    if (body === undefined) {
      res.writeHead(404, { 'x-error-code': 'EntryNotFound' }).end();
      return;
    }
    const data = Buffer.from(body);
    res.writeHead(200, { etag: `"${createHash('sha1').update(data).digest('hex')}"`, 'content-length': String(data.length) });
    res.end(req.method === 'HEAD' ? undefined : data);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  endpoint = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
});
after(async () => {
  await new Promise<void>((resolve) => server.close(() => resolve()));
});

const tempCache = (): Promise<string> => mkdtemp(path.join(os.tmpdir(), 'peft-hub-ds-'));

test('parseHubDatasetSpec: repo, file and revision in both orders; bad specs are typed errors', () => {
  assert.deepEqual(parseHubDatasetSpec('hf://datasets/org/name'), { repoId: 'org/name', file: undefined, revision: undefined });
  assert.deepEqual(parseHubDatasetSpec('hf://datasets/org/name/data/train.jsonl'), {
    repoId: 'org/name',
    file: 'data/train.jsonl',
    revision: undefined,
  });
  assert.deepEqual(parseHubDatasetSpec('hf://datasets/org/name/train.jsonl@v1.0'), {
    repoId: 'org/name',
    file: 'train.jsonl',
    revision: 'v1.0',
  });
  assert.deepEqual(parseHubDatasetSpec('hf://datasets/org/name@refs-x/train.jsonl'), {
    repoId: 'org/name',
    file: 'train.jsonl',
    revision: 'refs-x',
  });
  assert.deepEqual(parseHubDatasetSpec('hf://datasets/org/name@v2'), { repoId: 'org/name', file: undefined, revision: 'v2' });
  for (const bad of [
    'hf://datasets/org',
    'hf://datasets/org--x/name',
    'hf://datasets/org/name/../x.jsonl',
    'hf://datasets/org/name/x.jsonl@',
    'hf://models/org/name',
  ]) {
    assert.throws(() => parseHubDatasetSpec(bad), HubDatasetError, bad);
  }
});

test('a named file of a dataset repo: dataset URLs, datasets--org--name cache, only that file fetched, then offline', async () => {
  const cacheDir = await tempCache();
  try {
    log.length = 0;
    const file = await resolveDataFile(`hf://datasets/${REPO}/data/train.jsonl`, { cacheDir, endpoint });
    const repoDir = path.join(cacheDir, repoFolderName(REPO, 'dataset'));
    assert.equal(repoFolderName(REPO, 'dataset'), 'datasets--fixture-org--prefs');
    assert.equal(file, path.join(repoDir, 'snapshots', COMMITS.main!, 'data', 'train.jsonl'));
    assert.equal(await readFile(file, 'utf8'), sentiment);
    assert.deepEqual(
      log.map((r) => `${r.method} ${r.url}`),
      [
        `GET /api/datasets/${REPO}/revision/main`,
        `HEAD /datasets/${REPO}/resolve/${COMMITS.main}/data/train.jsonl`,
        `GET /datasets/${REPO}/resolve/${COMMITS.main}/data/train.jsonl`,
      ],
    );
    assert.ok(!existsSync(path.join(cacheDir, 'models--fixture-org--prefs')));
    // offline: the cached file, no request
    log.length = 0;
    assert.equal(await resolveDataFile(`hf://datasets/${REPO}/data/train.jsonl`, { cacheDir, endpoint, offline: true }), file);
    assert.equal(log.length, 0);
    await assert.rejects(
      resolveDataFile(`hf://datasets/${REPO}/data/train.jsonl@v1`, { cacheDir, endpoint, offline: true }),
      HubOfflineError,
    );
  } finally {
    await rm(cacheDir, { recursive: true, force: true });
  }
});

test("without a file: the repo's train jsonl for training, its test jsonl for evaluation; @revision; errors name the files", async () => {
  const cacheDir = await tempCache();
  try {
    const train = await resolveDataFile(`hf://datasets/${REPO}`, { cacheDir, endpoint });
    assert.ok(train.endsWith(path.join('data', 'train.jsonl')));
    const ev = await resolveDataFile(`hf://datasets/${REPO}`, { cacheDir, endpoint, role: 'eval' });
    assert.ok(ev.endsWith(path.join('data', 'test.jsonl')));
    assert.ok(!existsSync(path.join(path.dirname(path.dirname(train)), 'README.md')), 'only jsonl files are fetched');
    log.length = 0;
    const old = await resolveDataFile(`hf://datasets/${REPO}@v1`, { cacheDir, endpoint });
    assert.equal(old, path.join(cacheDir, 'datasets--fixture-org--prefs', 'snapshots', COMMITS.v1!, 'train.jsonl'));
    assert.equal(log[0]!.url, `/api/datasets/${REPO}/revision/v1`);
    assert.equal((await readFile(old, 'utf8')).trim().split('\n').length, 4);
    await assert.rejects(
      resolveDataFile(`hf://datasets/${REPO}/data/nope.jsonl`, { cacheDir, endpoint }),
      (e: unknown) => e instanceof HubDatasetError && /has no file data\/nope\.jsonl/.test((e as Error).message),
    );
    await assert.rejects(resolveDataFile(`hf://datasets/fixture-org/missing`, { cacheDir, endpoint }), HubNotFoundError);
    // a model repo of the same name is a different cache folder and URL
    await assert.rejects(snapshotDownload(REPO, { cacheDir, endpoint }), HubNotFoundError);
    assert.deepEqual((await readdir(cacheDir)).sort(), ['datasets--fixture-org--prefs']);
  } finally {
    await rm(cacheDir, { recursive: true, force: true });
  }
});

test('peft train --data hf://datasets/... trains on the fetched file and keeps the spec in run_config.json', async () => {
  const cacheDir = await tempCache();
  try {
    const out = path.join(cacheDir, 'run');
    const spec = `hf://datasets/${REPO}/data/train.jsonl`;
    const r = await peft(
      [
        'train',
        '--model',
        'models/tiny-llama',
        '--data',
        spec,
        '--eval-data',
        `hf://datasets/${REPO}`,
        '--out',
        out,
        '--steps',
        '1',
        '--batch',
        '4',
        '--max-len',
        '64',
        '--threads',
        '1',
        '--no-eval-at-start',
      ],
      { HF_HUB_OFFLINE: undefined, HF_ENDPOINT: endpoint, HF_HUB_CACHE: cacheDir },
    );
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stderr, /data: 8 training examples \(prompt-completion\), 2 for evaluation/);
    const cfg = JSON.parse(await readFile(path.join(out, 'run_config.json'), 'utf8')) as Record<string, unknown>;
    assert.equal(cfg.data, spec);
    assert.equal(cfg.evalData, `hf://datasets/${REPO}`);
    // peft eval reads a dataset repo the same way (its test split, from the cache now)
    const e = await peft(
      ['eval', '--model', 'models/tiny-llama', '--data', `hf://datasets/${REPO}`, '--metric', 'perplexity', '--json', '--threads', '1'],
      { HF_HUB_OFFLINE: '1', HF_HUB_CACHE: cacheDir },
    );
    assert.equal(e.code, 0, e.stderr);
    assert.equal((JSON.parse(e.stdout) as { rows: number }).rows, 2);
  } finally {
    await rm(cacheDir, { recursive: true, force: true });
  }
});
