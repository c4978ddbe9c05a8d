// Persistence for the browser build: one folder of a MemoryStorage (say /opfs) mirrored into the
// Origin Private File System (navigator.storage.getDirectory()), so an adapter or checkpoint the
// library writes there is still there after a reload. Reads stay in memory (files already in OPFS
// are added as lazily read File objects at mount); every change under the folder is replayed into
// OPFS in order, each file written whole through a writable stream (committed atomically on close).

import type { MemoryStorage } from './memory.js';

/** The parts of the File System API the mirror uses (FileSystemDirectoryHandle / FileSystemFileHandle). */
export interface OpfsDirectoryHandle {
  readonly kind: 'directory';
  readonly name: string;
  getDirectoryHandle(name: string, options?: { create?: boolean }): Promise<OpfsDirectoryHandle>;
  getFileHandle(name: string, options?: { create?: boolean }): Promise<OpfsFileHandle>;
  removeEntry(name: string, options?: { recursive?: boolean }): Promise<void>;
  entries(): AsyncIterable<[string, OpfsDirectoryHandle | OpfsFileHandle]>;
}
export interface OpfsFileHandle {
  readonly kind: 'file';
  readonly name: string;
  getFile(): Promise<Blob>;
  /** window and worker (Chromium, Firefox) */
  createWritable?(): Promise<{ write(data: Uint8Array): Promise<void>; close(): Promise<void> }>;
  /** workers only (Safari has only this one) */
  createSyncAccessHandle?(): Promise<{
    truncate(size: number): void;
    write(data: Uint8Array, options?: { at?: number }): number;
    flush(): void;
    close(): void;
  }>;
}

/** The origin's OPFS root, or undefined where the browser has none (or in Node). */
export async function opfsRoot(): Promise<OpfsDirectoryHandle | undefined> {
  const storage = (globalThis.navigator as { storage?: { getDirectory?: () => Promise<OpfsDirectoryHandle> } } | undefined)?.storage;
  if (!storage?.getDirectory) return undefined;
  return storage.getDirectory();
}

const isNotFound = (e: unknown): boolean => (e as { name?: string })?.name === 'NotFoundError';

export class OpfsMirror {
  private queue: Promise<void> = Promise.resolve();
  private failure: Error | undefined;
  /** OPFS Files that back memory entries, by the path they were read from */
  private readonly origin = new Map<string, Blob>();

  private constructor(
    private readonly files: MemoryStorage,
    /** the folder of `files` that is mirrored, e.g. '/opfs' */
    readonly at: string,
    private readonly root: OpfsDirectoryHandle,
  ) {}

  /**
   * Adds the files of `root` (default: the origin's OPFS root) under `at` in `files`, then mirrors
   * every later change below `at` into it. Undefined where the browser has no OPFS.
   */
  static async mount(files: MemoryStorage, at = '/opfs', root?: OpfsDirectoryHandle): Promise<OpfsMirror | undefined> {
    const dir = root ?? (await opfsRoot());
    if (!dir) return undefined;
    const base = files.path.resolve(at);
    const mirror = new OpfsMirror(files, base, dir);
    await files.mkdir(base, { recursive: true });
    await mirror.load(dir, base);
    const previous = files.onChange;
    files.onChange = (p) => {
      previous?.(p);
      if (p === base || p.startsWith(`${base}/`)) mirror.enqueue(p);
    };
    return mirror;
  }

  private async load(dir: OpfsDirectoryHandle, at: string): Promise<void> {
    for await (const [name, h] of dir.entries()) {
      const p = `${at}/${name}`;
      if (h.kind === 'directory') {
        await this.files.mkdir(p, { recursive: true });
        await this.load(h, p);
      } else {
        const file = await h.getFile();
        this.files.addFile(p, file);
        this.origin.set(p, file);
      }
    }
  }

  private enqueue(p: string): void {
    this.queue = this.queue.then(() =>
      this.apply(p).catch((e: unknown) => {
        this.failure ??= e instanceof Error ? e : new Error(String(e));
      }),
    );
  }

  /** Resolves once every change made so far is in OPFS; throws the first one that failed. */
  async flush(): Promise<void> {
    await this.queue;
    if (this.failure) {
      const e = this.failure;
      this.failure = undefined;
      throw e;
    }
  }

  /** The path's parts below the mirrored folder ('' for the folder itself). */
  private parts(p: string): string[] {
    return p.slice(this.at.length).split('/').filter(Boolean);
  }

  private async folder(parts: readonly string[], create: boolean): Promise<OpfsDirectoryHandle> {
    let d = this.root;
    for (const name of parts) d = await d.getDirectoryHandle(name, { create });
    return d;
  }

  /** Memory entries read lazily from OPFS files at or below `p` take their bytes before those files change. */
  private async release(p: string): Promise<void> {
    for (const [q, blob] of [...this.origin]) {
      if (q !== p && !q.startsWith(`${p}/`)) continue;
      await this.files.materialize(blob);
      this.origin.delete(q);
    }
  }

  /** Makes OPFS hold what memory holds at `p` now: the file's bytes, the folder, or nothing. */
  private async apply(p: string): Promise<void> {
    const parts = this.parts(p);
    const exists = this.files.existsSync(p);
    if (exists && this.files.statSync(p).isDirectory()) {
      await this.folder(parts, true);
      return;
    }
    if (exists) {
      const data = await this.files.readFile(p);
      await this.release(p);
      // a later change may have removed or replaced it meanwhile: that change is queued too
      const dir = await this.folder(parts.slice(0, -1), true);
      const handle = await dir.getFileHandle(parts[parts.length - 1]!, { create: true });
      if (handle.createWritable) {
        const w = await handle.createWritable();
        await w.write(data);
        await w.close();
      } else if (handle.createSyncAccessHandle) {
        const h = await handle.createSyncAccessHandle();
        try {
          h.truncate(0);
          h.write(data, { at: 0 });
          h.flush();
        } finally {
          h.close();
        }
      } else throw new Error(`this browser cannot write files in the Origin Private File System (${p})`);
      return;
    }
    await this.release(p);
    if (parts.length === 0) return;
    try {
      const dir = await this.folder(parts.slice(0, -1), false);
      await dir.removeEntry(parts[parts.length - 1]!, { recursive: true });
    } catch (e) {
      if (!isNotFound(e)) throw e;
    }
  }
}
