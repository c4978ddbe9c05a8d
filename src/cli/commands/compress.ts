// `peft compress` / `peft decompress`: store a LoRA adapter's matrices quantized (int8 per row or per
// block, or NF4 with block scales) with the size reduction and the output drift recorded in the
// file, and turn a compressed folder back into the standard peft form that Python peft loads.

import { existsSync, statSync } from '../../storage/index.js';
import { type OutputDirOptions, checkOutputDir, withOutputDir } from '../../io/outdir.js';
import { type Command, InvalidArgumentError, Option } from 'commander';
import { resolveModelDir } from '../../io/hub.js';
import { loadModel } from '../../models/load.js';
import { COMPRESSION_METHODS, LoraModel, compressionSpec } from '../../tuners/lora/index.js';
import { adapterBaseQuantization, adapterMetadata, decompressAdapterFolder, readAdapterConfigFile } from '../../tuners/lora/save.js';
import { COMPRESSION_METADATA_KEY, type AdapterCompression, parseCompressionReport } from '../../tuners/lora/compress.js';
import { CliError } from '../errors.js';

interface CompressFlags {
  adapter: string;
  out: string;
  method: AdapterCompression;
  blockSize: number;
  model?: string;
  overwrite?: boolean;
}

const evenArg = (v: string): number => {
  const n = Number(v);
  if (!Number.isInteger(n) || n < 2 || n % 2 !== 0) throw new InvalidArgumentError('--block-size needs an even integer >= 2.');
  return n;
};

/** Checks --adapter and --out (new, empty, or this command's earlier output with --overwrite); returns the --out rules. */
function checkFolders(command: string, adapter: string, out: string, overwrite: boolean | undefined): OutputDirOptions {
  if (!existsSync(adapter) || !statSync(adapter).isDirectory()) throw new CliError(`--adapter ${adapter} is not a folder`);
  const opts: OutputDirOptions = { command, overwrite, inputs: [{ path: adapter, what: 'adapter' }] };
  checkOutputDir(out, opts);
  return opts;
}

const kib = (b: number) => `${(b / 1024).toFixed(1)} KiB`;

export function register(program: Command): void {
  program
    .command('compress')
    .description(
      'save a LoRA adapter with its lora_A/lora_B quantized (int8 or NF4); this library loads it transparently, Python peft needs `peft decompress` first',
    )
    .requiredOption('--adapter <dir>', 'LoRA adapter folder (adapter_config.json + adapter_model.safetensors)')
    .requiredOption('--out <dir>', 'folder to write the compressed adapter to')
    .addOption(
      new Option('--method <method>', 'int8-row: absmax per row; int8-block / nf4: absmax per block')
        .choices([...COMPRESSION_METHODS])
        .default('int8-block'),
    )
    .option('--block-size <n>', 'values per scale for int8-block and nf4', evenArg, 64)
    .option('--model <dir|repo>', 'base model, to measure the output drift (default: base_model_name_or_path)')
    .option('--overwrite', 'replace the adapter an earlier `peft compress` wrote to --out')
    .action(async (flags: CompressFlags) => {
      const outOpts = checkFolders('compress', flags.adapter, flags.out, flags.overwrite);
      const spec = compressionSpec(flags.method, flags.blockSize);
      const config = await readAdapterConfigFile(flags.adapter);
      if (config.peft_type !== 'LORA')
        throw new CliError(`${flags.adapter} holds a ${String(config.peft_type)} adapter; only LoRA adapters are compressed`);
      const name = flags.model ?? (typeof config.base_model_name_or_path === 'string' ? config.base_model_name_or_path : undefined);
      if (!name) throw new CliError('the adapter does not record its base model (base_model_name_or_path); pass --model DIR');
      const dir = await resolveModelDir(name);
      // A QLoRA adapter is measured on the 4-bit base it was trained on.
      const quantization = await adapterBaseQuantization(flags.adapter);
      const base = await loadModel(dir, quantization ? { quantization } : {});
      const model = await LoraModel.fromPretrained(base, flags.adapter);
      await withOutputDir(flags.out, outOpts, (out) => model.savePretrained(out, { compression: spec }));
      const report = parseCompressionReport((await adapterMetadata(flags.out))![COMPRESSION_METADATA_KEY]!, flags.out);
      process.stdout.write(
        `compressed ${report.tensors} LoRA matrices (${report.parameters} parameters) with ${report.method}${report.block_size ? `, blocks of ${report.block_size}` : ''}: ` +
          `${kib(report.float32_bytes)} -> ${kib(report.stored_bytes)} (${(report.float32_bytes / report.stored_bytes).toFixed(2)}x); ` +
          `output drift max |logit diff| ${report.max_abs_logit_diff?.toExponential(2)} on ${report.sample}; wrote ${flags.out}\n`,
      );
    });
  program
    .command('decompress')
    .description(
      'write a compressed LoRA adapter (peft compress) back in the standard peft form (float32 tensors), which Python peft loads',
    )
    .requiredOption('--adapter <dir>', 'compressed adapter folder')
    .requiredOption('--out <dir>', 'folder to write the standard adapter to')
    .option('--overwrite', 'replace the adapter an earlier `peft decompress` wrote to --out')
    .action(async (flags: { adapter: string; out: string; overwrite?: boolean }) => {
      const outOpts = checkFolders('decompress', flags.adapter, flags.out, flags.overwrite);
      const r = await withOutputDir(flags.out, outOpts, (out) => decompressAdapterFolder(flags.adapter, out));
      process.stdout.write(`wrote ${r.tensors} float32 tensors (${kib(r.bytes)}) to ${flags.out}\n`);
    });
}
