// Writing safetensors files in the reference layout. Files are replaced atomically
// (writeFileAtomic: temp file in the same folder, fsync, rename) so a crash mid-save never leaves a truncated checkpoint where a
// good one used to be.

import { type StorageFileHandle as FileHandle } from '../../storage/index.js';
import { writeFileAtomic, writeFailure } from '../atomic.js';
import { SafetensorsError } from './errors.js';

import { type TensorInput, layout } from './header.js';

/** The whole file as one buffer: header then every tensor's bytes. */
export function serializeSafetensors(tensors: TensorInput, metadata?: Record<string, string>): Uint8Array {
  const { header, tensors: ordered, dataSize } = layout(tensors, metadata, '<memory>');
  const out = new Uint8Array(header.byteLength + dataSize);
  out.set(header, 0);
  let pos = header.byteLength;
  for (const [, t] of ordered) {
    out.set(t.data, pos);
    pos += t.data.byteLength;
  }
  return out;
}

// Small tensors are gathered into one buffer so a file of thousands of biases is a few writes.
const STAGING_BYTES = 8 << 20;
const WRITE_CHUNK = 1 << 30;

async function writeAll(fh: FileHandle, data: Uint8Array, position: number): Promise<void> {
  let done = 0;
  while (done < data.byteLength) {
    const length = Math.min(WRITE_CHUNK, data.byteLength - done);
    const { bytesWritten } = await fh.write(data, done, length, position + done);
    if (bytesWritten === 0) throw new Error(`no progress writing at byte ${position + done}`);
    done += bytesWritten;
  }
}

/**
 * Writes `tensors` to `path` atomically. Accepts a record or a Map; tensors are laid out by dtype
 * then name whatever their input order, as the reference writer does.
 */
export async function writeSafetensors(path: string, tensors: TensorInput, metadata?: Record<string, string>): Promise<void> {
  const { header, tensors: ordered, dataSize } = layout(tensors, metadata, path);
  await writeFileAtomic(path, async (fh) => {
    const staging = new Uint8Array(Math.min(STAGING_BYTES, header.byteLength + dataSize));
    let staged = 0;
    let pos = 0;
    const flush = async (): Promise<void> => {
      await writeAll(fh, staging.subarray(0, staged), pos);
      pos += staged;
      staged = 0;
    };
    for (const data of [header, ...ordered.map(([, t]) => t.data)]) {
      if (data.byteLength >= staging.byteLength) {
        await flush();
        await writeAll(fh, data, pos);
        pos += data.byteLength;
        continue;
      }
      if (staged + data.byteLength > staging.byteLength) await flush();
      staging.set(data, staged);
      staged += data.byteLength;
    }
    await flush();
  }).catch((e: unknown) => {
    if (e instanceof SafetensorsError) throw e;
    throw new SafetensorsError(path, `write failed: ${writeFailure(e)}`, undefined, { cause: e });
  });
}
