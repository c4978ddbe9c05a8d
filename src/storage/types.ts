// The storage interface: the subset of a file system (and of the host process) the library uses.
// Everything in src/ that reads or writes files goes through it, so the same code runs on Node
// (node.ts: node:fs itself) and in a browser (memory.ts: files fetched, dropped or written there).
// Signatures follow node:fs/promises so the Node implementation is node:fs, unchanged.
import { PeftError } from '../errors.js';

/** What `stat` says about a path (node:fs's Stats satisfies it). */
export interface StorageStats {
  size: number;
  mtimeMs: number;
  isFile(): boolean;
  isDirectory(): boolean;
  isFIFO(): boolean;
  isCharacterDevice(): boolean;
  isBlockDevice(): boolean;
  isSocket(): boolean;
}

/** A folder entry of `readdir(dir, { withFileTypes: true })`. */
export interface StorageDirent {
  name: string;
  isFile(): boolean;
  isDirectory(): boolean;
}

/** An open file: positional reads and writes (safetensors reads tensors lazily, writes in chunks). */
export interface StorageFileHandle {
  read(buffer: Uint8Array, offset: number, length: number, position: number): Promise<{ bytesRead: number }>;
  /** writes at `position`, or at the end of the previous write when it is omitted (as node:fs) */
  write(buffer: Uint8Array, offset?: number, length?: number, position?: number | null): Promise<{ bytesWritten: number }>;
  writeFile(data: string | Uint8Array): Promise<void>;
  stat(): Promise<StorageStats>;
  sync(): Promise<void>;
  chmod(mode: number): Promise<void>;
  close(): Promise<void>;
}

/** POSIX path arithmetic (node:path on Node; the same rules in memory.ts's `posixPath`). */
export interface PathFunctions {
  readonly sep: string;
  join(...parts: string[]): string;
  resolve(...parts: string[]): string;
  normalize(p: string): string;
  dirname(p: string): string;
  basename(p: string, ext?: string): string;
  extname(p: string): string;
  isAbsolute(p: string): boolean;
  relative(from: string, to: string): string;
}

/** The process around the files: lock owners, temp-file names, warnings, decompression. */
export interface StorageHost {
  readonly pid: number;
  hostname(): string;
  /** whether a process id is running (lock take-over) */
  pidAlive(pid: number): boolean;
  /** registers `fn` to run when the process exits; returns the function that unregisters it */
  onExit(fn: () => void): () => void;
  /** `bytes` random bytes as hex (temp-file names) */
  randomHex(bytes: number): string;
  /** a warning the user should see (Node: process.emitWarning; browser: console.warn) */
  warn(message: string, type: string): void;
  /** raw DEFLATE decompression (PyTorch .bin zips), refusing more than `maxOutputLength` bytes */
  inflateRaw(data: Uint8Array, maxOutputLength: number): Uint8Array;
  /** the folder for temporary files (os.tmpdir on Node) */
  tmpdir(): string;
  /** the user's home folder (the Hub cache lives under it) */
  homedir(): string;
  /** the path a file: URL names (a module's own location, `import.meta.url`) */
  fileURLToPath(url: string | URL): string;
}

/** node:fs's flags: read, read-write, truncate, create exclusively, append (writes go at the end) */
export type OpenFlags = 'r' | 'r+' | 'w' | 'wx' | 'a';

export interface Storage {
  /** 'node' (node:fs) or 'memory' (the browser's files) */
  readonly kind: string;
  readonly path: PathFunctions;
  readonly host: StorageHost;
  readFile(path: string): Promise<Uint8Array>;
  readFile(path: string, encoding: 'utf8'): Promise<string>;
  writeFile(path: string, data: string | Uint8Array): Promise<void>;
  appendFile(path: string, data: string | Uint8Array): Promise<void>;
  stat(path: string): Promise<StorageStats>;
  readdir(path: string): Promise<string[]>;
  readdir(path: string, options: { withFileTypes: true }): Promise<StorageDirent[]>;
  /** every file and folder below `path`, relative to it */
  readdir(path: string, options: { recursive: true }): Promise<string[]>;
  mkdir(path: string, options?: { recursive?: boolean }): Promise<string | undefined>;
  rm(path: string, options?: { recursive?: boolean; force?: boolean }): Promise<void>;
  rename(from: string, to: string): Promise<void>;
  unlink(path: string): Promise<void>;
  copyFile(from: string, to: string): Promise<void>;
  /** a hard link; fails with code EEXIST when `to` exists (the output-folder lock relies on it) */
  link(from: string, to: string): Promise<void>;
  realpath(path: string): Promise<string>;
  /** a symbolic link at `path` pointing to `target` (the Hub cache's snapshot pointers) */
  symlink(target: string, path: string): Promise<void>;
  /** a new folder named `prefix` + six random characters; returns its path */
  mkdtemp(prefix: string): Promise<string>;
  open(path: string, flags: OpenFlags, mode?: number): Promise<StorageFileHandle>;
  existsSync(path: string): boolean;
  statSync(path: string): StorageStats;
  readFileSync(path: string, encoding: 'utf8'): string;
  readdirSync(path: string): string[];
  readdirSync(path: string, options: { withFileTypes: true }): StorageDirent[];
  readdirSync(path: string, options: { recursive: true }): string[];
  unlinkSync(path: string): void;
  mkdirSync(path: string, options?: { recursive?: boolean }): string | undefined;
  mkdtempSync(prefix: string): string;
  rmSync(path: string, options?: { recursive?: boolean; force?: boolean }): void;
  /** appends, creating the file when missing (TensorBoard event files are written this way) */
  appendFileSync(path: string, data: string | Uint8Array): void;
  /** flushes a file's data to the disk (fsync) */
  fsyncSync(path: string): void;
  /** synchronous positional reads (weights read while a graph is lowered) */
  openSync(path: string, flags: 'r'): number;
  readSync(fd: number, buffer: Uint8Array, offset: number, length: number, position: number): number;
  closeSync(fd: number): void;
}

/** An error with a Node-style code (ENOENT, EEXIST, ...), which callers test as they test node:fs's. */
export class StorageError extends PeftError {
  constructor(
    readonly code: string,
    message: string,
  ) {
    super(`${code}: ${message}`);
  }
}
