// `peft convert`: moves LoRA adapters between mlx-lm (adapters.safetensors + mlx-lm's
// adapter_config.json) and peft (adapter_model.safetensors or .bin + adapter_config.json), both ways.

import { existsSync, statSync } from '../../storage/index.js';
import { type Command, Option } from 'commander';
import { mlxToPeft, peftToMlx } from '../../tuners/lora/mlx.js';
import { CliError } from '../errors.js';

interface ConvertFlags {
  from: 'mlx' | 'peft';
  to: 'mlx' | 'peft';
  adapter: string;
  out: string;
  baseModel?: string;
  overwrite?: boolean;
}

export function register(program: Command): void {
  program
    .command('convert')
    .description('convert a LoRA adapter between mlx-lm and peft formats (exact: a transpose and scale <-> lora_alpha)')
    .addOption(new Option('--from <format>', 'format of --adapter').choices(['mlx', 'peft']).makeOptionMandatory())
    .addOption(new Option('--to <format>', 'format to write').choices(['mlx', 'peft']).makeOptionMandatory())
    .requiredOption('--adapter <dir>', 'adapter folder to convert')
    .requiredOption('--out <dir>', 'new (or empty) folder to write the converted adapter to')
    .option('--overwrite', 'replace the adapter an earlier `peft convert` wrote to --out')
    .option('--base-model <name>', 'mlx -> peft: base_model_name_or_path to record (default: the mlx config\'s "model")')
    .action(async (flags: ConvertFlags) => {
      if (flags.from === flags.to) throw new CliError(`--from and --to are both ${flags.from}; nothing to convert`);
      if (!existsSync(flags.adapter) || !statSync(flags.adapter).isDirectory())
        throw new CliError(`--adapter ${flags.adapter} is not a folder`);
      const r =
        flags.from === 'mlx'
          ? await mlxToPeft(flags.adapter, flags.out, { baseModelNameOrPath: flags.baseModel, overwrite: flags.overwrite })
          : await peftToMlx(flags.adapter, flags.out, { overwrite: flags.overwrite });
      process.stdout.write(
        `converted ${r.modules} LoRA modules (rank ${r.r}, scale ${r.scale}) from ${flags.from} to ${flags.to}: wrote ${flags.out}\n`,
      );
    });
}
