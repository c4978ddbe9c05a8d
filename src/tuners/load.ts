// Loading any saved adapter: reads adapter_config.json, dispatches on its peft_type through the
// registry, and reports an unknown type or a folder that is not an adapter as a typed error
// before any weights are read. createAdapter is the same dispatch for a new adapter.

import { isAdapterHubFolder, loadBottleneck } from './bottleneck/index.js';
import { join } from 'node:path';
import type { PretrainedModel } from '../models/types.js';
import { readAdapterConfigFile } from './lora/save.js';
import { TUNERS, type TunerOptions } from './registry.js';
import { AdapterError, PeftConfigError, UnknownPeftTypeError, type AdaptedModel } from './types.js';

function tunerFor(peftType: unknown, source: string) {
  if (typeof peftType !== 'string') throw new AdapterError(`${source}: peft_type is missing or not a string`);
  const t = TUNERS[peftType];
  if (!t) throw new UnknownPeftTypeError(peftType, Object.keys(TUNERS), source);
  return t;
}

/** The adapter saved in `dir`, on `base` (peft's PeftModel.from_pretrained). */
export async function loadAdapter(base: PretrainedModel, dir: string, opts: TunerOptions = {}): Promise<AdaptedModel> {
  // AdapterHub bottleneck adapters carry their own config layout (no peft_type).
  if (await isAdapterHubFolder(dir)) return loadBottleneck(base, dir, { loadAs: opts.adapterName });
  const config = await readAdapterConfigFile(dir);
  return tunerFor(config.peft_type, join(dir, 'adapter_config.json')).fromPretrained(base, dir, opts);
}

/** A new adapter from adapter_config.json-style fields, `peft_type` included (peft's get_peft_model). */
export async function createAdapter(base: PretrainedModel, fields: Record<string, unknown>, opts: TunerOptions = {}): Promise<AdaptedModel> {
  if (fields.peft_type === undefined) throw new PeftConfigError('the adapter config needs a peft_type (e.g. "LORA")');
  return tunerFor(fields.peft_type, 'adapter config').create(base, fields, opts);
}

/** peft's entry point, spelled as in Python. */
export const PeftModel = {
  fromPretrained: loadAdapter,
};
