// TensorBoard event files: CRC-32C against the iSCSI test vectors (RFC 3720), TFRecord framing,
// and the written file decoded back by an independent protobuf reader (file_version first, then
// one Summary of scalars per step).

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, join } from 'node:path';
import { TensorBoardWriter, crc32c, maskedCrc32c } from '../../src/train/tfevents.js';
import { decode } from '../helpers/tfevents.js';

test('crc32c matches RFC 3720 test vectors; masked form as TFRecord defines it', () => {
  assert.equal(crc32c(new TextEncoder().encode('123456789')), 0xe3069283);
  assert.equal(crc32c(new Uint8Array(32)), 0x8a9136aa);
  assert.equal(crc32c(new Uint8Array(32).fill(0xff)), 0x62a8ab43);
  assert.equal(crc32c(Uint8Array.from({ length: 32 }, (_, i) => i)), 0x46dd794e);
  assert.equal(maskedCrc32c(new Uint8Array(0)), 0xa282ead8);
});

test('TensorBoardWriter writes framed events a reader decodes back', () => {
  const dir = mkdtempSync(join(tmpdir(), 'peft-tb-'));
  try {
    const w = new TensorBoardWriter(dir, new Date(1_700_000_000_000));
    w.add(1, { 'train/loss': 2.5, 'train/learning_rate': 1e-3 }, 1_700_000_001);
    w.add(2, { 'eval/loss': 2.25, 'train/nan': Number.NaN }, 1_700_000_002);
    w.sync();
    assert.match(basename(w.path), /^events\.out\.tfevents\.1700000000\./);
    const bytes = new Uint8Array(readFileSync(w.path));
    const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    const events: Map<number, (bigint | Uint8Array)[]>[] = [];
    for (let off = 0; off < bytes.length;) {
      const len = Number(view.getBigUint64(off, true));
      assert.equal(view.getUint32(off + 8, true), maskedCrc32c(bytes.subarray(off, off + 8)));
      const data = bytes.subarray(off + 12, off + 12 + len);
      assert.equal(view.getUint32(off + 12 + len, true), maskedCrc32c(data));
      events.push(decode(data));
      off += 16 + len;
    }
    assert.equal(events.length, 3);
    assert.equal(new TextDecoder().decode(events[0]!.get(3)![0] as Uint8Array), 'brain.Event:2');
    const scalars = (e: Map<number, (bigint | Uint8Array)[]>): Record<string, number> => {
      const summary = decode(e.get(5)![0] as Uint8Array);
      return Object.fromEntries(
        summary.get(1)!.map((v) => {
          const val = decode(v as Uint8Array);
          const f = val.get(2)![0] as Uint8Array;
          return [new TextDecoder().decode(val.get(1)![0] as Uint8Array), new DataView(f.buffer, f.byteOffset, 4).getFloat32(0, true)];
        }),
      );
    };
    assert.equal(events[1]!.get(2)![0], 1n);
    const wall = events[1]!.get(1)![0] as Uint8Array;
    assert.equal(new DataView(wall.buffer, wall.byteOffset, 8).getFloat64(0, true), 1_700_000_001);
    assert.deepEqual(scalars(events[1]!), { 'train/loss': 2.5, 'train/learning_rate': Math.fround(1e-3) });
    assert.deepEqual(scalars(events[2]!), { 'eval/loss': 2.25 }, 'NaN scalars are skipped');
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
