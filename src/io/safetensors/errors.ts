// The one error type of the safetensors reader/writer. Every way a file can be malformed, or an
// I/O call can fail, surfaces as a SafetensorsError naming the file (and tensor when known), so
// callers loading untrusted checkpoints need a single catch clause.

import { PeftError } from '../../errors.js';

export class SafetensorsError extends PeftError {
  /** The file (or '<memory>' for in-memory buffers) the problem was found in. */
  readonly file: string;
  /** The tensor concerned, when the problem is specific to one. */
  readonly tensor: string | undefined;
  /** What is wrong, without the location prefix of `message`. */
  readonly detail: string;

  constructor(file: string, detail: string, tensor?: string, options?: { cause?: unknown }) {
    const where = tensor === undefined ? file : `${file}, tensor ${JSON.stringify(tensor)}`;
    super(`${where}: ${detail}`, options);
    this.name = 'SafetensorsError';
    this.file = file;
    this.tensor = tensor;
    this.detail = detail;
  }
}

/** Wraps a failed fs call so that I/O problems reach callers as the same typed error. */
export function ioError(file: string, action: string, cause: unknown, tensor?: string): SafetensorsError {
  if (cause instanceof SafetensorsError) return cause;
  const reason = cause instanceof Error ? cause.message : String(cause);
  return new SafetensorsError(file, `${action} failed: ${reason}`, tensor, { cause });
}
