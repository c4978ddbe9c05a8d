// Config fields every linear-layer tuner shares (target_modules, exclude_modules,
// layers_to_transform, layers_pattern, modules_to_save), read from adapter_config.json as peft 0.20
// writes it, and the targets they select. Fields a method does not know are kept as they are, so a
// saved config round-trips; a field that would change the math and is not implemented is refused by
// name by the method's own parser.

import type { PyJson } from '../../io/pyjson.js';
import type { PretrainedModel } from '../../models/types.js';
import type { LinearSpec } from '../../nn/context.js';
import { DEFAULT_TARGET_MODULES, type LoraConfig } from '../lora/config.js';
import { TargetModulesNotFoundError, pythonRegex, resolveTargetModules, targetModuleMatches } from '../lora/targets.js';
import { PeftConfigError } from '../types.js';

export interface LinearTunerConfig {
  peftType: string;
  targetModules: string[] | string | null;
  excludeModules: string[] | string | null;
  layersToTransform: number[] | number | null;
  layersPattern: string[] | string | null;
  baseModelNameOrPath: string | null;
  taskType: string | null;
  /** every field of the file, as read (what is saved back, with the parsed fields written over it) */
  raw: Record<string, unknown>;
}

/** Field readers that name the file and the field in their errors. */
export class FieldReader {
  constructor(
    readonly fields: Record<string, unknown>,
    readonly source: string,
  ) {}
  private bad(k: string, want: string): never {
    throw new PeftConfigError(`${this.source}: ${k} must be ${want}, got ${JSON.stringify(this.fields[k])}`);
  }
  has(k: string): boolean {
    return this.fields[k] !== undefined && this.fields[k] !== null;
  }
  int(k: string, d: number, min = 0): number {
    const v = this.fields[k] ?? d;
    if (typeof v !== 'number' || !Number.isInteger(v) || v < min) this.bad(k, `an integer >= ${min}`);
    return v;
  }
  num(k: string, d: number): number {
    const v = this.fields[k] ?? d;
    if (typeof v !== 'number' || !Number.isFinite(v)) this.bad(k, 'a number');
    return v;
  }
  bool(k: string, d: boolean): boolean {
    const v = this.fields[k] ?? d;
    if (typeof v !== 'boolean') this.bad(k, 'true or false');
    return v;
  }
  str(k: string, d: string | null): string | null {
    const v = this.fields[k] ?? d;
    if (v !== null && typeof v !== 'string') this.bad(k, 'a string');
    return v;
  }
  names(k: string): string[] | string | null {
    const v = this.fields[k] ?? null;
    if (v === null || typeof v === 'string') return v;
    if (Array.isArray(v) && v.every((x) => typeof x === 'string')) return [...(v as string[])];
    return this.bad(k, 'a list of module names or a regular expression');
  }
  pattern(k: string): Record<string, number> {
    const v = this.fields[k] ?? {};
    if (typeof v !== 'object' || Array.isArray(v) || Object.values(v as object).some((x) => typeof x !== 'number'))
      this.bad(k, 'an object of module patterns to numbers');
    return { ...(v as Record<string, number>) };
  }
  /** A field this library does not implement: accepted only at its off value. */
  off(
    k: string,
    what: string,
    isOff: (v: unknown) => boolean = (v) =>
      v === undefined ||
      v === null ||
      v === false ||
      v === 0 ||
      (Array.isArray(v) && v.length === 0) ||
      (typeof v === 'object' && v !== null && Object.keys(v).length === 0),
  ): void {
    if (!isOff(this.fields[k]))
      throw new PeftConfigError(
        `${this.source}: ${k}=${JSON.stringify(this.fields[k])} is not supported (${what}); leave it at its default`,
      );
  }
}

/** The shared fields. */
export function commonFields(r: FieldReader, peftType: string, method: string): LinearTunerConfig {
  if (r.fields.peft_type !== undefined && r.fields.peft_type !== peftType)
    throw new PeftConfigError(`${r.source}: peft_type is ${JSON.stringify(r.fields.peft_type)}, not ${peftType}`);
  const layers = r.fields.layers_to_transform ?? null;
  if (layers !== null && !(typeof layers === 'number' || (Array.isArray(layers) && layers.every((x) => Number.isInteger(x))))) {
    throw new PeftConfigError(`${r.source}: layers_to_transform must be a layer index or a list of them`);
  }
  r.off('modules_to_save', `modules_to_save with ${method} is not implemented here`);
  r.off('layer_replication', 'layer replication is not implemented');
  r.off('target_parameters', 'target_parameters (MoE parameters) is not implemented');
  return {
    peftType,
    targetModules: r.names('target_modules'),
    excludeModules: r.names('exclude_modules'),
    layersToTransform: layers as number[] | number | null,
    layersPattern: r.names('layers_pattern'),
    baseModelNameOrPath: r.str('base_model_name_or_path', null),
    taskType: r.str('task_type', null),
    raw: { ...r.fields },
  };
}

/** The shared fields back in the file's spelling, over the fields as read. */
export function commonJson(c: LinearTunerConfig): Record<string, PyJson> {
  return {
    ...(c.raw as Record<string, PyJson>),
    peft_type: c.peftType,
    target_modules: c.targetModules,
    exclude_modules: c.excludeModules,
    layers_to_transform: c.layersToTransform,
    layers_pattern: c.layersPattern,
    base_model_name_or_path: c.baseModelNameOrPath,
    task_type: c.taskType,
  };
}

const SHARED_KEYS: ReadonlySet<string> = new Set([
  'peftType',
  'targetModules',
  'excludeModules',
  'layersToTransform',
  'layersPattern',
  'baseModelNameOrPath',
  'taskType',
  'raw',
]);

/**
 * A method's whole config back in the file's spelling: the shared fields, then each field of the
 * method under its snake_case name (`rename` for peft's exceptions, such as AdaLoRA's `deltaT`), over
 * the fields as read. A method's config holds only fields of the file, so this is the inverse of its parser.
 */
export function configJson(c: LinearTunerConfig, rename: Readonly<Record<string, string>> = {}): Record<string, PyJson> {
  const out = commonJson(c);
  for (const [k, v] of Object.entries(c)) {
    if (!SHARED_KEYS.has(k)) out[rename[k] ?? k.replace(/[A-Z]/g, (u) => `_${u.toLowerCase()}`)] = v as PyJson;
  }
  return out;
}

/** Refuses a bias other than "none" (the methods whose bias training is not implemented). */
export function noBias(r: FieldReader, method: string): string {
  const bias = r.str('bias', 'none');
  if (bias !== 'none')
    throw new PeftConfigError(`${r.source}: bias=${JSON.stringify(bias)} is not supported for ${method} here; use "none"`);
  return bias;
}

function excluded(c: LinearTunerConfig, key: string): boolean {
  const ex = c.excludeModules;
  if (ex === null) return false;
  if (typeof ex === 'string') return pythonRegex(`^(?:${ex})$`).test(key);
  return ex.some((t) => key === t || key.endsWith(`.${t}`));
}

/**
 * The linear modules a config targets, in model order (peft's check_target_module_exists with
 * layers_to_transform and exclude_modules). target_modules null takes the model type's LoRA
 * default; "all-linear" expands as for LoRA. Raises TargetModulesNotFoundError when nothing matches.
 */
export function findLinearTargets(model: PretrainedModel, c: LinearTunerConfig, method: string): LinearSpec[] {
  if (c.targetModules === null && !DEFAULT_TARGET_MODULES[model.config.modelType]) {
    throw new PeftConfigError(
      `no default ${method} target_modules for model_type "${model.config.modelType}"; set target_modules (e.g. ["q_proj", "v_proj"] or "all-linear")`,
    );
  }
  const resolved = resolveTargetModules(model, { targetModules: c.targetModules, taskType: c.taskType } as LoraConfig);
  if (c.targetModules === null || (typeof c.targetModules === 'string' && c.targetModules.toLowerCase() === 'all-linear'))
    c.targetModules = resolved;
  const linears = model.linears();
  const linearNames = new Set(linears.map((s) => s.name));
  const match = { targetModules: resolved, layersToTransform: c.layersToTransform, layersPattern: c.layersPattern } as Pick<
    LoraConfig,
    'targetModules' | 'layersToTransform' | 'layersPattern'
  >;
  for (const m of model.moduleNames()) {
    if (!linearNames.has(m) && targetModuleMatches(match, m) && !excluded(c, m)) {
      throw new PeftConfigError(
        `target module ${m} is not a linear layer; ${method} wraps linear layers (nn.Linear, Conv1D) only. Narrow target_modules`,
      );
    }
  }
  const out = linears.filter((s) => targetModuleMatches(match, s.name) && !excluded(c, s.name));
  if (out.length === 0)
    throw new TargetModulesNotFoundError(
      resolved,
      linears.map((s) => s.name),
    );
  return out;
}

/** peft's rank_pattern / alpha_pattern lookup: the first pattern key matching `(.*\.)?<key>$`. */
export function patternValue(pattern: Readonly<Record<string, number>>, key: string, fallback: number): number {
  const hit = Object.keys(pattern).find((p) => pythonRegex(`^(?:.*\\.)?(?:${p})$`).test(key));
  return hit === undefined ? fallback : pattern[hit]!;
}
