// The one way this library replaces a file: write a temp file in the same folder (so the rename
// cannot cross file systems), fsync it, rename it over the target, fsync the folder. A crash leaves
// either the old file or the new one, never a torn one; what it can leave is a temp file, whose
// recognisable name (`.<name>.peft-tmp-<pid>-<hex>`) lets the next command into that folder remove
// it (`removeTempFiles`, called when an output folder is claimed: src/io/outdir.ts).

import {
  copyFile,
  open,
  readdir,
  rename,
  rm,
  type StorageFileHandle as FileHandle,
  basename,
  dirname,
  host,
  join,
} from '../storage/index.js';
import { PeftError } from '../errors.js';

/** A file could not be written (disk full, permissions, a read-only folder). */
export class WriteError extends PeftError {}

/** Temp names this library gives files and folders it is still writing (or swapping out). */
const TEMP_NAME = /\.peft-(tmp|old)-(\d+)-[0-9a-f]+$/;

/** A fresh temp path next to `path` (`kind` 'old' names a folder being swapped out). */
export function tempPathFor(path: string, kind: 'tmp' | 'old' = 'tmp'): string {
  return join(dirname(path), `.${basename(path)}.peft-${kind}-${host.pid}-${host.randomHex(4)}`);
}

/** Whether a file name is one of our temp names. */
export function isTempName(name: string): boolean {
  return TEMP_NAME.test(name);
}

/** Makes a completed rename durable; directories cannot be opened for syncing on every platform. */
async function syncDir(dir: string): Promise<void> {
  try {
    const d = await open(dir, 'r');
    try {
      await d.sync();
    } finally {
      await d.close();
    }
  } catch {
    // The file is complete either way; only durability across a power cut is weaker.
  }
}

/** Why a write failed, in words, with what to do when the user can do something (disk full). */
export function writeFailure(e: unknown): string {
  // the system error under any wrapping (a SafetensorsError around a WriteError around ENOSPC)
  for (let c = e, depth = 0; c instanceof Error && depth < 8; c = c.cause, depth++) {
    if (typeof (c as NodeJS.ErrnoException).code === 'string') {
      e = c;
      break;
    }
  }
  const code = (e as NodeJS.ErrnoException)?.code;
  const fix = code === 'ENOSPC' || code === 'EDQUOT' ? '; free some space (nothing partial was kept) and run it again' : '';
  return describe(e) + fix;
}

function describe(e: unknown): string {
  const err = e as NodeJS.ErrnoException;
  if (err?.code === 'ENOSPC') return 'the disk is full';
  if (err?.code === 'EDQUOT') return 'the disk quota is exceeded';
  if (err?.code === 'EACCES' || err?.code === 'EPERM') return 'permission denied';
  if (err?.code === 'EROFS') return 'the file system is read-only';
  return err instanceof Error ? err.message : String(e);
}

/** Wraps a failed write as a one-line typed error naming the file and what to do. */
export function writeError(path: string, e: unknown): PeftError {
  if (e instanceof PeftError) return e;
  return new WriteError(`cannot write ${path}: ${writeFailure(e)}`, { cause: e });
}

/**
 * Writes `data` (or whatever `fill` writes into the open temp file) to `path` atomically. On
 * failure the temp file is removed, `path` is untouched, and the error is a typed `WriteError`
 * (a `PeftError` thrown by `fill` passes through).
 */
export async function writeFileAtomic(path: string, data: string | Uint8Array | ((fh: FileHandle) => Promise<void>)): Promise<void> {
  const tmp = tempPathFor(path);
  let fh: FileHandle | undefined;
  try {
    fh = await open(tmp, 'wx', 0o644);
    if (typeof data === 'function') await data(fh);
    else await fh.writeFile(data);
    await fh.sync();
    await fh.close();
    fh = undefined;
    await rename(tmp, path);
  } catch (e) {
    if (fh) await fh.close().catch(() => undefined);
    await rm(tmp, { force: true }).catch(() => undefined);
    throw writeError(path, e);
  }
  await syncDir(dirname(path));
}

/** Copies `src` to `dest` atomically (a temp copy, fsynced, renamed), with mode 0644. */
export async function copyFileAtomic(src: string, dest: string): Promise<void> {
  const tmp = tempPathFor(dest);
  try {
    await copyFile(src, tmp);
    const fh = await open(tmp, 'r+');
    try {
      await fh.chmod(0o644);
      await fh.sync();
    } finally {
      await fh.close();
    }
    await rename(tmp, dest);
  } catch (e) {
    await rm(tmp, { force: true }).catch(() => undefined);
    throw writeError(dest, e);
  }
  await syncDir(dirname(dest));
}

const pidAlive = (pid: number): boolean => host.pidAlive(pid);

/**
 * Removes the temp files and folders interrupted writes left in `dir` and, to `depth` levels, its
 * subfolders: those whose writing process (the pid in the name) is gone, so a write in progress
 * elsewhere is never touched.
 */
export async function removeTempFiles(dir: string, depth = 2): Promise<string[]> {
  const removed: string[] = [];
  let entries;
  try {
    entries = await readdir(dir, { withFileTypes: true });
  } catch {
    return removed;
  }
  for (const e of entries) {
    const p = join(dir, e.name);
    const m = TEMP_NAME.exec(e.name);
    if (m) {
      if (pidAlive(Number(m[2]))) continue;
      await rm(p, { recursive: true, force: true });
      removed.push(p);
    } else if (depth > 1 && e.isDirectory()) removed.push(...(await removeTempFiles(p, depth - 1)));
  }
  return removed;
}
