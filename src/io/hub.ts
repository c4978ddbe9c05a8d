// Downloads model repos (and dataset repos, repoType "dataset") from the Hugging Face Hub into a cache
// laid out exactly like Python huggingface_hub's (models--org--name/{blobs,snapshots,refs},
// datasets--org--name/...), so both share one cache, and falls
// back to an already cached snapshot when the Hub cannot be reached or offline mode is on.

import {
  type OpenFlags,
  copyFile,
  host,
  mkdir,
  open,
  path,
  readdir,
  readFile,
  rename,
  rm,
  stat,
  symlink,
  unlink,
  writeFile,
} from '../storage/index.js';
import { PeftError } from '../errors.js';

export class HubError extends PeftError {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'HubError';
  }
}

/** The Hub is unreachable (or offline mode is on) and the cache cannot stand in for it. */
export class HubOfflineError extends HubError {
  readonly repoId: string;
  constructor(repoId: string, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'HubOfflineError';
    this.repoId = repoId;
  }
}

/** The repository, revision or file does not exist (or is private and no token was sent). */
export class HubNotFoundError extends HubError {
  readonly repoId: string;
  readonly kind: 'repo' | 'revision' | 'file';
  readonly url: string;
  constructor(repoId: string, kind: 'repo' | 'revision' | 'file', url: string, message: string) {
    super(message);
    this.name = 'HubNotFoundError';
    this.repoId = repoId;
    this.kind = kind;
    this.url = url;
  }
}

/** 401/403: the repo is gated or private and the token (HF_TOKEN) is missing or lacks access. */
export class HubAuthError extends HubError {
  readonly repoId: string;
  readonly status: number;
  constructor(repoId: string, status: number, message: string) {
    super(message);
    this.name = 'HubAuthError';
    this.repoId = repoId;
    this.status = status;
  }
}

/** Any other unexpected HTTP status from the Hub. */
export class HubHttpError extends HubError {
  readonly status: number;
  readonly url: string;
  constructor(status: number, url: string, message: string) {
    super(message);
    this.name = 'HubHttpError';
    this.status = status;
    this.url = url;
  }
}

/** resolveModelDir got something that is neither an existing folder nor a valid repo id. */
export class ModelPathError extends HubError {
  readonly input: string;
  constructor(input: string, message: string) {
    super(message);
    this.name = 'ModelPathError';
    this.input = input;
  }
}

/**
 * The Hub (or whatever answers at HF_ENDPOINT) sent a commit hash, ETag, revision or file name that
 * would put a file outside the cache, or is not what huggingface_hub accepts. Nothing is written.
 */
export class HubUnsafePathError extends HubError {
  readonly value: string;
  constructor(value: string, message: string) {
    super(message);
    this.name = 'HubUnsafePathError';
    this.value = value;
  }
}

/** The server stopped sending (no bytes within the read timeout). The partial file is kept for resuming. */
export class HubTimeoutError extends HubError {
  readonly url: string;
  readonly timeoutMs: number;
  constructor(url: string, timeoutMs: number, message: string) {
    super(message);
    this.name = 'HubTimeoutError';
    this.url = url;
    this.timeoutMs = timeoutMs;
  }
}

/** A file (or the repo listing) is larger than the server declared, or than the size cap. Nothing is kept. */
export class HubSizeError extends HubError {
  readonly file: string;
  readonly limit: number;
  constructor(file: string, limit: number, message: string) {
    super(message);
    this.name = 'HubSizeError';
    this.file = file;
    this.limit = limit;
  }
}

export type ProgressCallback = (bytesDone: number, bytesTotal: number | undefined, file: string) => void;

/** The Hub's repo kinds this client reads: models, and dataset repos (for their jsonl files). */
export type RepoType = 'model' | 'dataset';

export interface HubOptions {
  /** Branch, tag or commit hash; default "main". */
  revision?: string;
  /** Default "model"; "dataset" uses /api/datasets/... and /datasets/<id>/resolve/..., cached under datasets--org--name. */
  repoType?: RepoType;
  cacheDir?: string;
  /** Default: env HF_ENDPOINT, else https://huggingface.co. */
  endpoint?: string;
  /** Default: env HF_TOKEN. */
  token?: string;
  /** Only files matching one of these fnmatch-style patterns (as huggingface_hub: '*' also crosses '/'). */
  allowPatterns?: string | string[];
  ignorePatterns?: string | string[];
  /** Called as bytes of each file arrive; bytesTotal is undefined when the server does not say. */
  onProgress?: ProgressCallback;
  /** Never touch the network; default: env HF_HUB_OFFLINE. */
  offline?: boolean;
  /** Limit for each metadata request (repo info, HEAD), in milliseconds; default env HF_HUB_ETAG_TIMEOUT (seconds), else 10000. */
  timeoutMs?: number;
  /**
   * Longest wait for the next bytes of a download (headers or body), in milliseconds; default env
   * HF_HUB_DOWNLOAD_TIMEOUT (seconds), else 10000, as huggingface_hub. A stalled download fails with
   * HubTimeoutError and keeps its partial file for the next run to resume.
   */
  readTimeoutMs?: number;
  /**
   * Largest file accepted when the server declares no size; a declared size above it is refused
   * before downloading. Default 50 GB, the Hub's own per-file limit. A file is never accepted past
   * its declared size (X-Linked-Size / Content-Length).
   */
  maxFileBytes?: number;
}

/** The Hub's per-file limit: bigger files cannot be uploaded there, so bigger downloads are refused. */
const DEFAULT_MAX_FILE_BYTES = 50_000_000_000;
/** Repo info (the file listing) is JSON of a few KB to a few MB; more is not a Hub answer. */
const MAX_REPO_INFO_BYTES = 64 * 1024 * 1024;
const MAX_REPO_FILES = 100_000;

const DEFAULT_ENDPOINT = 'https://huggingface.co';
const COMMIT_RE = /^[0-9a-f]{40}$/;
// Our own bookkeeping lives beside blobs/snapshots/refs; huggingface_hub ignores unknown entries there.
const MANIFEST_DIR = '.peft-ts';

function envFlag(v: string | undefined): boolean {
  return v !== undefined && ['1', 'ON', 'YES', 'TRUE'].includes(v.trim().toUpperCase());
}

/** The cache root, resolved like huggingface_hub: HF_HUB_CACHE, then HF_HOME/hub, then XDG/~ defaults. */
export function hubCacheDir(cacheDir?: string): string {
  if (cacheDir) return cacheDir;
  const env = process.env;
  if (env.HF_HUB_CACHE) return env.HF_HUB_CACHE;
  if (env.HUGGINGFACE_HUB_CACHE) return env.HUGGINGFACE_HUB_CACHE;
  if (env.HF_HOME) return path.join(env.HF_HOME, 'hub');
  const xdg = env.XDG_CACHE_HOME || path.join(host.homedir(), '.cache');
  return path.join(xdg, 'huggingface', 'hub');
}

/** Folder name of a repo inside the cache, as huggingface_hub names it: "org/name" -> "models--org--name" (a dataset: "datasets--org--name"). */
export function repoFolderName(repoId: string, repoType: RepoType = 'model'): string {
  return `${repoType}s--${repoId.split('/').join('--')}`;
}

/** huggingface_hub's validate_repo_id rules. */
export function isValidRepoId(repoId: string): boolean {
  return (
    repoId.length > 0 &&
    repoId.length <= 96 &&
    /^(?:[\w.-]+\/)?[\w.-]+$/.test(repoId) &&
    !repoId.includes('--') &&
    !repoId.includes('..') &&
    !/(^|\/)[.-]|[.-]($|\/)/.test(repoId)
  );
}

interface Settings {
  repoId: string;
  repoType: RepoType;
  revision: string;
  endpoint: string;
  cacheDir: string;
  repoDir: string;
  token?: string;
  offline: boolean;
  timeoutMs: number;
  readTimeoutMs: number;
  maxFileBytes: number;
  matches: (file: string) => boolean;
  onProgress?: ProgressCallback;
}

function positiveMs(v: number | undefined, name: string): number | undefined {
  if (v === undefined) return undefined;
  if (!Number.isFinite(v) || v <= 0) throw new HubError(`${name} must be a positive number, got ${v}.`);
  return v;
}

function envSeconds(name: string): number | undefined {
  const raw = process.env[name];
  if (raw === undefined || raw.trim() === '') return undefined;
  const v = Number(raw);
  if (!Number.isFinite(v) || v <= 0) throw new HubError(`${name}=${raw} is not a positive number of seconds; fix or unset it.`);
  return v * 1000;
}

/** huggingface_hub's REGEX_COMMIT_HASH: what the server's `sha` must be before it names a folder. */
function isCommitHash(s: string): boolean {
  return COMMIT_RE.test(s);
}

/**
 * An ETag, once normalised as huggingface_hub does (W/ prefix and quotes removed), names a blob
 * file: it must be one safe file name (the Hub sends 40 or 64 hex digits; mirrors may send other
 * tokens), never ".", "..", a hidden name, or anything with a separator.
 */
function normalizeEtag(raw: string): string | undefined {
  const etag = raw.trim().replace(/^W\//, '').replace(/^"|"$/g, '');
  return /^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$/.test(etag) && !etag.endsWith('.incomplete') ? etag : undefined;
}

/** A revision names a file under refs/: branch/tag names may hold "/", but never "..", ".", empty or hidden segments. */
function isSafeRevision(rev: string): boolean {
  return rev.length > 0 && rev.length <= 256 && !/[\\\0:]/.test(rev) && rev.split('/').every((seg) => seg !== '' && !seg.startsWith('.'));
}

/** `path.join(root, ...parts)`, refused unless it resolves strictly inside `root`. */
function inside(root: string, parts: string[], what: string, value: string): string {
  const base = path.resolve(root);
  const p = path.resolve(base, ...parts);
  if (!p.startsWith(base + path.sep)) {
    throw new HubUnsafePathError(value, `refusing ${what} ${JSON.stringify(value)}: it would put a file outside the cache folder ${base}.`);
  }
  return p;
}

function settingsFor(repoId: string, opts: HubOptions): Settings {
  if (!isValidRepoId(repoId)) {
    throw new ModelPathError(
      repoId,
      `"${repoId}" is not a valid Hub repo id (expected "name" or "org/name" with letters, digits, "-", "_", "."; no "--" or "..").`,
    );
  }
  const cacheDir = hubCacheDir(opts.cacheDir);
  const revision = opts.revision ?? 'main';
  if (!isSafeRevision(revision)) {
    throw new HubUnsafePathError(
      revision,
      `revision ${JSON.stringify(revision)} is not a valid branch, tag or commit name (no "..", hidden or empty parts).`,
    );
  }
  const repoType = opts.repoType ?? 'model';
  if (repoType !== 'model' && repoType !== 'dataset')
    throw new HubError(`repo type must be "model" or "dataset", got ${JSON.stringify(repoType)}.`);
  return {
    repoId,
    repoType,
    revision,
    endpoint: (opts.endpoint ?? process.env.HF_ENDPOINT ?? DEFAULT_ENDPOINT).replace(/\/+$/, ''),
    cacheDir,
    repoDir: path.join(cacheDir, repoFolderName(repoId, repoType)),
    token: opts.token ?? (process.env.HF_TOKEN || undefined),
    offline: opts.offline ?? envFlag(process.env.HF_HUB_OFFLINE),
    timeoutMs: positiveMs(opts.timeoutMs, 'timeoutMs') ?? envSeconds('HF_HUB_ETAG_TIMEOUT') ?? 10_000,
    readTimeoutMs: positiveMs(opts.readTimeoutMs, 'readTimeoutMs') ?? envSeconds('HF_HUB_DOWNLOAD_TIMEOUT') ?? 10_000,
    maxFileBytes: positiveMs(opts.maxFileBytes, 'maxFileBytes') ?? DEFAULT_MAX_FILE_BYTES,
    matches: patternFilter(opts.allowPatterns, opts.ignorePatterns),
    onProgress: opts.onProgress,
  };
}

/**
 * Downloads (or reuses from the cache) every file of a model repo (or, with repoType "dataset", a
 * dataset repo) at one revision and returns the snapshot folder
 * `<cache>/models--org--name/snapshots/<commit>` (`datasets--org--name` for a dataset).
 */
export async function snapshotDownload(repoId: string, opts: HubOptions = {}): Promise<string> {
  const s = settingsFor(repoId, opts);
  if (s.offline) {
    const cached = await cachedSnapshot(s);
    if (cached !== undefined) return cached;
    throw new HubOfflineError(
      repoId,
      `offline mode is on (HF_HUB_OFFLINE) and the cache ${s.cacheDir} holds no complete snapshot of ` +
        `${repoId}@${s.revision}. Pass ${localAlternative(s)} instead of the repo id, or unset HF_HUB_OFFLINE and ` +
        `download it once while online.`,
    );
  }

  let info: RepoInfo;
  try {
    info = await fetchRepoInfo(s);
  } catch (err) {
    if (!isNetworkError(err)) throw err;
    // Same fallback as huggingface_hub: an unreachable Hub is fine when the snapshot is already here.
    const cached = await cachedSnapshot(s);
    if (cached !== undefined) return cached;
    throw new HubOfflineError(
      repoId,
      `cannot reach ${s.endpoint} to download ${repoId}@${s.revision} (${networkReason(err)}), and the cache ` +
        `${s.cacheDir} holds no complete snapshot of it. Pass ${localAlternative(s)} instead of the repo id, ` +
        `download it once while online (afterwards HF_HUB_OFFLINE=1 uses the cached snapshot), or point ` +
        `HF_ENDPOINT at a reachable mirror.`,
      { cause: err },
    );
  }

  // fetchRepoInfo checked the commit hash and every file name; every path is still resolved and
  // checked against its folder before anything is created, so no answer can write outside the cache.
  const commit = info.sha;
  const snapshotDir = inside(s.repoDir, ['snapshots', commit], 'commit hash', commit);
  const wanted = info.files.filter(s.matches);
  for (const file of wanted) inside(snapshotDir, file.split('/'), 'file name', file);
  if (s.revision !== commit) {
    // refs/<revision> lets later offline runs map "main" to the commit, as in huggingface_hub.
    const refFile = inside(s.repoDir, ['refs', ...s.revision.split('/')], 'revision', s.revision);
    await mkdir(path.dirname(refFile), { recursive: true });
    await writeFile(refFile, commit);
  }
  await mkdir(snapshotDir, { recursive: true });
  await writeManifest(s.repoDir, commit, info.files);

  for (const file of wanted) {
    try {
      await downloadFile(s, commit, snapshotDir, file);
    } catch (err) {
      if (err instanceof HubError || !isNetworkError(err)) throw err;
      throw new HubOfflineError(
        repoId,
        `lost the connection to ${s.endpoint} while fetching ${file} of ${repoId} (${networkReason(err)}); run ` +
          `again to continue, the files already downloaded stay in ${s.cacheDir}.`,
        { cause: err },
      );
    }
  }
  return snapshotDir;
}

function localAlternative(s: Settings): string {
  return s.repoType === 'dataset' ? 'a local .jsonl file' : 'a local model folder';
}

/** Returns `idOrPath` unchanged when it is an existing folder; otherwise treats it as a repo id and downloads it. */
export async function resolveModelDir(idOrPath: string, opts: HubOptions = {}): Promise<string> {
  const info = await stat(idOrPath).catch(() => undefined);
  if (info?.isDirectory()) return idOrPath;
  if (info !== undefined) {
    throw new ModelPathError(idOrPath, `${idOrPath} is a file; pass the folder that holds config.json and the weights.`);
  }
  const looksLikePath =
    path.isAbsolute(idOrPath) || /^(\.{1,2}|~)([\\/]|$)/.test(idOrPath) || idOrPath.includes('\\') || idOrPath.split('/').length > 2;
  if (looksLikePath || !isValidRepoId(idOrPath)) {
    throw new ModelPathError(
      idOrPath,
      `${JSON.stringify(idOrPath)} is neither an existing local folder nor a Hub repo id like "org/name"; check the path.`,
    );
  }
  return snapshotDownload(idOrPath, opts);
}

interface RepoInfo {
  sha: string;
  files: string[];
}

function authHeaders(s: Settings): Record<string, string> {
  return s.token ? { authorization: `Bearer ${s.token}` } : {};
}

async function fetchRepoInfo(s: Settings): Promise<RepoInfo> {
  const url = `${s.endpoint}/api/${s.repoType}s/${s.repoId}/revision/${encodeURIComponent(s.revision)}`;
  const res = await fetch(url, { headers: authHeaders(s), signal: AbortSignal.timeout(s.timeoutMs) });
  if (!res.ok) {
    await res.body?.cancel();
    throw errorForResponse(res, s, url);
  }
  let body: unknown;
  try {
    const text = await readLimited(res, MAX_REPO_INFO_BYTES, url);
    body = JSON.parse(text);
  } catch (err) {
    if (err instanceof HubError || isNetworkError(err)) throw err;
    throw new HubError(`${url} did not return JSON; is ${s.endpoint} a Hugging Face Hub endpoint?`, { cause: err });
  }
  const b = (typeof body === 'object' && body !== null ? body : {}) as { sha?: unknown; siblings?: unknown };
  if (typeof b.sha !== 'string' || !Array.isArray(b.siblings)) {
    throw new HubError(`${url} returned repo info without "sha" and "siblings"; is ${s.endpoint} a Hugging Face Hub endpoint?`);
  }
  if (!isCommitHash(b.sha)) {
    throw new HubUnsafePathError(
      b.sha,
      `${url} returned the commit hash ${JSON.stringify(b.sha.slice(0, 100))}, not 40 hexadecimal digits; refusing to use it as a cache folder. Check HF_ENDPOINT.`,
    );
  }
  if (b.siblings.length > MAX_REPO_FILES) {
    throw new HubSizeError(
      '(repo listing)',
      MAX_REPO_FILES,
      `${url} lists ${b.siblings.length} files (more than ${MAX_REPO_FILES}); refusing it. Check HF_ENDPOINT.`,
    );
  }
  const files: string[] = [];
  for (const sib of b.siblings) {
    const name = (sib as { rfilename?: unknown } | null)?.rfilename;
    if (typeof name !== 'string' || !isSafeRelativePath(name)) {
      throw new HubUnsafePathError(
        String(name),
        `${url} lists an invalid file name ${JSON.stringify(name)} (absolute, "..", or empty parts); refusing to write outside the cache. Check HF_ENDPOINT.`,
      );
    }
    files.push(name);
  }
  return { sha: b.sha, files };
}

/** The body as text, refused past `limit` bytes (a listing is small; a hostile server could stream forever). */
async function readLimited(res: Response, limit: number, url: string): Promise<string> {
  const declared = res.headers.get('content-length');
  if (declared !== null && Number(declared) > limit) {
    await res.body?.cancel();
    throw new HubSizeError(
      url,
      limit,
      `${url} declares ${declared} bytes of repo info, more than ${limit}; refusing it. Check HF_ENDPOINT.`,
    );
  }
  const chunks: Uint8Array[] = [];
  let n = 0;
  const reader = res.body?.getReader();
  if (reader !== undefined) {
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      n += value.byteLength;
      if (n > limit) {
        await reader.cancel();
        throw new HubSizeError(url, limit, `${url} sent more than ${limit} bytes of repo info; refusing it. Check HF_ENDPOINT.`);
      }
      chunks.push(value);
    }
  }
  return Buffer.concat(chunks).toString('utf8');
}

function isSafeRelativePath(p: string): boolean {
  if (p.length === 0 || p.length > 1024 || p.startsWith('/') || p.includes('\\') || p.includes('\0')) return false;
  if (/^[A-Za-z]:/.test(p)) return false;
  return p.split('/').every((seg) => seg !== '' && seg !== '.' && seg !== '..' && seg.length <= 255);
}

interface FileMeta {
  etag: string;
  size?: number;
  downloadUrl: string;
}

async function downloadFile(s: Settings, commit: string, snapshotDir: string, file: string): Promise<void> {
  const pointer = inside(snapshotDir, file.split('/'), 'file name', file);
  const existing = await stat(pointer).catch(() => undefined);
  if (existing?.isFile()) {
    // A snapshot pointer only appears after its blob is complete, so it needs no re-check.
    s.onProgress?.(existing.size, existing.size, file);
    return;
  }
  const url = `${s.endpoint}/${s.repoType === 'dataset' ? 'datasets/' : ''}${s.repoId}/resolve/${encodeURIComponent(commit)}/${file.split('/').map(encodeURIComponent).join('/')}`;
  const meta = await fileMetadata(s, url, file);
  const blob = inside(s.repoDir, ['blobs', meta.etag], 'ETag', meta.etag);
  const blobInfo = await stat(blob).catch(() => undefined);
  if (blobInfo === undefined) {
    await mkdir(path.dirname(blob), { recursive: true });
    await downloadBlob(s, meta, blob, file);
  } else {
    s.onProgress?.(blobInfo.size, blobInfo.size, file);
  }
  await linkPointer(blob, pointer);
}

/** HEAD on the resolve URL. Only relative redirects are followed (a renamed repo): the redirect to the LFS CDN carries the metadata itself. */
async function fileMetadata(s: Settings, url: string, file: string): Promise<FileMeta> {
  let current = url;
  for (let hop = 0; hop < 10; hop++) {
    const res = await fetch(current, {
      method: 'HEAD',
      redirect: 'manual',
      headers: { ...authHeaders(s), 'accept-encoding': 'identity' },
      signal: AbortSignal.timeout(s.timeoutMs),
    });
    const location = res.headers.get('location');
    const isRedirect = res.status >= 300 && res.status < 400 && location !== null;
    if (isRedirect && !/^[a-z][a-z0-9+.-]*:/i.test(location) && !location.startsWith('//')) {
      current = new URL(location, current).toString();
      continue;
    }
    if (!res.ok && !isRedirect) throw errorForResponse(res, s, current, file);
    const rawEtag = res.headers.get('x-linked-etag') ?? res.headers.get('etag');
    if (rawEtag === null) {
      throw new HubError(
        `${current} returned no ETag, so the file cannot be placed in the cache; check that ${s.endpoint} is a ` +
          `Hugging Face Hub endpoint (proxies must pass the ETag and X-Linked-Etag headers through).`,
      );
    }
    const etag = normalizeEtag(rawEtag);
    if (etag === undefined) {
      throw new HubUnsafePathError(
        rawEtag,
        `${current} returned the ETag ${JSON.stringify(rawEtag.slice(0, 100))} for ${file}, which is not a safe blob file name; refusing it. Check HF_ENDPOINT.`,
      );
    }
    const sizeHeader = res.headers.get('x-linked-size') ?? res.headers.get('content-length');
    const size = sizeHeader !== null && /^\d{1,16}$/.test(sizeHeader.trim()) ? Number(sizeHeader.trim()) : undefined;
    if (size !== undefined && size > s.maxFileBytes) {
      throw new HubSizeError(
        file,
        s.maxFileBytes,
        `${file} is declared as ${size} bytes, more than the ${s.maxFileBytes}-byte cap (maxFileBytes); refusing to download it.`,
      );
    }
    return { etag, size, downloadUrl: isRedirect ? new URL(location, current).toString() : current };
  }
  throw new HubError(`too many redirects resolving ${url}.`);
}

/**
 * Streams the file into `<blob>.incomplete`, resuming with a Range request when part of it is
 * already there. Every wait for the server (headers, each chunk) is bounded by the read timeout; a
 * stall keeps the partial file for the next run. The file may never grow past its declared size
 * (or the size cap when none is declared): a server sending more is refused and the partial file
 * deleted. Only a complete file is renamed to its blob name, so snapshots/ never links a partial one.
 */
async function downloadBlob(s: Settings, meta: FileMeta, blob: string, file: string): Promise<void> {
  const incomplete = `${blob}.incomplete`;
  let offset = (await stat(incomplete).catch(() => undefined))?.size ?? 0;
  if (meta.size !== undefined && offset > meta.size) {
    await rm(incomplete, { force: true });
    offset = 0;
  }
  if (meta.size === undefined || offset < meta.size || offset === 0) {
    const sameOrigin = new URL(meta.downloadUrl).origin === new URL(s.endpoint).origin;
    // The token is for the Hub only, never for the CDN host an LFS file redirects to.
    const headers: Record<string, string> = { ...(sameOrigin ? authHeaders(s) : {}), 'accept-encoding': 'identity' };
    if (offset > 0) headers.range = `bytes=${offset}-`;
    const stall = new StallTimer(s.readTimeoutMs);
    try {
      let res = await stall.guard(fetch(meta.downloadUrl, { headers, signal: stall.signal }), meta.downloadUrl, file);
      if (res.status === 416 && offset > 0) {
        // The server rejects the resume point: start over.
        await res.body?.cancel();
        await rm(incomplete, { force: true });
        offset = 0;
        delete headers.range;
        res = await stall.guard(fetch(meta.downloadUrl, { headers, signal: stall.signal }), meta.downloadUrl, file);
      }
      if (!res.ok) {
        await res.body?.cancel();
        throw errorForResponse(res, s, meta.downloadUrl, file);
      }
      let flags: OpenFlags = 'a';
      if (res.status === 206) {
        const start = /^bytes (\d+)-/.exec(res.headers.get('content-range') ?? '')?.[1];
        if (start === undefined || Number(start) !== offset) {
          await res.body?.cancel();
          throw new HubError(
            `${meta.downloadUrl} answered the resume request for ${file} with a different byte range; delete ${incomplete} and retry.`,
          );
        }
      } else {
        // A 200 means the server ignored the Range header and sends the whole file.
        flags = 'w';
        offset = 0;
      }
      const lengthHeader = res.headers.get('content-length');
      const declaredTotal =
        lengthHeader !== null && /^\d{1,16}$/.test(lengthHeader.trim()) ? offset + Number(lengthHeader.trim()) : undefined;
      const total = meta.size ?? declaredTotal;
      const limit = total ?? s.maxFileBytes;
      if (limit > s.maxFileBytes) {
        await res.body?.cancel();
        throw new HubSizeError(
          file,
          s.maxFileBytes,
          `${file} is declared as ${limit} bytes, more than the ${s.maxFileBytes}-byte cap (maxFileBytes); refusing to download it.`,
        );
      }
      s.onProgress?.(offset, total, file);
      const fh = await open(incomplete, flags);
      let tooBig = false;
      try {
        const reader = res.body?.getReader();
        if (reader !== undefined) {
          for (;;) {
            const { done, value } = await stall.guard(reader.read(), meta.downloadUrl, file, offset, incomplete);
            if (done) break;
            if (offset + value.byteLength > limit) {
              tooBig = true;
              await reader.cancel().catch(() => undefined);
              break;
            }
            await fh.write(value);
            offset += value.byteLength;
            s.onProgress?.(offset, total, file);
          }
        }
      } catch (err) {
        if (err instanceof HubError) throw err;
        if (isNetworkError(err)) {
          throw new HubOfflineError(
            s.repoId,
            `connection lost while downloading ${file} from ${s.endpoint} (${networkReason(err)}); ${offset} bytes are ` +
              `kept in ${incomplete} and the next run resumes from there.`,
            { cause: err },
          );
        }
        throw err;
      } finally {
        await fh.close();
      }
      if (tooBig) {
        await rm(incomplete, { force: true });
        throw new HubSizeError(
          file,
          limit,
          `${meta.downloadUrl} sent more than the ${limit} bytes ${total !== undefined ? 'it declared' : 'allowed (maxFileBytes)'} for ${file}; ` +
            `the partial file was deleted. Check HF_ENDPOINT, or run again to download it afresh.`,
        );
      }
    } finally {
      stall.clear();
    }
  } else {
    s.onProgress?.(offset, meta.size, file);
  }
  const finalSize = (await stat(incomplete)).size;
  if (meta.size !== undefined && finalSize !== meta.size) {
    if (finalSize > meta.size) await rm(incomplete, { force: true });
    throw new HubError(
      `download of ${file} ended at ${finalSize} of ${meta.size} bytes; run again to ` +
        (finalSize > meta.size ? 'download it afresh.' : 'resume it.'),
    );
  }
  // rename is atomic, so a blob path never exposes a partly written file.
  await rename(incomplete, blob);
}

/**
 * A read timeout: each guarded wait (response headers, one body chunk) must finish within `ms`,
 * otherwise the request is aborted and the wait rejects with HubTimeoutError. The total download
 * time is unbounded as long as bytes keep coming, as with huggingface_hub's read timeout.
 */
class StallTimer {
  private readonly controller = new AbortController();
  private timer: NodeJS.Timeout | undefined;
  constructor(private readonly ms: number) {}
  get signal(): AbortSignal {
    return this.controller.signal;
  }
  async guard<T>(p: Promise<T>, url: string, file: string, kept?: number, incomplete?: string): Promise<T> {
    let fired = false;
    const timeout = new Promise<never>((_, reject) => {
      this.timer = setTimeout(() => {
        fired = true;
        this.controller.abort();
        const keptNote =
          kept !== undefined && kept > 0 ? `; ${kept} bytes are kept in ${incomplete} and the next run resumes from there` : '';
        reject(
          new HubTimeoutError(
            url,
            this.ms,
            `${url} sent nothing for ${this.ms / 1000} s while downloading ${file}${keptNote}. Run again, or raise the ` +
              `read timeout (HF_HUB_DOWNLOAD_TIMEOUT, in seconds) on a slow connection.`,
          ),
        );
      }, this.ms);
    });
    try {
      return await Promise.race([p, timeout]);
    } catch (err) {
      if (fired && !(err instanceof HubTimeoutError)) throw await timeout.catch((e: unknown) => e);
      throw err;
    } finally {
      clearTimeout(this.timer);
      // The losing promise must not become an unhandled rejection.
      p.catch(() => undefined);
      timeout.catch(() => undefined);
    }
  }
  clear(): void {
    clearTimeout(this.timer);
  }
}

async function linkPointer(blob: string, pointer: string): Promise<void> {
  await mkdir(path.dirname(pointer), { recursive: true });
  // A dangling pointer (blob deleted by a cache cleanup) would make symlink fail with EEXIST.
  await unlink(pointer).catch(() => undefined);
  try {
    await symlink(path.relative(path.dirname(pointer), blob), pointer);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'EEXIST') return; // another process linked it meanwhile
    // Windows without developer mode cannot create symlinks; huggingface_hub copies in that case too.
    if (code === 'EPERM' || code === 'EACCES' || code === 'ENOSYS' || code === 'ENOTSUP') {
      await copyFile(blob, pointer);
      return;
    }
    throw err;
  }
}

function manifestPath(repoDir: string, commit: string): string {
  return path.join(repoDir, MANIFEST_DIR, `${commit}.json`);
}

/** Records the repo's file list before downloading so offline runs can tell a complete snapshot from an interrupted one. */
async function writeManifest(repoDir: string, commit: string, files: string[]): Promise<void> {
  const file = manifestPath(repoDir, commit);
  await mkdir(path.dirname(file), { recursive: true });
  const tmp = `${file}.${globalThis.crypto.randomUUID()}.tmp`;
  await writeFile(tmp, JSON.stringify({ commit, files }));
  await rename(tmp, file);
}

/** The cached snapshot for the requested revision, if all wanted files are present. */
async function cachedSnapshot(s: Settings): Promise<string | undefined> {
  let commit: string | undefined;
  if (COMMIT_RE.test(s.revision)) {
    commit = s.revision;
  } else {
    const ref = await readFile(path.join(s.repoDir, 'refs', ...s.revision.split('/')), 'utf8').catch(() => undefined);
    commit = ref?.trim();
  }
  if (!commit || !COMMIT_RE.test(commit)) return undefined;
  const snapshotDir = path.join(s.repoDir, 'snapshots', commit);
  const entries = await readdir(snapshotDir).catch(() => undefined);
  if (entries === undefined) return undefined;
  const manifestText = await readFile(manifestPath(s.repoDir, commit), 'utf8').catch(() => undefined);
  if (manifestText === undefined) {
    // Written by Python huggingface_hub (no manifest): like it, trust a non-empty snapshot.
    return entries.length > 0 ? snapshotDir : undefined;
  }
  let files: unknown;
  try {
    files = (JSON.parse(manifestText) as { files?: unknown }).files;
  } catch {
    return undefined;
  }
  if (!Array.isArray(files)) return undefined;
  for (const f of files) {
    if (typeof f !== 'string' || !isSafeRelativePath(f)) return undefined;
    if (!s.matches(f)) continue;
    const info = await stat(path.join(snapshotDir, ...f.split('/'))).catch(() => undefined);
    if (!info?.isFile()) return undefined;
  }
  return snapshotDir;
}

function errorForResponse(res: Response, s: Settings, url: string, file?: string): HubError {
  const code = res.headers.get('x-error-code');
  const serverMessage = res.headers.get('x-error-message');
  const detail = serverMessage ? ` (server: ${serverMessage})` : '';
  const tokenHint = s.token
    ? 'the token in HF_TOKEN does not grant access to it'
    : 'no token was sent: set HF_TOKEN to a Hugging Face access token (huggingface.co/settings/tokens)';
  if (code === 'GatedRepo') {
    return new HubAuthError(
      s.repoId,
      res.status,
      `${s.repoId} is gated${detail}: accept its conditions on the model page while logged in, then set HF_TOKEN ` +
        `to an access token of that account.`,
    );
  }
  if (
    code === 'RepoNotFound' ||
    code === 'RepositoryNotFound' ||
    (res.status === 404 && file === undefined && code !== 'RevisionNotFound')
  ) {
    return new HubNotFoundError(
      s.repoId,
      'repo',
      url,
      `repository ${s.repoId} not found at ${s.endpoint}${detail}. Check the repo id; if the repo is private, ${tokenHint}.`,
    );
  }
  if (code === 'RevisionNotFound') {
    return new HubNotFoundError(
      s.repoId,
      'revision',
      url,
      `revision "${s.revision}" not found in ${s.repoId}${detail}; check the branch, tag or commit.`,
    );
  }
  if (code === 'EntryNotFound' || res.status === 404) {
    return new HubNotFoundError(s.repoId, 'file', url, `${file ?? url} not found in ${s.repoId}@${s.revision}${detail}.`);
  }
  if (res.status === 401 || res.status === 403) {
    return new HubAuthError(s.repoId, res.status, `access to ${s.repoId} denied (HTTP ${res.status})${detail}: ${tokenHint}.`);
  }
  return new HubHttpError(res.status, url, `${url} answered HTTP ${res.status} ${res.statusText}${detail}; try again later.`);
}

const NETWORK_CODES = new Set([
  'ECONNREFUSED',
  'ECONNRESET',
  'ENOTFOUND',
  'EAI_AGAIN',
  'ETIMEDOUT',
  'EHOSTUNREACH',
  'ENETUNREACH',
  'EPIPE',
  'UND_ERR_CONNECT_TIMEOUT',
  'UND_ERR_SOCKET',
  'UND_ERR_HEADERS_TIMEOUT',
  'UND_ERR_BODY_TIMEOUT',
]);

/** fetch reports refused connections, DNS failures and timeouts as a TypeError whose cause holds the code. */
function networkCode(err: unknown, depth = 0): string | undefined {
  if (typeof err !== 'object' || err === null || depth > 5) return undefined;
  const e = err as { code?: unknown; name?: unknown; cause?: unknown; errors?: unknown };
  if (e.name === 'TimeoutError') return 'ETIMEDOUT';
  if (typeof e.code === 'string' && NETWORK_CODES.has(e.code)) return e.code;
  if (Array.isArray(e.errors)) {
    for (const inner of e.errors) {
      const c = networkCode(inner, depth + 1);
      if (c) return c;
    }
  }
  return networkCode(e.cause, depth + 1);
}

function isNetworkError(err: unknown): boolean {
  return networkCode(err) !== undefined;
}

function networkReason(err: unknown): string {
  const code = networkCode(err);
  switch (code) {
    case 'ECONNREFUSED':
      return 'connection refused';
    case 'ENOTFOUND':
    case 'EAI_AGAIN':
      return 'host name not resolved';
    case 'ETIMEDOUT':
    case 'UND_ERR_CONNECT_TIMEOUT':
    case 'UND_ERR_HEADERS_TIMEOUT':
    case 'UND_ERR_BODY_TIMEOUT':
      return 'timed out';
    default:
      return code ?? String(err);
  }
}

/** fnmatch semantics as huggingface_hub uses them: '*' also matches '/', a trailing '/' means the whole folder. */
function patternFilter(allow?: string | string[], ignore?: string | string[]): (file: string) => boolean {
  const compile = (p: string | string[] | undefined) =>
    p === undefined ? undefined : (Array.isArray(p) ? p : [p]).map((x) => fnmatchRegExp(x.endsWith('/') ? `${x}*` : x));
  const allowRe = compile(allow);
  const ignoreRe = compile(ignore);
  return (file) => (allowRe === undefined || allowRe.some((r) => r.test(file))) && !(ignoreRe?.some((r) => r.test(file)) ?? false);
}

function fnmatchRegExp(pattern: string): RegExp {
  let re = '';
  for (let i = 0; i < pattern.length; i++) {
    const c = pattern[i];
    if (c === '*') re += '.*';
    else if (c === '?') re += '.';
    else if (c === '[') {
      const end = pattern.indexOf(']', i + 2);
      if (end === -1) {
        re += '\\[';
      } else {
        let body = pattern.slice(i + 1, end);
        if (body.startsWith('!')) body = `^${body.slice(1)}`;
        re += `[${body.replace(/\\/g, '\\\\')}]`;
        i = end;
      }
    } else re += c.replace(/[.+^${}()|\\\]]/g, '\\$&');
  }
  return new RegExp(`^${re}$`, 's');
}
