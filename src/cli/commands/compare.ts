// `peft compare`: trains every method with the same step budget on one task and prints the table of
// the five criteria with measured numbers; writes compare.md, compare.json and the SVG figures.
// A thin shell over runComparison (src/compare/), which runs each method in its own process.

import { existsSync, join, readFile } from '../../storage/index.js';
import { type Command, InvalidArgumentError, Option } from 'commander';
import {
  COMPARE_DEFAULTS,
  COMPARE_FILES,
  type CompareMethod,
  type ComparisonReport,
  type Constraints,
  type Objective,
  adviceMarkdown,
  compareMethods,
  comparisonMarkdown,
  comparisonSummary,
  defaultCompareMethods,
  parseBytes,
  parseDurationMs,
  recommend,
  runComparison,
} from '../../compare/index.js';
import { writeFileAtomic } from '../../io/atomic.js';
import { CliError } from '../errors.js';
import { TASK_NAMES } from '../../tasks/tasks.js';
import { intArg, positiveInt } from '../args.js';

interface CompareFlags {
  model?: string;
  data?: string;
  eval?: string;
  task?: string;
  methods?: string[];
  budget: number;
  batch: number;
  maxLen?: number;
  lr?: Partial<Record<CompareMethod, number>>;
  flexLrs: number[];
  flexTasks?: string[];
  evalLimit?: number;
  flexEvalLimit?: number;
  latencyPrompts: number;
  latencyTokens: number;
  seed: number;
  threads?: number;
  runTimeout: number;
  out: string;
  objective: Objective;
  tasks: number;
  memoryBudget?: number;
  latencyBudget?: number;
  from?: string;
  recommend?: boolean | string;
}

const list =
  (flag: string) =>
  (v: string): string[] => {
    const items = v
      .split(',')
      .map((s) => s.trim())
      .filter(Boolean);
    if (items.length === 0) throw new InvalidArgumentError(`${flag} needs a comma-separated list.`);
    return items;
  };

function scalesArg(v: string): number[] {
  const xs = list('--flex-lrs')(v).map(Number);
  if (xs.some((x) => !(x > 0 && Number.isFinite(x))))
    throw new InvalidArgumentError('--flex-lrs needs multiples above 0, e.g. 0.5,1,2 (1 alone skips the grid).');
  return xs;
}

function flexTasksArg(v: string): string[] {
  if (v === 'none') return [];
  if (v === 'all') return [...TASK_NAMES];
  const names = list('--flex-tasks')(v);
  const bad = names.filter((n) => !TASK_NAMES.includes(n));
  if (bad.length)
    throw new InvalidArgumentError(`--flex-tasks: unknown task ${bad.join(', ')}; bundled tasks: ${TASK_NAMES.join(', ')} (or all, none).`);
  return names;
}

function lrArg(v: string, prev: Partial<Record<CompareMethod, number>> | undefined): Partial<Record<CompareMethod, number>> {
  const out = { ...prev };
  for (const item of list('--lr')(v)) {
    const [m, rate] = item.split('=');
    const n = Number(rate);
    if (!m || !compareMethods().includes(m) || !(n > 0 && Number.isFinite(n))) {
      throw new InvalidArgumentError(`--lr takes METHOD=RATE pairs (e.g. lora=1e-3,full=1e-4); methods: ${compareMethods().join(', ')}.`);
    }
    out[m as CompareMethod] = n;
  }
  return out;
}

export function register(program: Command): void {
  const d = COMPARE_DEFAULTS;
  program
    .command('compare')
    .description('train every PEFT method (and full fine-tuning as the reference) with the same step budget and measure the five criteria')
    .option('--model <dir>', 'base model folder (default: the bundled models/tiny-llama)')
    .option(
      '--data <train.jsonl>',
      'training data (default: the --task\'s bundled train.jsonl); {"text","label"} rows for a sequence classifier',
    )
    .option(
      '--eval <eval.jsonl>',
      'evaluation data: prompt/completion rows are scored by greedy generation, text or chat rows by eval loss, a sequence classifier\'s {"text","label"} rows by accuracy',
    )
    .addOption(
      new Option('--task <name>', `bundled task whose data and metric to use (default ${d.task} when --data is not given)`).choices(
        TASK_NAMES,
      ),
    )
    .option(
      '--methods <list>',
      `methods to compare, comma-separated (default: ${defaultCompareMethods().join(', ')}${
        compareMethods().some((m) => !defaultCompareMethods().includes(m))
          ? `; also ${compareMethods()
              .filter((m) => !defaultCompareMethods().includes(m))
              .join(', ')}`
          : ''
      }); full fine-tuning always runs as the reference`,
      list('--methods'),
    )
    .option('--budget <steps>', 'optimizer steps per run, the same for every method', positiveInt('--budget'), d.budget)
    .option('--batch <n>', 'examples per step', positiveInt('--batch'), d.batchSize)
    .option(
      '--max-len <n>',
      "tokens per training sequence at most (default: the model's positions, less the 20 virtual tokens of prompt/prefix/P-tuning where positions are a table (BERT, GPT-2), at most 1024)",
      intArg('--max-len', 2),
    )
    .option('--lr <method=rate,...>', 'learning rate of a method instead of its default (repeatable)', lrArg)
    .option('--flex-lrs <list>', 'learning-rate multiples for the flexibility grid (1 alone skips it)', scalesArg, [...d.flexLrs])
    .option(
      '--flex-tasks <list>',
      'bundled tasks each method also trains on for flexibility: names, all, or none (default: all but the primary task)',
      flexTasksArg,
    )
    .option('--eval-limit <n>', 'score only the first n eval examples (default all)', positiveInt('--eval-limit'))
    .option(
      '--flex-eval-limit <n>',
      "eval examples scored on the other tasks' flexibility runs",
      positiveInt('--flex-eval-limit'),
      d.flexEvalLimit,
    )
    .option(
      '--latency-prompts <n>',
      'eval prompts timed one at a time for the inference latency',
      positiveInt('--latency-prompts'),
      d.latencyPrompts,
    )
    .option('--latency-tokens <n>', 'tokens generated per timed prompt', positiveInt('--latency-tokens'), d.latencyTokens)
    .option('--seed <s>', 'seed of data order and adapter init', intArg('--seed', 0), d.seed)
    .option('--threads <n>', 'ONNX Runtime intra-op threads (default: all cores)', positiveInt('--threads'))
    .option('--run-timeout <s>', 'give up on one run after this many seconds', positiveInt('--run-timeout'), 1800)
    .option(
      '--out <dir>',
      `output folder for ${COMPARE_FILES.markdown}, ${COMPARE_FILES.json}, the SVG figures and runs/ (replaced)`,
      'out/compare',
    )
    .addOption(
      new Option(
        '--objective <what>',
        'what the recommendation optimises: quality (best score, cheapest among ties) or efficiency (cheapest within 90% of the best gain)',
      )
        .choices(['quality', 'efficiency'])
        .default('quality'),
    )
    .option('--tasks <n>', 'adapters you will keep per base model (storage counts n times)', intArg('--tasks', 1), 1)
    .option('--memory-budget <size>', 'peak training memory you have, e.g. 4GiB (methods above it are ruled out)', bytesArg)
    .option('--latency-budget <time>', 'inference latency you accept, e.g. 50ms (as the comparison measures it)', durationArg)
    .option('--from <dir>', 'recompute the recommendations of an earlier comparison folder under new constraints, without training')
    .option(
      '--recommend [dir]',
      'print only the "which method for you" advice (the table still goes to compare.md); with DIR, recompute it from that earlier comparison folder without training (as --from DIR)',
    )
    .action(async (flags: CompareFlags) => {
      if (typeof flags.recommend === 'string') {
        if (flags.from !== undefined && flags.from !== flags.recommend)
          throw new CliError(`--recommend ${flags.recommend} and --from ${flags.from} name two folders; pass one`);
        flags.from = flags.recommend;
      }
      if (flags.from !== undefined) await recommendFrom(flags);
      else await compare(flags);
    });
}

function bytesArg(v: string): number {
  try {
    return parseBytes(v);
  } catch (e) {
    throw new InvalidArgumentError((e as Error).message);
  }
}

function durationArg(v: string): number {
  try {
    return parseDurationMs(v);
  } catch (e) {
    throw new InvalidArgumentError((e as Error).message);
  }
}

const constraintsOf = (f: CompareFlags): Constraints => ({
  objective: f.objective,
  tasks: f.tasks,
  memoryBudgetBytes: f.memoryBudget,
  latencyBudgetMs: f.latencyBudget,
});

/** `--from DIR`: new advice from an earlier comparison's compare.json; rewrites its compare.json/compare.md. */
async function recommendFrom(f: CompareFlags): Promise<void> {
  const jsonFile = join(f.from!, COMPARE_FILES.json);
  if (!existsSync(jsonFile))
    throw new CliError(`${f.from} holds no ${COMPARE_FILES.json}; pass the --out folder of an earlier peft compare run`);
  let report: ComparisonReport;
  try {
    report = JSON.parse(await readFile(jsonFile, 'utf8')) as ComparisonReport;
  } catch (e) {
    throw new CliError(`${jsonFile} is not valid JSON (${(e as Error).message}); rerun peft compare`);
  }
  if (typeof report !== 'object' || report === null || !Array.isArray(report.methods) || typeof report.task !== 'object') {
    throw new CliError(`${jsonFile} is not a peft compare report (no "methods"/"task"); rerun peft compare`);
  }
  const fields = [
    'quality',
    'peak_train_rss_bytes',
    'stored_bytes',
    'step_time_ms',
    'inference_latency_ms',
    'trainable_share',
    'ratings',
    'flexibility',
  ] as const;
  for (const m of report.methods) {
    const missing = m.status === 'ok' ? fields.filter((k) => m[k] === undefined || m[k] === null) : [];
    if (missing.length)
      throw new CliError(
        `${jsonFile}: method ${String(m.method)} lacks ${missing.join(', ')}; it is not a complete peft compare report, rerun peft compare`,
      );
  }
  report.recommendations = recommend(report, constraintsOf(f));
  const put = (path: string, text: string) => writeFileAtomic(path, text);
  await put(jsonFile, `${JSON.stringify(report, null, 2)}\n`);
  await put(
    join(f.from!, COMPARE_FILES.markdown),
    comparisonMarkdown(report, { lossCurves: COMPARE_FILES.lossCurves, qualityVsParams: COMPARE_FILES.qualityVsParams }),
  );
  process.stdout.write(`${adviceMarkdown(report.recommendations)}\n`);
}

async function compare(f: CompareFlags): Promise<void> {
  const say = (s: string) => process.stderr.write(`${s}\n`);
  const controller = new AbortController();
  const onSigint = (): void => {
    say('interrupted: stopping the run in progress');
    controller.abort();
  };
  process.on('SIGINT', onSigint);
  try {
    const { report, files } = await runComparison({
      modelDir: f.model,
      task: f.task,
      trainFile: f.data,
      evalFile: f.eval,
      methods: f.methods,
      budget: f.budget,
      batchSize: f.batch,
      maxLength: f.maxLen,
      seed: f.seed,
      threads: f.threads,
      evalLimit: f.evalLimit,
      flexLrs: f.flexLrs,
      flexTasks: f.flexTasks,
      flexEvalLimit: f.flexEvalLimit,
      learningRates: f.lr,
      latencyPrompts: f.latencyPrompts,
      latencyTokens: f.latencyTokens,
      outDir: f.out,
      runTimeoutS: f.runTimeout,
      command: ['peft', ...process.argv.slice(2)].join(' '),
      log: say,
      signal: controller.signal,
      constraints: constraintsOf(f),
    });
    if (f.recommend === undefined) process.stdout.write(`\n${comparisonSummary(report)}\n`);
    if (report.recommendations) process.stdout.write(`${adviceMarkdown(report.recommendations)}\n`);
    say(`wrote ${files.markdown}, ${files.json}, ${files.lossCurves} and ${files.qualityVsParams}`);
    if (report.methods.some((m) => m.status === 'failed')) process.exitCode = 1;
  } finally {
    process.removeListener('SIGINT', onSigint);
  }
}
