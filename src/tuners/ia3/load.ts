// Loads a peft IA3 adapter folder onto a base model: parses adapter_config.json, checks that the
// safetensors hold exactly the vectors (and modules_to_save weights) the config implies, with the
// right shapes, and returns an IA3Model holding them.

import { existsSync, readFile, join } from '../../storage/index.js';
import { readSafetensors, toFloat32 } from '../../io/safetensors.js';
import type { PretrainedModel } from '../../models/types.js';
import { AdapterError, PeftConfigError } from '../types.js';
import { type IA3Config, ia3ConfigFromJson } from './config.js';
import { ia3VectorShape } from './layer.js';
import { IA3Model } from './model.js';
import { ia3SavedName, savedWeightName } from './names.js';
import { IA3_CONFIG_FILE, IA3_WEIGHTS_FILE } from './save.js';

/** Reads and parses `dir`/adapter_config.json as an IA3 config. */
async function readIA3Config(dir: string): Promise<IA3Config> {
  const file = join(dir, IA3_CONFIG_FILE);
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (e) {
    throw new AdapterError(`${dir} is not an adapter folder: cannot read ${IA3_CONFIG_FILE} (${(e as Error).message})`);
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (e) {
    throw new PeftConfigError(`${file} is not valid JSON: ${(e as Error).message}`);
  }
  if (typeof json !== 'object' || json === null || Array.isArray(json)) throw new PeftConfigError(`${file} must hold a JSON object`);
  return ia3ConfigFromJson(json as Record<string, unknown>, file);
}

function sameShape(a: readonly number[], b: readonly number[]): boolean {
  return a.length === b.length && a.every((d, i) => d === b[i]);
}

/** peft's PeftModel.from_pretrained for an IA3 folder. */
export async function loadIA3(
  base: PretrainedModel,
  dir: string,
  opts: { adapterName?: string; isTrainable?: boolean } = {},
): Promise<IA3Model> {
  const config = await readIA3Config(dir);
  // peft's is_trainable: a loaded adapter is in inference mode unless asked otherwise.
  config.inferenceMode = !(opts.isTrainable ?? false);
  const weightsFile = join(dir, IA3_WEIGHTS_FILE);
  if (!existsSync(weightsFile)) {
    const hint = existsSync(join(dir, 'adapter_model.bin'))
      ? ' It has adapter_model.bin, a pickle this library does not read: convert it in Python with PeftModel.from_pretrained(...).save_pretrained(dir, safe_serialization=True)'
      : '';
    throw new AdapterError(`${dir} has no ${IA3_WEIGHTS_FILE}.${hint}`);
  }
  const tensors = await readSafetensors(weightsFile);
  const model = IA3Model.fromConfig(base, config, { adapterName: opts.adapterName });
  const kind = model.kind;
  const expected = new Map<string, { shape: number[]; set: (d: Float32Array) => void }>();
  for (const t of model.targets) {
    const v = model.vector(t.spec.name);
    expected.set(ia3SavedName(t.spec.name, kind), { shape: ia3VectorShape(t), set: (d) => v.data.set(d) });
  }
  for (const [w, t] of model.modulesToSaveWeights()) expected.set(savedWeightName(w), { shape: t.shape, set: (d) => t.data.set(d) });
  const unexpected = [...tensors.keys()].filter((k) => !expected.has(k));
  const missing = [...expected.keys()].filter((k) => !tensors.has(k));
  if (unexpected.length || missing.length) {
    const list = (xs: string[]) => xs.slice(0, 8).join(', ') + (xs.length > 8 ? `, ... (${xs.length} in all)` : '');
    throw new AdapterError(
      `${weightsFile} does not match its adapter_config.json on this ${base.config.modelType} model:` +
        (missing.length ? ` missing ${list(missing)};` : '') +
        (unexpected.length ? ` unexpected ${list(unexpected)};` : '') +
        ' check that the adapter was trained for this base model (base_model_name_or_path: ' +
        `${config.baseModelNameOrPath ?? 'unset'})`,
    );
  }
  for (const [name, e] of expected) {
    const t = tensors.get(name)!;
    if (!sameShape(t.shape, e.shape)) {
      throw new AdapterError(
        `${weightsFile}: ${name} has shape [${t.shape}] but this base model needs [${e.shape}]; the adapter belongs to another model size`,
      );
    }
    e.set(toFloat32(t));
  }
  return model;
}
