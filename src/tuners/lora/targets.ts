// Which modules a LoRA config wraps and which it saves in full, decided exactly as peft 0.13.2
// decides: check_target_module_exists (full name or '.'-suffix, regex full match, layer filters),
// the "all-linear" shorthand, per-model default targets, and modules_to_save's suffix match.

import type { PretrainedModel } from '../../models/types.js';
import type { LinearSpec } from '../../nn/context.js';
import { PeftConfigError } from '../types.js';
import { DEFAULT_TARGET_MODULES, type LoraConfig } from './config.js';

/** No module of the model matches target_modules; `available` lists the linear modules there are. */
export class TargetModulesNotFoundError extends PeftConfigError {
  constructor(
    readonly targetModules: string[] | string,
    readonly available: string[],
  ) {
    const short = [...new Set(available.map((n) => n.slice(n.lastIndexOf('.') + 1)))];
    super(
      `Target modules ${JSON.stringify(targetModules)} not found in the base model. ` +
        `Its linear modules are named: ${short.join(', ')} (full names such as ${available.slice(0, 3).join(', ')}); ` +
        'give target_modules as a list of these names, a regex matching full names, or "all-linear"',
    );
    this.name = 'TargetModulesNotFoundError';
  }
}

/** Python regex syntax that JavaScript spells differently: named groups and their back-references. */
export function pythonRegex(pattern: string, flags = ''): RegExp {
  const js = pattern.replace(/\(\?P<(\w+)>/g, '(?<$1>').replace(/\(\?P=(\w+)\)/g, '\\k<$1>');
  try {
    return new RegExp(js, flags);
  } catch (e) {
    throw new PeftConfigError(`invalid regular expression ${JSON.stringify(pattern)}: ${(e as Error).message}`);
  }
}

/** peft's exclude_modules test: a regex full match, or the name / a '.'-suffix in the list. */
function isExcluded(excludeModules: string[] | string | null | undefined, key: string): boolean {
  if (!excludeModules || excludeModules.length === 0) return false;
  if (typeof excludeModules === 'string') return pythonRegex(`^(?:${excludeModules})$`).test(key);
  return excludeModules.includes(key) || excludeModules.some((e) => key.endsWith(`.${e}`));
}

/** peft 0.20's check_target_module_exists for one module name (exclude_modules first, then targets and layer filters). */
export function targetModuleMatches(
  config: Pick<LoraConfig, 'targetModules' | 'layersToTransform' | 'layersPattern'> & { excludeModules?: string[] | string | null },
  key: string,
): boolean {
  if (isExcluded(config.excludeModules, key)) return false;
  const tm = config.targetModules;
  if (tm === null) return false;
  if (typeof tm === 'string') return pythonRegex(`^(?:${tm})$`).test(key);
  // An exact name bypasses the layer filters, as in peft.
  if (tm.includes(key)) return true;
  if (!tm.some((t) => key.endsWith(`.${t}`))) return false;
  const layers = config.layersToTransform;
  const usingLayers = layers !== null && (Array.isArray(layers) ? layers.length > 0 : true);
  if (!usingLayers) return true;
  let m: RegExpExecArray | null = null;
  const pattern = config.layersPattern;
  // Lazy: the first numbered segment is the layer index (peft 0.20; nested indices such as MoE experts come later).
  if (pattern === null || pattern.length === 0) m = /^.*?\.[^.]*\.(\d+)\./.exec(key);
  else {
    for (const p of typeof pattern === 'string' ? [pattern] : pattern) {
      m = pythonRegex(`^.*?\\.${p}\\.(\\d+)\\.`).exec(key);
      if (m) break;
    }
  }
  if (!m) return false;
  const idx = Number(m[1]);
  return Array.isArray(layers) ? layers.includes(idx) : idx === layers;
}

/** peft's modules_to_save test: the module name ends with the entry (no '.' required). */
function isModuleToSave(modulesToSave: readonly string[] | null, key: string): boolean {
  return !!modulesToSave && modulesToSave.some((m) => key.endsWith(m));
}

/** The module name of the model's output head that "all-linear" leaves out, if it has one. */
function outputHead(model: PretrainedModel): string | undefined {
  const names = new Set(model.linears().map((s) => s.name));
  if (model.task === 'causal-lm' && names.has('lm_head')) return 'lm_head';
  if (model.task === 'masked-lm' && names.has('cls.predictions.decoder')) return 'cls.predictions.decoder';
  return undefined;
}

/**
 * target_modules as peft resolves it before injecting: the model type's default when null, and
 * "all-linear" expanded to the short names of every linear module except the output head (for
 * SEQ_CLS the classifier: peft's get_output_embeddings / SEQ_CLS_HEAD_NAMES rule).
 */
export function resolveTargetModules(model: PretrainedModel, config: LoraConfig): string[] | string {
  const tm = config.targetModules;
  if (tm === null) {
    const d = DEFAULT_TARGET_MODULES[model.config.modelType];
    if (!d) {
      throw new PeftConfigError(
        `no default LoRA target_modules for model_type "${model.config.modelType}" (peft has none either); set target_modules (--target on the command line), e.g. "all-linear" or a list of module names`,
      );
    }
    return [...d];
  }
  if (typeof tm === 'string' && tm.toLowerCase() === 'all-linear') {
    const exclude = new Set<string>();
    const head = outputHead(model);
    if (head) exclude.add(head);
    else if (config.taskType === 'SEQ_CLS') {
      const names = new Set(model.moduleNames());
      const cls = ['score', 'classifier'].find((n) => names.has(n));
      if (cls) exclude.add(cls);
    }
    // peft removes the head's full name from a set of short names: it only bites for top-level heads.
    const short: string[] = [];
    for (const s of model.linears()) {
      const n = s.name.slice(s.name.lastIndexOf('.') + 1);
      if (!short.includes(n)) short.push(n);
    }
    return short.filter((n) => !exclude.has(n));
  }
  return tm;
}

export interface Targets {
  /** wrapped linear modules, in model order, with the rank and alpha each gets */
  lora: { spec: LinearSpec; r: number; alpha: number }[];
  /** wrapped embedding modules (peft lora.Embedding) */
  embeddings: { name: string; r: number; alpha: number }[];
  /** modules trained and saved in full */
  modulesToSave: string[];
}

/**
 * Finds the LoRA and modules_to_save modules of a model for a config whose target_modules is
 * already resolved. Raises TargetModulesNotFoundError when nothing matches, and a config error when
 * a match is not a linear module.
 */
export function findTargets(model: PretrainedModel, config: LoraConfig): Targets {
  const linears = new Map(model.linears().map((s) => [s.name, s]));
  const lora: Targets['lora'] = [];
  const embeddings: Targets['embeddings'] = [];
  const mts: string[] = [];
  const keys = model.moduleNames();
  for (const n of linears.keys()) if (!keys.includes(n)) keys.push(n);
  for (const key of keys) {
    // A module saved in full is never also wrapped (peft checks modules_to_save first), nor its children.
    if (isModuleToSave(config.modulesToSave, key)) {
      if (!mts.some((m) => key.startsWith(`${m}.`))) mts.push(key);
      continue;
    }
    if (mts.some((m) => key.startsWith(`${m}.`))) continue;
    if (config.modulesToSave?.some((m) => pythonRegex(`^(?:|.*\\.)${m}(?:$|\\..*)`).test(key))) continue;
    if (!targetModuleMatches(config, key)) continue;
    const spec = linears.get(key);
    if (!spec && key === model.embeddingName && model.weights.has(`${key}.weight`)) {
      embeddings.push({ name: key, ...rankAndAlpha(config, key) });
      continue;
    }
    if (!spec) {
      throw new PeftConfigError(
        `target module ${key} is not a linear layer; LoRA wraps linear layers (nn.Linear, Conv1D) and the token embedding only. Narrow target_modules (a list of names, or a regex that ends in the linear layer's name)`,
      );
    }
    const { r, alpha } = rankAndAlpha(config, key);
    lora.push({ spec, r, alpha });
  }
  if (lora.length === 0 && embeddings.length === 0) throw new TargetModulesNotFoundError(config.targetModules ?? [], [...linears.keys()]);
  return { lora, embeddings, modulesToSave: mts };
}

/**
 * peft 0.20's get_pattern_key, once for rank_pattern and once for alpha_pattern: the first key k (in
 * the object's order) with re.match(r'(.*\.)?(k)$', module name) gives the module's r / lora_alpha.
 */
export function rankAndAlpha(config: LoraConfig, key: string): { r: number; alpha: number } {
  const find = (pattern: Record<string, number>): number | undefined => {
    const hit = Object.keys(pattern).find((p) => pythonRegex(`^(?:.*\\.)?(?:${p})$`).test(key));
    return hit === undefined ? undefined : pattern[hit];
  };
  return { r: find(config.rankPattern) ?? config.r, alpha: find(config.alphaPattern) ?? config.loraAlpha };
}
