// The error a method comparison raises for things the user can fix: bad flags, a method name
// that does not exist, a run that failed in its worker process (with the worker's own message).

import { PeftError } from '../errors.js';

export class CompareError extends PeftError {
  constructor(message: string) {
    super(message);
    this.name = 'CompareError';
  }
}
