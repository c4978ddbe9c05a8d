// `peft merge`: folds a saved adapter (any method the registry marks mergeable) into its base model (peft's merge_and_unload)
// and writes a plain Hugging Face model folder (config.json, model.safetensors, tokenizer files).
// Everything is checked and merged in memory first; the folder is written beside --out and renamed.

import { dirname, existsSync, join, mkdir, readdirSync, rename, resolve, rm, statSync } from '../../storage/index.js';
import { removeTempFiles, tempPathFor } from '../../io/atomic.js';
import { checkOutputDir, markOutputDir } from '../../io/outdir.js';
import { type Command, InvalidArgumentError, Option } from 'commander';
import { resolveModelDir } from '../../io/hub.js';
import { copyTokenizerFiles } from '../../io/modelfiles.js';
import { loadModel } from '../../models/load.js';
import { baseForAdapter } from '../../train/add_tokens.js';
import { adapterPeftType, loadAdapter } from '../../tuners/load.js';
import { tunerOf } from '../../tuners/registry.js';
import { saveModelPretrained, savedDtype } from '../../tuners/lora/merge.js';
import type { CheckpointDtype } from '../../nn/weights.js';
import { adapterBaseQuantization } from '../../tuners/lora/save.js';
import type { QuantizationConfig } from '../../quant/plan.js';
import { AdapterError, type AdaptedModel } from '../../tuners/types.js';
import { CliError } from '../errors.js';

interface MergeFlags {
  model: string;
  adapter: string;
  out: string;
  overwrite?: boolean;
  maxShardSize?: number;
  /** QLoRA: write the merged model 4-bit again (the base's own quantization) instead of dequantized */
  quantize?: string;
  /** the adapter was trained on --model quantized to NF4 (bitsandbytes defaults) */
  qlora?: boolean;
  /** dtype of the written weights (default: the base checkpoint's) */
  dtype?: CheckpointDtype;
}

/** An adapter whose method has no weights to fold into the base model. */
class NotMergeableError extends AdapterError {
  constructor(
    readonly method: string,
    message: string,
  ) {
    super(message);
    this.name = 'NotMergeableError';
  }
}

const INSTEAD =
  'so there is nothing to merge; keep it as a separate adapter and apply it at run time (`peft generate --adapter DIR`, `peft forward --adapter DIR`)';

const shardSizeArg = (v: string): number => {
  const m = /^\s*(\d+(?:\.\d+)?)\s*(B|KB|MB|GB|KiB|MiB|GiB)?\s*$/i.exec(v);
  if (!m) throw new InvalidArgumentError(`--max-shard-size needs a size such as 2GB or 500MB, got ${JSON.stringify(v)}`);
  const unit = (m[2] ?? 'B').toUpperCase();
  const mult: Record<string, number> = { B: 1, KB: 1e3, MB: 1e6, GB: 1e9, KIB: 2 ** 10, MIB: 2 ** 20, GIB: 2 ** 30 };
  const n = Math.floor(Number(m[1]) * mult[unit]!);
  if (n < 1) throw new InvalidArgumentError('--max-shard-size must be at least 1 byte.');
  return n;
};

export function register(program: Command): void {
  program
    .command('merge')
    .description(
      'merge an adapter (LoRA, IA3, ... any mergeable method) into its base model and write a Hugging Face model folder (peft merge_and_unload)',
    )
    .requiredOption('--model <dir|repo>', 'base model folder (config.json, model.safetensors) or Hub repo id')
    .requiredOption('--adapter <dir>', 'adapter folder (adapter_config.json + adapter_model.safetensors)')
    .requiredOption('--out <dir>', 'folder to write: config.json, model.safetensors, tokenizer files')
    .option('--overwrite', 'replace the merged model an earlier `peft merge` wrote to --out')
    .option(
      '--max-shard-size <size>',
      'split model.safetensors into shards of at most this size (default 5GB, as transformers)',
      shardSizeArg,
    )
    .option(
      '--quantize <type>',
      'QLoRA adapters: re-quantize the merged weights to 4-bit (nf4 or fp4, as the base) instead of writing the dequantized full-precision model',
    )
    .addOption(
      new Option(
        '--dtype <dtype>',
        "dtype of the written weights, recorded in config.json (default: the base checkpoint's, so a float16/bfloat16 model stays half precision)",
      ).choices(['float32', 'float16', 'bfloat16']),
    )
    .option(
      '--qlora',
      'the LoRA adapter was trained on --model quantized to NF4 (double quant, blocks of 64): merge into that base (recorded in adapters this tool trained)',
    )
    .action(async (flags: MergeFlags) => {
      await runMerge(flags);
    });
}

/** --out: new, empty, or an earlier merge's output with --overwrite (src/io/outdir.ts); never an input. */
function checkOut(out: string, flags: MergeFlags, modelDir: string, adapterDir: string): void {
  checkOutputDir(out, {
    command: 'merge',
    overwrite: flags.overwrite,
    inputs: [
      { path: modelDir, what: 'base model' },
      { path: adapterDir, what: 'adapter' },
    ],
  });
}

/** Moves the finished temp folder to `out`, replacing an existing folder only once the new one is complete. */
async function publish(tmp: string, out: string): Promise<void> {
  if (!existsSync(out)) {
    await rename(tmp, out);
    return;
  }
  const old = tempPathFor(out, 'old');
  await rename(out, old);
  try {
    await rename(tmp, out);
  } catch (e) {
    await rename(old, out).catch(() => undefined);
    throw e;
  }
  await rm(old, { recursive: true, force: true });
}

/** The 4-bit quantization a LoRA adapter was trained on: recorded in its file (QLoRA by this tool), or NF4 defaults with --qlora. */
async function qloraBase(adapterDir: string, qlora: boolean): Promise<QuantizationConfig | undefined> {
  return (await adapterBaseQuantization(adapterDir)) ?? (qlora ? { bits: 4, type: 'nf4', doubleQuant: true, blockSize: 64 } : undefined);
}

export async function runMerge(flags: MergeFlags): Promise<void> {
  const say = (s: string) => process.stderr.write(`${s}\n`);
  const out = resolve(flags.out);
  const adapterDir = flags.adapter;
  if (!existsSync(adapterDir) || !statSync(adapterDir).isDirectory()) throw new CliError(`--adapter ${adapterDir} is not a folder`);
  const method = await adapterPeftType(adapterDir);
  const tuner = tunerOf(method)!;
  if (tuner.mergeable !== true) {
    const folder = tuner.mergeable.folder ?? `${/^[aeiou]/i.test(tuner.label) ? 'an' : 'a'} ${tuner.label} (${method})`;
    throw new NotMergeableError(method, `${adapterDir} is ${folder} adapter: ${tuner.mergeable.why}, ${INSTEAD}`);
  }
  const modelDir = await resolveModelDir(flags.model);
  checkOut(flags.out, flags, modelDir, adapterDir);

  if (flags.quantize !== undefined && flags.quantize !== 'nf4' && flags.quantize !== 'fp4')
    throw new CliError(`--quantize takes nf4 or fp4, got ${JSON.stringify(flags.quantize)}`);
  if ((flags.quantize !== undefined || flags.qlora) && method !== 'LORA')
    throw new CliError(`--quantize and --qlora are for LoRA adapters (QLoRA); ${adapterDir} holds a ${method} adapter`);
  // QLoRA: the adapter was trained against the 4-bit base, so the base is loaded 4-bit (a checkpoint
  // saved so, or --model quantized as recorded in the adapter / asked with --qlora).
  const trainedOn = method === 'LORA' ? await qloraBase(adapterDir, flags.qlora === true) : undefined;

  const t0 = performance.now();
  const base = await loadModel(modelDir, trainedOn ? { quantization: trainedOn } : {});
  const quantized = base.weights.quantizedNames();
  if (quantized.length && method !== 'LORA') {
    throw new CliError(
      `the base model in ${modelDir} is stored 4-bit quantized (${quantized.length} weights); a ${method} adapter cannot be merged into 4-bit weights. Merge into the unquantized base model, then quantize the result with \`peft quantize\``,
    );
  }
  if (flags.quantize !== undefined) {
    const types = new Set(quantized.map((n) => base.weights.getQuantized(n)!.quant.type));
    if (!quantized.length) {
      throw new CliError(
        `--quantize re-quantizes a QLoRA merge, but ${adapterDir} was not trained on a 4-bit base (pass --qlora if it was trained on ${modelDir} quantized to NF4); otherwise merge without it and run \`peft quantize\` on the result`,
      );
    }
    if (!types.has(flags.quantize as 'nf4' | 'fp4') || types.size > 1)
      throw new CliError(
        `--quantize ${flags.quantize}: the base is quantized as ${[...types].join(', ')}; re-quantizing keeps the base's own type, pass --quantize ${[...types][0]}`,
      );
  }
  // an adapter trained with --add-tokens: the base grown to its tokenizer, whose files the merged folder takes
  const grown = await baseForAdapter(base, adapterDir);
  const adapted: AdaptedModel = await loadAdapter(grown.model, adapterDir);
  if (!adapted.mergeAndUnload) {
    throw new NotMergeableError(
      adapted.peftType,
      `${adapterDir} is a ${adapted.peftType} adapter, which cannot be merged into the weights; ${INSTEAD}`,
    );
  }
  const merged = await adapted.mergeAndUnload(quantized.length ? { requantize: flags.quantize !== undefined } : undefined);
  say(`merged the ${adapted.peftType} adapter ${adapterDir} into ${modelDir} in ${((performance.now() - t0) / 1000).toFixed(1)} s`);
  if (quantized.length) {
    say(
      flags.quantize !== undefined
        ? `QLoRA: the merged weights were re-quantized to ${flags.quantize} (adds one 4-bit rounding of W + BA; untouched weights keep their 4-bit data)`
        : `QLoRA: the ${quantized.length} 4-bit weights were dequantized and the adapter merged in float32 (the model the adapter was trained on, exactly); pass --quantize ${base.weights.getQuantized(quantized[0]!)!.quant.type} for a 4-bit result`,
    );
  }

  const dtype = flags.dtype ?? savedDtype(merged);
  // Nothing was written so far: every check above runs before the output folder is touched.
  const parent = dirname(out);
  await mkdir(parent, { recursive: true });
  await removeTempFiles(parent, 1); // folders of merges a kill interrupted
  const tmp = tempPathFor(out);
  try {
    await saveModelPretrained(merged, tmp, { maxShardBytes: flags.maxShardSize, copyTokenizer: true, dtype });
    // --add-tokens adapters: the tokenizer with the tokens, saved with the adapter
    if (grown.addedTokens) await copyTokenizerFiles(adapterDir, tmp, { generationConfig: false });
    await markOutputDir(tmp, 'merge');
    // Re-checked just before the swap: another command may have written --out since.
    checkOut(flags.out, flags, modelDir, adapterDir);
    await publish(tmp, out);
  } catch (e) {
    await rm(tmp, { recursive: true, force: true });
    throw e;
  }
  const files = readdirSync(out).sort();
  const bytes = files.reduce((n, f) => n + statSync(join(out, f)).size, 0);
  say(
    `wrote ${files.join(', ')} (${(bytes / 2 ** 20).toFixed(1)} MiB, ${dtype}${flags.dtype ? '' : ' as the base checkpoint'}) to ${flags.out}`,
  );
}
