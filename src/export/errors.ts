// Errors of `peft export`: every one is raised before anything is written.

import { PeftError } from '../errors.js';

/** The model, adapter or flags cannot be exported in the requested format. */
export class ExportError extends PeftError {
  constructor(message: string) {
    super(message);
    this.name = 'ExportError';
  }
}
