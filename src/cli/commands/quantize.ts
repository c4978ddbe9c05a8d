// `peft quantize`: loads a model with its linear layers quantized to 4-bit (bitsandbytes NF4 or FP4,
// double quantization by default) and writes it in the layout transformers saves for load_in_4bit
// models, so `loadModel` (and transformers) load it back without a full-precision detour.

import { type Command, InvalidArgumentError } from 'commander';
import { collect } from '../args.js';
import { resolveModelDir } from '../../io/hub.js';
import { checkOutputDir, withOutputDir } from '../../io/outdir.js';
import { loadModel } from '../../models/load.js';
import type { Quantized4bit } from '../../quant/blockwise.js';
import type { QuantType } from '../../quant/codes.js';
import { writeQuantizedCheckpoint } from '../../quant/save.js';
import { CliError } from '../errors.js';

interface QuantizeFlags {
  model: string;
  out: string;
  type: string;
  blockSize: number;
  doubleQuant: boolean;
  skipModules?: string[];
  overwrite?: boolean;
}

function blockSizeArg(v: string): number {
  const n = Number(v);
  if (!Number.isInteger(n) || n < 16 || n > 4096 || (n & (n - 1)) !== 0)
    throw new InvalidArgumentError('--block-size needs a power of two from 16 to 4096.');
  return n;
}

export function register(program: Command): void {
  program
    .command('quantize')
    .description("quantize a model's linear layers to 4-bit (bitsandbytes NF4/FP4) and save it as transformers saves load_in_4bit models")
    .requiredOption('--model <dir|repo>', 'model folder (config.json, model.safetensors) or Hub repo id')
    .requiredOption('--out <dir>', 'folder to write the quantized model to (not the model folder itself)')
    .option('--type <nf4|fp4>', '4-bit data type', 'nf4')
    .option('--block-size <n>', 'values per absmax block (transformers always uses 64)', blockSizeArg, 64)
    .option('--no-double-quant', 'keep the absmax values in float32 (bnb_4bit_use_double_quant=False)')
    .option('--overwrite', 'replace the quantized model an earlier `peft quantize` wrote to --out')
    .option('--skip-modules <name>', 'keep a module in full precision, by short name ("q_proj") or path; repeatable', collect)
    .action(async (flags: QuantizeFlags) => {
      if (flags.type !== 'nf4' && flags.type !== 'fp4') throw new CliError(`--type must be nf4 or fp4, got "${flags.type}"`);
      const type = flags.type as QuantType;
      const dir = await resolveModelDir(flags.model);
      const outOpts = { command: 'quantize', overwrite: flags.overwrite, inputs: [{ path: dir, what: 'model' }] };
      checkOutputDir(flags.out, outOpts);
      const t0 = performance.now();
      const model = await loadModel(dir, {
        quantization: { bits: 4, type, doubleQuant: flags.doubleQuant, blockSize: flags.blockSize, skipModules: flags.skipModules },
      });
      const loaded = performance.now();
      const held = new Map<string, Quantized4bit>();
      for (const n of model.weights.quantizedNames()) held.set(n, model.weights.getQuantized(n)!.quant);
      // The store names weights as the task model does; a base-model checkpoint leaves the prefix off.
      const byCheckpointName = (name: string): Quantized4bit | undefined => {
        const hit = held.get(name);
        if (hit) return hit;
        const ends = [...held.keys()].filter((k) => k.endsWith(`.${name}`));
        return ends.length === 1 ? held.get(ends[0]!) : undefined;
      };
      const r = await withOutputDir(flags.out, outOpts, (out) =>
        writeQuantizedCheckpoint(dir, out, {
          quantized: byCheckpointName,
          config: { type, doubleQuant: flags.doubleQuant, skipModules: flags.skipModules ?? null },
        }),
      );
      if (r.quantizedTensors !== held.size)
        throw new CliError(`wrote ${r.quantizedTensors} of ${held.size} quantized weights; the checkpoint names do not match the model's`);
      const s = (ms: number) => (ms / 1000).toFixed(2);
      process.stdout.write(
        `quantized ${r.quantizedTensors} linear weights (${r.quantizedParams} parameters) to ${type}` +
          `${flags.doubleQuant ? ' with double quantization' : ''}, block size ${flags.blockSize}: ` +
          `${(r.quantizedBytes / r.quantizedParams).toFixed(4)} bytes/parameter; ` +
          `wrote ${flags.out} (${(r.totalBytes / 2 ** 20).toFixed(2)} MiB of tensors) in ${s(performance.now() - t0)} s (load + quantize ${s(loaded - t0)} s)\n`,
      );
    });
}
