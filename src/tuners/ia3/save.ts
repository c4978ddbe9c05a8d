// Writes an IA3 adapter folder exactly as peft's save_pretrained does: adapter_config.json
// (sorted keys, indent 2) and adapter_model.safetensors (metadata {"format": "pt"}), each file
// replaced atomically.

import { mkdir, join } from '../../storage/index.js';
import { fromTypedArray, writeSafetensors, type RawTensor } from '../../io/safetensors.js';
import { writePythonJson } from '../../io/pyjson.js';
import { AdapterError, type TrainableTensor } from '../types.js';
import { type IA3Config, ia3ConfigToJson } from './config.js';
import { ia3SavedName, savedWeightName } from './names.js';

export const IA3_CONFIG_FILE = 'adapter_config.json';
export const IA3_WEIGHTS_FILE = 'adapter_model.safetensors';

/** The tensors of adapter_model.safetensors, by saved name. */
function ia3StateDict(
  config: IA3Config,
  vectors: ReadonlyMap<string, TrainableTensor>,
  modulesToSave: ReadonlyMap<string, TrainableTensor>,
): Map<string, RawTensor> {
  const kind = config.variant === 'scale' ? 'ia3_l' : 'ia3_m';
  const out = new Map<string, RawTensor>();
  for (const [module, v] of vectors) out.set(ia3SavedName(module, kind), fromTypedArray(v.data, v.shape));
  for (const [w, t] of modulesToSave) out.set(savedWeightName(w), fromTypedArray(t.data, t.shape));
  return out;
}

export async function saveIA3(
  dir: string,
  config: IA3Config,
  vectors: ReadonlyMap<string, TrainableTensor>,
  modulesToSave: ReadonlyMap<string, TrainableTensor>,
): Promise<void> {
  const tensors = ia3StateDict(config, vectors, modulesToSave);
  for (const [name, t] of [...vectors, ...modulesToSave]) {
    if (!t.data.every(Number.isFinite))
      throw new AdapterError(
        `IA3 tensor ${name} holds NaN or infinite values; not saving it to ${dir} (lower the learning rate or check the data)`,
      );
  }
  try {
    await mkdir(dir, { recursive: true });
  } catch (e) {
    throw new AdapterError(`cannot create the adapter folder ${dir}: ${(e as Error).message}`);
  }
  await writeSafetensors(join(dir, IA3_WEIGHTS_FILE), tensors, { format: 'pt' });
  await writePythonJson(join(dir, IA3_CONFIG_FILE), ia3ConfigToJson(config));
}
