// What the export tests share: a LoRA adapter trained on the bundled tiny Llama (a few steps of
// `peft train` on the bundled sentiment task, made once per test file), and @huggingface/transformers
// set up to read local folders only.

import assert from 'node:assert/strict';
import { copyFileSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { type RawTensor, readSafetensors, serializeSafetensors } from '../../src/io/safetensors.js';
import { fixturePath } from '../helpers/fixtures.js';
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
    'train',
    '--model',
    TINY_LLAMA,
    '--data',
    join(REPO, 'data/tasks/sentiment/train.jsonl'),
    '--out',
    out,
    '--steps',
    '12',
    '--lr',
    '3e-3',
    '--batch',
    '4',
    '--r',
    '4',
    '--alpha',
    '8',
    '--dropout',
    '0',
    '--target',
    'q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj',
    '--no-eval-at-start',
    '--threads',
    '1',
    '--seed',
    '7',
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

/**
 * A model folder derived from a fixture model: config.json fields replaced, tensors rewritten by
 * `tensors` (default unchanged); tokenizer and generation files copied. For architectures whose
 * llama.cpp form needs a configuration the fixtures do not have (see each use).
 */
export async function derivedModel(
  tmp: string,
  name: string,
  from: string,
  config: Record<string, unknown>,
  tensors?: (t: Map<string, RawTensor>) => Map<string, RawTensor>,
  files = { config: 'config.json', weights: 'model.safetensors' },
): Promise<string> {
  const dir = join(tmp, `model-${name}`);
  mkdirSync(dir);
  for (const f of readdirSync(from)) if (f.endsWith('.json') || f === 'merges.txt') copyFileSync(join(from, f), join(dir, f));
  const cfg = JSON.parse(readFileSync(join(from, files.config), 'utf8')) as Record<string, unknown>;
  writeFileSync(join(dir, files.config), JSON.stringify({ ...cfg, ...config }, null, 2));
  const weights = await readSafetensors(join(from, files.weights));
  writeFileSync(join(dir, files.weights), serializeSafetensors(tensors ? tensors(weights) : weights));
  return dir;
}

/** Tensors of layers `from[i]` renamed to layer i (`prefix` before "layers."). */
export function relayer(w: Map<string, RawTensor>, from: readonly number[]): Map<string, RawTensor> {
  const out = new Map([...w].filter(([k]) => !/(^|\.)layers\.\d+\./.test(k)));
  for (const [k, t] of w) {
    const m = /^(.*?layers\.)(\d+)(\..+)$/.exec(k);
    if (m) from.forEach((src, to) => src === Number(m[2]) && out.set(`${m[1]}${to}${m[3]}`, t));
  }
  return out;
}

/** Seeded float32 tensor (a small LCG; values in [-0.1, 0.1)). */
export function noise(shape: number[], seed: number): RawTensor {
  const n = shape.reduce((a, b) => a * b, 1);
  const v = new Float32Array(n);
  let x = seed >>> 0;
  for (let i = 0; i < n; i++) {
    x = (Math.imul(x, 1664525) + 1013904223) >>> 0;
    v[i] = (x / 2 ** 32 - 0.5) * 0.2;
  }
  return { dtype: 'F32', shape, data: new Uint8Array(v.buffer) };
}

/** The llama fixture as a Mistral checkpoint (same tensors; model_type mistral, no sliding window). */
export function mistralFromLlama(tmp: string): Promise<string> {
  return derivedModel(tmp, 'mistral', fixturePath('models', 'llama'), {
    model_type: 'mistral',
    architectures: ['MistralForCausalLM'],
    sliding_window: null,
  });
}

/** The llama fixture as a Qwen2 checkpoint: Qwen2 always has q/k/v biases, so seeded ones are added. */
export function qwen2FromLlama(tmp: string): Promise<string> {
  return derivedModel(
    tmp,
    'qwen2',
    fixturePath('models', 'llama'),
    { model_type: 'qwen2', architectures: ['Qwen2ForCausalLM'], use_sliding_window: false },
    (w) => {
      const out = new Map(w);
      for (const [k, t] of w) {
        const m = /^(model\.layers\.\d+\.self_attn\.[qkv]_proj)\.weight$/.exec(k);
        if (m) out.set(`${m[1]}.bias`, noise([t.shape[0]!], out.size));
      }
      return out;
    },
  );
}
