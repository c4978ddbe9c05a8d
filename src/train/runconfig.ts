// A run described by a file (`peft train --config run.yaml|run.json`), as mlx-lm's lora config and
// LLaMA-Factory's YAML describe one: top-level keys are `peft train`'s options (kebab-case as the
// flags, or snake_case), and a `peft` section holds adapter_config.json fields in peft's own names
// (a LoraConfig written for Python reads the same), applied over the method's defaults. Command
// line flags override the file. Unknown keys are errors naming the key and the nearest valid one.

import { extname, readFileSync, statSync } from '../storage/index.js';
import { parse as parseYaml } from 'yaml';
import { PeftError } from '../errors.js';

export class RunConfigError extends PeftError {}

/** Largest config file read (a run description is a few hundred bytes; anything near this is not one). */
const MAX_CONFIG_BYTES = 1 << 20;

export interface RunConfigFile {
  /** option values by their camelCase attribute name (as commander names them) */
  options: Record<string, unknown>;
  /** adapter_config.json fields, in peft's names */
  peft: Record<string, unknown>;
  /** 1-based line of each top-level key in the file (YAML), for messages */
  file: string;
}

/** kebab-case or snake_case key -> camelCase attribute name ("eval-data", "eval_data" -> "evalData"). */
function attributeName(key: string): string {
  return key.replace(/[-_]+([a-z0-9])/g, (_, c: string) => c.toUpperCase());
}

/** Levenshtein distance, for "did you mean". */
function editDistance(a: string, b: string): number {
  const prev = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    let diag = prev[0]!;
    prev[0] = i;
    for (let j = 1; j <= b.length; j++) {
      const up = prev[j]!;
      prev[j] = Math.min(prev[j]! + 1, prev[j - 1]! + 1, diag + (a[i - 1] === b[j - 1] ? 0 : 1));
      diag = up;
    }
  }
  return prev[b.length]!;
}

/** The valid name closest to `key` (ignoring case and -/_), or undefined when none is close. */
function nearest(key: string, valid: readonly string[]): string | undefined {
  const norm = (s: string) => s.toLowerCase().replace(/[-_]/g, '');
  let best: string | undefined;
  let bestD = Infinity;
  for (const v of valid) {
    const d = editDistance(norm(key), norm(v));
    if (d < bestD) [best, bestD] = [v, d];
  }
  return best !== undefined && bestD <= Math.max(2, Math.floor(norm(key).length / 3)) ? best : undefined;
}

/** Reads and parses the file; checks its shape and every top-level key against `validKeys` (kebab-case flag names). */
export function readRunConfig(file: string, validKeys: readonly string[]): RunConfigFile {
  let size: number;
  try {
    const st = statSync(file);
    if (!st.isFile()) throw new RunConfigError(`--config ${file} is not a regular file; pass a .yaml, .yml or .json file`);
    size = st.size;
  } catch (e) {
    if (e instanceof RunConfigError) throw e;
    throw new RunConfigError(
      `--config ${file} cannot be read (${(e as NodeJS.ErrnoException).code ?? (e as Error).message}); pass an existing .yaml or .json file`,
    );
  }
  if (size > MAX_CONFIG_BYTES)
    throw new RunConfigError(
      `--config ${file} is ${size} bytes; a run config is a small YAML/JSON file (at most ${MAX_CONFIG_BYTES} bytes)`,
    );
  const text = readFileSync(file, 'utf8');
  const ext = extname(file).toLowerCase();
  let doc: unknown;
  try {
    // JSON is YAML, but a .json file gets JSON's stricter parser and messages
    doc = ext === '.json' ? JSON.parse(text) : parseYaml(text, { maxAliasCount: 100, prettyErrors: true, uniqueKeys: true });
  } catch (e) {
    throw new RunConfigError(`${file}: not valid ${ext === '.json' ? 'JSON' : 'YAML'}: ${(e as Error).message.split('\n')[0]}`);
  }
  if (doc === null || typeof doc !== 'object' || Array.isArray(doc))
    throw new RunConfigError(`${file}: the top level must be a mapping of option names to values`);
  const options: Record<string, unknown> = {};
  let peft: Record<string, unknown> = {};
  const attrs = new Map(validKeys.map((k) => [attributeName(k), k]));
  for (const [key, value] of Object.entries(doc as Record<string, unknown>)) {
    if (key === 'peft' || key === 'peft_config' || key === 'adapter_config') {
      if (value === null || typeof value !== 'object' || Array.isArray(value))
        throw new RunConfigError(`${file}: "${key}" must be a mapping of adapter_config.json fields (e.g. r: 8, lora_alpha: 16)`);
      peft = { ...(value as Record<string, unknown>) };
      continue;
    }
    if (key === 'config') throw new RunConfigError(`${file}: "config" cannot name another config file`);
    const attr = attributeName(key);
    if (!attrs.has(attr)) {
      const near = nearest(key, [...validKeys, 'peft']);
      throw new RunConfigError(
        `${file}: unknown key "${key}"${near ? `; did you mean "${near}"?` : ''} (keys are peft train's options, e.g. steps, lr, eval-data, and a "peft" section)`,
      );
    }
    if (attr in options) throw new RunConfigError(`${file}: "${key}" is given twice (as ${attrs.get(attr)} in another spelling)`);
    options[attr] = value;
  }
  return { options, peft, file };
}

/** Checks the peft section's keys against the fields the method's adapter_config.json has. */
export function checkPeftFields(peft: Record<string, unknown>, validFields: readonly string[], method: string, file: string): void {
  for (const key of Object.keys(peft)) {
    if (key === 'peft_type' || validFields.includes(key)) continue;
    const near = nearest(key, validFields);
    throw new RunConfigError(
      `${file}: "peft.${key}" is not a field of ${method}'s adapter_config.json${near ? `; did you mean "${near}"?` : ''}`,
    );
  }
}

/**
 * A config value as the string the flag's parser takes: numbers and strings as they are, lists
 * joined by commas (target_modules: [q_proj, v_proj] -> "q_proj,v_proj").
 */
export function asFlagText(key: string, value: unknown, file: string): string {
  if (typeof value === 'string') return value;
  if (typeof value === 'number' && Number.isFinite(value)) return String(value);
  if (Array.isArray(value) && value.every((x) => typeof x === 'string' || typeof x === 'number')) return value.join(',');
  throw new RunConfigError(
    `${file}: "${key}" must be a ${Array.isArray(value) ? 'list of names' : 'number or string'}, found ${value === null ? 'null' : Array.isArray(value) ? 'a list with other values' : typeof value}`,
  );
}
