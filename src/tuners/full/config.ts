// Configuration of full fine-tuning, the reference method the PEFT methods are measured against:
// which base weights train (all by default), selected by module name as peft's target_modules
// selects modules (a list of name suffixes, or one regular expression that must match in full).

import { PeftConfigError } from '../types.js';

export interface FullConfig {
  peftType: 'FULL';
  /** modules whose weights train: names or suffixes ("q_proj"), or a regex string; default every weight */
  targetModules?: string[] | string;
  /** modules (same matching) whose weights stay frozen even if targeted */
  excludeModules?: string[] | string;
}

export function fullConfig(opts: Partial<Omit<FullConfig, 'peftType'>> = {}): FullConfig {
  const check = (field: string, v: unknown): void => {
    if (v === undefined || typeof v === 'string') return;
    if (!Array.isArray(v) || v.some((x) => typeof x !== 'string' || x === '')) {
      throw new PeftConfigError(`${field} must be a list of module names or one regular expression, got ${JSON.stringify(v)}`);
    }
  };
  check('targetModules', opts.targetModules);
  check('excludeModules', opts.excludeModules);
  if (typeof opts.targetModules === 'string') validRegex('targetModules', opts.targetModules);
  if (typeof opts.excludeModules === 'string') validRegex('excludeModules', opts.excludeModules);
  return { peftType: 'FULL', targetModules: opts.targetModules, excludeModules: opts.excludeModules };
}

function validRegex(field: string, source: string): void {
  try {
    new RegExp(source);
  } catch (e) {
    throw new PeftConfigError(`${field} "${source}" is not a valid regular expression: ${(e as Error).message}`);
  }
}

/** peft's check_target_module_exists: a regex must match the whole name; a list entry matches the name or a ".suffix". */
export function moduleMatches(module: string, targets: string[] | string): boolean {
  if (typeof targets === 'string') return new RegExp(`^(?:${targets})$`).test(module);
  return targets.some((t) => module === t || module.endsWith(`.${t}`));
}
