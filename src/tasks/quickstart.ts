// The quickstart job: LoRA fine-tuning of the bundled tiny Llama on a bundled task, scored before
// and after with the task's metric, the adapter saved in the peft layout with the scores next to
// it. `peft quickstart` (and `npm start`) is a thin shell over runQuickstart.

import { existsSync, join, path, relative, resolve } from '../storage/index.js';
import type { BasePrecision } from '../nn/context.js';
import { DEFAULT_BASE_PRECISION } from '../train/step.js';
import { writeFileAtomic } from '../io/atomic.js';
import { Tokenizer } from '../io/tokenizer.js';
import { loadModel } from '../models/load.js';
import { prepareExamples, tokenizeRecords, type TokenizedExample } from '../train/data.js';
import { type ProgressReporter, silentProgress } from '../train/progress.js';
import { Trainer, checkRunFolder } from '../train/trainer.js';
import { getPeftModel } from '../tuners/load.js';
import { type TaskEvaluation, evaluateTask, formatScore } from './evaluate.js';
import { type TaskExample, TaskError, bundledModelDir, getTask, loadTaskData } from './tasks.js';
import { checkPositiveInts } from '../errors.js';

/** The defaults `npm start` runs with; measured in docs/QUICKSTART.md. */
export const QUICKSTART_DEFAULTS = {
  task: 'sentiment',
  out: join('out', 'quickstart'),
  steps: 150,
  learningRate: 2e-3,
  r: 8,
  loraAlpha: 16,
  loraDropout: 0.05,
  targetModules: 'all-linear' as string | string[],
  batchSize: 16,
  samples: 3,
  seed: 42,
} as const;

export const EVAL_RESULTS_FILE = 'eval_results.json';

export interface QuickstartOptions {
  /** bundled task name (default "sentiment") */
  task?: string;
  /** base model folder (default the bundled models/tiny-llama) */
  model?: string;
  /** folder with train.jsonl and eval.jsonl (default the bundled data/tasks/<task>) */
  data?: string;
  /** where the adapter, metrics.jsonl, loss.svg and eval_results.json go (default out/quickstart); an earlier run there is replaced */
  out?: string;
  steps?: number;
  learningRate?: number;
  r?: number;
  loraAlpha?: number;
  loraDropout?: number;
  targetModules?: string | string[];
  batchSize?: number;
  /** score only the first n eval examples (default all) */
  evalLimit?: number;
  /** eval examples shown before/after (default 3) */
  samples?: number;
  seed?: number;
  threads?: number;
  /**
   * how the frozen base is held while training (default DEFAULT_BASE_PRECISION, as peft train):
   * fp32, int8 (products through int8 copies; scored on the float32 base) or nf4 (the base loaded
   * 4-bit, as peft train --base-precision nf4: QLoRA, scored on that base)
   */
  basePrecision?: BasePrecision | 'nf4';
  /** evaluate the eval loss every this many steps (default steps / 5) */
  evalEvery?: number;
  progress?: ProgressReporter;
  /** status lines (default: none) */
  log?: (line: string) => void;
  /** aborting stops training after the current step, with a checkpoint in `out` */
  signal?: AbortSignal;
}

export interface QuickstartSample {
  prompt: string;
  reference: string;
  before: string;
  after: string;
}

export interface QuickstartResult {
  task: string;
  modelDir: string;
  dataDir: string;
  outDir: string;
  trainExamples: number;
  trainableParameters: number;
  totalParameters: number;
  steps: number;
  /** stopped through `signal` before the last step; `after` is then missing */
  interrupted: boolean;
  trainSeconds: number;
  finalLoss?: number;
  initialEvalLoss?: number;
  finalEvalLoss?: number;
  before: TaskEvaluation;
  after?: TaskEvaluation;
  samples: QuickstartSample[];
}

/** How the adapter config names its base: a path relative to the working folder when it lies inside it. */
function baseName(dir: string): string {
  const rel = relative(process.cwd(), dir);
  return rel && !rel.startsWith('..') && !rel.startsWith(path.sep) ? rel.split(path.sep).join('/') : dir;
}

function tokenize(examples: readonly TaskExample[], tokenizer: Tokenizer, maxLength: number, file: string): TokenizedExample[] {
  const { examples: rows } = tokenizeRecords(
    examples.map((value, i) => ({ line: i + 1, value: { prompt: value.prompt, completion: value.completion } })),
    tokenizer,
    { file },
  );
  return prepareExamples(rows, { maxLength, file }).examples;
}

export async function runQuickstart(opts: QuickstartOptions = {}): Promise<QuickstartResult> {
  const d = QUICKSTART_DEFAULTS;
  const o = {
    task: opts.task ?? d.task,
    out: resolve(opts.out ?? d.out),
    steps: opts.steps ?? d.steps,
    learningRate: opts.learningRate ?? d.learningRate,
    r: opts.r ?? d.r,
    loraAlpha: opts.loraAlpha ?? d.loraAlpha,
    loraDropout: opts.loraDropout ?? d.loraDropout,
    targetModules: opts.targetModules ?? d.targetModules,
    batchSize: opts.batchSize ?? d.batchSize,
    samples: opts.samples ?? d.samples,
    seed: opts.seed ?? d.seed,
  };
  const log = opts.log ?? (() => undefined);
  checkPositiveInts(
    {
      steps: o.steps,
      r: o.r,
      'batch size': o.batchSize,
      'eval limit': opts.evalLimit,
      threads: opts.threads,
      'eval interval': opts.evalEvery,
    },
    TaskError,
  );
  const precision = opts.basePrecision ?? DEFAULT_BASE_PRECISION;
  if (!['fp32', 'int8', 'nf4'].includes(precision)) throw new TaskError(`base precision must be fp32, int8 or nf4, got ${precision}`);
  if (!(o.learningRate > 0)) throw new TaskError(`the learning rate must be above 0, got ${o.learningRate}`);
  if (!(o.loraDropout >= 0 && o.loraDropout < 1)) throw new TaskError(`LoRA dropout must be in [0, 1), got ${o.loraDropout}`);
  if (!(Number.isInteger(o.samples) && o.samples >= 0)) throw new TaskError(`samples must be an integer >= 0, got ${o.samples}`);
  const spec = getTask(o.task);
  const modelDir = resolve(opts.model ?? bundledModelDir());
  if (!existsSync(modelDir)) {
    throw new TaskError(
      `the base model folder ${modelDir} does not exist; the bundled one is made by \`npm run pretrain\`, or pass a model folder`,
    );
  }
  // The output is a training run folder: new, empty, or an earlier run's (replaced); never a folder
  // holding anything else (src/io/outdir.ts). The trainer takes its lock.
  await checkRunFolder(o.out, { overwrite: true, inputs: [{ path: modelDir, what: 'base model' }] });
  const data = await loadTaskData(spec.name, opts.data);
  // nf4 is chosen at load time (a 4-bit base, as peft train does it); its products stay as loaded
  const runtime = { threads: opts.threads, basePrecision: precision === 'nf4' ? ('fp32' as const) : precision };

  // Everything that can be refused is checked before the output folder is touched.
  const model = await loadModel(
    modelDir,
    precision === 'nf4' ? { quantization: { bits: 4, type: 'nf4', doubleQuant: true, blockSize: 64 } } : {},
  );
  const tokenizer = await Tokenizer.fromDir(modelDir);
  const padTokenId = tokenizer.padTokenId ?? tokenizer.eosTokenId;
  if (padTokenId === undefined)
    throw new TaskError(`the tokenizer in ${modelDir} has neither a pad nor an EOS token; set "pad_token" in tokenizer_config.json`);
  const maxLength = Math.min(1024, model.config.maxPositionEmbeddings);
  const train = tokenize(data.train, tokenizer, maxLength, join(data.dir, 'train.jsonl'));
  const evalRows = tokenize(data.eval, tokenizer, maxLength, join(data.dir, 'eval.jsonl'));
  const total = model.weights.numel();
  log(`task ${spec.name}: ${spec.description}; ${data.train.length} training and ${data.eval.length} eval examples from ${data.dir}`);
  log(`base model ${modelDir}: ${total.toLocaleString('en-US')} parameters`);

  const evalOpts = { limit: opts.evalLimit, runtime };
  const before = await evaluateTask(model, tokenizer, spec, data.eval, evalOpts);
  log(`before tuning: ${scoreLine(before)}`);

  const adapted = await getPeftModel(
    model,
    {
      r: o.r,
      loraAlpha: o.loraAlpha,
      loraDropout: o.loraDropout,
      targetModules: o.targetModules,
      taskType: 'CAUSAL_LM',
      baseModelNameOrPath: baseName(modelDir),
    },
    { seed: o.seed },
  );
  let trainable = 0;
  for (const t of adapted.parameters().values()) trainable += t.data.length;
  log(
    `LoRA r=${o.r}, alpha=${o.loraAlpha} on ${Array.isArray(o.targetModules) ? o.targetModules.join(', ') : o.targetModules}: ${trainable.toLocaleString('en-US')} trainable parameters (${((100 * trainable) / total).toFixed(2)}% of the model)`,
  );

  const trainer = new Trainer(adapted, train, evalRows, {
    outputDir: o.out,
    padTokenId,
    learningRate: o.learningRate,
    batchSize: o.batchSize,
    maxSteps: o.steps,
    schedule: 'linear',
    warmupRatio: 0.05,
    evalEvery: opts.evalEvery ?? Math.max(1, Math.round(o.steps / 5)),
    saveEvery: 0,
    seed: o.seed,
    overwrite: true,
    progress: opts.progress ?? silentProgress,
    runtime,
  });
  const onAbort = (): void => trainer.requestStop();
  opts.signal?.addEventListener('abort', onAbort);
  const t0 = performance.now();
  let result;
  try {
    result = await trainer.train();
  } finally {
    opts.signal?.removeEventListener('abort', onAbort);
  }
  const trainSeconds = (performance.now() - t0) / 1000;
  const base: QuickstartResult = {
    task: spec.name,
    modelDir,
    dataDir: data.dir,
    outDir: o.out,
    trainExamples: train.length,
    trainableParameters: trainable,
    totalParameters: total,
    steps: result.globalStep,
    interrupted: result.interrupted,
    trainSeconds,
    finalLoss: result.finalLoss,
    initialEvalLoss: result.initialEvalLoss,
    finalEvalLoss: result.finalEvalLoss,
    before,
    samples: [],
  };
  if (result.interrupted) return base;

  const after = await evaluateTask(adapted, tokenizer, spec, data.eval, evalOpts);
  log(`after tuning: ${scoreLine(after)}`);
  const samples = before.predictions
    .slice(0, o.samples)
    .map((b, i) => ({ prompt: b.prompt, reference: b.reference, before: b.prediction, after: after.predictions[i]!.prediction }));
  const out: QuickstartResult = { ...base, after, samples };
  const summary = {
    task: spec.name,
    metric: spec.metric,
    base_model: baseName(modelDir),
    steps: out.steps,
    train_seconds: Number(trainSeconds.toFixed(1)),
    trainable_parameters: trainable,
    before: { score: before.score, correct: before.correct, total: before.total },
    after: { score: after.score, correct: after.correct, total: after.total },
    samples,
  };
  await writeFileAtomic(join(o.out, EVAL_RESULTS_FILE), `${JSON.stringify(summary, null, 2)}\n`);
  return out;
}

function scoreLine(e: TaskEvaluation): string {
  return `${formatScore(e)} in ${e.seconds.toFixed(1)}s`;
}
