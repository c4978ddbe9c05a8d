// Writes a bottleneck adapter in AdapterHub's layout (adapters 0.2.2 save_adapter with
// use_safetensors=True): adapter_config.json + adapter.safetensors, and with the head
// head_config.json + model_head.safetensors. Every file is replaced atomically.

import { mkdir, join } from '../../storage/index.js';
import { fromTypedArray, writeSafetensors, type RawTensor } from '../../io/safetensors.js';
import { AdapterError } from '../types.js';
import { bnConfigToJson } from './config.js';
import type { BottleneckModel } from './model.js';
import { headWeightNames } from './model.js';
import type { BnTensor } from './names.js';
import { type PyJson, writePythonJson } from '../../io/pyjson.js';

export const BN_CONFIG_FILE = 'adapter_config.json';
export const BN_WEIGHTS_FILE = 'adapter.safetensors';
export const BN_WEIGHTS_BIN = 'pytorch_adapter.bin';
const HEAD_CONFIG_FILE = 'head_config.json';
export const HEAD_WEIGHTS_FILE = 'model_head.safetensors';
export const HEAD_WEIGHTS_BIN = 'pytorch_model_head.bin';

export interface SaveBottleneckOptions {
  /** also write the static head (adapters' default with_head=True); default true */
  withHead?: boolean;
}

/** adapter.safetensors' tensors by AdapterHub key. */
function bottleneckStateDict(m: BottleneckModel): Map<string, RawTensor> {
  const out = new Map<string, RawTensor>();
  for (const s of m.sites)
    for (const t of Object.keys(s.tensors) as BnTensor[]) out.set(m.paramName(s, t), fromTypedArray(s.tensors[t].data, s.tensors[t].shape));
  return out;
}

/** The adapter_config.json object. */
function adapterHubConfigJson(m: BottleneckModel): Record<string, PyJson> {
  return {
    config: bnConfigToJson(m.config),
    hidden_size: m.meta.hiddenSize,
    model_class: m.meta.modelClass,
    model_name: m.meta.modelName,
    model_type: m.meta.modelType,
    name: m.name,
    version: m.meta.version,
  };
}

function headConfigJson(m: BottleneckModel): Record<string, PyJson> {
  return {
    config: null,
    hidden_size: m.meta.hiddenSize,
    label2id: { ...m.base.config.label2id },
    model_class: m.meta.modelClass,
    model_name: m.meta.modelName,
    model_type: m.meta.modelType,
    name: null,
    num_labels: m.base.config.numLabels,
    version: m.meta.version,
  };
}

export async function saveBottleneck(m: BottleneckModel, dir: string, opts: SaveBottleneckOptions = {}): Promise<void> {
  const tensors = bottleneckStateDict(m);
  for (const [name, t] of m.parameters()) {
    if (!t.data.every(Number.isFinite))
      throw new AdapterError(
        `adapter tensor ${name} holds NaN or infinite values; not saving it to ${dir} (lower the learning rate or check the data)`,
      );
  }
  const head = new Map<string, RawTensor>();
  if (opts.withHead ?? true) {
    for (const w of headWeightNames(m.base)) {
      const t = m.headWeights().get(w) ?? m.base.weights.get(w);
      head.set(w, fromTypedArray(t.data, t.shape));
    }
  }
  try {
    await mkdir(dir, { recursive: true });
  } catch (e) {
    throw new AdapterError(`cannot create the adapter folder ${dir}: ${(e as Error).message}`);
  }
  await writeSafetensors(join(dir, BN_WEIGHTS_FILE), tensors);
  await writePythonJson(join(dir, BN_CONFIG_FILE), adapterHubConfigJson(m));
  if (head.size) {
    await writeSafetensors(join(dir, HEAD_WEIGHTS_FILE), head);
    await writePythonJson(join(dir, HEAD_CONFIG_FILE), headConfigJson(m));
  }
}
