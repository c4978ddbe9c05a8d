// Downloads model repos from the Hugging Face Hub into a cache laid out exactly like Python
// huggingface_hub's (models--org--name/{blobs,snapshots,refs}), so both share one cache, and falls
// back to an already cached snapshot when the Hub cannot be reached or offline mode is on.

import { randomUUID } from "node:crypto";
import { copyFile, mkdir, open, readFile, readdir, rename, rm, stat, symlink, unlink, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { PeftError } from '../errors.js';

export class HubError extends PeftError {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = "HubError";
  }
}

/** The Hub is unreachable (or offline mode is on) and the cache cannot stand in for it. */
export class HubOfflineError extends HubError {
  readonly repoId: string;
  constructor(repoId: string, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = "HubOfflineError";
    this.repoId = repoId;
  }
}

/** The repository, revision or file does not exist (or is private and no token was sent). */
export class HubNotFoundError extends HubError {
  readonly repoId: string;
  readonly kind: "repo" | "revision" | "file";
  readonly url: string;
  constructor(repoId: string, kind: "repo" | "revision" | "file", url: string, message: string) {
    super(message);
    this.name = "HubNotFoundError";
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
    this.name = "HubAuthError";
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
    this.name = "HubHttpError";
    this.status = status;
    this.url = url;
  }
}

/** resolveModelDir got something that is neither an existing folder nor a valid repo id. */
export class ModelPathError extends HubError {
  readonly input: string;
  constructor(input: string, message: string) {
    super(message);
    this.name = "ModelPathError";
    this.input = input;
  }
}

export type ProgressCallback = (bytesDone: number, bytesTotal: number | undefined, file: string) => void;

export interface HubOptions {
  /** Branch, tag or commit hash; default "main". */
  revision?: string;
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
  /** Limit for each metadata request (repo info, HEAD), in milliseconds; default 10000. */
  timeoutMs?: number;
}

const DEFAULT_ENDPOINT = "https://huggingface.co";
const COMMIT_RE = /^[0-9a-f]{40}$/;
// Our own bookkeeping lives beside blobs/snapshots/refs; huggingface_hub ignores unknown entries there.
const MANIFEST_DIR = ".peft-ts";

function envFlag(v: string | undefined): boolean {
  return v !== undefined && ["1", "ON", "YES", "TRUE"].includes(v.trim().toUpperCase());
}

/** The cache root, resolved like huggingface_hub: HF_HUB_CACHE, then HF_HOME/hub, then XDG/~ defaults. */
export function hubCacheDir(cacheDir?: string): string {
  if (cacheDir) return cacheDir;
  const env = process.env;
  if (env.HF_HUB_CACHE) return env.HF_HUB_CACHE;
  if (env.HUGGINGFACE_HUB_CACHE) return env.HUGGINGFACE_HUB_CACHE;
  if (env.HF_HOME) return path.join(env.HF_HOME, "hub");
  const xdg = env.XDG_CACHE_HOME || path.join(os.homedir(), ".cache");
  return path.join(xdg, "huggingface", "hub");
}

/** Folder name of a model repo inside the cache: "org/name" -> "models--org--name". */
export function repoFolderName(repoId: string): string {
  return `models--${repoId.split("/").join("--")}`;
}

/** huggingface_hub's validate_repo_id rules. */
export function isValidRepoId(repoId: string): boolean {
  return (
    repoId.length > 0 &&
    repoId.length <= 96 &&
    /^(?:[\w.-]+\/)?[\w.-]+$/.test(repoId) &&
    !repoId.includes("--") &&
    !repoId.includes("..") &&
    !/(^|\/)[.-]|[.-]($|\/)/.test(repoId)
  );
}

interface Settings {
  repoId: string;
  revision: string;
  endpoint: string;
  cacheDir: string;
  repoDir: string;
  token?: string;
  offline: boolean;
  timeoutMs: number;
  matches: (file: string) => boolean;
  onProgress?: ProgressCallback;
}

function settingsFor(repoId: string, opts: HubOptions): Settings {
  if (!isValidRepoId(repoId)) {
    throw new ModelPathError(
      repoId,
      `"${repoId}" is not a valid Hub repo id (expected "name" or "org/name" with letters, digits, "-", "_", "."; no "--" or "..").`,
    );
  }
  const cacheDir = hubCacheDir(opts.cacheDir);
  return {
    repoId,
    revision: opts.revision ?? "main",
    endpoint: (opts.endpoint ?? process.env.HF_ENDPOINT ?? DEFAULT_ENDPOINT).replace(/\/+$/, ""),
    cacheDir,
    repoDir: path.join(cacheDir, repoFolderName(repoId)),
    token: opts.token ?? (process.env.HF_TOKEN || undefined),
    offline: opts.offline ?? envFlag(process.env.HF_HUB_OFFLINE),
    timeoutMs: opts.timeoutMs ?? 10_000,
    matches: patternFilter(opts.allowPatterns, opts.ignorePatterns),
    onProgress: opts.onProgress,
  };
}

/**
 * Downloads (or reuses from the cache) every file of a model repo at one revision and returns the
 * snapshot folder `<cache>/models--org--name/snapshots/<commit>`.
 */
export async function snapshotDownload(repoId: string, opts: HubOptions = {}): Promise<string> {
  const s = settingsFor(repoId, opts);
  if (s.offline) {
    const cached = await cachedSnapshot(s);
    if (cached !== undefined) return cached;
    throw new HubOfflineError(
      repoId,
      `offline mode is on (HF_HUB_OFFLINE) and the cache ${s.cacheDir} holds no complete snapshot of ` +
        `${repoId}@${s.revision}. Pass a local model folder instead of the repo id, or unset HF_HUB_OFFLINE and ` +
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
        `${s.cacheDir} holds no complete snapshot of it. Pass a local model folder instead of the repo id, ` +
        `download it once while online (afterwards HF_HUB_OFFLINE=1 uses the cached snapshot), or point ` +
        `HF_ENDPOINT at a reachable mirror.`,
      { cause: err },
    );
  }

  const commit = info.sha;
  if (s.revision !== commit) {
    // refs/<revision> lets later offline runs map "main" to the commit, as in huggingface_hub.
    const refFile = path.join(s.repoDir, "refs", ...s.revision.split("/"));
    await mkdir(path.dirname(refFile), { recursive: true });
    await writeFile(refFile, commit);
  }
  const snapshotDir = path.join(s.repoDir, "snapshots", commit);
  await mkdir(snapshotDir, { recursive: true });
  await writeManifest(s.repoDir, commit, info.files);

  for (const file of info.files.filter(s.matches)) {
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

/** Returns `idOrPath` unchanged when it is an existing folder; otherwise treats it as a repo id and downloads it. */
export async function resolveModelDir(idOrPath: string, opts: HubOptions = {}): Promise<string> {
  const info = await stat(idOrPath).catch(() => undefined);
  if (info?.isDirectory()) return idOrPath;
  if (info !== undefined) {
    throw new ModelPathError(idOrPath, `${idOrPath} is a file; pass the folder that holds config.json and the weights.`);
  }
  const looksLikePath =
    path.isAbsolute(idOrPath) || /^(\.{1,2}|~)([\\/]|$)/.test(idOrPath) || idOrPath.includes("\\") || idOrPath.split("/").length > 2;
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
  const url = `${s.endpoint}/api/models/${s.repoId}/revision/${encodeURIComponent(s.revision)}`;
  const res = await fetch(url, { headers: authHeaders(s), signal: AbortSignal.timeout(s.timeoutMs) });
  if (!res.ok) {
    await res.body?.cancel();
    throw errorForResponse(res, s, url);
  }
  let body: unknown;
  try {
    body = await res.json();
  } catch (err) {
    if (isNetworkError(err)) throw err;
    throw new HubError(`${url} did not return JSON; is ${s.endpoint} a Hugging Face Hub endpoint?`, { cause: err });
  }
  const b = body as { sha?: unknown; siblings?: unknown };
  if (typeof b.sha !== "string" || !Array.isArray(b.siblings)) {
    throw new HubError(`${url} returned repo info without "sha" and "siblings"; is ${s.endpoint} a Hugging Face Hub endpoint?`);
  }
  const files: string[] = [];
  for (const sib of b.siblings) {
    const name = (sib as { rfilename?: unknown }).rfilename;
    if (typeof name !== "string" || !isSafeRelativePath(name)) {
      throw new HubError(`${url} lists an invalid file name ${JSON.stringify(name)}; refusing to write outside the cache.`);
    }
    files.push(name);
  }
  return { sha: b.sha, files };
}

function isSafeRelativePath(p: string): boolean {
  if (p.length === 0 || p.startsWith("/") || p.includes("\\") || p.includes("\0")) return false;
  return p.split("/").every((seg) => seg !== "" && seg !== "." && seg !== "..");
}

interface FileMeta {
  etag: string;
  size?: number;
  downloadUrl: string;
}

async function downloadFile(s: Settings, commit: string, snapshotDir: string, file: string): Promise<void> {
  const pointer = path.join(snapshotDir, ...file.split("/"));
  const existing = await stat(pointer).catch(() => undefined);
  if (existing?.isFile()) {
    // A snapshot pointer only appears after its blob is complete, so it needs no re-check.
    s.onProgress?.(existing.size, existing.size, file);
    return;
  }
  const url = `${s.endpoint}/${s.repoId}/resolve/${encodeURIComponent(commit)}/${file.split("/").map(encodeURIComponent).join("/")}`;
  const meta = await fileMetadata(s, url, file);
  const blob = path.join(s.repoDir, "blobs", meta.etag);
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
      method: "HEAD",
      redirect: "manual",
      headers: { ...authHeaders(s), "accept-encoding": "identity" },
      signal: AbortSignal.timeout(s.timeoutMs),
    });
    const location = res.headers.get("location");
    const isRedirect = res.status >= 300 && res.status < 400 && location !== null;
    if (isRedirect && !/^[a-z][a-z0-9+.-]*:/i.test(location) && !location.startsWith("//")) {
      current = new URL(location, current).toString();
      continue;
    }
    if (!res.ok && !isRedirect) throw errorForResponse(res, s, current, file);
    const rawEtag = res.headers.get("x-linked-etag") ?? res.headers.get("etag");
    if (rawEtag === null) {
      throw new HubError(
        `${current} returned no ETag, so the file cannot be placed in the cache; check that ${s.endpoint} is a ` +
          `Hugging Face Hub endpoint (proxies must pass the ETag and X-Linked-Etag headers through).`,
      );
    }
    const etag = rawEtag.replace(/^W\//, "").replace(/^"|"$/g, "");
    if (!/^[\w.-]+$/.test(etag)) {
      throw new HubError(`${current} returned an unusable ETag ${JSON.stringify(rawEtag)} for ${file}.`);
    }
    const sizeHeader = res.headers.get("x-linked-size") ?? res.headers.get("content-length");
    const size = sizeHeader !== null && /^\d+$/.test(sizeHeader) ? Number(sizeHeader) : undefined;
    return { etag, size, downloadUrl: isRedirect ? new URL(location, current).toString() : current };
  }
  throw new HubError(`too many redirects resolving ${url}.`);
}

/** Streams the file into `<blob>.incomplete`, resuming with a Range request when part of it is already there. */
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
    const headers: Record<string, string> = { ...(sameOrigin ? authHeaders(s) : {}), "accept-encoding": "identity" };
    if (offset > 0) headers.range = `bytes=${offset}-`;
    let res = await fetch(meta.downloadUrl, { headers });
    if (res.status === 416 && offset > 0) {
      // The server rejects the resume point: start over.
      await res.body?.cancel();
      await rm(incomplete, { force: true });
      offset = 0;
      delete headers.range;
      res = await fetch(meta.downloadUrl, { headers });
    }
    if (!res.ok) {
      await res.body?.cancel();
      throw errorForResponse(res, s, meta.downloadUrl, file);
    }
    let flags = "a";
    if (res.status === 206) {
      const start = /^bytes (\d+)-/.exec(res.headers.get("content-range") ?? "")?.[1];
      if (start === undefined || Number(start) !== offset) {
        await res.body?.cancel();
        throw new HubError(`${meta.downloadUrl} answered the resume request for ${file} with a different byte range; delete ${incomplete} and retry.`);
      }
    } else {
      // A 200 means the server ignored the Range header and sends the whole file.
      flags = "w";
      offset = 0;
    }
    const lengthHeader = res.headers.get("content-length");
    const total = meta.size ?? (lengthHeader !== null && /^\d+$/.test(lengthHeader) ? offset + Number(lengthHeader) : undefined);
    s.onProgress?.(offset, total, file);
    const fh = await open(incomplete, flags);
    try {
      const reader = res.body?.getReader();
      if (reader !== undefined) {
        for (;;) {
          const { done, value } = await reader.read();
          if (done) break;
          await fh.write(value);
          offset += value.byteLength;
          s.onProgress?.(offset, total, file);
        }
      }
    } catch (err) {
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
  } else {
    s.onProgress?.(offset, meta.size, file);
  }
  const finalSize = (await stat(incomplete)).size;
  if (meta.size !== undefined && finalSize !== meta.size) {
    if (finalSize > meta.size) await rm(incomplete, { force: true });
    throw new HubError(
      `download of ${file} ended at ${finalSize} of ${meta.size} bytes; run again to ` +
        (finalSize > meta.size ? "download it afresh." : "resume it."),
    );
  }
  // rename is atomic, so a blob path never exposes a partly written file.
  await rename(incomplete, blob);
}

async function linkPointer(blob: string, pointer: string): Promise<void> {
  await mkdir(path.dirname(pointer), { recursive: true });
  // A dangling pointer (blob deleted by a cache cleanup) would make symlink fail with EEXIST.
  await unlink(pointer).catch(() => undefined);
  try {
    await symlink(path.relative(path.dirname(pointer), blob), pointer);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === "EEXIST") return; // another process linked it meanwhile
    // Windows without developer mode cannot create symlinks; huggingface_hub copies in that case too.
    if (code === "EPERM" || code === "EACCES" || code === "ENOSYS" || code === "ENOTSUP") {
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
  const tmp = `${file}.${randomUUID()}.tmp`;
  await writeFile(tmp, JSON.stringify({ commit, files }));
  await rename(tmp, file);
}

/** The cached snapshot for the requested revision, if all wanted files are present. */
async function cachedSnapshot(s: Settings): Promise<string | undefined> {
  let commit: string | undefined;
  if (COMMIT_RE.test(s.revision)) {
    commit = s.revision;
  } else {
    const ref = await readFile(path.join(s.repoDir, "refs", ...s.revision.split("/")), "utf8").catch(() => undefined);
    commit = ref?.trim();
  }
  if (!commit || !COMMIT_RE.test(commit)) return undefined;
  const snapshotDir = path.join(s.repoDir, "snapshots", commit);
  const entries = await readdir(snapshotDir).catch(() => undefined);
  if (entries === undefined) return undefined;
  const manifestText = await readFile(manifestPath(s.repoDir, commit), "utf8").catch(() => undefined);
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
    if (typeof f !== "string" || !isSafeRelativePath(f)) return undefined;
    if (!s.matches(f)) continue;
    const info = await stat(path.join(snapshotDir, ...f.split("/"))).catch(() => undefined);
    if (!info?.isFile()) return undefined;
  }
  return snapshotDir;
}

function errorForResponse(res: Response, s: Settings, url: string, file?: string): HubError {
  const code = res.headers.get("x-error-code");
  const serverMessage = res.headers.get("x-error-message");
  const detail = serverMessage ? ` (server: ${serverMessage})` : "";
  const tokenHint = s.token
    ? "the token in HF_TOKEN does not grant access to it"
    : "no token was sent: set HF_TOKEN to a Hugging Face access token (huggingface.co/settings/tokens)";
  if (code === "GatedRepo") {
    return new HubAuthError(
      s.repoId,
      res.status,
      `${s.repoId} is gated${detail}: accept its conditions on the model page while logged in, then set HF_TOKEN ` +
        `to an access token of that account.`,
    );
  }
  if (code === "RepoNotFound" || code === "RepositoryNotFound" || (res.status === 404 && file === undefined && code !== "RevisionNotFound")) {
    return new HubNotFoundError(
      s.repoId,
      "repo",
      url,
      `repository ${s.repoId} not found at ${s.endpoint}${detail}. Check the repo id; if the repo is private, ${tokenHint}.`,
    );
  }
  if (code === "RevisionNotFound") {
    return new HubNotFoundError(s.repoId, "revision", url, `revision "${s.revision}" not found in ${s.repoId}${detail}; check the branch, tag or commit.`);
  }
  if (code === "EntryNotFound" || res.status === 404) {
    return new HubNotFoundError(s.repoId, "file", url, `${file ?? url} not found in ${s.repoId}@${s.revision}${detail}.`);
  }
  if (res.status === 401 || res.status === 403) {
    return new HubAuthError(s.repoId, res.status, `access to ${s.repoId} denied (HTTP ${res.status})${detail}: ${tokenHint}.`);
  }
  return new HubHttpError(res.status, url, `${url} answered HTTP ${res.status} ${res.statusText}${detail}; try again later.`);
}

const NETWORK_CODES = new Set([
  "ECONNREFUSED",
  "ECONNRESET",
  "ENOTFOUND",
  "EAI_AGAIN",
  "ETIMEDOUT",
  "EHOSTUNREACH",
  "ENETUNREACH",
  "EPIPE",
  "UND_ERR_CONNECT_TIMEOUT",
  "UND_ERR_SOCKET",
  "UND_ERR_HEADERS_TIMEOUT",
  "UND_ERR_BODY_TIMEOUT",
]);

/** fetch reports refused connections, DNS failures and timeouts as a TypeError whose cause holds the code. */
function networkCode(err: unknown, depth = 0): string | undefined {
  if (typeof err !== "object" || err === null || depth > 5) return undefined;
  const e = err as { code?: unknown; name?: unknown; cause?: unknown; errors?: unknown };
  if (e.name === "TimeoutError") return "ETIMEDOUT";
  if (typeof e.code === "string" && NETWORK_CODES.has(e.code)) return e.code;
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
    case "ECONNREFUSED":
      return "connection refused";
    case "ENOTFOUND":
    case "EAI_AGAIN":
      return "host name not resolved";
    case "ETIMEDOUT":
    case "UND_ERR_CONNECT_TIMEOUT":
    case "UND_ERR_HEADERS_TIMEOUT":
    case "UND_ERR_BODY_TIMEOUT":
      return "timed out";
    default:
      return code ?? String(err);
  }
}

/** fnmatch semantics as huggingface_hub uses them: '*' also matches '/', a trailing '/' means the whole folder. */
function patternFilter(allow?: string | string[], ignore?: string | string[]): (file: string) => boolean {
  const compile = (p: string | string[] | undefined) =>
    p === undefined ? undefined : (Array.isArray(p) ? p : [p]).map((x) => fnmatchRegExp(x.endsWith("/") ? `${x}*` : x));
  const allowRe = compile(allow);
  const ignoreRe = compile(ignore);
  return (file) =>
    (allowRe === undefined || allowRe.some((r) => r.test(file))) && !(ignoreRe?.some((r) => r.test(file)) ?? false);
}

function fnmatchRegExp(pattern: string): RegExp {
  let re = "";
  for (let i = 0; i < pattern.length; i++) {
    const c = pattern[i];
    if (c === "*") re += ".*";
    else if (c === "?") re += ".";
    else if (c === "[") {
      const end = pattern.indexOf("]", i + 2);
      if (end === -1) {
        re += "\\[";
      } else {
        let body = pattern.slice(i + 1, end);
        if (body.startsWith("!")) body = `^${body.slice(1)}`;
        re += `[${body.replace(/\\/g, "\\\\")}]`;
        i = end;
      }
    } else re += c.replace(/[.+^${}()|\\\]]/g, "\\$&");
  }
  return new RegExp(`^${re}$`, "s");
}
