// An independent reader of TensorBoard event files for the tests: TFRecord frames with their CRCs
// checked, and a minimal protobuf decoder (field number -> raw values).

import { readFileSync } from 'node:fs';
import { maskedCrc32c } from '../../src/train/tfevents.js';

/** Minimal protobuf reader: field number -> list of raw values (varint as bigint, fixed as bytes, length-delimited as bytes). */
export function decode(buf: Uint8Array): Map<number, (bigint | Uint8Array)[]> {
  const out = new Map<number, (bigint | Uint8Array)[]>();
  let i = 0;
  const varint = (): bigint => {
    let x = 0n;
    let shift = 0n;
    for (;;) {
      const b = buf[i++]!;
      x |= BigInt(b & 0x7f) << shift;
      if (!(b & 0x80)) return x;
      shift += 7n;
    }
  };
  while (i < buf.length) {
    const key = Number(varint());
    const field = key >> 3;
    const wire = key & 7;
    let v: bigint | Uint8Array;
    if (wire === 0) v = varint();
    else if (wire === 1) {
      v = buf.slice(i, i + 8);
      i += 8;
    } else if (wire === 5) {
      v = buf.slice(i, i + 4);
      i += 4;
    } else if (wire === 2) {
      const n = Number(varint());
      v = buf.slice(i, i + n);
      i += n;
    } else throw new Error(`wire type ${wire}`);
    out.set(field, [...(out.get(field) ?? []), v]);
  }
  return out;
}

/** Every event's step and scalars (the first, file_version event has none). */
export function readEventScalars(path: string): { step: number; scalars: Record<string, number> }[] {
  const bytes = new Uint8Array(readFileSync(path));
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const out: { step: number; scalars: Record<string, number> }[] = [];
  for (let off = 0; off < bytes.length;) {
    const len = Number(view.getBigUint64(off, true));
    if (view.getUint32(off + 8, true) !== maskedCrc32c(bytes.subarray(off, off + 8))) throw new Error(`bad length crc at ${off}`);
    const data = bytes.subarray(off + 12, off + 12 + len);
    if (view.getUint32(off + 12 + len, true) !== maskedCrc32c(data)) throw new Error(`bad data crc at ${off}`);
    const e = decode(data);
    if (e.has(5)) {
      const summary = decode(e.get(5)![0] as Uint8Array);
      const scalars: Record<string, number> = {};
      for (const v of summary.get(1) ?? []) {
        const val = decode(v as Uint8Array);
        const f = val.get(2)![0] as Uint8Array;
        scalars[new TextDecoder().decode(val.get(1)![0] as Uint8Array)] = new DataView(f.buffer, f.byteOffset, 4).getFloat32(0, true);
      }
      out.push({ step: Number(e.get(2)?.[0] ?? 0n), scalars });
    }
    off += 16 + len;
  }
  return out;
}
