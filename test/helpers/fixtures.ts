// Where the shared reference fixtures live (../shared/fixtures from the repo root, or
// PEFT_FIXTURES), and small readers for their tensors.

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
