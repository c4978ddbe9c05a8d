// The storage every module of the library reads and writes through (types.ts says why). On Node it
// is node:fs (node.ts); a browser build starts with an empty in-memory one (browser.ts), and
// `setStorage` swaps it (a page fills a MemoryStorage with fetched or dropped files). The functions
// below have node:fs's names and signatures and call the current storage at each call.

import { defaultStorage } from './node.js';
import type { OpenFlags, PathFunctions, Storage, StorageDirent, StorageFileHandle, StorageHost, StorageStats } from './types.js';

export type { OpenFlags, Storage, StorageFileHandle, StorageStats } from './types.js';
export { StorageError } from './types.js';

let current: Storage = defaultStorage;

/** The storage in use. */
export function storage(): Storage {
  return current;
}

/** Makes `s` the storage every later read and write goes through; returns the previous one. */
export function setStorage(s: Storage): Storage {
  const previous = current;
  current = s;
  return previous;
}

export function readFile(p: string): Promise<Uint8Array>;
export function readFile(p: string, encoding: 'utf8'): Promise<string>;
export function readFile(p: string, encoding?: 'utf8'): Promise<Uint8Array | string> {
  return encoding ? current.readFile(p, encoding) : current.readFile(p);
}
export const writeFile = (p: string, data: string | Uint8Array): Promise<void> => current.writeFile(p, data);
export const appendFile = (p: string, data: string | Uint8Array): Promise<void> => current.appendFile(p, data);
export const stat = (p: string): Promise<StorageStats> => current.stat(p);
export function readdir(p: string): Promise<string[]>;
export function readdir(p: string, options: { withFileTypes: true }): Promise<StorageDirent[]>;
export function readdir(p: string, options: { recursive: true }): Promise<string[]>;
export function readdir(p: string, options?: { withFileTypes: true } | { recursive: true }): Promise<string[] | StorageDirent[]> {
  if (options && 'recursive' in options) return current.readdir(p, options);
  return options ? current.readdir(p, options) : current.readdir(p);
}
export const mkdir = (p: string, options?: { recursive?: boolean }): Promise<string | undefined> => current.mkdir(p, options);
export const rm = (p: string, options?: { recursive?: boolean; force?: boolean }): Promise<void> => current.rm(p, options);
export const rename = (from: string, to: string): Promise<void> => current.rename(from, to);
export const unlink = (p: string): Promise<void> => current.unlink(p);
export const copyFile = (from: string, to: string): Promise<void> => current.copyFile(from, to);
export const link = (from: string, to: string): Promise<void> => current.link(from, to);
export const realpath = (p: string): Promise<string> => current.realpath(p);
export const symlink = (target: string, p: string): Promise<void> => current.symlink(target, p);
export const mkdtemp = (prefix: string): Promise<string> => current.mkdtemp(prefix);
export const open = (p: string, flags: OpenFlags, mode?: number): Promise<StorageFileHandle> => current.open(p, flags, mode);
export const existsSync = (p: string): boolean => current.existsSync(p);
export const statSync = (p: string): StorageStats => current.statSync(p);
export const readFileSync = (p: string, encoding: 'utf8'): string => current.readFileSync(p, encoding);
export function readdirSync(p: string): string[];
export function readdirSync(p: string, options: { withFileTypes: true }): StorageDirent[];
export function readdirSync(p: string, options: { recursive: true }): string[];
export function readdirSync(p: string, options?: { withFileTypes: true } | { recursive: true }): string[] | StorageDirent[] {
  if (options && 'recursive' in options) return current.readdirSync(p, options);
  return options ? current.readdirSync(p, options) : current.readdirSync(p);
}
export const unlinkSync = (p: string): void => current.unlinkSync(p);
export const mkdirSync = (p: string, options?: { recursive?: boolean }): string | undefined => current.mkdirSync(p, options);
export const mkdtempSync = (prefix: string): string => current.mkdtempSync(prefix);
export const rmSync = (p: string, options?: { recursive?: boolean; force?: boolean }): void => current.rmSync(p, options);
export const appendFileSync = (p: string, data: string | Uint8Array): void => current.appendFileSync(p, data);
export const fsyncSync = (p: string): void => current.fsyncSync(p);
export const openSync = (p: string, flags: 'r'): number => current.openSync(p, flags);
export const readSync = (fd: number, buffer: Uint8Array, offset: number, length: number, position: number): number =>
  current.readSync(fd, buffer, offset, length, position);
export const closeSync = (fd: number): void => current.closeSync(fd);

/** Path arithmetic of the current storage (node:path on Node). */
export const path: PathFunctions = {
  get sep() {
    return current.path.sep;
  },
  join: (...parts) => current.path.join(...parts),
  resolve: (...parts) => current.path.resolve(...parts),
  normalize: (p) => current.path.normalize(p),
  dirname: (p) => current.path.dirname(p),
  basename: (p, ext) => current.path.basename(p, ext),
  extname: (p) => current.path.extname(p),
  isAbsolute: (p) => current.path.isAbsolute(p),
  relative: (from, to) => current.path.relative(from, to),
};
export const { join, resolve, normalize, dirname, basename, extname, isAbsolute, relative } = path;

/** The process around the storage (pid, host name, exit hooks, warnings). */
export const host: StorageHost = {
  get pid() {
    return current.host.pid;
  },
  hostname: () => current.host.hostname(),
  pidAlive: (pid) => current.host.pidAlive(pid),
  onExit: (fn) => current.host.onExit(fn),
  randomHex: (bytes) => current.host.randomHex(bytes),
  warn: (message, type) => current.host.warn(message, type),
  inflateRaw: (data, max) => current.host.inflateRaw(data, max),
  tmpdir: () => current.host.tmpdir(),
  homedir: () => current.host.homedir(),
  fileURLToPath: (url) => current.host.fileURLToPath(url),
};
