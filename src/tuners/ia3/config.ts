// IA3Config: peft's fields (snake_case on disk, camelCase here), peft's default target and
// feedforward modules per architecture, and the additive variant's one extra key. Reading and
// writing go through one pair of functions so a peft adapter_config.json round-trips byte for byte.

import type { PretrainedModel } from '../../models/types.js';
import { PeftConfigError } from '../types.js';
import type { PyJson } from '../../io/pyjson.js';
import { ARCHITECTURES } from '../../models/registry.js';

/**
 * 'scale': peft's IA3, a learned vector multiplies the module output (input for feedforward
 * modules), initialised to ones. 'additive': the seed's variant, a learned vector is added there
 * instead (y = base(x) + m; base(x + m) for feedforward modules), initialised to zeros. Only the
 * additive variant writes the extra key `ia3_variant` and its own tensor name `ia3_m`.
 */
export type IA3Variant = 'scale' | 'additive';

export interface IA3Config {
  peftType: 'IA3';
  taskType: string | null;
  /** a list (a module matches when its name equals an entry or ends with "." + entry), a regex (full match), or "all-linear" (expanded when resolved) */
  targetModules: string[] | string;
  /** subset of the targets whose INPUT is scaled; list entries match by name suffix, a string by full regex */
  feedforwardModules: string[] | string;
  /** true when the targets store weights [in, out] (GPT-2's Conv1D); peft forces it per layer type */
  fanInFanOut: boolean;
  /** modules trained and saved in full (peft adds "classifier", "score" for SEQ_CLS) */
  modulesToSave: string[] | null;
  /** true: vectors start at the identity (ones, or zeros for the additive variant); false: random normal */
  initIa3Weights: boolean;
  baseModelNameOrPath: string | null;
  revision: string | null;
  inferenceMode: boolean;
  autoMapping: PyJson;
  variant: IA3Variant;
}

export type IA3Options = Partial<Omit<IA3Config, 'peftType'>>;

/** peft's TRANSFORMERS_MODELS_TO_IA3_TARGET_MODULES_MAPPING, from each architecture's descriptor (src/models/<family>.ts). */
const IA3_DEFAULT_TARGETS: Readonly<Record<string, readonly string[]>> = Object.fromEntries(
  ARCHITECTURES.flatMap((d) => Object.entries(d.ia3Targets).map(([t, v]) => [t, v.targets] as const)),
);
/** The feed-forward modules among them, from the same descriptors. */
const IA3_DEFAULT_FEEDFORWARD: Readonly<Record<string, readonly string[]>> = Object.fromEntries(
  ARCHITECTURES.flatMap((d) => Object.entries(d.ia3Targets).map(([t, v]) => [t, v.feedforward] as const)),
);
/** What PeftModelForSequenceClassification adds to modules_to_save. */
const SEQ_CLS_HEADS = ['classifier', 'score'];

function peftTaskType(model: PretrainedModel): string | null {
  switch (model.task) {
    case 'causal-lm':
      return 'CAUSAL_LM';
    case 'seq-cls':
      return 'SEQ_CLS';
    case 'base':
      return 'FEATURE_EXTRACTION';
    default:
      return null;
  }
}

/**
 * peft's "all-linear" shorthand (_maybe_include_all_linear_layers): the short names of every linear
 * module except the output head (lm_head / the MLM decoder, or for SEQ_CLS the classifier).
 */
function allLinear(model: PretrainedModel, taskType: string | null): string[] {
  const exclude = new Set<string>();
  if (model.task === 'causal-lm') exclude.add('lm_head');
  else if (model.task === 'masked-lm') exclude.add('cls.predictions.decoder');
  else if (taskType === 'SEQ_CLS') for (const n of SEQ_CLS_HEADS) exclude.add(n);
  const short: string[] = [];
  for (const s of model.linears()) {
    const n = s.name.slice(s.name.lastIndexOf('.') + 1);
    if (!short.includes(n)) short.push(n);
  }
  // As in peft, the head's full name is removed from a list of short names: it only bites for top-level heads.
  return short.filter((n) => !exclude.has(n));
}

function dedupe(xs: readonly string[]): string[] {
  return [...new Set(xs)];
}

/** A config for `model` with peft's defaults filled in where `opts` leaves a field out. */
export function resolveIA3Config(model: PretrainedModel, opts: IA3Options = {}): IA3Config {
  const type = model.config.modelType;
  const targets = opts.targetModules ?? IA3_DEFAULT_TARGETS[type];
  if (!targets) {
    throw new PeftConfigError(
      `IA3 has no default target_modules for model_type "${type}"; pass targetModules (e.g. the names of its attention and MLP projections)`,
    );
  }
  const ff = opts.feedforwardModules ?? IA3_DEFAULT_FEEDFORWARD[type];
  if (!ff) {
    throw new PeftConfigError(
      `IA3 has no default feedforward_modules for model_type "${type}"; pass feedforwardModules (a subset of targetModules, or [])`,
    );
  }
  const taskType = opts.taskType !== undefined ? opts.taskType : peftTaskType(model);
  const expanded = typeof targets === 'string' && targets.toLowerCase() === 'all-linear' ? allLinear(model, taskType) : targets;
  let modulesToSave = opts.modulesToSave ?? null;
  if (taskType === 'SEQ_CLS') modulesToSave = dedupe([...(modulesToSave ?? []), ...SEQ_CLS_HEADS]);
  const config: IA3Config = {
    peftType: 'IA3',
    taskType,
    targetModules: typeof expanded === 'string' ? expanded : dedupe(expanded),
    feedforwardModules: typeof ff === 'string' ? ff : dedupe(ff),
    fanInFanOut: opts.fanInFanOut ?? false,
    modulesToSave,
    initIa3Weights: opts.initIa3Weights ?? true,
    baseModelNameOrPath: opts.baseModelNameOrPath !== undefined ? opts.baseModelNameOrPath : model.dir,
    revision: opts.revision ?? null,
    inferenceMode: opts.inferenceMode ?? false,
    autoMapping: opts.autoMapping ?? null,
    variant: opts.variant ?? 'scale',
  };
  validateIA3Config(config);
  return config;
}

export function validateIA3Config(c: IA3Config): void {
  if (c.variant !== 'scale' && c.variant !== 'additive') {
    throw new PeftConfigError(`IA3 variant must be "scale" or "additive", got ${JSON.stringify(c.variant)}`);
  }
  if (Array.isArray(c.targetModules) && c.targetModules.length === 0)
    throw new PeftConfigError('IA3 target_modules is empty; name at least one module');
  // peft's IA3Config.__post_init__ wants feedforward modules to be targets too; an entry that is a
  // dotted path ending in a target ("mlp.c_proj" under an "all-linear" expansion's "c_proj") counts.
  if (Array.isArray(c.targetModules) && Array.isArray(c.feedforwardModules)) {
    const t = c.targetModules;
    const extra = c.feedforwardModules.filter((m) => !t.includes(m) && !t.some((x) => m.endsWith(`.${x}`)));
    if (extra.length) {
      throw new PeftConfigError(
        `IA3 feedforward_modules must be a subset of target_modules: ${extra.join(', ')} not in [${c.targetModules.join(', ')}]`,
      );
    }
  }
  for (const s of [c.targetModules, c.feedforwardModules]) {
    if (typeof s === 'string') {
      try {
        new RegExp(`^(?:${s})$`);
      } catch (e) {
        throw new PeftConfigError(`IA3 module pattern ${JSON.stringify(s)} is not a valid regular expression: ${(e as Error).message}`);
      }
    }
  }
}

/** peft's check_target_module_exists for a list or a regex. */
export function matchesTarget(name: string, targets: string[] | string): boolean {
  if (typeof targets === 'string') return new RegExp(`^(?:${targets})$`).test(name);
  return targets.some((t) => name === t || name.endsWith(`.${t}`));
}

/** peft's IA3 _check_target_module_feedforward: a plain suffix test for lists (no dot), regex otherwise. */
export function isFeedforward(name: string, ff: string[] | string): boolean {
  if (typeof ff === 'string') return new RegExp(`^(?:${ff})$`).test(name);
  return ff.some((t) => name.endsWith(t));
}

/** The adapter_config.json object peft writes (it saves inference_mode as true). */
export function ia3ConfigToJson(c: IA3Config): Record<string, PyJson> {
  const json: Record<string, PyJson> = {
    auto_mapping: c.autoMapping,
    base_model_name_or_path: c.baseModelNameOrPath,
    fan_in_fan_out: c.fanInFanOut,
    feedforward_modules: c.feedforwardModules,
    inference_mode: true,
    init_ia3_weights: c.initIa3Weights,
    modules_to_save: c.modulesToSave,
    peft_type: 'IA3',
    revision: c.revision,
    target_modules: c.targetModules,
    task_type: c.taskType,
  };
  if (c.variant === 'additive') json.ia3_variant = 'additive';
  return json;
}

function stringList(v: unknown, field: string, file: string, nullable: boolean): string[] | string | null {
  if (v === null || v === undefined) {
    if (nullable) return null;
    throw new PeftConfigError(`${file}: "${field}" is missing; an IA3 adapter_config.json lists its modules there`);
  }
  if (typeof v === 'string') return v;
  if (Array.isArray(v) && v.every((x) => typeof x === 'string')) return v as string[];
  throw new PeftConfigError(`${file}: "${field}" must be a list of module names or a regex string, got ${JSON.stringify(v)}`);
}

/** Parses an IA3 adapter_config.json object; `file` names it in errors. */
export function ia3ConfigFromJson(json: Record<string, unknown>, file = 'adapter_config.json'): IA3Config {
  if (json.peft_type !== 'IA3') throw new PeftConfigError(`${file}: peft_type is ${JSON.stringify(json.peft_type)}, not "IA3"`);
  const bool = (k: string, dflt: boolean): boolean => {
    const v = json[k];
    if (v === undefined || v === null) return dflt;
    if (typeof v !== 'boolean') throw new PeftConfigError(`${file}: "${k}" must be true or false, got ${JSON.stringify(v)}`);
    return v;
  };
  const str = (k: string): string | null => {
    const v = json[k];
    if (v === undefined || v === null) return null;
    if (typeof v !== 'string') throw new PeftConfigError(`${file}: "${k}" must be a string, got ${JSON.stringify(v)}`);
    return v;
  };
  const mts = stringList(json.modules_to_save, 'modules_to_save', file, true);
  if (typeof mts === 'string') throw new PeftConfigError(`${file}: "modules_to_save" must be a list of module names`);
  const variant = json.ia3_variant ?? 'scale';
  const config: IA3Config = {
    peftType: 'IA3',
    taskType: str('task_type'),
    targetModules: stringList(json.target_modules, 'target_modules', file, false)!,
    feedforwardModules: stringList(json.feedforward_modules, 'feedforward_modules', file, true) ?? [],
    fanInFanOut: bool('fan_in_fan_out', false),
    modulesToSave: mts,
    initIa3Weights: bool('init_ia3_weights', true),
    baseModelNameOrPath: str('base_model_name_or_path'),
    revision: str('revision'),
    inferenceMode: bool('inference_mode', false),
    autoMapping: (json.auto_mapping ?? null) as PyJson,
    variant: variant as IA3Variant,
  };
  try {
    validateIA3Config(config);
  } catch (e) {
    if (e instanceof PeftConfigError) throw new PeftConfigError(`${file}: ${e.message}`);
    throw e;
  }
  return config;
}

const FIELD_TO_OPTION: Record<string, keyof IA3Options> = {
  task_type: 'taskType',
  target_modules: 'targetModules',
  feedforward_modules: 'feedforwardModules',
  fan_in_fan_out: 'fanInFanOut',
  modules_to_save: 'modulesToSave',
  init_ia3_weights: 'initIa3Weights',
  base_model_name_or_path: 'baseModelNameOrPath',
  revision: 'revision',
  inference_mode: 'inferenceMode',
  auto_mapping: 'autoMapping',
  ia3_variant: 'variant',
};

/** adapter_config.json-style fields (peft_type "IA3", others optional) to IA3Options; peft's defaults fill the rest. */
export function ia3OptionsFromFields(fields: Record<string, unknown>, source = 'IA3 config'): IA3Options {
  if (fields.peft_type !== undefined && fields.peft_type !== 'IA3')
    throw new PeftConfigError(`${source}: peft_type is ${JSON.stringify(fields.peft_type)}, not "IA3"`);
  const opts: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(fields)) {
    if (k === 'peft_type') continue;
    const key = FIELD_TO_OPTION[k];
    if (!key) throw new PeftConfigError(`${source}: unknown IA3 field "${k}"; IA3Config has ${Object.keys(FIELD_TO_OPTION).join(', ')}`);
    if (v !== null && v !== undefined) opts[key] = v;
    else if (key === 'taskType' || key === 'baseModelNameOrPath' || key === 'modulesToSave') opts[key] = null;
  }
  return opts as IA3Options;
}
