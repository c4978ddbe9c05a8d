// Reading safetensors files. Opening parses only the header, through a file handle, so a
// multi-gigabyte checkpoint costs a few kilobytes until tensors are asked for; each tensor is then
// read on its own with a positional read.

import { open, type StorageFileHandle as FileHandle } from '../../storage/index.js';
import { SafetensorsError, ioError } from './errors.js';
import { regularFileSize } from '../files.js';
import { DTYPE_BYTES, type RawTensor } from './dtype.js';
import { type TensorInfo, headerLength, parseHeader } from './header.js';

/** What both a single file and a sharded checkpoint offer. */
export interface TensorSource {
  /** Tensor names, in file order. */
  names(): string[];
  has(name: string): boolean;
  info(name: string): TensorInfo;
  read(name: string): Promise<RawTensor>;
  readAll(): Promise<Map<string, RawTensor>>;
  close(): Promise<void>;
}

// fs reads are capped just under 2 GiB per call.
const READ_CHUNK = 1 << 30;
// Up to this much data, readAll fetches the whole buffer with one read instead of one per tensor.
const SINGLE_READ_LIMIT = 1 << 30;

/** Fills `target` from `position`, failing cleanly if the file turns out shorter than expected. */
export async function readFully(fh: FileHandle, target: Uint8Array, position: number, file: string, tensor?: string): Promise<void> {
  let done = 0;
  while (done < target.byteLength) {
    const length = Math.min(READ_CHUNK, target.byteLength - done);
    let bytesRead: number;
    try {
      ({ bytesRead } = await fh.read(target, done, length, position + done));
    } catch (e) {
      throw ioError(file, 'read', e, tensor);
    }
    if (bytesRead === 0) {
      throw new SafetensorsError(
        file,
        `file ends at byte ${position + done}, expected at least ${position + target.byteLength} (truncated while open?)`,
        tensor,
      );
    }
    done += bytesRead;
  }
}

function copyInfo(t: TensorInfo): TensorInfo {
  return { ...t, shape: [...t.shape] };
}

export class SafetensorsFile implements TensorSource {
  readonly path: string;
  /** The `__metadata__` map, or undefined when the file has none. */
  readonly metadata: Record<string, string> | undefined;
  /** Size of the whole file when it was opened. */
  readonly fileSize: number;
  private handle: FileHandle | undefined;
  private readonly ordered: TensorInfo[];
  private readonly byName: Map<string, TensorInfo>;

  private constructor(
    path: string,
    handle: FileHandle,
    tensors: TensorInfo[],
    metadata: Record<string, string> | undefined,
    fileSize: number,
  ) {
    this.path = path;
    this.handle = handle;
    this.ordered = tensors;
    this.byName = new Map(tensors.map((t) => [t.name, t]));
    this.metadata = metadata;
    this.fileSize = fileSize;
  }

  /** Opens `path` and validates its header; tensor bytes are not read yet. */
  static async open(path: string): Promise<SafetensorsFile> {
    // stat before open: opening a FIFO blocks until a writer appears, a device never ends.
    await regularFileSize(
      path,
      (reason) => new SafetensorsError(path, `not a regular file (${reason}); a checkpoint must be a regular file`),
      true,
    );
    let fh: FileHandle;
    try {
      fh = await open(path, 'r');
    } catch (e) {
      throw ioError(path, 'open', e);
    }
    try {
      const stats = await fh.stat();
      if (!stats.isFile()) throw new SafetensorsError(path, 'not a regular file');
      const prefix = new Uint8Array(8);
      if (stats.size >= 8) await readFully(fh, prefix, 0, path);
      const n = headerLength(prefix, stats.size, path);
      const json = new Uint8Array(n);
      await readFully(fh, json, 8, path);
      const { tensors, metadata } = parseHeader(json, stats.size, path);
      return new SafetensorsFile(path, fh, tensors, metadata, stats.size);
    } catch (e) {
      await fh.close().catch(() => undefined);
      throw ioError(path, 'open', e);
    }
  }

  names(): string[] {
    return this.ordered.map((t) => t.name);
  }

  has(name: string): boolean {
    return this.byName.has(name);
  }

  info(name: string): TensorInfo {
    const t = this.byName.get(name);
    if (!t) throw new SafetensorsError(this.path, 'no such tensor in this file', name);
    return copyInfo(t);
  }

  /** All tensor infos, in file order. */
  infos(): TensorInfo[] {
    return this.ordered.map(copyInfo);
  }

  /** Reads one tensor's bytes into a fresh (hence aligned) buffer. */
  async read(name: string): Promise<RawTensor> {
    const t = this.info(name);
    const fh = this.live(name);
    const data = new Uint8Array(t.byteLength);
    await readFully(fh, data, t.byteOffset, this.path, name);
    return { dtype: t.dtype, shape: t.shape, data };
  }

  /**
   * Reads every tensor. Small files come in with one read and the tensors share its buffer (views
   * of it, copied only where a tensor would sit misaligned); large ones are read tensor by tensor.
   */
  async readAll(): Promise<Map<string, RawTensor>> {
    const out = new Map<string, RawTensor>();
    if (this.ordered.length === 0) return out;
    const start = this.ordered[0]!.byteOffset;
    const size = this.fileSize - start;
    if (size > SINGLE_READ_LIMIT) {
      for (const t of this.ordered) out.set(t.name, await this.read(t.name));
      return out;
    }
    const buf = new Uint8Array(size);
    await readFully(this.live(), buf, start, this.path);
    for (const t of this.ordered) {
      const rel = t.byteOffset - start;
      let data = buf.subarray(rel, rel + t.byteLength);
      if (rel % DTYPE_BYTES[t.dtype] !== 0) data = data.slice();
      out.set(t.name, { dtype: t.dtype, shape: [...t.shape], data });
    }
    return out;
  }

  /** Releases the file handle; further reads fail. Safe to call twice. */
  async close(): Promise<void> {
    const fh = this.handle;
    this.handle = undefined;
    if (fh) await fh.close().catch((e: unknown) => Promise.reject(ioError(this.path, 'close', e)));
  }

  private live(tensor?: string): FileHandle {
    if (!this.handle) throw new SafetensorsError(this.path, 'file is closed', tensor);
    return this.handle;
  }
}

/** Parses a whole safetensors image held in memory; tensor data are views into `bytes`. */
export function deserializeSafetensors(
  bytes: Uint8Array,
  label = '<memory>',
): { tensors: Map<string, RawTensor>; metadata: Record<string, string> | undefined } {
  const n = headerLength(bytes, bytes.byteLength, label);
  const { tensors, metadata } = parseHeader(bytes.subarray(8, 8 + n), bytes.byteLength, label);
  const out = new Map<string, RawTensor>();
  for (const t of tensors) {
    out.set(t.name, { dtype: t.dtype, shape: t.shape, data: bytes.subarray(t.byteOffset, t.byteOffset + t.byteLength) });
  }
  return { tensors: out, metadata };
}

/** Loads every tensor of one file. */
export async function readSafetensors(path: string): Promise<Map<string, RawTensor>> {
  const f = await SafetensorsFile.open(path);
  try {
    return await f.readAll();
  } finally {
    await f.close();
  }
}
