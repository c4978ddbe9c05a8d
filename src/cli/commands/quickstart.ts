// `peft quickstart` (what `npm start` runs): LoRA fine-tuning of the bundled tiny Llama on a
// bundled task with a progress bar, the task metric and three sample generations before and after,
// and the adapter saved in the peft format. A thin shell over runQuickstart.

import { isAbsolute, relative } from '../../storage/index.js';
import { type Command, Option } from 'commander';
import { progressFor } from '../../train/progress_terminal.js';
import { QUICKSTART_DEFAULTS, type QuickstartResult, TASK_NAMES, formatScore, getTask, runQuickstart } from '../../tasks/index.js';
import { intArg, numberArg, positiveInt } from '../args.js';
import { DEFAULT_BASE_PRECISION } from '../../train/step.js';

interface QuickstartFlags {
  task: string;
  steps: number;
  out: string;
  model?: string;
  data?: string;
  lr: number;
  r: number;
  alpha: number;
  batch: number;
  evalLimit?: number;
  samples: number;
  seed: number;
  threads?: number;
  basePrecision?: 'fp32' | 'int8' | 'nf4';
  logEvery: number;
}

export function register(program: Command): void {
  const d = QUICKSTART_DEFAULTS;
  program
    .command('quickstart')
    .description('LoRA-tune the bundled tiny Llama on a bundled task and show the task metric before and after')
    .addOption(new Option('--task <name>', 'bundled task').choices(TASK_NAMES).default(d.task))
    .option('--steps <n>', 'optimizer steps', positiveInt('--steps'), d.steps)
    .option(
      '--out <dir>',
      'output folder for the adapter, metrics.jsonl, loss.svg and eval_results.json (an earlier run there is replaced)',
      d.out,
    )
    .option('--model <dir>', 'base model folder (default: the bundled models/tiny-llama)')
    .option('--data <dir>', 'folder with train.jsonl and eval.jsonl of {"prompt","completion"} (default: the bundled data/tasks/<task>)')
    .option('--lr <rate>', 'peak learning rate', numberArg('--lr'), d.learningRate)
    .option('--r <n>', 'LoRA rank', positiveInt('--r'), d.r)
    .option('--alpha <n>', 'LoRA alpha', numberArg('--alpha'), d.loraAlpha)
    .option('--batch <n>', 'examples per step', positiveInt('--batch'), d.batchSize)
    .option('--eval-limit <n>', 'score only the first n eval examples (default: all)', positiveInt('--eval-limit'))
    .option('--samples <n>', 'eval examples to show before/after', intArg('--samples', 0), d.samples)
    .option('--seed <s>', 'seed of data order, adapter init and dropout', intArg('--seed', 0), d.seed)
    .option('--threads <n>', 'ONNX Runtime intra-op threads (default: all cores)', positiveInt('--threads'))
    .addOption(
      new Option(
        '--base-precision <p>',
        `how the frozen base is held while training (default ${DEFAULT_BASE_PRECISION}, as peft train)`,
      ).choices(['fp32', 'int8', 'nf4']),
    )
    .option('--log-every <n>', 'without a terminal: print a line every n steps', positiveInt('--log-every'), 10)
    .action(async (flags: QuickstartFlags) => {
      await quickstart(flags);
    });
}

async function quickstart(f: QuickstartFlags): Promise<void> {
  const err = (s: string) => process.stderr.write(`${s}\n`);
  const spec = getTask(f.task);
  err(`peft quickstart: LoRA fine-tuning on the "${spec.name}" task`);
  const controller = new AbortController();
  let interrupts = 0;
  const onSigint = (): void => {
    interrupts += 1;
    if (interrupts > 1) {
      err('interrupted again: exiting now');
      process.exit(130);
    }
    err('stopping after the current step (Ctrl-C again to quit at once)');
    controller.abort();
  };
  process.on('SIGINT', onSigint);
  let r: QuickstartResult;
  try {
    r = await runQuickstart({
      task: f.task,
      steps: f.steps,
      out: f.out,
      model: f.model,
      data: f.data,
      learningRate: f.lr,
      r: f.r,
      loraAlpha: f.alpha,
      batchSize: f.batch,
      evalLimit: f.evalLimit,
      samples: f.samples,
      seed: f.seed,
      threads: f.threads,
      basePrecision: f.basePrecision,
      progress: progressFor(process.stderr, f.logEvery),
      log: err,
      signal: controller.signal,
    });
  } finally {
    process.removeListener('SIGINT', onSigint);
  }
  if (r.interrupted) {
    err(`stopped at step ${r.steps}; a checkpoint is in ${r.outDir}/checkpoints (peft train --resume latest continues it)`);
    process.exitCode = 130;
    return;
  }
  const after = r.after!;
  const show = (s: string) => JSON.stringify(s);
  const lines = [
    '',
    `${spec.name}: ${spec.description}`,
    `  before LoRA: ${formatScore(r.before)}`,
    `  after LoRA:  ${formatScore(after)}   (${r.steps} steps in ${r.trainSeconds.toFixed(0)}s, ${r.trainableParameters.toLocaleString('en-US')} trainable parameters)`,
  ];
  if (r.samples.length) lines.push('', 'samples (greedy, from the eval set):');
  r.samples.forEach((s, i) => {
    lines.push(
      `  [${i + 1}] ${show(s.prompt)}`,
      `      expected ${show(s.reference.trim())}`,
      `      before   ${show(s.before)}`,
      `      after    ${show(s.after)}`,
    );
  });
  const out = displayPath(r.outDir);
  const model = displayPath(r.modelDir);
  lines.push(
    '',
    `saved the LoRA adapter to ${out}/ (adapter_config.json, adapter_model.safetensors: the peft format), with metrics.jsonl, loss.svg and eval_results.json`,
    `try it: node dist/src/cli/main.js generate --model ${shellQuote(model)} --adapter ${shellQuote(out)} --max-new-tokens ${spec.maxNewTokens} --prompt ${shellQuote(r.samples[0]?.prompt ?? 'Hello')}`,
    '',
  );
  process.stdout.write(lines.join('\n'));
}

/** A path relative to the working folder when it lies inside it, else absolute. */
function displayPath(p: string): string {
  const rel = relative(process.cwd(), p);
  return rel === '' ? '.' : rel.startsWith('..') || isAbsolute(rel) ? p : rel;
}

/** A POSIX shell word: single quotes, or bash's $'...' when the text has a newline. */
function shellQuote(s: string): string {
  if (/^[\w./:=-]+$/.test(s)) return s;
  if (!s.includes('\n')) return `'${s.replace(/'/g, `'\\''`)}'`;
  return `$'${s.replace(/\\/g, '\\\\').replace(/'/g, "\\'").replace(/\n/g, '\\n')}'`;
}
