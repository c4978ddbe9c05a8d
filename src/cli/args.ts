// The option parsers every command shares (commander's argParser functions). A bad value becomes
// commander's one-line "error: option '--x <n>' argument 'abc' is invalid. --x needs ..." message.

import { type Command, InvalidArgumentError } from 'commander';
import type { RuntimeOptions } from '../runtime/session.js';

/** An integer >= `min`. */
export function intArg(flag: string, min: number): (v: string) => number {
  return (v: string) => {
    const n = Number(v);
    if (v.trim() === '' || !Number.isInteger(n) || n < min) throw new InvalidArgumentError(`${flag} needs an integer >= ${min}.`);
    return n;
  };
}

/** An integer >= 1 (steps, batch sizes, counts). */
export const positiveInt = (flag: string): ((v: string) => number) => intArg(flag, 1);

/** Any finite number. */
export function numberArg(flag: string): (v: string) => number {
  return (v: string) => {
    const n = Number(v);
    if (v.trim() === '' || !Number.isFinite(n)) throw new InvalidArgumentError(`${flag} needs a number.`);
    return n;
  };
}

/** A repeatable option: each use adds one value. */
export const collect = (v: string, prev: string[] | undefined): string[] => [...(prev ?? []), v];

/** A comma-separated list of at least one item. */
export function listArg(flag: string, what = 'names'): (v: string) => string[] {
  return (v: string) => {
    const items = v
      .split(',')
      .map((s) => s.trim())
      .filter(Boolean);
    if (items.length === 0) throw new InvalidArgumentError(`${flag} needs ${what} separated by commas.`);
    return items;
  };
}

/** The ONNX Runtime flags of the decoding commands (`peft generate`, `peft serve`). */
export interface RuntimeFlags {
  threads?: number;
  int8?: boolean;
  /** false with --no-spin */
  spin?: boolean;
}

/** Adds --threads, --int8 and --no-spin to a decoding command. */
export function runtimeFlags(cmd: Command): Command {
  return cmd
    .option('--threads <n>', 'ONNX Runtime intra-op threads (default: all cores)', positiveInt('--threads'))
    .option(
      '--int8',
      'run the weight products on int8 copies of the frozen weights (MatMulNBits): ~3x faster decoding on CPU, logits move slightly (bench/RESULTS.md)',
    )
    .option(
      '--no-spin',
      'ONNX Runtime threads wait passively instead of spinning (faster on a machine shared with other jobs; bench/RESULTS.md "Decode")',
    );
}

/** The runtime options those flags ask for. */
export function runtimeOptions(flags: RuntimeFlags): RuntimeOptions {
  return { threads: flags.threads, quantize: flags.int8 ? 'int8' : undefined, spinning: flags.spin === false ? false : undefined };
}
