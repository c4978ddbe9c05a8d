// Reading a prompt-learning adapter folder (adapter_config.json + adapter_model.safetensors as
// peft writes them), with errors that say which file is wrong and what to do about it.

import { existsSync, stat, join } from '../../storage/index.js';
import { readSafetensors, toFloat32, type RawTensor } from '../../io/safetensors.js';
import { AdapterError, PeftConfigError, type TrainableTensor } from '../types.js';
import { CONFIG_FILE, WEIGHTS_FILE } from './save.js';
import { readJsonObject } from '../../io/files.js';

const LOADER_OF: Record<string, string> = {
  PROMPT_TUNING: 'loadPromptTuning',
  PREFIX_TUNING: 'loadPrefixTuning',
  P_TUNING: 'loadPTuning',
};

export interface AdapterFolder {
  dir: string;
  /** adapter_config.json as parsed */
  config: Record<string, unknown>;
  /** adapter_model.safetensors by saved name */
  tensors: Map<string, RawTensor>;
}

async function readAdapterConfig(dir: string): Promise<Record<string, unknown>> {
  const info = await stat(dir).catch(() => undefined);
  if (!info?.isDirectory()) throw new AdapterError(`adapter folder ${dir} does not exist or is not a folder`);
  const file = join(dir, CONFIG_FILE);
  if (!existsSync(file)) throw new AdapterError(`${dir} has no ${CONFIG_FILE}; is it a peft adapter folder?`);
  return readJsonObject(file, (reason) => new PeftConfigError(reason));
}

/** Reads the folder and checks that it holds an adapter of `peftType`. */
export async function readAdapterFolder(dir: string, peftType: string): Promise<AdapterFolder> {
  const config = await readAdapterConfig(dir);
  const found = config.peft_type;
  if (found !== peftType) {
    const hint =
      typeof found === 'string' && LOADER_OF[found]
        ? `; load it with ${LOADER_OF[found]} (or loadAdapter, which picks the method from peft_type)`
        : typeof found === 'string'
          ? '; load it with loadAdapter, which picks the method from peft_type'
          : '';
    throw new PeftConfigError(`${join(dir, CONFIG_FILE)} has peft_type ${JSON.stringify(found)}, not ${peftType}${hint}`);
  }
  const weights = join(dir, WEIGHTS_FILE);
  if (!existsSync(weights)) {
    const bin = existsSync(join(dir, 'adapter_model.bin'));
    throw new AdapterError(
      bin
        ? `${dir} holds adapter_model.bin (a PyTorch pickle), which is not read; re-save it with peft's save_pretrained(safe_serialization=True) to get ${WEIGHTS_FILE}`
        : `${dir} has no ${WEIGHTS_FILE}`,
    );
  }
  const tensors = await readSafetensors(weights);
  return { dir, config, tensors };
}

/** A float32 copy of a saved tensor, checking its shape. */
export function takeTensor(folder: AdapterFolder, name: string, shape: readonly number[]): TrainableTensor {
  const t = folder.tensors.get(name);
  if (!t)
    throw new AdapterError(
      `${join(folder.dir, WEIGHTS_FILE)} has no tensor "${name}" (has: ${[...folder.tensors.keys()].join(', ')}); the file does not belong to this adapter_config.json`,
    );
  if (t.shape.length !== shape.length || t.shape.some((d, i) => d !== shape[i])) {
    throw new AdapterError(
      `${join(folder.dir, WEIGHTS_FILE)}: "${name}" has shape [${t.shape}] but adapter_config.json implies [${shape}]; the config and weights disagree`,
    );
  }
  return { shape: [...t.shape], data: Float32Array.from(toFloat32(t)) };
}

/** Names in the file that the method did not take: an error, so a mismatched file is never half-used. */
export function rejectUnused(folder: AdapterFolder, used: ReadonlySet<string>): void {
  const extra = [...folder.tensors.keys()].filter((n) => !used.has(n));
  if (extra.length)
    throw new AdapterError(`${join(folder.dir, WEIGHTS_FILE)} holds tensors this adapter does not use: ${extra.join(', ')}`);
}
