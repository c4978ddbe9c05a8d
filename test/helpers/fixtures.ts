// Where the reference fixtures live (test/fixtures/ in the repository: fixtures = transformers 4.40 /
// peft 0.13.2, fixtures-2026 = transformers 4.57.6 / peft 0.20.0; PEFT_FIXTURES and
// PEFT_FIXTURES_2026 override), small readers for their tensors and batches, and a temp folder.

import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { resolve, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { readSafetensors, toFloat32, toBigInt64, type RawTensor } from '../../src/io/safetensors.js';
import type { HostTensor } from '../../src/runtime/session.js';

/** The repository root, found from this file (src and dist/test both sit two levels below it). */
const REPO_ROOT = resolve(fileURLToPath(new URL('.', import.meta.url)), import.meta.url.includes('/dist/') ? '../../..' : '../..');
export const FIXTURES = process.env.PEFT_FIXTURES ?? join(REPO_ROOT, 'test/fixtures/fixtures');
export const FIXTURES_2026 = process.env.PEFT_FIXTURES_2026 ?? join(REPO_ROOT, 'test/fixtures/fixtures-2026');
export const fixture2026Path = (...parts: string[]): string => join(FIXTURES_2026, ...parts);
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
