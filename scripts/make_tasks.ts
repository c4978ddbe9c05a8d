// Writes the bundled downstream tasks to data/tasks/<task>/{train,eval}.jsonl, one
// {"prompt","completion"} object per line, deterministically from a seed; the files are replaced
// atomically. Run: npm run make-tasks -- [--seed N] [--train N] [--eval N] [--out DIR]

import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { writeFileAtomic } from '../src/io/atomic.js';
import { TASK_NAMES, taskSplits } from './corpus/tasks.js';

async function main(): Promise<void> {
  const { values } = parseArgs({
    args: process.argv.slice(2),
    options: {
      seed: { type: 'string', default: '2024' },
      train: { type: 'string', default: '400' },
      eval: { type: 'string', default: '100' },
      out: { type: 'string', default: 'data/tasks' },
    },
  });
  const int = (flag: string, v: string): number => {
    const n = Number(v);
    if (!Number.isInteger(n) || n < 1) throw new Error(`--${flag} needs a positive integer, got ${JSON.stringify(v)}`);
    return n;
  };
  const seed = int('seed', values.seed);
  const sizes = { train: int('train', values.train), eval: int('eval', values.eval) };
  for (const task of TASK_NAMES) {
    const dir = join(values.out, task);
    await mkdir(dir, { recursive: true });
    const splits = taskSplits(task, seed, sizes);
    for (const split of ['train', 'eval'] as const) {
      const text = splits[split].map((ex) => JSON.stringify(ex)).join('\n') + '\n';
      await writeFileAtomic(join(dir, `${split}.jsonl`), text);
    }
    process.stderr.write(`${task}: ${sizes.train} train, ${sizes.eval} eval examples in ${dir}\n`);
  }
}

main().catch((e: unknown) => {
  process.stderr.write(`error: ${e instanceof Error ? e.message : String(e)}\n`);
  process.exitCode = 1;
});
