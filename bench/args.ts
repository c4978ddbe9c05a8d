// The command-line walker the benchmark scripts share: flag by flag, with the flag's value taken on
// demand, so each script keeps only its own switch of options; and the value parsers those switches
// use, each throwing a one-line "<flag> needs ..." error.

/** Calls `each(flag, value)` for every argument; `value()` takes the next argument as the flag's value, or throws "<flag> needs a value". */
export function forEachFlag(argv: readonly string[], each: (flag: string, value: () => string) => void): void {
  for (let i = 0; i < argv.length; i++) {
    const flag = argv[i]!;
    each(flag, () => {
      const v = argv[++i];
      if (v === undefined) throw new Error(`${flag} needs a value`);
      return v;
    });
  }
}

/** The end of every script's option switch: `--help` (or `-h`) prints the help and exits; any other flag is refused. */
export function helpOrUnknown(flag: string, help: string): never {
  if (flag === '--help' || flag === '-h') {
    console.log(help);
    process.exit(0);
  }
  throw new Error(`unknown option ${flag}\n${help}`);
}

/** `text` as an integer of at least `min`, or "<flag> needs an integer >= min". */
export function intArg(flag: string, text: string, min = 0): number {
  const n = Number(text);
  if (!Number.isInteger(n) || n < min) throw new Error(`${flag} needs an integer >= ${min}, got ${text}`);
  return n;
}

/** `text` as a finite number of at least `min`, or "<flag> needs a number >= min". */
export function numberArg(flag: string, text: string, min = 0): number {
  const n = Number(text);
  if (!Number.isFinite(n) || n < min) throw new Error(`${flag} needs a number >= ${min}, got ${text}`);
  return n;
}

/** A comma-separated list of `allowed` names (empty items dropped), or "unknown <what> x; choose from ...". */
export function listArg<T extends string>(text: string, allowed: readonly T[], what: string): T[] {
  const xs = text.split(',').filter(Boolean);
  for (const x of xs) if (!allowed.includes(x as T)) throw new Error(`unknown ${what} ${x}; choose from ${allowed.join(', ')}`);
  return xs as T[];
}

/** A comma-separated list of integers of at least `min` (seeds, sizes). */
export function intListArg(flag: string, text: string, min = 0): number[] {
  return text
    .split(',')
    .filter(Boolean)
    .map((x) => intArg(flag, x, min));
}
