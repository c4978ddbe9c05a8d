// Turning errors into what a CLI user sees: typed library errors (any PeftError: things the user
// can fix) are one line with the fix and exit status 1; anything else is a bug and keeps its stack.

import { PeftError } from '../errors.js';

export class CliError extends PeftError {}

export function reportError(e: unknown): number {
  if (e instanceof PeftError) {
    process.stderr.write(`error: ${e.message}\n`);
    return 1;
  }
  process.stderr.write(`internal error (please report): ${e instanceof Error ? (e.stack ?? e.message) : String(e)}\n`);
  return 2;
}
