// `peft merge-adapters`: peft's add_weighted_adapter from the command line. Loads LoRA adapters
// (NAME=DIR, in order) on one base model, combines them with the given weights and combination
// type (peft's names and defaults), and writes the new adapter as a peft adapter folder.

import { existsSync, statSync } from '../../storage/index.js';
import { type Command, InvalidArgumentError, Option } from 'commander';
import { resolveModelDir } from '../../io/hub.js';
import { checkOutputDir, withOutputDir } from '../../io/outdir.js';
import { loadModel } from '../../models/load.js';
import { LoraModel } from '../../tuners/lora/model.js';
import { COMBINATION_TYPES, type CombinationType, type MajoritySignMethod } from '../../tuners/lora/weighted.js';
import { CliError } from '../errors.js';
import { intArg } from '../args.js';

interface Flags {
  model: string;
  adapter: string[];
  weights: number[];
  type: CombinationType;
  density?: number;
  majoritySignMethod: MajoritySignMethod;
  svdRank?: number;
  svdClamp?: number;
  seed: number;
  out: string;
  overwrite?: boolean;
}

const num =
  (flag: string) =>
  (v: string): number => {
    const n = Number(v);
    if (v.trim() === '' || !Number.isFinite(n)) throw new InvalidArgumentError(`${flag} needs a number, got ${JSON.stringify(v)}.`);
    return n;
  };
const int =
  (flag: string) =>
  (v: string): number => {
    const n = Number(v);
    if (!Number.isInteger(n)) throw new InvalidArgumentError(`${flag} needs an integer, got ${JSON.stringify(v)}.`);
    return n;
  };

export function register(program: Command): void {
  program
    .command('merge-adapters')
    .description("combine LoRA adapters into a new one (peft's add_weighted_adapter) and write it as a peft adapter folder")
    .requiredOption('--model <dir>', 'base model folder (or Hub id) the adapters were trained on')
    .requiredOption('--adapter <name=dir>', 'a source adapter, NAME=DIR; repeat in order', (v: string, prev: string[] = []) => {
      if (!/^[^=\s/\\]+=.+$/.test(v)) throw new InvalidArgumentError(`--adapter needs NAME=DIR, got ${JSON.stringify(v)}.`);
      return [...prev, v];
    })
    .requiredOption('--weights <w1,w2,...>', 'one weight per adapter, in order', (v: string) =>
      v.split(',').map((x) => num('--weights')(x)),
    )
    .addOption(new Option('--type <type>', "combination type (peft's combination_type)").choices([...COMBINATION_TYPES]).default('svd'))
    .option('--density <d>', 'fraction kept by ties / magnitude_prune / dare_* (required by them)', num('--density'))
    .addOption(new Option('--majority-sign-method <method>', 'TIES sign election').choices(['total', 'frequency']).default('total'))
    .option('--svd-rank <r>', 'rank of an *_svd result (default: the largest source rank)', int('--svd-rank'))
    .option('--svd-clamp <q>', 'clamp the SVD factors at this quantile of their values', num('--svd-clamp'))
    .option(
      '--seed <s>',
      "seed of DARE's random masks: peft's result after torch.manual_seed(S) (torch's CPU generator is replayed)",
      intArg('--seed', 0),
      0,
    )
    .requiredOption('--out <dir>', 'new (or empty) folder for the combined adapter')
    .option('--overwrite', 'replace the adapter an earlier `peft merge-adapters` wrote to --out')
    .action(async (flags: Flags) => {
      const sources = flags.adapter.map((a) => {
        const i = a.indexOf('=');
        return { name: a.slice(0, i), dir: a.slice(i + 1) };
      });
      if (new Set(sources.map((s) => s.name)).size !== sources.length) throw new CliError('each --adapter needs its own NAME');
      if (flags.weights.length !== sources.length)
        throw new CliError(`--weights has ${flags.weights.length} values for ${sources.length} adapters; give one per --adapter, in order`);
      for (const s of sources)
        if (!existsSync(s.dir) || !statSync(s.dir).isDirectory()) throw new CliError(`--adapter ${s.name}=${s.dir}: not a folder`);
      const out = flags.out;
      const outOpts = {
        command: 'merge-adapters',
        overwrite: flags.overwrite,
        inputs: sources.map((s) => ({ path: s.dir, what: `source adapter ${s.name}` })),
      };
      checkOutputDir(out, outOpts);
      const base = await loadModel(await resolveModelDir(flags.model));
      const lm = await LoraModel.fromPretrained(base, sources[0]!.dir, { adapterName: sources[0]!.name });
      for (const s of sources.slice(1)) await lm.loadAdapter(s.dir, s.name);
      let name = 'weighted';
      while (sources.some((s) => s.name === name)) name += '_';
      await lm.addWeightedAdapter(
        sources.map((s) => s.name),
        flags.weights,
        name,
        flags.type,
        {
          density: flags.density,
          majoritySignMethod: flags.majoritySignMethod,
          svdRank: flags.svdRank,
          svdClamp: flags.svdClamp,
          seed: flags.seed,
        },
      );
      await withOutputDir(out, outOpts, (dir) => lm.savePretrained(dir, { selectedAdapters: [name], flat: true }));
      const cfg = lm.peftConfig(name);
      process.stdout.write(
        `combined ${sources.length} adapters with ${flags.type} (weights ${flags.weights.join(', ')}): r=${cfg.r}, ${[...lm.adapter(name).modules.keys()].length} modules; wrote ${out}\n`,
      );
    });
}
