// An in-memory storage: a file tree held in this process, whose files are bytes or Blobs (a
// browser's File objects are read lazily, slice by slice). The browser build uses it as its file
// system: the page adds fetched or dropped files, the library reads models from it and writes
// adapters into it, and the page downloads them from it. It also runs in Node (the tests use it).

import { posixPath } from './posix_path.js';
import {
  type OpenFlags,
  type Storage,
  type StorageDirent,
  type StorageFileHandle,
  type StorageHost,
  type StorageStats,
  StorageError,
} from './types.js';

type Entry = { kind: 'dir'; mtimeMs: number } | { kind: 'file'; data: Uint8Array | Blob; mtimeMs: number };

const encoder = new TextEncoder();
const decoder = new TextDecoder('utf-8', { fatal: false });
const toBytes = (data: string | Uint8Array): Uint8Array => (typeof data === 'string' ? encoder.encode(data) : new Uint8Array(data));

function statsOf(e: Entry): StorageStats {
  const size = e.kind === 'file' ? (e.data instanceof Uint8Array ? e.data.byteLength : e.data.size) : 0;
  return {
    size,
    mtimeMs: e.mtimeMs,
    isFile: () => e.kind === 'file',
    isDirectory: () => e.kind === 'dir',
    isFIFO: () => false,
    isCharacterDevice: () => false,
    isBlockDevice: () => false,
    isSocket: () => false,
  };
}

/** The browser's host: one "process", no exit hooks beyond the page's, console warnings. */
function memoryHost(): StorageHost {
  return {
    pid: 1,
    hostname: () => 'browser',
    pidAlive: (pid) => pid === 1,
    onExit: () => () => undefined,
    randomHex(bytes) {
      const b = new Uint8Array(bytes);
      globalThis.crypto.getRandomValues(b);
      return [...b].map((x) => x.toString(16).padStart(2, '0')).join('');
    },
    warn: (message, type) => console.warn(`${type}: ${message}`),
    inflateRaw() {
      throw new StorageError('ENOTSUP', 'PyTorch .bin files cannot be read here; use the safetensors version of the model or adapter');
    },
    tmpdir: () => '/tmp',
    homedir: () => '/home',
    fileURLToPath(url) {
      const u = new URL(String(url));
      if (u.protocol !== 'file:') throw new StorageError('ERR_INVALID_URL_SCHEME', `the URL must be of scheme file, got ${u.href}`);
      return decodeURIComponent(u.pathname);
    },
  };
}

export class MemoryStorage implements Storage {
  readonly kind = 'memory';
  readonly path = posixPath('/');
  readonly host = memoryHost();
  private readonly entries = new Map<string, Entry>([['/', { kind: 'dir', mtimeMs: Date.now() }]]);
  /**
   * Called after each change to a path (a file written, a folder made, anything removed), in
   * order: the OPFS mirror (opfs.ts) listens, and reads the path's new state when it persists it.
   */
  onChange: ((path: string) => void) | undefined = undefined;

  private changed(k: string): void {
    this.onChange?.(k);
  }

  /** Entries whose contents are `blob` hold its bytes from now on (before the file behind it changes). */
  async materialize(blob: Blob): Promise<void> {
    if (![...this.entries.values()].some((e) => e.kind === 'file' && e.data === blob)) return;
    const bytes = new Uint8Array(await blob.arrayBuffer());
    for (const e of this.entries.values()) if (e.kind === 'file' && e.data === blob) e.data = bytes;
  }

  private key(p: string): string {
    return this.path.resolve(p);
  }

  private get(p: string, syscall: string): Entry {
    const e = this.entries.get(this.key(p));
    if (!e) throw new StorageError('ENOENT', `no such file or directory, ${syscall} '${p}'`);
    return e;
  }

  private file(p: string, syscall: string): Extract<Entry, { kind: 'file' }> {
    const e = this.get(p, syscall);
    if (e.kind !== 'file') throw new StorageError('EISDIR', `illegal operation on a directory, ${syscall} '${p}'`);
    return e;
  }

  private parentMustExist(k: string, syscall: string): void {
    const parent = this.entries.get(this.path.dirname(k));
    if (!parent || parent.kind !== 'dir') throw new StorageError('ENOENT', `no such file or directory, ${syscall} '${k}'`);
  }

  private set(p: string, data: Uint8Array | Blob, syscall: string): void {
    const k = this.key(p);
    this.parentMustExist(k, syscall);
    if (this.entries.get(k)?.kind === 'dir') throw new StorageError('EISDIR', `illegal operation on a directory, ${syscall} '${p}'`);
    this.entries.set(k, { kind: 'file', data, mtimeMs: Date.now() });
    this.changed(k);
  }

  /** Adds a file (bytes, text or a Blob/File read lazily), creating its folders. */
  addFile(p: string, data: string | Uint8Array | Blob): void {
    const k = this.key(p);
    this.makeDirs(this.path.dirname(k));
    this.entries.set(k, { kind: 'file', data: data instanceof Blob ? data : toBytes(data), mtimeMs: Date.now() });
    this.changed(k);
  }

  private makeDirs(p: string): void {
    const k = this.key(p);
    const parts = k.split('/').filter(Boolean);
    let cur = '';
    for (const part of parts) {
      cur += `/${part}`;
      const e = this.entries.get(cur);
      if (e?.kind === 'file') throw new StorageError('ENOTDIR', `not a directory, mkdir '${p}'`);
      if (!e) {
        this.entries.set(cur, { kind: 'dir', mtimeMs: Date.now() });
        this.changed(cur);
      }
    }
  }

  /** Every file path under `dir` (recursive), sorted. */
  listFiles(dir = '/'): string[] {
    const base = this.key(dir);
    const prefix = base === '/' ? '/' : `${base}/`;
    return [...this.entries]
      .filter(([k, e]) => e.kind === 'file' && k.startsWith(prefix))
      .map(([k]) => k)
      .sort();
  }

  private children(p: string, syscall: string): string[] {
    const k = this.key(p);
    const e = this.get(p, syscall);
    if (e.kind !== 'dir') throw new StorageError('ENOTDIR', `not a directory, ${syscall} '${p}'`);
    const prefix = k === '/' ? '/' : `${k}/`;
    const out: string[] = [];
    for (const key of this.entries.keys())
      if (key !== k && key.startsWith(prefix) && !key.slice(prefix.length).includes('/')) out.push(key.slice(prefix.length));
    return out.sort();
  }

  private async bytesOf(e: Extract<Entry, { kind: 'file' }>, start = 0, end?: number): Promise<Uint8Array> {
    if (e.data instanceof Uint8Array) return e.data.subarray(start, end);
    return new Uint8Array(await e.data.slice(start, end).arrayBuffer());
  }

  readFile(p: string): Promise<Uint8Array>;
  readFile(p: string, encoding: 'utf8'): Promise<string>;
  async readFile(p: string, encoding?: 'utf8'): Promise<Uint8Array | string> {
    const bytes = await this.bytesOf(this.file(p, 'open'));
    return encoding ? decoder.decode(bytes) : new Uint8Array(bytes);
  }

  async writeFile(p: string, data: string | Uint8Array): Promise<void> {
    this.set(p, toBytes(data), 'open');
  }

  async appendFile(p: string, data: string | Uint8Array): Promise<void> {
    const e = this.entries.get(this.key(p));
    const before = e?.kind === 'file' ? await this.bytesOf(e) : new Uint8Array(0);
    const add = toBytes(data);
    const out = new Uint8Array(before.byteLength + add.byteLength);
    out.set(before, 0);
    out.set(add, before.byteLength);
    this.set(p, out, 'open');
  }

  async stat(p: string): Promise<StorageStats> {
    return this.statSync(p);
  }

  readdir(p: string): Promise<string[]>;
  readdir(p: string, options: { withFileTypes: true }): Promise<StorageDirent[]>;
  readdir(p: string, options: { recursive: true }): Promise<string[]>;
  async readdir(p: string, options?: { withFileTypes: true } | { recursive: true }): Promise<string[] | StorageDirent[]> {
    return options && 'recursive' in options ? this.readdirSync(p, options) : options ? this.readdirSync(p, options) : this.readdirSync(p);
  }

  readdirSync(p: string): string[];
  readdirSync(p: string, options: { withFileTypes: true }): StorageDirent[];
  readdirSync(p: string, options: { recursive: true }): string[];
  readdirSync(p: string, options?: { withFileTypes: true } | { recursive: true }): string[] | StorageDirent[] {
    const names = this.children(p, 'scandir');
    if (options && 'recursive' in options) {
      const base = this.key(p);
      const prefix = base === '/' ? '/' : `${base}/`;
      return [...this.entries.keys()]
        .filter((k) => k.startsWith(prefix) && k !== base)
        .map((k) => k.slice(prefix.length))
        .sort();
    }
    if (!options) return names;
    return names.map((name) => {
      const e = this.entries.get(this.path.join(this.key(p), name))!;
      return { name, isFile: () => e.kind === 'file', isDirectory: () => e.kind === 'dir' };
    });
  }

  async mkdir(p: string, options?: { recursive?: boolean }): Promise<string | undefined> {
    return this.mkdirSync(p, options);
  }

  mkdirSync(p: string, options?: { recursive?: boolean }): string | undefined {
    const k = this.key(p);
    if (this.entries.has(k)) {
      if (options?.recursive && this.entries.get(k)!.kind === 'dir') return undefined;
      throw new StorageError('EEXIST', `file already exists, mkdir '${p}'`);
    }
    if (!options?.recursive) this.parentMustExist(k, 'mkdir');
    this.makeDirs(k);
    return k;
  }

  async rm(p: string, options?: { recursive?: boolean; force?: boolean }): Promise<void> {
    this.rmSync(p, options);
  }

  rmSync(p: string, options?: { recursive?: boolean; force?: boolean }): void {
    const k = this.key(p);
    const e = this.entries.get(k);
    if (!e) {
      if (options?.force) return;
      throw new StorageError('ENOENT', `no such file or directory, rm '${p}'`);
    }
    if (e.kind === 'dir') {
      if (!options?.recursive) throw new StorageError('ERR_FS_EISDIR', `path is a directory: rm '${p}'`);
      for (const key of [...this.entries.keys()]) if (key.startsWith(`${k}/`)) this.entries.delete(key);
    }
    if (k !== '/') this.entries.delete(k);
    this.changed(k);
  }

  async rename(from: string, to: string): Promise<void> {
    const a = this.key(from);
    const b = this.key(to);
    const e = this.get(from, 'rename');
    this.parentMustExist(b, 'rename');
    if (e.kind === 'dir') {
      const target = this.entries.get(b);
      if (target?.kind === 'file') throw new StorageError('ENOTDIR', `not a directory, rename '${from}' -> '${to}'`);
      if (target?.kind === 'dir' && this.children(b, 'rename').length)
        throw new StorageError('ENOTEMPTY', `directory not empty, rename '${from}' -> '${to}'`);
      const moved: string[] = [];
      for (const [key, v] of [...this.entries]) {
        if (key === a || key.startsWith(`${a}/`)) {
          this.entries.delete(key);
          this.entries.set(b + key.slice(a.length), v);
          moved.push(b + key.slice(a.length));
        }
      }
      // the new paths first: a mirror copies them before it removes the old ones
      for (const key of moved) this.changed(key);
      this.changed(a);
      return;
    }
    if (this.entries.get(b)?.kind === 'dir')
      throw new StorageError('EISDIR', `illegal operation on a directory, rename '${from}' -> '${to}'`);
    this.entries.delete(a);
    this.entries.set(b, e);
    this.changed(b);
    this.changed(a);
  }

  async unlink(p: string): Promise<void> {
    this.unlinkSync(p);
  }

  async copyFile(from: string, to: string): Promise<void> {
    const e = this.file(from, 'copyfile');
    this.set(to, e.data instanceof Uint8Array ? new Uint8Array(e.data) : e.data, 'copyfile');
  }

  async link(from: string, to: string): Promise<void> {
    const e = this.file(from, 'link');
    if (this.entries.has(this.key(to))) throw new StorageError('EEXIST', `file already exists, link '${from}' -> '${to}'`);
    this.set(to, e.data, 'link');
  }

  async symlink(target: string, p: string): Promise<void> {
    // no links in memory: callers that can copy instead do so on ENOTSUP (the Hub cache does)
    throw new StorageError('ENOTSUP', `symbolic links are not supported here, symlink '${target}' -> '${p}'`);
  }

  async mkdtemp(prefix: string): Promise<string> {
    return this.mkdtempSync(prefix);
  }

  mkdtempSync(prefix: string): string {
    for (;;) {
      const p = prefix + this.host.randomHex(3);
      if (this.entries.has(this.key(p))) continue;
      this.mkdirSync(p);
      return this.key(p);
    }
  }

  appendFileSync(p: string, data: string | Uint8Array): void {
    const e = this.entries.get(this.key(p));
    if (e?.kind === 'file' && !(e.data instanceof Uint8Array))
      throw new StorageError('EAGAIN', `${p} is a browser file, append with appendFile`);
    const before = e?.kind === 'file' ? (e.data as Uint8Array) : new Uint8Array(0);
    const add = toBytes(data);
    const out = new Uint8Array(before.byteLength + add.byteLength);
    out.set(before, 0);
    out.set(add, before.byteLength);
    this.set(p, out, 'open');
  }

  fsyncSync(p: string): void {
    this.file(p, 'fsync');
  }

  async realpath(p: string): Promise<string> {
    this.get(p, 'realpath');
    return this.key(p);
  }

  async open(p: string, flags: OpenFlags): Promise<StorageFileHandle> {
    const k = this.key(p);
    if (flags === 'wx' && this.entries.has(k)) throw new StorageError('EEXIST', `file already exists, open '${p}'`);
    if (flags === 'w' || flags === 'wx' || (flags === 'a' && !this.entries.has(k))) this.set(k, new Uint8Array(0), 'open');
    let entry = this.file(k, 'open');
    const writable = flags !== 'r';
    // Writes grow a private buffer, stored back into the tree at every write (sync/close are no-ops).
    let buf: Uint8Array = writable ? new Uint8Array(await this.bytesOf(entry)) : new Uint8Array(0);
    let length = buf.byteLength;
    const store = (): void => {
      entry = { kind: 'file', data: buf.subarray(0, length), mtimeMs: Date.now() };
      this.entries.set(k, entry);
      this.changed(k);
    };
    const ensure = (n: number): void => {
      if (n <= buf.byteLength) return;
      const grown = new Uint8Array(Math.max(n, buf.byteLength * 2, 1024));
      grown.set(buf.subarray(0, length));
      buf = grown;
    };
    let closed = false;
    let cursor = flags === 'a' ? length : 0;
    const live = (): void => {
      if (closed) throw new StorageError('EBADF', `file closed, '${p}'`);
    };
    return {
      read: async (target, offset, len, position) => {
        live();
        const size = statsOf(entry).size;
        const end = Math.min(size, position + len);
        if (end <= position) return { bytesRead: 0 };
        const bytes = await this.bytesOf(entry, position, end);
        target.set(bytes, offset);
        return { bytesRead: bytes.byteLength };
      },
      write: async (data, offset = 0, len = data.byteLength - offset, position = null) => {
        live();
        if (!writable) throw new StorageError('EBADF', `bad file descriptor, write '${p}'`);
        const at = flags === 'a' ? length : (position ?? cursor);
        ensure(at + len);
        buf.set(data.subarray(offset, offset + len), at);
        length = Math.max(length, at + len);
        if (position === null) cursor = at + len;
        store();
        return { bytesWritten: len };
      },
      writeFile: async (data) => {
        live();
        if (!writable) throw new StorageError('EBADF', `bad file descriptor, write '${p}'`);
        const bytes = toBytes(data);
        ensure(cursor + bytes.byteLength);
        buf.set(bytes, cursor);
        cursor += bytes.byteLength;
        length = Math.max(length, cursor);
        store();
      },
      stat: async () => statsOf(entry),
      sync: async () => undefined,
      chmod: async () => undefined,
      close: async () => {
        closed = true;
      },
    };
  }

  existsSync(p: string): boolean {
    return this.entries.has(this.key(p));
  }

  statSync(p: string): StorageStats {
    return statsOf(this.get(p, 'stat'));
  }

  readFileSync(p: string, _encoding: 'utf8' = 'utf8'): string {
    const e = this.file(p, 'open');
    if (!(e.data instanceof Uint8Array)) throw new StorageError('EAGAIN', `${p} is a browser file, read it with readFile`);
    return decoder.decode(e.data);
  }

  private readonly fds = new Map<number, Uint8Array>();
  private nextFd = 3;

  openSync(p: string): number {
    const e = this.file(p, 'open');
    if (!(e.data instanceof Uint8Array)) throw new StorageError('EAGAIN', `${p} is a browser file, read it with open()`);
    const fd = this.nextFd++;
    this.fds.set(fd, e.data);
    return fd;
  }

  readSync(fd: number, buffer: Uint8Array, offset: number, length: number, position: number): number {
    const data = this.fds.get(fd);
    if (!data) throw new StorageError('EBADF', `bad file descriptor ${fd}`);
    const bytes = data.subarray(position, Math.min(data.byteLength, position + length));
    buffer.set(bytes, offset);
    return bytes.byteLength;
  }

  closeSync(fd: number): void {
    this.fds.delete(fd);
  }

  unlinkSync(p: string): void {
    const k = this.key(p);
    if (this.get(p, 'unlink').kind === 'dir') throw new StorageError('EISDIR', `illegal operation on a directory, unlink '${p}'`);
    this.entries.delete(k);
    this.changed(k);
  }
}
