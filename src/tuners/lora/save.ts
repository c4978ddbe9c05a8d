// LoRA's tensor names and adapter folders. tensorNames() is the one mapping from a module path to
// both names a tensor has (graph/in-memory peft name, adapter_model.safetensors key); saving reads
// it forwards and loading inverts the very same table, so the two cannot drift apart.

import { existsSync, statSync } from 'node:fs';
import { mkdir, open, readFile, rename, unlink } from 'node:fs/promises';
import { join } from 'node:path';
import { type RawTensor, fromTypedArray, readSafetensors, toFloat32, writeSafetensors } from '../../io/safetensors.js';
import { AdapterError, type TrainableTensor } from '../types.js';
import { type LoraConfig, loraConfigFileText } from './config.js';

export type TensorKind = 'lora_A' | 'lora_B' | 'lora_magnitude_vector' | 'base';

/** The prefix peft's PeftModel puts in front of the base model's module names. */
export const PEFT_PREFIX = 'base_model.model.';

/**
 * Names of one adapter tensor. `kind` 'base' is a base-model weight the adapter replaces (a
 * modules_to_save copy or a trained bias), named `weight`; `wrapped` says whether its module is
 * a LoRA layer, whose own bias peft saves as `<module>.base_layer.bias`.
 */
export function tensorNames(kind: TensorKind, module: string, adapter: string, opts: { weight?: string; wrapped?: boolean } = {}): { param: string; saved: string } {
  switch (kind) {
    case 'lora_A':
    case 'lora_B':
      return { param: `${PEFT_PREFIX}${module}.${kind}.${adapter}.weight`, saved: `${PEFT_PREFIX}${module}.${kind}.weight` };
    case 'lora_magnitude_vector':
      // peft keeps the pre-refactor key without ".weight" on disk.
      return { param: `${PEFT_PREFIX}${module}.${kind}.${adapter}.weight`, saved: `${PEFT_PREFIX}${module}.${kind}` };
    case 'base': {
      const weight = opts.weight ?? `${module}.weight`;
      const saved = opts.wrapped && weight === `${module}.bias` ? `${PEFT_PREFIX}${module}.base_layer.bias` : `${PEFT_PREFIX}${weight}`;
      return { param: weight, saved };
    }
  }
}

/** One tensor an adapter owns, with both of its names. */
export interface TensorSlot {
  kind: TensorKind;
  module: string;
  param: string;
  /** null: peft 0.13.2 does not save it (bias='lora_only') */
  saved: string | null;
  tensor: TrainableTensor;
}

async function writeTextAtomically(path: string, text: string): Promise<void> {
  const tmp = `${path}.${process.pid}.${Date.now()}.tmp`;
  const fh = await open(tmp, 'wx');
  try {
    await fh.writeFile(text, 'utf8');
    await fh.sync();
  } finally {
    await fh.close();
  }
  try {
    await rename(tmp, path);
  } catch (e) {
    await unlink(tmp).catch(() => undefined);
    throw e;
  }
}

/** Checks that `dir` can hold an adapter before anything is written. */
export function checkOutputDir(dir: string): void {
  if (existsSync(dir) && !statSync(dir).isDirectory()) throw new AdapterError(`cannot save the adapter to ${dir}: it exists and is not a folder`);
}

/** Writes adapter_model.safetensors, adapter_config.json (and a model card if none) in peft's layout. */
export async function writeAdapterFolder(dir: string, config: LoraConfig, slots: readonly TensorSlot[]): Promise<void> {
  checkOutputDir(dir);
  const tensors = new Map<string, RawTensor>();
  for (const s of slots) {
    if (s.saved === null) continue;
    if (tensors.has(s.saved)) throw new AdapterError(`two adapter tensors would be saved as ${s.saved}`);
    tensors.set(s.saved, fromTypedArray(s.tensor.data, s.tensor.shape));
  }
  // peft always writes inference_mode=true.
  const text = loraConfigFileText({ ...config, inferenceMode: true });
  await mkdir(dir, { recursive: true });
  await writeSafetensors(join(dir, 'adapter_model.safetensors'), tensors, { format: 'pt' });
  await writeTextAtomically(join(dir, 'adapter_config.json'), text);
  const card = join(dir, 'README.md');
  if (!existsSync(card)) await writeTextAtomically(card, modelCard(config));
}

function modelCard(config: LoraConfig): string {
  const base = config.baseModelNameOrPath;
  return [
    '---',
    ...(base ? [`base_model: ${base}`] : []),
    'library_name: peft',
    '---',
    '',
    '# LoRA adapter',
    '',
    `A LoRA adapter (r=${config.r}, lora_alpha=${config.loraAlpha}${config.useDora ? ', DoRA' : ''}${config.useRslora ? ', rsLoRA' : ''})` +
      `${base ? ` for ${base}` : ''}, saved in the Hugging Face peft format (adapter_config.json + adapter_model.safetensors).`,
    '',
    '### Framework versions',
    '',
    '- PEFT 0.13.2 (file format)',
  ].join('\n');
}

/** Reads adapter_config.json as a plain object, with errors that say which file is wrong. */
export async function readAdapterConfigFile(dir: string): Promise<Record<string, unknown>> {
  const path = join(dir, 'adapter_config.json');
  if (!existsSync(dir)) throw new AdapterError(`adapter folder ${dir} does not exist`);
  if (!existsSync(path)) throw new AdapterError(`${dir} is not an adapter folder: adapter_config.json is missing`);
  let obj: unknown;
  try {
    obj = JSON.parse(await readFile(path, 'utf8'));
  } catch (e) {
    throw new AdapterError(`${path} is not valid JSON: ${(e as Error).message}`);
  }
  if (typeof obj !== 'object' || obj === null || Array.isArray(obj)) throw new AdapterError(`${path} must hold a JSON object`);
  return obj as Record<string, unknown>;
}

/** adapter_model.safetensors as float32 tensors by saved key. */
export async function readAdapterTensors(dir: string): Promise<Map<string, TrainableTensor>> {
  const path = join(dir, 'adapter_model.safetensors');
  if (!existsSync(path)) {
    const bin = existsSync(join(dir, 'adapter_model.bin'));
    throw new AdapterError(
      bin
        ? `${dir} holds adapter_model.bin (a PyTorch pickle), which is not read; convert it to adapter_model.safetensors (peft save_pretrained(safe_serialization=True))`
        : `${dir} has adapter_config.json but no adapter_model.safetensors`,
    );
  }
  const raw = await readSafetensors(path);
  const out = new Map<string, TrainableTensor>();
  for (const [k, t] of raw) {
    if (!['F32', 'F16', 'BF16', 'F64'].includes(t.dtype)) throw new AdapterError(`${path}: tensor ${k} has dtype ${t.dtype}; adapter tensors must be floating point`);
    out.set(k, { shape: [...t.shape], data: toFloat32(t) });
  }
  return out;
}
