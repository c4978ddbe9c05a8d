// Writing a prompt-learning adapter folder as peft's save_pretrained does: adapter_model.safetensors
// (metadata {"format": "pt"}) and adapter_config.json (json.dumps(indent=2, sort_keys=True)), each
// replaced atomically, with everything computed and checked before the first byte is written.

import { mkdir, stat, join } from '../../storage/index.js';
import { fromTypedArray, writeSafetensors, type RawTensor } from '../../io/safetensors.js';
import { writeFileAtomic } from '../../io/atomic.js';
import { AdapterError, type TrainableTensor } from '../types.js';
import { pythonJsonDumps, type PyJson } from '../../io/pyjson.js';

export const CONFIG_FILE = 'adapter_config.json';
export const WEIGHTS_FILE = 'adapter_model.safetensors';

export async function writeAdapterFolder(
  dir: string,
  config: Record<string, PyJson>,
  tensors: ReadonlyMap<string, TrainableTensor>,
): Promise<void> {
  const info = await stat(dir).catch(() => undefined);
  if (info && !info.isDirectory())
    throw new AdapterError(`cannot save the adapter to ${dir}: it is a file, not a folder; pass a folder path`);
  const raw = new Map<string, RawTensor>();
  for (const [name, t] of tensors) {
    for (let i = 0; i < t.data.length; i++) {
      if (!Number.isFinite(t.data[i]!))
        throw new AdapterError(
          `tensor "${name}" holds a non-finite value at element ${i}; the adapter was not saved (lower the learning rate or clip gradients and retrain)`,
        );
    }
    raw.set(name, fromTypedArray(t.data, t.shape, 'F32'));
  }
  const json = new TextEncoder().encode(pythonJsonDumps(config));
  await mkdir(dir, { recursive: true });
  await writeSafetensors(join(dir, WEIGHTS_FILE), raw, { format: 'pt' });
  await writeFileAtomic(join(dir, CONFIG_FILE), async (fh) => {
    await fh.write(json, 0, json.byteLength, 0);
  });
}
