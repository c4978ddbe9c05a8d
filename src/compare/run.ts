// One run of a comparison, as a worker process executes it: score the untuned base, or train one
// method with the Trainer and measure it (median step time, peak RSS, stored adapter bytes, eval
// loss, the task metric by greedy generation, batch-1 generation latency).

import { readdir, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { Generator, type InferenceModel } from '../generate/index.js';
import { Tokenizer } from '../io/tokenizer.js';
import type { PretrainedModel } from '../models/types.js';
import { evaluateTask } from '../tasks/evaluate.js';
import { labelOf } from '../tasks/metrics.js';
import { readTaskExamples } from '../tasks/tasks.js';
import { evalBatches } from '../train/batches.js';
import type { TokenizedExample } from '../train/data.js';
import type { TrainRecord } from '../train/metrics.js';
import { LineProgress } from '../train/progress.js';
import { EvalStep } from '../train/step.js';
import { Trainer } from '../train/trainer.js';
import { BottleneckModel } from '../tuners/bottleneck/index.js';
import { getFullFineTuneModel } from '../tuners/full/index.js';
import type { AdaptedModel } from '../tuners/types.js';
import { promptIds, tokenizedRows } from './data.js';
import { CompareError } from './errors.js';
import type { BaseJob, BaseResult, CompareJob, JobResult, Latency, Quality, RunSettings, TaskRef, TrainJob, TrainResult } from './job.js';
import { adaptForComparison, loadBaseFor } from './methods.js';

export function median(xs: readonly number[]): number {
  if (xs.length === 0) return NaN;
  const s = [...xs].sort((a, b) => a - b);
  const h = s.length >> 1;
  return s.length % 2 ? s[h]! : (s[h - 1]! + s[h]!) / 2;
}

async function tokenizerFor(settings: RunSettings): Promise<{ tokenizer: Tokenizer; padId: number }> {
  const tokenizer = await Tokenizer.fromDir(settings.modelDir);
  const padId = tokenizer.padTokenId ?? tokenizer.eosTokenId;
  if (padId === undefined) throw new CompareError(`the tokenizer in ${settings.modelDir} has neither a pad nor an EOS token; set "pad_token" in tokenizer_config.json`);
  return { tokenizer, padId };
}

/** Token-weighted mean loss of `rows` (as Trainer.evaluate computes it). */
async function meanLoss(model: AdaptedModel, rows: readonly TokenizedExample[], settings: RunSettings, padId: number): Promise<number> {
  const step = await EvalStep.compile(model, { threads: settings.threads });
  try {
    let sum = 0;
    let tokens = 0;
    const params = model.parameters();
    for (const batch of evalBatches(rows, settings.batchSize, padId)) {
      const r = await step.run(batch, params);
      if (r.tokens === 0) continue;
      sum += r.loss * r.tokens;
      tokens += r.tokens;
    }
    return sum / tokens;
  } finally {
    await step.dispose();
  }
}

/** The eval loss, and the task metric by greedy generation when the task has one. */
async function scoreQuality(
  inference: InferenceModel,
  lossModel: AdaptedModel,
  task: TaskRef,
  ctx: { settings: RunSettings; tokenizer: Tokenizer; padId: number; rows?: TokenizedExample[] },
): Promise<Quality> {
  const { settings, tokenizer, padId } = ctx;
  const rows = ctx.rows ?? (await tokenizedRows(task.evalFile, tokenizer, settings.maxLength));
  const evalLoss = await meanLoss(lossModel, rows, settings, padId);
  const lossQuality = Math.exp(-evalLoss);
  if (!task.spec) return { task: task.name, metric: 'eval_loss', value: lossQuality, evalLoss, lossQuality };
  const examples = await readTaskExamples(task.evalFile);
  const e = await evaluateTask(inference, tokenizer, task.spec, examples, { limit: settings.evalLimit && Math.min(settings.evalLimit, examples.length), runtime: { threads: settings.threads } });
  const q: Quality = { task: task.name, metric: task.spec.metric, value: e.score, correct: e.correct, total: e.total, evalLoss, lossQuality };
  if (task.spec.metric === 'accuracy') q.chance = majorityShare(e.predictions.map((p) => labelOf(p.reference, task.spec!.labels ?? [])));
  return q;
}

/** The share of the most common value (undefined counts as its own value). */
function majorityShare(labels: readonly (string | undefined)[]): number {
  const counts = new Map<string | undefined, number>();
  for (const l of labels) counts.set(l, (counts.get(l) ?? 0) + 1);
  return labels.length ? Math.max(...counts.values()) / labels.length : 0;
}

/** Median time to generate a fixed number of tokens for one prompt at a time (one untimed warm-up each). */
async function timeLatency(models: readonly InferenceModel[], tokenizer: Tokenizer, rows: readonly TokenizedExample[], settings: RunSettings): Promise<Latency[]> {
  const prompts = rows.slice(0, settings.latencyPrompts).map(promptIds);
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
export async function folderSize(dir: string): Promise<{ bytes: number; files: string[] }> {
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
    const rows = await tokenizedRows(task.evalFile, tokenizer, settings.maxLength);
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
  const train = await tokenizedRows(task.trainFile, tokenizer, settings.maxLength);
  const evalRows = await tokenizedRows(task.evalFile, tokenizer, settings.maxLength);
  const adapted = await adaptForComparison(base, job.method, settings.seed, settings.baseName);
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
    if (adapted instanceof BottleneckModel && adapted.trainableBaseWeights().size === 0) await adapted.savePretrained(adapterDir, { withHead: false });
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
