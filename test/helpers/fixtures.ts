// Where the shared reference fixtures live (../shared/fixtures from the repo root, or
// PEFT_FIXTURES), small readers for their tensors and batches, and a temp folder for a test.

import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { resolve, join } from 'node:path';
import { readSafetensors, toFloat32, toBigInt64, type RawTensor } from '../../src/io/safetensors.js';
import type { HostTensor } from '../../src/runtime/session.js';

export const FIXTURES = process.env.PEFT_FIXTURES ?? resolve(process.cwd(), '../shared/fixtures');
export const fixturePath = (...parts: string[]): string => join(FIXTURES, ...parts);

export async function readTensors(...parts: string[]): Promise<Map<string, RawTensor>> {
  return readSafetensors(fixturePath(...parts));
}

export function host(t: RawTensor): HostTensor {
  if (t.dtype === 'I64') return { dtype: 'int64', shape: t.shape, data: toBigInt64(t) };
  return { dtype: 'float32', shape: t.shape, data: toFloat32(t) };
}

export function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  if (a.length !== b.length) throw new Error(`length ${a.length} vs ${b.length}`);
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]! - b[i]!));
  return m;
}

/** A model fixture's batch.safetensors as session feeds. */
export interface Batch {
  input_ids: HostTensor;
  attention_mask: HostTensor;
  labels: HostTensor;
}

export async function fixtureBatch(model: string): Promise<Batch> {
  const b = await readTensors('models', model, 'batch.safetensors');
  return { input_ids: host(b.get('input_ids')!), attention_mask: host(b.get('attention_mask')!), labels: host(b.get('labels')!) };
}

/** Runs `fn` in a fresh temp folder whose name starts with `prefix`, removed afterwards. */
export async function inTempDir<T>(prefix: string, fn: (dir: string) => Promise<T>): Promise<T> {
  const dir = await mkdtemp(join(tmpdir(), prefix));
  try {
    return await fn(dir);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}
