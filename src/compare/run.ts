// One run of a comparison, as a worker process executes it: score the untuned base, or train one
// method with the Trainer and measure it (median step time, peak RSS, stored adapter bytes, eval
// loss, the task metric by greedy generation, batch-1 generation latency). A sequence classifier's
// task is scored by the accuracy of its logits' argmax, and its latency is one batch-1 forward pass.

import { join, readdir, stat } from '../storage/index.js';
import { ForwardSession, Generator, type InferenceModel } from '../generate/index.js';
import { Tokenizer } from '../io/tokenizer.js';
import type { PretrainedModel } from '../models/types.js';
import { evaluateTask } from '../tasks/evaluate.js';
import { labelOf } from '../tasks/metrics.js';
import { readTaskExamples } from '../tasks/tasks.js';
import { evalBatches } from '../train/batches.js';
import { type Example, type TokenizedExample, isClassificationExample } from '../train/data.js';
import type { TrainRecord } from '../train/metrics.js';
import { LineProgress } from '../train/progress_terminal.js';
import { EvalStep } from '../train/step.js';
import { Trainer } from '../train/trainer.js';
import { BottleneckModel } from '../tuners/bottleneck/index.js';
import { getFullFineTuneModel } from '../tuners/full/index.js';
import type { AdaptedModel } from '../tuners/types.js';
import { classificationRows, promptIds, tokenizedRows } from './data.js';
import { CompareError } from './errors.js';
import type { BaseJob, BaseResult, CompareJob, JobResult, Latency, Quality, RunSettings, TaskRef, TrainJob, TrainResult } from './job.js';
import { VIRTUAL_TOKENS, adaptForComparison, loadBaseFor, usesVirtualTokens } from './methods.js';
import { descriptorOf } from '../models/registry.js';

function median(xs: readonly number[]): number {
  if (xs.length === 0) return NaN;
  const s = [...xs].sort((a, b) => a - b);
  const h = s.length >> 1;
  return s.length % 2 ? s[h]! : (s[h - 1]! + s[h]!) / 2;
}

async function tokenizerFor(settings: RunSettings): Promise<{ tokenizer: Tokenizer; padId: number }> {
  const tokenizer = await Tokenizer.fromDir(settings.modelDir);
  const padId = tokenizer.padTokenId ?? tokenizer.eosTokenId;
  if (padId === undefined)
    throw new CompareError(
      `the tokenizer in ${settings.modelDir} has neither a pad nor an EOS token; set "pad_token" in tokenizer_config.json`,
    );
  return { tokenizer, padId };
}

/** The eval rows of `task` for `base`: token rows, or {"text","label"} rows for a sequence classifier. */
async function evalRowsOf(
  file: string,
  task: TaskRef,
  base: PretrainedModel,
  tokenizer: Tokenizer,
  settings: RunSettings,
): Promise<Example[]> {
  if (!task.classification) return tokenizedRows(file, tokenizer, settings.maxLength);
  if (base.task !== 'seq-cls')
    throw new CompareError(
      `the task ${task.name} holds {"text","label"} rows for a sequence classifier, but ${settings.modelDir} is a ${base.task} model`,
    );
  return classificationRows(file, tokenizer, { labels: base.config, maxLength: settings.maxLength });
}

/**
 * Mean loss of `rows` (weighted by label tokens, or by examples for a classifier, as
 * Trainer.evaluate computes it), and for a classifier the rows its argmax gets right.
 */
async function evaluateRows(
  model: AdaptedModel,
  rows: readonly Example[],
  settings: RunSettings,
  padId: number,
): Promise<{ loss: number; correct: number; examples: number }> {
  const step = await EvalStep.compile(model, { threads: settings.threads });
  try {
    let sum = 0;
    let tokens = 0;
    let correct = 0;
    const params = model.parameters();
    for (const batch of evalBatches(rows, settings.batchSize, padId)) {
      const r = await step.run(batch, params);
      correct += r.correct ?? 0;
      if (r.tokens === 0) continue;
      sum += r.loss * r.tokens;
      tokens += r.tokens;
    }
    return { loss: sum / tokens, correct, examples: rows.length };
  } finally {
    await step.dispose();
  }
}

/** A classifier's quality: accuracy of the argmax of its logits on the first evalLimit rows (all by default), and the eval loss over every row. */
async function classifierQuality(
  model: AdaptedModel,
  task: TaskRef,
  rows: readonly Example[],
  settings: RunSettings,
  padId: number,
): Promise<Quality> {
  const all = await evaluateRows(model, rows, settings, padId);
  const limit = settings.evalLimit ? Math.min(settings.evalLimit, rows.length) : rows.length;
  const scored = limit < rows.length ? await evaluateRows(model, rows.slice(0, limit), settings, padId) : all;
  const labels = rows.slice(0, limit).map((r) => (isClassificationExample(r) ? String(r.label) : undefined));
  return {
    task: task.name,
    metric: 'accuracy',
    value: scored.correct / scored.examples,
    correct: scored.correct,
    total: scored.examples,
    chance: majorityShare(labels),
    evalLoss: all.loss,
    lossQuality: Math.exp(-all.loss),
  };
}

/** The eval loss, and the task metric by greedy generation when the task has one (for a classifier, its accuracy). */
async function scoreQuality(
  inference: InferenceModel,
  lossModel: AdaptedModel,
  task: TaskRef,
  ctx: { settings: RunSettings; tokenizer: Tokenizer; padId: number; rows: Example[] },
): Promise<Quality> {
  const { settings, tokenizer, padId, rows } = ctx;
  if (task.classification) return classifierQuality(lossModel, task, rows, settings, padId);
  const evalLoss = (await evaluateRows(lossModel, rows, settings, padId)).loss;
  const lossQuality = Math.exp(-evalLoss);
  if (!task.spec) return { task: task.name, metric: 'eval_loss', value: lossQuality, evalLoss, lossQuality };
  const examples = await readTaskExamples(task.evalFile);
  const e = await evaluateTask(inference, tokenizer, task.spec, examples, {
    limit: settings.evalLimit && Math.min(settings.evalLimit, examples.length),
    runtime: { threads: settings.threads },
  });
  const q: Quality = {
    task: task.name,
    metric: task.spec.metric,
    value: e.score,
    correct: e.correct,
    total: e.total,
    evalLoss,
    lossQuality,
  };
  if (task.spec.metric === 'accuracy') q.chance = majorityShare(e.predictions.map((p) => labelOf(p.reference, task.spec!.labels ?? [])));
  return q;
}

/** The share of the most common value (undefined counts as its own value). */
function majorityShare(labels: readonly (string | undefined)[]): number {
  const counts = new Map<string | undefined, number>();
  for (const l of labels) counts.set(l, (counts.get(l) ?? 0) + 1);
  return labels.length ? Math.max(...counts.values()) / labels.length : 0;
}

/**
 * Median time of one forward pass of one eval example (batch 1, logits only) for each model, a
 * classifier's inference (one untimed warm-up each, interleaved example by example).
 */
async function timeForward(models: readonly InferenceModel[], rows: readonly Example[], settings: RunSettings): Promise<Latency[]> {
  const examples = rows.slice(0, settings.latencyPrompts).map((r) => {
    const n = r.inputIds.length;
    return {
      inputIds: { dtype: 'int64' as const, shape: [1, n], data: BigInt64Array.from(r.inputIds, BigInt) },
      attentionMask: { dtype: 'int64' as const, shape: [1, n], data: new BigInt64Array(n).fill(1n) },
    };
  });
  const sessions: ForwardSession[] = [];
  try {
    for (const m of models) sessions.push(await ForwardSession.create(m, { runtime: { threads: settings.threads } }));
    for (const s of sessions) await s.run(examples[0]!);
    const times = sessions.map(() => [] as number[]);
    for (const x of examples) {
      for (const [i, s] of sessions.entries()) {
        const t0 = performance.now();
        await s.run(x);
        times[i]!.push((performance.now() - t0) / 1000);
      }
    }
    return times.map((t) => ({ medianS: median(t), prompts: examples.length, tokens: 0 }));
  } finally {
    for (const s of sessions) await s.dispose();
  }
}

/** Median time to generate a fixed number of tokens for one prompt at a time (one untimed warm-up each); a classifier's: timeForward. */
async function timeLatency(
  models: readonly InferenceModel[],
  tokenizer: Tokenizer,
  rows: readonly Example[],
  settings: RunSettings,
): Promise<Latency[]> {
  if (rows.some(isClassificationExample)) return timeForward(models, rows, settings);
  const prompts = (rows as readonly TokenizedExample[]).slice(0, settings.latencyPrompts).map(promptIds);
  const opts = { maxNewTokens: settings.latencyTokens, doSample: false, stopTokenIds: [], stopStrings: [] };
  const generators: Generator[] = [];
  try {
    for (const m of models) generators.push(await Generator.create(m, { tokenizer, runtime: { threads: settings.threads } }));
    for (const g of generators) await g.generate(prompts[0]!, opts);
    // Interleaved prompt by prompt, so a change in machine load hits every model alike.
    const times = generators.map(() => [] as number[]);
    for (const p of prompts) {
      for (const [i, g] of generators.entries()) {
        const t0 = performance.now();
        await g.generate(p, opts);
        times[i]!.push((performance.now() - t0) / 1000);
      }
    }
    return times.map((t) => ({ medianS: median(t), prompts: prompts.length, tokens: settings.latencyTokens }));
  } finally {
    for (const g of generators) await g.dispose();
  }
}

/** Bytes of every file under `dir`, and their paths relative to it. */
async function folderSize(dir: string): Promise<{ bytes: number; files: string[] }> {
  let bytes = 0;
  const files: string[] = [];
  const walk = async (d: string, rel: string): Promise<void> => {
    for (const e of await readdir(d, { withFileTypes: true })) {
      const p = join(d, e.name);
      if (e.isDirectory()) await walk(p, `${rel}${e.name}/`);
      else if (e.isFile()) {
        bytes += (await stat(p)).size;
        files.push(`${rel}${e.name}`);
      }
    }
  };
  await walk(dir, '');
  return { bytes, files: files.sort() };
}

async function runBase(job: BaseJob): Promise<BaseResult> {
  const t0 = performance.now();
  const { settings } = job;
  const base: PretrainedModel = await loadBaseFor('base', settings.modelDir);
  const { tokenizer, padId } = await tokenizerFor(settings);
  // The untuned model's loss comes from the same eval step the methods use: a wrapper that trains nothing here.
  const lossModel = getFullFineTuneModel(base);
  const qualities: Quality[] = [];
  let latency: Latency | undefined;
  for (const task of job.tasks) {
    const rows = await evalRowsOf(task.evalFile, task, base, tokenizer, settings);
    qualities.push(await scoreQuality(base, lossModel, task, { settings, tokenizer, padId, rows }));
    if (job.timeLatency && !latency) [latency] = await timeLatency([base], tokenizer, rows, settings);
  }
  return { kind: 'base', totalParams: base.weights.numel(), qualities, latency, seconds: (performance.now() - t0) / 1000 };
}

async function runTrain(job: TrainJob): Promise<TrainResult> {
  const t0 = performance.now();
  const { settings, task } = job;
  const base = await loadBaseFor(job.method, settings.modelDir);
  const { tokenizer, padId } = await tokenizerFor(settings);
  const train = await evalRowsOf(task.trainFile, task, base, tokenizer, settings);
  const evalRows = await evalRowsOf(task.evalFile, task, base, tokenizer, settings);
  if (usesVirtualTokens(job.method) && descriptorOf(base).positions === 'absolute') {
    const longest = Math.max(...train.map((r) => r.inputIds.length), ...evalRows.map((r) => r.inputIds.length));
    const positions = base.config.maxPositionEmbeddings;
    if (positions && longest + VIRTUAL_TOKENS > positions) {
      throw new CompareError(
        `the method's ${VIRTUAL_TOKENS} virtual tokens plus the longest row (${longest} tokens) exceed the model's ${positions} positions (max_position_embeddings); pass --max-len ${positions - VIRTUAL_TOKENS} or less`,
      );
    }
  }
  const adapted = await adaptForComparison(base, job.method, settings.seed, settings.baseName, job.steps);
  let trainable = 0;
  for (const t of adapted.parameters().values()) trainable += t.data.length;
  const trainer = new Trainer(adapted, train, job.measure ? evalRows : undefined, {
    outputDir: join(job.outDir, 'train'),
    padTokenId: padId,
    learningRate: job.learningRate,
    batchSize: settings.batchSize,
    maxSteps: job.steps,
    schedule: 'linear',
    warmupRatio: 0.05,
    evalEvery: job.measure ? Math.max(1, Math.round(job.steps / 5)) : 0,
    evalAtStart: job.measure,
    saveEvery: 0,
    seed: settings.seed,
    overwrite: true,
    progress: new LineProgress(process.stderr, Math.max(1, Math.round(job.steps / 10))),
    runtime: { threads: settings.threads },
  });
  const tTrain = performance.now();
  const r = await trainer.train();
  const trainSeconds = (performance.now() - tTrain) / 1000;
  const peakRssBytes = process.resourceUsage().maxRSS * 1024;
  // A fully fine-tuned model is served as a plain model (its weights were updated in place).
  const inference: InferenceModel = job.method === 'full' ? adapted.base : adapted;
  const quality = await scoreQuality(inference, adapted, task, { settings, tokenizer, padId, rows: evalRows });
  let measured: TrainResult['measured'];
  if (job.measure) {
    const steps = r.metrics.filter((m): m is TrainRecord => m.kind === 'train');
    const stepTimesS = steps.map((m) => m.tokens / m.tokens_per_second);
    const adapterDir = join(job.outDir, 'adapter');
    // AdapterHub also writes the static head by default; a head that did not train is the base's, not the task's.
    if (adapted instanceof BottleneckModel && adapted.trainableBaseWeights().size === 0)
      await adapted.savePretrained(adapterDir, { withHead: false });
    else await adapted.savePretrained(adapterDir);
    const stored = await folderSize(adapterDir);
    // The untuned base (full precision, fresh weights) timed alongside, as the latency reference.
    const reference = await loadBaseFor('base', settings.modelDir);
    const [latency, baseLatency] = await timeLatency([inference, reference], tokenizer, evalRows, settings);
    measured = {
      stepTimesS,
      // the first step pays one-time costs (session warm-up, allocations)
      medianStepS: median(stepTimesS.length > 1 ? stepTimesS.slice(1) : stepTimesS),
      peakRssBytes,
      storedBytes: stored.bytes,
      storedFiles: stored.files,
      latency: latency!,
      baseLatency: baseLatency!,
      metrics: r.metrics,
    };
  }
  return {
    kind: 'train',
    method: job.method,
    peftType: adapted.peftType,
    task: task.name,
    learningRate: job.learningRate,
    steps: r.globalStep,
    trainableParams: trainable,
    totalParams: base.weights.numel(),
    quality,
    finalLoss: r.finalLoss,
    trainSeconds,
    seconds: (performance.now() - t0) / 1000,
    measured,
  };
}

/** Runs one job in this process (training progress goes to stderr). */
export async function runJob(job: CompareJob): Promise<JobResult> {
  return job.kind === 'base' ? runBase(job) : runTrain(job);
}
