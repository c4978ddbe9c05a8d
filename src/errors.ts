// The one base class of every error a user can cause and fix (a bad file, config, flag or input).
// The CLI prints any PeftError as one line with exit status 1; anything else is a bug in this
// library and is reported as an internal error with its stack.

export class PeftError extends Error {
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = new.target.name;
  }
}

/**
 * The one check of the counts a user gave a library function (`what`: value, checked in order): each
 * undefined (not given) or an integer >= 1, else `Err` for the first that is not.
 */
export function checkPositiveInts(counts: Readonly<Record<string, number | undefined>>, Err: new (message: string) => PeftError): void {
  for (const [what, v] of Object.entries(counts))
    if (v !== undefined && !(Number.isInteger(v) && v > 0)) throw new Err(`${what} must be a positive integer, got ${v}`);
}
