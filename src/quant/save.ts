// Writing a model folder in the layout transformers saves for load_in_4bit models: quantized weights
// as bitsandbytes tensors (packed codes, absmax, quant maps, quant_state JSON), every other tensor
// copied byte for byte, config.json with quantization_config, and the tokenizer files alongside.

import { mkdir, readFile, readdir, realpath, stat, join, resolve } from '../storage/index.js';
import { type RawTensor, openCheckpoint, writeShardedSafetensors } from '../io/safetensors.js';
import { writeFileAtomic } from '../io/atomic.js';
import type { Quantized4bit } from './blockwise.js';
import { BNB_COMPONENTS, quantStateKey, toBnbTensors, type BnbConfigOptions, bnbQuantizationConfig } from './bnb.js';
import { QuantizationError } from './errors.js';
import { type RawJson, RawNumber, dumpRawJson, parseRawJson } from './pyjson.js';

export interface WriteQuantizedOptions {
  /** the quantized form of a checkpoint tensor (by its name in the source checkpoint), or undefined to copy it */
  quantized: (name: string) => Quantized4bit | undefined;
  /** what goes into config.json's quantization_config */
  config: BnbConfigOptions;
  /** largest shard (tensor bytes), default 5 GB as save_pretrained */
  maxShardBytes?: number;
}

export interface WriteQuantizedResult {
  files: string[];
  /** quantized weights written */
  quantizedTensors: number;
  /** their parameters */
  quantizedParams: number;
  /** bytes of their bitsandbytes tensors */
  quantizedBytes: number;
  /** all tensor bytes written */
  totalBytes: number;
}

/** Weight files of the source that are replaced, never copied. */
const WEIGHT_FILE = /(\.safetensors|\.safetensors\.index\.json|\.bin|\.bin\.index\.json|\.pt|\.pth|\.ckpt|\.h5|\.msgpack|\.onnx|\.gguf)$/;

async function isSameFolder(a: string, b: string): Promise<boolean> {
  try {
    return (await realpath(a)) === (await realpath(b));
  } catch {
    return resolve(a) === resolve(b);
  }
}

/**
 * Writes `srcDir`'s model into `outDir` with the tensors `opts.quantized` names in the bitsandbytes
 * 4-bit layout. Everything is checked and assembled before the first file is written; each file is
 * replaced atomically.
 */
export async function writeQuantizedCheckpoint(srcDir: string, outDir: string, opts: WriteQuantizedOptions): Promise<WriteQuantizedResult> {
  if (await isSameFolder(srcDir, outDir)) {
    throw new QuantizationError(`the output folder ${outDir} is the model folder itself; write the quantized model to a new folder`);
  }
  const configText = await readFile(join(srcDir, 'config.json'), 'utf8').catch((e: Error) => {
    throw new QuantizationError(`cannot read ${join(srcDir, 'config.json')} (${e.message}); is ${srcDir} a model folder?`);
  });
  const config = parseRawJson(configText, join(srcDir, 'config.json'));
  if (config === null || typeof config !== 'object' || Array.isArray(config) || config instanceof RawNumber) {
    throw new QuantizationError(`${join(srcDir, 'config.json')} is not a JSON object`);
  }
  (config as { [k: string]: RawJson }).quantization_config = bnbQuantizationConfig(opts.config);

  const source = await openCheckpoint(srcDir);
  const tensors = new Map<string, RawTensor>();
  let quantizedTensors = 0;
  let quantizedParams = 0;
  let quantizedBytes = 0;
  try {
    const names = source.names();
    const has = (k: string) => source.has(k);
    // companions of weights the source already holds 4-bit are rewritten with their weight
    const companions = new Set<string>();
    for (const w of names) if (quantStateKey(w, has)) for (const c of BNB_COMPONENTS) companions.add(`${w}.${c}`);
    for (const name of names) {
      if (companions.has(name)) continue;
      const q = opts.quantized(name);
      if (q) {
        const parts = toBnbTensors(name, q);
        for (const [k, t] of parts) {
          tensors.set(k, t);
          quantizedBytes += t.data.byteLength;
        }
        quantizedTensors++;
        quantizedParams += q.shape.reduce((a, b) => a * b, 1);
        continue;
      }
      if (quantStateKey(name, has)) {
        throw new QuantizationError(
          `${name} is 4-bit in the source checkpoint but was not given as quantized; load the model with its quantization to rewrite it`,
        );
      }
      tensors.set(name, await source.read(name));
    }
  } finally {
    await source.close();
  }

  const others: string[] = [];
  for (const f of await readdir(srcDir)) {
    if (f === 'config.json' || WEIGHT_FILE.test(f) || f.startsWith('.')) continue;
    if ((await stat(join(srcDir, f))).isFile()) others.push(f);
  }

  await mkdir(outDir, { recursive: true });
  const written = await writeShardedSafetensors(outDir, tensors, { metadata: { format: 'pt' }, maxShardBytes: opts.maxShardBytes });
  const configBytes = new TextEncoder().encode(dumpRawJson(config) + '\n');
  await writeFileAtomic(join(outDir, 'config.json'), configBytes);
  for (const f of others) {
    const bytes = await readFile(join(srcDir, f));
    await writeFileAtomic(join(outDir, f), bytes);
  }
  return {
    files: [
      ...written.files,
      ...(written.indexPath ? [written.indexPath] : []),
      join(outDir, 'config.json'),
      ...others.map((f) => join(outDir, f)),
    ],
    quantizedTensors,
    quantizedParams,
    quantizedBytes,
    totalBytes: written.totalSize,
  };
}
