// The entry points over the registry: loadAdapter (peft's PeftModel.from_pretrained) dispatches a
// saved folder on its peft_type (or on a layout a tuner claims, AdapterHub's), createAdapter and
// getPeftModel (peft's get_peft_model) on the config's peft type. An unknown type or a folder that
// is not an adapter is a typed error raised before any weights are read.

import { join } from '../storage/index.js';
import type { PretrainedModel } from '../models/types.js';
import { readAdapterConfigFile } from './lora/save.js';
import type { LoraConfig } from './lora/config.js';
import type { CreateLoraOptions, LoraModel } from './lora/model.js';
import { LoraModel as LoraModelClass } from './lora/model.js';
import { type Tuner, type TunerOptions, peftTypes, tunerOf, tuners } from './registry.js';
import { AdapterError, PeftConfigError, UnknownPeftTypeError, type AdaptedModel } from './types.js';

function tunerFor(peftType: unknown, source: string): Tuner {
  if (typeof peftType !== 'string') throw new AdapterError(`${source}: peft_type is missing or not a string`);
  const t = tunerOf(peftType);
  if (!t) throw new UnknownPeftTypeError(peftType, peftTypes(), source);
  return t;
}

/** The tuner that claims `dir` by its layout (AdapterHub), if any. */
async function detected(dir: string): Promise<Tuner | undefined> {
  for (const t of tuners()) if (t.detectFolder && (await t.detectFolder(dir))) return t;
  return undefined;
}

/** The peft_type of a saved folder (a detected layout's, or adapter_config.json's), read from its config alone. */
export async function adapterPeftType(dir: string): Promise<string> {
  const d = await detected(dir);
  if (d) return d.peftType;
  const config = await readAdapterConfigFile(dir);
  return tunerFor(config.peft_type, join(dir, 'adapter_config.json')).peftType;
}

/** The adapter saved in `dir`, on `base` (peft's PeftModel.from_pretrained). */
export async function loadAdapter(base: PretrainedModel, dir: string, opts: TunerOptions = {}): Promise<AdaptedModel> {
  const d = await detected(dir);
  if (d) return d.fromPretrained!(base, dir, opts);
  const config = await readAdapterConfigFile(dir);
  const t = tunerFor(config.peft_type, join(dir, 'adapter_config.json'));
  if (!t.fromPretrained) throw new AdapterError(`${dir}: a ${t.label} folder is a whole model, not an adapter; load it with loadModel()`);
  return t.fromPretrained(base, dir, opts);
}

/** A new adapter from adapter_config.json-style fields, `peft_type` included (peft's get_peft_model). */
export async function createAdapter(
  base: PretrainedModel,
  fields: Record<string, unknown>,
  opts: TunerOptions = {},
): Promise<AdaptedModel> {
  if (fields.peft_type === undefined) throw new PeftConfigError('the adapter config needs a peft_type (e.g. "LORA")');
  return tunerFor(fields.peft_type, 'adapter config').create(base, fields, opts);
}

/** A LoRA config as LoraModel takes it; peftType may be left out (LoRA is the default). */
export type LoraPeftConfig = Partial<LoraConfig> & { peftType?: 'LORA' };

/**
 * Any other method's config: its peftType and its adapter_config.json fields, spelled in camelCase
 * (`targetModules`) or as in the file (`target_modules`).
 */
export interface TunerPeftConfig {
  peftType: string;
  [field: string]: unknown;
}

/** peft's get_peft_model config: a discriminated union on peftType. */
export type PeftConfig = LoraPeftConfig | TunerPeftConfig;

const snake = (k: string): string => k.replace(/[A-Z]/g, (c) => `_${c.toLowerCase()}`);

/**
 * peft's get_peft_model(model, config, adapter_name): wraps `model` with a new adapter of any
 * registered method, chosen by `config.peftType` (LoRA when absent). The third argument is the
 * adapter name or options (seed, adapterName).
 */
export function getPeftModel(model: PretrainedModel, config?: LoraPeftConfig, opts?: CreateLoraOptions | string): Promise<LoraModel>;
export function getPeftModel(model: PretrainedModel, config: TunerPeftConfig, opts?: TunerOptions | string): Promise<AdaptedModel>;
export async function getPeftModel(
  model: PretrainedModel,
  config: PeftConfig = {},
  opts: TunerOptions | string = {},
): Promise<AdaptedModel> {
  const o = typeof opts === 'string' ? { adapterName: opts } : opts;
  const type = config.peftType ?? 'LORA';
  if (type === 'LORA') {
    const lora: Partial<LoraConfig> & { peftType?: string } = { ...(config as LoraPeftConfig) };
    delete lora.peftType;
    return LoraModelClass.create(model, lora, o);
  }
  const fields: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(config)) if (k !== 'peftType' && v !== undefined) fields[snake(k)] = v;
  fields.peft_type = type;
  return tunerFor(type, 'getPeftModel config').create(model, fields, o);
}

/** peft's get_nb_trainable_parameters for any adapted model: [trainable, all]. */
export function numParameters(model: AdaptedModel): { trainable: number; all: number } {
  if (model.numParameters) return model.numParameters();
  let trainable = 0;
  for (const t of model.parameters().values()) trainable += t.data.length;
  // Adapter tensors and modules_to_save copies come on top of the base (methods training base weights in place count themselves).
  return { trainable, all: model.base.weights.numel() + trainable };
}

/** Prints (and returns) peft's line "trainable params: N || all params: M || trainable%: P" for any adapted model. */
export function printTrainableParameters(model: AdaptedModel, print: (line: string) => void = console.log): string {
  const { trainable, all } = numParameters(model);
  const fmt = (n: number) => String(n).replace(/\B(?=(\d{3})+(?!\d))/g, ',');
  const line = `trainable params: ${fmt(trainable)} || all params: ${fmt(all)} || trainable%: ${((100 * trainable) / all).toFixed(4)}`;
  print(line);
  return line;
}

/** peft's entry point, spelled as in Python. */
export const PeftModel = {
  fromPretrained: loadAdapter,
};
