// The one base class of every error a user can cause and fix (a bad file, config, flag or input).
// The CLI prints any PeftError as one line with exit status 1; anything else is a bug in this
// library and is reported as an internal error with its stack.

export class PeftError extends Error {
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = new.target.name;
  }
}
