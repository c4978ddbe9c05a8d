// The option parsers every command shares (commander's argParser functions). A bad value becomes
// commander's one-line "error: option '--x <n>' argument 'abc' is invalid. --x needs ..." message.

import { InvalidArgumentError } from 'commander';

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
