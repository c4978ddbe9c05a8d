// One line per subcommand: adding a command touches only its file and this list.

import type { Command } from 'commander';
import { register as compare } from './compare.js';
import { register as compress } from './compress.js';
import { register as convert } from './convert.js';
import { register as evaluate } from './eval.js';
import { register as exportCmd } from './export.js';
import { register as forward } from './forward.js';
import { register as generate } from './generate.js';
import { register as info } from './info.js';
import { register as merge } from './merge.js';
import { register as mergeAdapters } from './merge_adapters.js';
import { register as quantize } from './quantize.js';
import { register as quickstart } from './quickstart.js';
import { register as serve } from './serve.js';
import { register as train } from './train.js';

type Register = (program: Command) => void;

const COMMANDS: Register[] = [
  generate,
  forward,
  train,
  quantize,
  merge,
  mergeAdapters,
  info,
  quickstart,
  compare,
  compress,
  convert,
  serve,
  evaluate,
  exportCmd,
];

export function registerCommands(program: Command): void {
  for (const register of COMMANDS) register(program);
}
