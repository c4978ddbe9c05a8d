// What the export tests share: a LoRA adapter trained on the bundled tiny Llama (a few steps of
// `peft train` on the bundled sentiment task, made once per test file), and @huggingface/transformers
// set up to read local folders only.

import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { peft } from '../cli/peft.js';

export const REPO = resolve(fileURLToPath(new URL('.', import.meta.url)), '../../..');
export const TINY_LLAMA = join(REPO, 'models/tiny-llama');

/** A temp folder removed when the process exits. */
export function tempDir(prefix: string): string {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  process.on('exit', () => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

/** Trains a LoRA adapter (q/k/v/o + MLP, 12 steps) on the tiny Llama into `dir`/adapter. */
export async function trainTinyAdapter(dir: string): Promise<string> {
  const out = join(dir, 'adapter');
  const r = await peft([
    'train', '--model', TINY_LLAMA, '--data', join(REPO, 'data/tasks/sentiment/train.jsonl'), '--out', out,
    '--steps', '12', '--lr', '3e-3', '--batch', '4', '--r', '4', '--alpha', '8', '--dropout', '0',
    '--target', 'q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj', '--no-eval-at-start', '--threads', '1', '--seed', '7',
  ]);
  assert.equal(r.code, 0, r.stderr);
  return out;
}

/** transformers.js, offline. */
export async function transformersJs(): Promise<typeof import('@huggingface/transformers')> {
  const t = await import('@huggingface/transformers');
  t.env.allowRemoteModels = false;
  t.env.allowLocalModels = true;
  return t;
}

export function maxAbs(a: ArrayLike<number>, b: ArrayLike<number>): number {
  assert.equal(a.length, b.length);
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]! - b[i]!));
  return m;
}

/** Every |a - b| <= atol + rtol * |b|. */
export function assertClose(a: ArrayLike<number>, b: ArrayLike<number>, atol: number, rtol: number, what: string): void {
  assert.equal(a.length, b.length, `${what}: length`);
  for (let i = 0; i < a.length; i++) {
    const d = Math.abs(a[i]! - b[i]!);
    if (!(d <= atol + rtol * Math.abs(b[i]!))) assert.fail(`${what}: element ${i}: ${a[i]} vs ${b[i]} (max abs diff ${maxAbs(a, b)})`);
  }
}
