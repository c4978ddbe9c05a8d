// One line per subcommand: adding a command touches only its file and this list.

import type { Command } from 'commander';
import { register as compare } from './compare.js';
import { register as compress } from './compress.js';
import { register as evaluate } from './eval.js';
import { register as forward } from './forward.js';
import { register as generate } from './generate.js';
import { register as info } from './info.js';
import { register as merge } from './merge.js';
import { register as quantize } from './quantize.js';
import { register as quickstart } from './quickstart.js';
import { register as train } from './train.js';

type Register = (program: Command) => void;

const COMMANDS: Register[] = [
  generate,
  forward,
  train,
  quantize,
  merge,
  info,
  quickstart,
  compare,
  compress,
  evaluate,
];

export function registerCommands(program: Command): void {
  for (const register of COMMANDS) register(program);
}
