// Turning errors into what a CLI user sees: typed library errors (things the user can fix) are
// one line with the fix; anything else is a bug and keeps its stack.

const USER_ERRORS = new Set([
  'GraphShapeError', 'AutodiffError', 'RuntimeError', 'SafetensorsError', 'ConfigError', 'ModelError', 'TokenizerError',
  'TokenizerLoadError', 'ChatTemplateError', 'MissingChatTemplateError', 'HubError', 'HubOfflineError', 'HubNotFoundError',
  'HubAuthError', 'HubHttpError', 'ModelPathError', 'CliError', 'PeftConfigError', 'AdapterError', 'DatasetError', 'TrainError',
  'CheckpointError', 'QuantizationError', 'GenerationError', 'UnknownPeftTypeError', 'AdapterMismatchError', 'TaskError', 'NotMergeableError', 'CompareError',
]);

export class CliError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'CliError';
  }
}

export function reportError(e: unknown): number {
  if (e instanceof Error && USER_ERRORS.has(e.name)) {
    process.stderr.write(`error: ${e.message}\n`);
    return 1;
  }
  process.stderr.write(`internal error (please report): ${e instanceof Error ? (e.stack ?? e.message) : String(e)}\n`);
  return 2;
}
