// Loads an AdapterHub bottleneck adapter folder (adapters' load_adapter): adapter_config.json
// with its "config" object, adapter.safetensors (pickled pytorch_adapter.bin is refused with how
// to convert it), and the static head from model_head.safetensors when present.

import { existsSync, readFile, join } from '../../storage/index.js';
import { readSafetensors, toFloat32 } from '../../io/safetensors.js';
import type { PretrainedModel } from '../../models/types.js';
import { AdapterError, PeftConfigError, type TrainableTensor } from '../types.js';
import { BN_PRESETS, type BnConfig, bnConfigFromJson } from './config.js';
import { type AdapterHubMeta, BottleneckModel, headWeightNames, modelClassOf } from './model.js';
import { parseBnTensorName } from './names.js';
import { BN_CONFIG_FILE, BN_WEIGHTS_BIN, BN_WEIGHTS_FILE, HEAD_WEIGHTS_BIN, HEAD_WEIGHTS_FILE } from './save.js';
import { readJsonObject } from '../../io/files.js';

/** A bin-only AdapterHub folder, or one whose files cannot be read as AdapterHub's. */
export class AdapterFormatError extends AdapterError {
  constructor(message: string) {
    super(message);
    this.name = 'AdapterFormatError';
  }
}

const CONVERT_HINT =
  'this library does not unpickle torch files; convert the folder once in Python: ' +
  "`import torch; from safetensors.torch import save_file; save_file(torch.load('DIR/pytorch_adapter.bin'), 'DIR/adapter.safetensors')` " +
  "(and the same for pytorch_model_head.bin -> model_head.safetensors), or re-save with adapters' model.save_adapter(DIR, name, use_safetensors=True)";

/** True for a folder AdapterHub's save_adapter wrote: a "config" object in adapter_config.json and adapter weights. */
export async function isAdapterHubFolder(dir: string): Promise<boolean> {
  const file = join(dir, BN_CONFIG_FILE);
  if (!existsSync(file) || !(existsSync(join(dir, BN_WEIGHTS_FILE)) || existsSync(join(dir, BN_WEIGHTS_BIN)))) return false;
  try {
    const json = JSON.parse(await readFile(file, 'utf8')) as Record<string, unknown>;
    return (
      typeof json === 'object' &&
      json !== null &&
      (typeof json.config === 'object' || typeof json.config === 'string') &&
      json.config !== null &&
      !('peft_type' in json)
    );
  } catch {
    return false;
  }
}

export interface AdapterHubConfigFile {
  config: BnConfig;
  name: string;
  meta: Partial<AdapterHubMeta>;
}

/** Parses `dir`/adapter_config.json as AdapterHub writes it. */
export async function readAdapterHubConfig(dir: string): Promise<AdapterHubConfigFile> {
  const file = join(dir, BN_CONFIG_FILE);
  if (!existsSync(file)) throw new AdapterError(`${dir} is not an AdapterHub adapter folder: ${BN_CONFIG_FILE} is missing`);
  const json = await readJsonObject(file, (reason) => new PeftConfigError(reason));
  if ('peft_type' in json)
    throw new AdapterFormatError(
      `${file} is a peft adapter (peft_type ${JSON.stringify(json.peft_type)}), not an AdapterHub one; load it with the peft loader`,
    );
  let config: BnConfig;
  if (typeof json.config === 'string') {
    const preset = BN_PRESETS[json.config.toLowerCase() as keyof typeof BN_PRESETS];
    if (!preset)
      throw new PeftConfigError(`${file}: config "${json.config}" is not a bottleneck preset (${Object.keys(BN_PRESETS).join(', ')})`);
    config = preset();
  } else if (typeof json.config === 'object' && json.config !== null && !Array.isArray(json.config)) {
    config = bnConfigFromJson(json.config as Record<string, unknown>, file);
  } else {
    throw new PeftConfigError(`${file}: "config" must be the adapter's config object`);
  }
  const str = (k: string): string | undefined => (typeof json[k] === 'string' ? (json[k] as string) : undefined);
  const name = str('name');
  if (!name) throw new PeftConfigError(`${file}: "name" (the adapter name used in the tensor names) is missing`);
  const meta: Partial<AdapterHubMeta> = {
    modelName: str('model_name'),
    modelClass: str('model_class'),
    modelType: str('model_type'),
    hiddenSize: typeof json.hidden_size === 'number' ? json.hidden_size : undefined,
    version: str('version'),
  };
  return { config, name, meta };
}

export interface LoadBottleneckOptions {
  /** rename the adapter (adapters' load_as) */
  loadAs?: string;
  /** load model_head.safetensors when present (default true, as adapters' with_head) */
  withHead?: boolean;
  /** keep training the head (default: true for sequence classification) */
  trainHead?: boolean;
}

function sameShape(a: readonly number[], b: readonly number[]): boolean {
  return a.length === b.length && a.every((d, i) => d === b[i]);
}

async function loadHead(base: PretrainedModel, dir: string): Promise<Map<string, TrainableTensor>> {
  const file = join(dir, HEAD_WEIGHTS_FILE);
  const out = new Map<string, TrainableTensor>();
  if (!existsSync(file)) {
    if (existsSync(join(dir, HEAD_WEIGHTS_BIN)))
      throw new AdapterFormatError(
        `${dir} has ${HEAD_WEIGHTS_BIN} but no ${HEAD_WEIGHTS_FILE}: ${CONVERT_HINT.replaceAll('DIR', dir)}; or load without the head (withHead: false)`,
      );
    return out;
  }
  const tensors = await readSafetensors(file);
  const allowed = new Set(headWeightNames(base));
  for (const [name, t] of tensors) {
    if (!allowed.has(name)) {
      throw new AdapterError(
        `${file} holds ${name}, which is not a head weight of this ${modelClassOf(base)} (head weights: ${[...allowed].join(', ') || 'none'}); load with withHead: false to skip the head`,
      );
    }
    const w = base.weights.get(name);
    if (!sameShape(t.shape, w.shape))
      throw new AdapterError(
        `${file}: ${name} has shape [${t.shape}] but the model's is [${w.shape}] (a head for another label count or vocabulary)`,
      );
    const data = toFloat32(t);
    // An unchanged head (what adapters writes for frozen LM heads) needs no override.
    if (data.some((x, i) => x !== w.data[i])) out.set(name, { shape: [...t.shape], data });
  }
  return out;
}

/** adapters' load_adapter for a bottleneck adapter folder, onto `base`. */
export async function loadBottleneck(base: PretrainedModel, dir: string, opts: LoadBottleneckOptions = {}): Promise<BottleneckModel> {
  const { config, name: savedName, meta } = await readAdapterHubConfig(dir);
  if (meta.hiddenSize !== undefined && meta.hiddenSize !== base.hiddenSize) {
    throw new AdapterError(
      `${dir}: the adapter was saved for hidden size ${meta.hiddenSize}, this ${base.config.modelType} model has ${base.hiddenSize}; load it onto the model it was trained for (${meta.modelName ?? 'model_name unset'})`,
    );
  }
  if (meta.modelType !== undefined && meta.modelType !== base.config.modelType) {
    throw new AdapterError(`${dir}: the adapter was saved from a ${meta.modelType} model, this one is ${base.config.modelType}`);
  }
  const weightsFile = join(dir, BN_WEIGHTS_FILE);
  if (!existsSync(weightsFile)) {
    if (existsSync(join(dir, BN_WEIGHTS_BIN)))
      throw new AdapterFormatError(`${dir} has only ${BN_WEIGHTS_BIN}: ${CONVERT_HINT.replaceAll('DIR', dir)}`);
    throw new AdapterError(`${dir} has no ${BN_WEIGHTS_FILE}`);
  }
  const tensors = await readSafetensors(weightsFile);
  const head = opts.withHead === false ? new Map<string, TrainableTensor>() : await loadHead(base, dir);
  const model = BottleneckModel.fromConfig(base, config, {
    name: opts.loadAs ?? savedName,
    trainHead: opts.trainHead,
    head,
    meta: {
      modelName: meta.modelName ?? base.dir,
      modelClass: meta.modelClass ?? modelClassOf(base),
      modelType: meta.modelType ?? base.config.modelType,
      hiddenSize: meta.hiddenSize ?? base.hiddenSize,
      version: meta.version ?? '0.2.2',
    },
  });
  const seen = new Set<string>();
  const unexpected: string[] = [];
  for (const [key, t] of tensors) {
    const p = parseBnTensorName(base, key);
    if (!p || p.adapterName !== savedName) {
      unexpected.push(key);
      continue;
    }
    const site = model.sites.find((s) => s.layer === p.layer && s.location === p.location);
    if (!site) {
      unexpected.push(key);
      continue;
    }
    const dst = site.tensors[p.tensor];
    if (!sameShape(t.shape, dst.shape)) {
      throw new AdapterError(
        `${weightsFile}: ${key} has shape [${t.shape}] but the config implies [${dst.shape}] (reduction_factor ${JSON.stringify(config.reductionFactor)}, hidden ${base.hiddenSize})`,
      );
    }
    dst.data.set(toFloat32(t));
    seen.add(`${p.layer}/${p.location}/${p.tensor}`);
  }
  const missing: string[] = [];
  for (const s of model.sites)
    for (const t of Object.keys(s.tensors)) if (!seen.has(`${s.layer}/${s.location}/${t}`)) missing.push(model.paramName(s, t as never));
  if (unexpected.length || missing.length) {
    const list = (xs: string[]) => xs.slice(0, 8).join(', ') + (xs.length > 8 ? `, ... (${xs.length} in all)` : '');
    throw new AdapterError(
      `${weightsFile} does not match its adapter_config.json ("${savedName}") on this ${base.config.modelType} model:` +
        (missing.length ? ` missing ${list(missing)};` : '') +
        (unexpected.length ? ` unexpected ${list(unexpected)};` : '') +
        ' check that the adapter was saved from this architecture',
    );
  }
  return model;
}
