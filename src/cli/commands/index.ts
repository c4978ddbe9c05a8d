// One line per subcommand: adding a command touches only its file and this list.

import type { Command } from 'commander';

type Register = (program: Command) => void;

const COMMANDS: Register[] = [];

export function registerCommands(program: Command): void {
  for (const register of COMMANDS) register(program);
}
