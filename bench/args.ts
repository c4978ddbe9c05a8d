// The command-line walker the benchmark scripts share: flag by flag, with the flag's value taken on
// demand, so each script keeps only its own switch of options.

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

/** The end of every script's option switch: `--help` prints the help and exits; any other flag is refused. */
export function helpOrUnknown(flag: string, help: string): never {
  if (flag === '--help') {
    console.log(help);
    process.exit(0);
  }
  throw new Error(`unknown option ${flag}\n${help}`);
}
