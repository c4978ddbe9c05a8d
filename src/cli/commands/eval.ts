// `peft eval`: score a model (optionally with adapters) on the user's own jsonl rows with a task
// metric: exact / contains / accuracy / json from greedy batched generation with the KV cache, or
// perplexity of the reference tokens. Prints the score with a 95% confidence interval; --out writes
// one JSON line per row (prediction, correct, or nll/tokens) and --json prints the report.

import { resolve } from '../../storage/index.js';
import { type Command, InvalidArgumentError } from 'commander';
import { Tokenizer } from '../../io/tokenizer.js';
import { writeFileAtomic } from '../../io/atomic.js';
import { checkOutputFile, firstLine } from '../../io/outdir.js';
import { EVAL_METRICS, type EvalMetric, evalRows, evaluateRows, formatReport } from '../../tasks/eval.js';
import { readJsonl } from '../../train/data.js';
import { CliError } from '../errors.js';
import { collect, intArg } from '../args.js';
import { loadModelArg } from './generate.js';
import { resolveDataFile } from '../../io/hub_dataset.js';

interface EvalFlags {
  model: string;
  adapter?: string[];
  merged?: boolean;
  data: string;
  metric: EvalMetric;
  maxExamples?: number;
  maxNewTokens?: number;
  batchSize: number;
  stop?: string[];
  promptKey?: string;
  completionKey?: string;
  messagesKey?: string;
  out?: string;
  overwrite?: boolean;
  json?: boolean;
  seed: number;
  threads?: number;
}

function metricArg(v: string): EvalMetric {
  if (!(EVAL_METRICS as readonly string[]).includes(v))
    throw new InvalidArgumentError(`--metric must be one of ${EVAL_METRICS.join(', ')}.`);
  return v as EvalMetric;
}

export function register(program: Command): void {
  program
    .command('eval')
    .description('score a model (and adapters) on a jsonl file with a task metric and a 95% confidence interval')
    .requiredOption('--model <dir|repo>', 'model folder or Hub repo id')
    .option('--adapter <dir|repo>', 'adapter folder to apply; repeatable (earlier ones are merged)', collect)
    .option('--merged', 'merge the adapters into the weights before scoring')
    .requiredOption(
      '--data <file>',
      'jsonl rows: {"prompt","completion"}, {"messages"} (last assistant turn is the reference), for perplexity {"text"}, for preference {"prompt","chosen","rejected"}; or hf://datasets/OWNER/NAME[/file.jsonl][@revision]',
    )
    .option(
      '--metric <name>',
      `exact (trimmed output == reference), contains (output contains the reference), accuracy (first word is the reference's label word), json (output parses to the reference's JSON), perplexity (of the reference tokens), preference (on {"prompt","chosen","rejected"} rows: the chosen completion is the more likely one)`,
      metricArg,
      'exact',
    )
    .option('--max-examples <n>', 'score only the first n rows', intArg('--max-examples', 1))
    .option('--max-new-tokens <n>', 'tokens generated per row (default: longest reference + 4)', intArg('--max-new-tokens', 1))
    .option('--batch-size <n>', 'rows generated together', intArg('--batch-size', 1), 16)
    .option('--stop <text>', 'a string that ends a generation (repeatable; "\\n" for a newline)', collect)
    .option('--prompt-key <name>', 'field holding the prompt (default "prompt")')
    .option('--completion-key <name>', 'field holding the reference (default "completion")')
    .option('--messages-key <name>', 'field holding a conversation (default "messages")')
    .option('--out <file>', 'write one JSON line per row: prompt, reference, prediction and correct (or nll and tokens)')
    .option('--overwrite', 'replace an existing --out file')
    .option('--json', 'print the report as JSON instead of a line of text')
    .option('--seed <n>', 'seed of the bootstrap behind the perplexity interval', intArg('--seed', 0), 0)
    .option('--threads <n>', 'ONNX Runtime intra-op threads (default: all cores)', intArg('--threads', 1))
    .action(async (flags: EvalFlags) => {
      await runEval(flags);
    });
}

/** Whether a file is per-row results `peft eval --out` wrote (its first line is one). */
function isEvalOutput(path: string): boolean {
  try {
    const row = JSON.parse(firstLine(path)) as Record<string, unknown>;
    return (
      typeof row === 'object' &&
      row !== null &&
      typeof row.line === 'number' &&
      typeof row.prompt === 'string' &&
      typeof row.reference === 'string'
    );
  } catch {
    return false;
  }
}

async function runEval(flags: EvalFlags): Promise<void> {
  const dataFile = resolve(await resolveDataFile(flags.data, { role: 'eval' }));
  const outFile = flags.out === undefined ? undefined : resolve(flags.out);
  // --out: a new file, or an earlier `peft eval` output with --overwrite (src/io/outdir.ts); never the data or another file
  if (outFile !== undefined)
    checkOutputFile(outFile, { command: 'eval', flag: '--out', overwrite: flags.overwrite, isOwn: isEvalOutput, inputs: [dataFile] });
  const { dir, model } = await loadModelArg(flags.model, flags.adapter, flags.merged);
  if ((model as { task?: string }).task === 'seq-cls')
    throw new CliError('peft eval scores generation and perplexity on language models; this model is a sequence classifier');
  const tokenizer = await Tokenizer.fromDir(dir);
  const records = (await readJsonl(dataFile)).slice(0, flags.maxExamples);
  const rows = evalRows(
    records,
    tokenizer,
    flags.metric,
    { promptKey: flags.promptKey, completionKey: flags.completionKey, messagesKey: flags.messagesKey },
    flags.data,
  );
  const stopStrings = flags.stop?.map((s) => s.replace(/\\n/g, '\n').replace(/\\t/g, '\t'));
  const report = await evaluateRows(model, tokenizer, rows, {
    metric: flags.metric,
    batchSize: flags.batchSize,
    maxNewTokens: flags.maxNewTokens,
    stopStrings,
    seed: flags.seed,
    runtime: { threads: flags.threads },
    onProgress: process.stderr.isTTY ? (done, total) => process.stderr.write(`\rscored ${done}/${total}`) : undefined,
  });
  if (process.stderr.isTTY) process.stderr.write('\n');
  if (outFile !== undefined) {
    const text = report.results.map((r) => JSON.stringify(r)).join('\n') + '\n';
    await writeFileAtomic(outFile, text);
  }
  const { results: _rows, ...summary } = report;
  void _rows;
  if (flags.json) process.stdout.write(JSON.stringify(summary) + '\n');
  else process.stdout.write(`${formatReport(report)} in ${report.seconds.toFixed(1)} s${outFile ? `; rows in ${flags.out}` : ''}\n`);
}
