// The methods a comparison trains and the settings each gets by default, read from the tuner
// registry (src/tuners/registry.ts: each tuner's presets hold rank, virtual tokens, reduction
// factor, learning rate) so every run of every method is set up the same way, and the functions
// that load the base (NF4 for QLoRA) and wrap it for the method.

import type { PretrainedModel } from '../models/types.js';
import { loadModel } from '../models/load.js';
import { createAdapter } from '../tuners/load.js';
import type { AdaptedModel } from '../tuners/types.js';
import { type Criterion, type Rating, methodNames, methodPreset } from '../tuners/registry.js';
import { CompareError } from './errors.js';

/** A method name as `--methods` takes it: one registered preset (src/tuners/registry.ts). */
export type CompareMethod = string;

/** The method every ratio of training cost is taken against; a comparison always runs it. */
export const REFERENCE_METHOD: CompareMethod = 'full';

/** Virtual tokens of prompt tuning, prefix tuning and P-tuning (as their presets set them). */
export const VIRTUAL_TOKENS = 20;

export interface MethodSpec {
  name: CompareMethod;
  /** how tables name it */
  label: string;
  /** peak learning rate (linear decay after 5% warmup) */
  learningRate: number;
  /** the settings in words, for the report */
  settings: string;
  /** the base is held 4-bit (NF4, double quantization) */
  quantizedBase: boolean;
  /** adapter_config.json-style fields (for the tuners in src/tuners/registry.ts) */
  fields: Record<string, unknown>;
  /** the literature's ratings of the method */
  folklore: Readonly<Record<Criterion, Rating>>;
}

/** Method names as `--methods` takes them, in the order tables list them (full fine-tuning, the reference, last): every registered preset. */
export function compareMethods(): CompareMethod[] {
  return methodNames();
}

/** The methods a comparison runs when --methods is not given. */
export function defaultCompareMethods(): CompareMethod[] {
  return methodNames().filter((n) => methodPreset(n)!.preset.compareByDefault !== false);
}

/** The defaults of one method, from its tuner's preset. */
export function methodSpec(name: CompareMethod): MethodSpec {
  const found = methodPreset(name);
  if (!found) throw new CompareError(`unknown method ${name}; choose from ${methodNames().join(', ')}`);
  const p = found.preset;
  return {
    name: p.name,
    label: p.label,
    learningRate: p.learningRate,
    settings: p.settings,
    quantizedBase: p.quantizedBase === true,
    fields: p.fields,
    folklore: p.folklore,
  };
}

/** Every method's defaults by name (the registry as it is now). */
export const METHOD_SPECS: Readonly<Record<CompareMethod, MethodSpec>> = new Proxy({} as Record<CompareMethod, MethodSpec>, {
  get: (_, k) => (typeof k === 'string' && methodPreset(k) ? methodSpec(k) : undefined),
  has: (_, k) => typeof k === 'string' && methodPreset(k) !== undefined,
  ownKeys: () => methodNames(),
  getOwnPropertyDescriptor: (_, k) =>
    typeof k === 'string' && methodPreset(k) ? { enumerable: true, configurable: true, value: methodSpec(k) } : undefined,
});

/** Prompt tuning, prefix tuning and P-tuning put VIRTUAL_TOKENS positions in front of every row. */
export function usesVirtualTokens(method: CompareMethod): boolean {
  return METHOD_SPECS[method].fields?.num_virtual_tokens !== undefined;
}

/** Parses and checks a list of method names (`--methods lora,ia3`), in table order, without repeats. */
export function parseMethods(names: readonly string[]): CompareMethod[] {
  const all = compareMethods();
  const known = new Set<string>(all);
  const bad = names.filter((n) => !known.has(n));
  if (bad.length) throw new CompareError(`unknown method${bad.length > 1 ? 's' : ''} ${bad.join(', ')}; choose from ${all.join(', ')}`);
  if (names.length === 0) throw new CompareError(`no methods given; choose from ${all.join(', ')}`);
  const chosen = new Set(names);
  return all.filter((m) => chosen.has(m));
}

/** The base model as the method trains on it: QLoRA holds its linear layers NF4. */
export async function loadBaseFor(method: CompareMethod | 'base', modelDir: string): Promise<PretrainedModel> {
  if (method !== 'base' && methodSpec(method).quantizedBase) {
    return loadModel(modelDir, { quantization: { bits: 4, type: 'nf4', doubleQuant: true, blockSize: 64 } });
  }
  return loadModel(modelDir);
}

/** Wraps `base` for `method` with the defaults of METHOD_SPECS (task type SEQ_CLS for a sequence classifier). */
export async function adaptForComparison(
  base: PretrainedModel,
  method: CompareMethod,
  seed: number,
  baseName: string,
  steps?: number,
): Promise<AdaptedModel> {
  const spec = methodSpec(method);
  const stepsField = methodPreset(method)!.preset.stepsField;
  const fields = { ...spec.fields };
  if (stepsField && steps !== undefined && (fields[stepsField] ?? null) === null) fields[stepsField] = steps;
  // The presets' task type is CAUSAL_LM; a sequence classifier gets SEQ_CLS (its classifier then trains too, as peft's modules_to_save).
  return createAdapter(
    base,
    { ...fields, ...(base.task === 'seq-cls' ? { task_type: 'SEQ_CLS' } : {}), base_model_name_or_path: baseName },
    { seed },
  );
}
