// Writes the bundled downstream tasks to data/tasks/<task>/{train,eval}.jsonl, one
// {"prompt","completion"} object per line, and the preference task to data/tasks/preference/ as
// {"prompt","chosen","rejected"} rows (--pref-train/--pref-eval of them), deterministically from a
// seed; the files are replaced atomically.
// Run: npm run make-tasks -- [--seed N] [--train N] [--eval N] [--pref-train N] [--pref-eval N] [--out DIR]

import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { writeFileAtomic } from '../src/io/atomic.js';
import { PREFERENCE_TASK, TASK_NAMES, preferenceSplits, taskSplits } from './corpus/tasks.js';

async function main(): Promise<void> {
  const { values } = parseArgs({
    args: process.argv.slice(2),
    options: {
      seed: { type: 'string', default: '2024' },
      train: { type: 'string', default: '400' },
      eval: { type: 'string', default: '100' },
      'pref-train': { type: 'string', default: '256' },
      'pref-eval': { type: 'string', default: '128' },
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
  const pref = { train: int('pref-train', values['pref-train']), eval: int('pref-eval', values['pref-eval']) };
  const dir = join(values.out, PREFERENCE_TASK);
  await mkdir(dir, { recursive: true });
  const splits = preferenceSplits(seed, pref);
  for (const split of ['train', 'eval'] as const)
    await writeFileAtomic(join(dir, `${split}.jsonl`), splits[split].map((ex) => JSON.stringify(ex)).join('\n') + '\n');
  process.stderr.write(`${PREFERENCE_TASK}: ${pref.train} train, ${pref.eval} eval pairs in ${dir}\n`);
}

main().catch((e: unknown) => {
  process.stderr.write(`error: ${e instanceof Error ? e.message : String(e)}\n`);
  process.exitCode = 1;
});
