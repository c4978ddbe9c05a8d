// TensorBoard event files (`--report-to tensorboard`): scalars written as TensorFlow `Event`
// protocol buffers in TFRecord framing, the format TensorBoard's event reader and
// torch.utils.tensorboard's SummaryWriter use. A file is
//   record*: uint64 length (little endian) | uint32 masked crc32c(length) | data | uint32 masked crc32c(data)
// whose first event carries file_version "brain.Event:2" and every other one a Summary of
// scalar values (Summary.Value.tag, simple_value) at a step and wall time.

import { appendFileSync, fsyncSync, host, join } from '../storage/index.js';
import { PbWriter } from '../onnx/protobuf.js';

const CRC32C_TABLE = (() => {
  const t = new Uint32Array(256);
  for (let i = 0; i < 256; i++) {
    let c = i;
    for (let k = 0; k < 8; k++) c = c & 1 ? (c >>> 1) ^ 0x82f63b78 : c >>> 1;
    t[i] = c >>> 0;
  }
  return t;
})();

/** CRC-32C (Castagnoli), as TFRecord uses. */
export function crc32c(data: Uint8Array): number {
  let c = 0xffffffff;
  for (let i = 0; i < data.length; i++) c = CRC32C_TABLE[(c ^ data[i]!) & 0xff]! ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}

/** TFRecord's masked CRC: rotate right by 15 and add a constant. */
export function maskedCrc32c(data: Uint8Array): number {
  const c = crc32c(data);
  return ((((c >>> 15) | (c << 17)) >>> 0) + 0xa282ead8) >>> 0;
}

/** One TFRecord frame around `data`. */
function tfRecord(data: Uint8Array): Uint8Array {
  const out = new Uint8Array(8 + 4 + data.length + 4);
  const view = new DataView(out.buffer);
  view.setBigUint64(0, BigInt(data.length), true);
  view.setUint32(8, maskedCrc32c(out.subarray(0, 8)), true);
  out.set(data, 12);
  view.setUint32(12 + data.length, maskedCrc32c(data), true);
  return out;
}

/** An Event message: wall_time = 1 (double), step = 2 (int64), file_version = 3, summary = 5. */
function eventBytes(wallTime: number, step: number, body: { fileVersion: string } | { scalars: Record<string, number> }): Uint8Array {
  const w = new PbWriter().double(1, wallTime).varint(2, step);
  if ('fileVersion' in body) w.string(3, body.fileVersion);
  else {
    const summary = new PbWriter();
    for (const [tag, value] of Object.entries(body.scalars)) {
      // Summary.value = 1: Value { tag = 1, simple_value = 2 (float) }
      summary.message(1, new PbWriter().string(1, tag).float(2, value));
    }
    w.message(5, summary);
  }
  return w.finish();
}

/** Appends scalar events to one `events.out.tfevents.<time>.<host>` file in a run folder. */
export class TensorBoardWriter {
  readonly path: string;

  constructor(dir: string, now: Date = new Date()) {
    this.path = join(dir, `events.out.tfevents.${Math.floor(now.getTime() / 1000)}.${host.hostname().replace(/[^A-Za-z0-9._-]/g, '_')}`);
    appendFileSync(this.path, '');
    appendFileSync(this.path, tfRecord(eventBytes(now.getTime() / 1000, 0, { fileVersion: 'brain.Event:2' })));
  }

  /** Scalars of one step (non-finite values are skipped: TensorBoard cannot plot them). */
  add(step: number, scalars: Record<string, number>, wallTime = Date.now() / 1000): void {
    const finite = Object.fromEntries(Object.entries(scalars).filter(([, v]) => Number.isFinite(v)));
    if (Object.keys(finite).length === 0) return;
    appendFileSync(this.path, tfRecord(eventBytes(wallTime, step, { scalars: finite })));
  }

  /** Flushes the file to disk. */
  sync(): void {
    fsyncSync(this.path);
  }
}
