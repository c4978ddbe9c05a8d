#!/usr/bin/env node
// The `peft` command: every subcommand is a thin shell over the library, registered from its
// own file under commands/. User errors print one clear line and exit 1; bugs print a stack.

import { Command } from 'commander';
import { registerCommands } from './commands/index.js';
import { reportError } from './errors.js';

const program = new Command();
program
  .name('peft')
  .description(
    'Parameter-efficient fine-tuning of Hugging Face transformer models (LoRA, QLoRA, IA3, adapters, prompt/prefix tuning) on ONNX Runtime',
  )
  .version('0.1.0')
  .showHelpAfterError();

registerCommands(program);

program.parseAsync(process.argv).catch((e: unknown) => {
  process.exitCode = reportError(e);
});
