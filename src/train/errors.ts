// The errors a training run raises for things the user can fix: a malformed dataset, a run that
// diverged, a checkpoint that cannot be resumed. Each message says what to do next.

import { PeftError } from '../errors.js';

/** A jsonl dataset that cannot be used: which file, which line (1-based) and what is wrong. */
export class DatasetError extends PeftError {
  readonly file?: string;
  readonly line?: number;
  constructor(message: string, where: { file?: string; line?: number } = {}) {
    const loc = where.file
      ? `${where.file}${where.line !== undefined ? `:${where.line}` : ''}: `
      : where.line !== undefined
        ? `line ${where.line}: `
        : '';
    super(`${loc}${message}`);
    this.name = 'DatasetError';
    this.file = where.file;
    this.line = where.line;
  }
}

/** Training options that do not fit together, or a run that cannot go on (NaN loss). */
export class TrainError extends PeftError {
  constructor(message: string) {
    super(message);
    this.name = 'TrainError';
  }
}

/** A checkpoint folder that is missing, incomplete, or from a run with other settings. */
export class CheckpointError extends PeftError {
  constructor(message: string) {
    super(message);
    this.name = 'CheckpointError';
  }
}
