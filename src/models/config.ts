// config.json to ModelConfig: the model_type picks its architecture descriptor (registry.ts), whose
// `readConfig` reads that architecture's fields with its transformers config class defaults
// (io/hfconfig.ts has the shared pieces); every size is then bounded (CONFIG_LIMITS).

import { ConfigError, type ModelConfig, checkConfigLimits, commonFields, configFields, readConfigJson } from '../io/hfconfig.js';
import { ARCHITECTURES, descriptorFor } from './registry.js';

/** Normalizes an already parsed config.json; `file` only labels error messages. */
export function parseConfig(raw: unknown, file = 'config.json'): ModelConfig {
  const f = configFields(raw, file);
  const d = descriptorFor(f.modelType);
  if (d === undefined) {
    throw new ConfigError(
      file,
      `${file}: model_type "${f.modelType}" is not supported; supported: ${ARCHITECTURES.flatMap((a) => a.modelTypes).join(', ')}.`,
      'model_type',
    );
  }
  return checkConfigLimits(d.readConfig(f, commonFields(f, d.family)), file);
}

/** Reads and normalizes `<dir>/config.json`. */
export async function loadConfig(dir: string): Promise<ModelConfig> {
  const { raw, file } = await readConfigJson(dir);
  return parseConfig(raw, file);
}
