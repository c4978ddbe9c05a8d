// Guards for files named by the user or found in a downloaded folder. Opening a FIFO for reading
// blocks until a writer appears (forever, on a libuv worker thread), a character device such as
// /dev/zero never ends, and a folder fails with EISDIR deep inside a parser: every reader of a
// file the user names therefore stats it first and refuses anything but a regular file, before
// opening it. Symbolic links are followed (the Hub cache is made of them).

import { stat, readFile, type StorageStats as Stats } from '../storage/index.js';

/** What a path turned out to be instead of a regular file, in words. */
function kindOf(s: Stats): string {
  if (s.isDirectory()) return 'a folder';
  if (s.isFIFO()) return 'a named pipe (FIFO)';
  if (s.isCharacterDevice()) return 'a character device';
  if (s.isBlockDevice()) return 'a block device';
  if (s.isSocket()) return 'a socket';
  return 'not a regular file';
}

/**
 * Stats `file` and returns its size when it is a regular file; otherwise throws what `fail`
 * builds from a one-line reason ("… is a folder, not a file"). A missing file returns undefined
 * when `optional`, else fails with "… does not exist".
 */
export async function regularFileSize(file: string, fail: (reason: string) => Error, optional = false): Promise<number | undefined> {
  let s: Stats;
  try {
    s = await stat(file);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if ((code === 'ENOENT' || code === 'ENOTDIR') && optional) return undefined;
    if (code === 'ENOENT' || code === 'ENOTDIR') throw fail(`${file} does not exist`);
    throw fail(`cannot read ${file} (${code ?? (e as Error).message})`);
  }
  if (!s.isFile()) throw fail(`${file} is ${kindOf(s)}, not a file`);
  return s.size;
}

/**
 * Reads a small text file (config, tokenizer, adapter config) after checking it is a regular file
 * of at most `limit` bytes, so a FIFO, a device or a multi-gigabyte "config" is refused at once.
 */
export async function readSmallTextFile(file: string, limit: number, fail: (reason: string) => Error): Promise<string> {
  const size = (await regularFileSize(file, fail))!;
  if (size > limit) throw fail(`${file} is ${size} bytes, above the ${limit}-byte limit for this kind of file`);
  try {
    return await readFile(file, 'utf8');
  } catch (e) {
    throw fail(`cannot read ${file} (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`);
  }
}

/** Bound for the small JSON documents read with readJsonObject (adapter configs, checkpoint state). */
const MAX_JSON_FILE_BYTES = 64 * 1024 * 1024;

/**
 * Reads a file that must hold one JSON object (adapter_config.json, a checkpoint's state file, ...)
 * after readSmallTextFile's checks. Every failure is what `fail` builds from a one-line reason, so
 * each layer raises its own typed error with the same words for the same mistake.
 */
export async function readJsonObject(
  file: string,
  fail: (reason: string) => Error,
  limit = MAX_JSON_FILE_BYTES,
): Promise<Record<string, unknown>> {
  const text = await readSmallTextFile(file, limit, fail);
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch (e) {
    throw fail(`${file} is not valid JSON: ${(e as Error).message}`);
  }
  if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) throw fail(`${file} must hold a JSON object`);
  return parsed as Record<string, unknown>;
}
