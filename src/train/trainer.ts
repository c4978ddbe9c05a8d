// The training loop: AdamW with a learning-rate schedule, gradient accumulation (each micro-batch
// loss divided by the accumulation steps, as transformers does), norm clipping, periodic eval and
// checkpoints, exact resume, a metrics log and loss plot, and a clean stop on request or NaN.
// Causal LMs evaluate to a token-weighted loss and perplexity; sequence classifiers to an
// example-weighted loss and accuracy.

import { createHash } from '../io/sha256.js';
import { join } from '../storage/index.js';
import { runtimeBackend } from '../runtime/backend.js';
import { type OutputDir, type OutputDirState, checkOutputDir, claimOutputDir, readOutputMarker } from '../io/outdir.js';
import { copyTokenizerFiles } from '../io/modelfiles.js';
import type { AdaptedModel } from '../tuners/types.js';
import { AdamW, clipGradNorm } from './adamw.js';
import { BatchStream, evalBatches } from './batches.js';
import {
  CHECKPOINTS_DIR,
  type Checkpoint,
  type RunSignature,
  listCheckpoints,
  loadCheckpoint,
  resolveCheckpoint,
  saveCheckpoint,
} from './checkpoint.js';
import { type Example, IGNORE_INDEX, isClassificationExample } from './data.js';
import { CheckpointError, TrainError } from './errors.js';
import { KEEP_MASK_SCHEME } from './keepmask.js';
import { type EvalRecord, type MetricRecord, MetricsLog, type TrainRecord } from './metrics.js';
import { writeLossPlot } from './plot.js';
import { type ProgressReporter, silentProgress } from './progress.js';
import { Rng } from './rng.js';
import { LrSchedule, type ScheduleName, warmupStepsFor } from './schedule.js';
import { EvalStep, type StepOptions, TrainStep, labelKindOf } from './step.js';
import {
  type PreferenceObjective,
  type PreferencePair,
  PreferenceStep,
  collatePairs,
  isPreferencePair,
  preferenceAccuracy,
  rewardMetrics,
} from './preference.js';
import { checkPositiveInts } from '../errors.js';

export const METRICS_FILE = 'metrics.jsonl';
export const PLOT_FILE = 'loss.svg';

export interface TrainerOptions {
  /** where the final adapter, metrics.jsonl, loss.svg and checkpoints/ go */
  outputDir: string;
  /** pad token id for right padding (the tokenizer's pad token, else its EOS) */
  padTokenId: number;
  /** peak learning rate (default 5e-5, transformers' default) */
  learningRate?: number;
  /** AdamW decoupled weight decay on decayParameters() (default 0) */
  weightDecay?: number;
  adamBetas?: [number, number];
  adamEps?: number;
  /** examples per micro-batch (default 8) */
  batchSize?: number;
  /** micro-batches per optimizer step (default 1) */
  gradAccum?: number;
  /** passes over the data when maxSteps is not set (default 3) */
  epochs?: number;
  /** optimizer steps; overrides epochs */
  maxSteps?: number;
  schedule?: ScheduleName;
  warmupSteps?: number;
  warmupRatio?: number;
  /** clip the global gradient norm to this (default 1.0; 0 turns clipping off) */
  maxGradNorm?: number;
  /** evaluate every this many steps (0: only at the start and the end) */
  evalEvery?: number;
  /** evaluate the untrained model first (default true) */
  evalAtStart?: boolean;
  /** write a checkpoint every this many steps (0: none, except when stopped) */
  saveEvery?: number;
  /** seeds the data order and dropout masks (default 42) */
  seed?: number;
  /** a checkpoint folder or "latest" */
  resume?: string;
  /** start over in an output folder that holds an earlier run (its files are removed first) */
  overwrite?: boolean;
  /** copy this folder's tokenizer files (and generation_config.json) next to the final adapter */
  tokenizerDir?: string;
  progress?: ProgressReporter;
  /** called after every optimizer step (tests use it to stop a run part-way) */
  onStep?: (record: TrainRecord) => void | Promise<void>;
  /** extra metrics computed at every evaluation (e.g. a task metric by generation), stored in the eval record as eval_<name> */
  evalMetrics?: () => Promise<Record<string, number>>;
  /** the eval record field that picks the best model (default eval_loss) */
  metricForBestModel?: string;
  /** higher metricForBestModel is better (default: false for a loss, true otherwise) */
  greaterIsBetter?: boolean;
  /** keep the adapter of the best evaluation in <outputDir>/best (default: when earlyStoppingPatience is set) */
  saveBest?: boolean;
  /** stop after this many evaluations in a row without an improvement of metricForBestModel */
  earlyStoppingPatience?: number;
  /** called with every record written to metrics.jsonl (train steps and evaluations), e.g. to mirror them to TensorBoard */
  onRecord?: (record: MetricRecord) => void | Promise<void>;
  /** runtime options for the step sessions */
  runtime?: StepOptions;
  /**
   * preference tuning: the data are PreferencePair items (a batch of batchSize pairs is 2 x
   * batchSize rows), the loss is DPO's or ORPO's (beta: DPO's beta, ORPO's lambda, TRL's name for
   * both), train records carry TRL's rewards/* and evaluations the preference accuracy
   */
  preference?: { objective: PreferenceObjective; beta?: number };
}

/** What a trainer trains on: examples, or preference pairs (TrainerOptions.preference). */
export type TrainItem = Example | PreferencePair;

export interface EvalResult {
  /** mean loss: weighted by label tokens (causal LM) or examples (classification) */
  loss: number;
  /** causal LM: exp(loss) */
  perplexity?: number;
  /** classification: the fraction of examples whose argmax logit is their label; preference: the fraction of pairs whose chosen side the model finds more likely */
  accuracy?: number;
  /** label tokens (causal LM), examples (classification) or pairs (preference) the loss averages over */
  tokens: number;
  /** preference: TRL's rewards/chosen, rewards/rejected, rewards/accuracies, rewards/margins over the eval pairs */
  rewards?: Record<string, number>;
}

export interface TrainResult {
  outputDir: string;
  globalStep: number;
  totalSteps: number;
  /** stopped by requestStop() (Ctrl-C) before totalSteps */
  interrupted: boolean;
  /** the mean loss of the last step */
  finalLoss?: number;
  /** eval loss of the untrained model, and at the end */
  initialEvalLoss?: number;
  finalEvalLoss?: number;
  /** classification: eval accuracy of the untrained model, and at the end */
  initialEvalAccuracy?: number;
  finalEvalAccuracy?: number;
  /** the last checkpoint this run wrote */
  lastCheckpoint?: string;
  /** stopped by early stopping (earlyStoppingPatience evaluations without improvement) */
  earlyStopped?: boolean;
  /** the best evaluation by metricForBestModel, when tracked */
  best?: { step: number; metric: string; value: number };
  metrics: MetricRecord[];
}

type Optional =
  | 'resume'
  | 'maxSteps'
  | 'warmupSteps'
  | 'warmupRatio'
  | 'onStep'
  | 'onRecord'
  | 'runtime'
  | 'evalMetrics'
  | 'metricForBestModel'
  | 'greaterIsBetter'
  | 'saveBest'
  | 'earlyStoppingPatience'
  | 'tokenizerDir'
  | 'preference';
type Resolved = Required<Omit<TrainerOptions, Optional | 'progress'>> & Pick<TrainerOptions, Optional> & { progress: ProgressReporter };

/** The folder under the output folder that holds the best evaluation's adapter. */
export const BEST_DIR = 'best';

/** Each value (checked in order) finite and >= 0, else a TrainError for the first that is not. */
function checkNonNegative(values: Readonly<Record<string, number>>): void {
  for (const [name, v] of Object.entries(values))
    if (!(Number.isFinite(v) && v >= 0)) throw new TrainError(`${name} must be a finite number >= 0, got ${v}`);
}

/** A digest of tokenized examples: a resumed run must see the same data in the same order. */
function fingerprintExamples(examples: readonly TrainItem[]): string {
  const h = createHash('sha256');
  for (const item of examples) {
    if (isPreferencePair(item)) {
      for (const ex of [item.chosen, item.rejected]) {
        h.update(Int32Array.from(ex.inputIds));
        h.update(Int32Array.from(ex.labels));
        h.update('|');
      }
      h.update('&');
      continue;
    }
    const ex = item;
    h.update(Int32Array.from(ex.inputIds));
    if (isClassificationExample(ex)) {
      h.update(Int32Array.of(ex.label));
      h.update('#');
    } else {
      h.update(Int32Array.from(ex.labels));
      h.update('|');
    }
  }
  return h.digest('hex').slice(0, 16);
}

/**
 * Whether a training run may use `outputDir`, writing nothing: a new or empty folder, or one an
 * earlier run wrote (see src/io/outdir.ts), which a run continues with `resume`, replaces with
 * `overwrite`, or restarts when it holds nothing to keep (stopped before its first checkpoint,
 * never finished). Returns the folder's state; throws a PeftError saying what to do otherwise.
 */
export async function checkRunFolder(
  outputDir: string,
  o: { resume?: string; overwrite?: boolean; inputs?: { path: string; what: string }[] },
): Promise<OutputDirState> {
  const state = checkOutputDir(outputDir, { command: 'train', continueOwn: true, overwrite: o.overwrite, inputs: o.inputs });
  if (state !== 'own' || o.resume || o.overwrite) return state;
  const checkpoints = (await listCheckpoints(join(outputDir, CHECKPOINTS_DIR))).length;
  if (checkpoints > 0) {
    throw new TrainError(
      `${outputDir} already holds a run with ${checkpoints} checkpoint${checkpoints > 1 ? 's' : ''}; continue it with --resume latest, or start over with --overwrite`,
    );
  }
  if (readOutputMarker(outputDir)?.status === 'complete') {
    throw new TrainError(`${outputDir} already holds a finished run; start over with --overwrite, or choose a new folder`);
  }
  return state; // a run that stopped before its first checkpoint: nothing to keep, so it is restarted
}

/** Optimizer steps of a run over `examples` training rows: maxSteps, or ceil(epochs * batches per epoch / accumulation). */
export function totalStepsFor(examples: number, o: Pick<TrainerOptions, 'maxSteps' | 'epochs' | 'batchSize' | 'gradAccum'>): number {
  if (o.maxSteps !== undefined) return o.maxSteps;
  const batches = Math.ceil(examples / (o.batchSize ?? 8));
  return Math.max(1, Math.ceil(((o.epochs ?? 3) * batches) / (o.gradAccum ?? 1)));
}

/** Every example fits the model: token sequences for a causal LM, class ids in range for a classifier; pairs exactly when preference tuning. */
function checkExamples(model: AdaptedModel, examples: readonly TrainItem[], which: string, preference: boolean): void {
  const classes = labelKindOf(model) === 'classes';
  const n = model.base.config.numLabels;
  if (preference && classes)
    throw new TrainError(
      `preference tuning (DPO, ORPO) trains causal language models; the ${model.base.family} model is a sequence classifier`,
    );
  examples.forEach((item, i) => {
    if (isPreferencePair(item) !== preference) {
      throw new TrainError(
        preference
          ? `${which} item ${i} is not a preference pair; DPO and ORPO train on {"prompt","chosen","rejected"} rows`
          : `${which} item ${i} is a preference pair; train it with a preference objective (DPO, ORPO)`,
      );
    }
    if (isPreferencePair(item)) return;
    const ex = item;
    if (isClassificationExample(ex) !== classes) {
      throw new TrainError(
        classes
          ? `${which} example ${i} has token labels, but the ${model.base.family} model is a sequence classifier; give it {"text", "label"} rows (loadClassificationDataset)`
          : `${which} example ${i} has a class label, but the ${model.base.family} model is a causal language model; give it {"text"}, {"prompt","completion"} or {"messages"} rows`,
      );
    }
    if (isClassificationExample(ex) && ex.label !== IGNORE_INDEX && !(Number.isInteger(ex.label) && ex.label >= 0 && ex.label < n)) {
      throw new TrainError(
        `${which} example ${i} has class ${ex.label}, but the model has ${n} classes (0..${n - 1}); fix the label or num_labels/id2label in config.json`,
      );
    }
  });
}

/**
 * Training on an int8 base: the weights both steps hold only as int8 copies are never read as
 * float32 by them, so their float32 arrays are dropped from the model (about 320 MiB for GPT-2
 * small); anything that needs one later (generation, merging) reads it back from the checkpoint.
 */
export function releaseInt8Only(model: AdaptedModel, train: TrainStep, evaluation: EvalStep | undefined): void {
  const names = evaluation ? train.int8OnlyWeights.filter((n) => evaluation.int8OnlyWeights.includes(n)) : train.int8OnlyWeights;
  let released = 0;
  for (const n of names) if (model.base.weights.releaseFloat(n)) released++;
  // V8 frees the arrays only at a full collection, which need not come before the step's peak.
  if (released) runtimeBackend().collectGarbage?.();
}

export class Trainer {
  private readonly opts: Resolved;
  private stop = false;
  private readonly history: MetricRecord[] = [];

  constructor(
    readonly model: AdaptedModel,
    readonly trainData: readonly TrainItem[],
    readonly evalData: readonly TrainItem[] | undefined,
    options: TrainerOptions,
  ) {
    this.opts = {
      learningRate: 5e-5,
      weightDecay: 0,
      adamBetas: [0.9, 0.999],
      adamEps: 1e-8,
      batchSize: 8,
      gradAccum: 1,
      epochs: 3,
      schedule: 'linear',
      maxGradNorm: 1,
      evalEvery: 0,
      evalAtStart: true,
      saveEvery: 0,
      seed: 42,
      overwrite: false,
      ...Object.fromEntries(Object.entries(options).filter(([, v]) => v !== undefined)),
      progress: options.progress ?? silentProgress,
    } as Resolved;
    const o = this.opts;
    if (!o.outputDir) throw new TrainError('an output folder is required');
    checkPositiveInts({ 'batch size': o.batchSize, 'gradient accumulation steps': o.gradAccum }, TrainError);
    checkNonNegative({
      'learning rate': o.learningRate,
      'weight decay': o.weightDecay,
      'max grad norm': o.maxGradNorm,
      'eval every': o.evalEvery,
      'save every': o.saveEvery,
    });
    if (o.maxSteps !== undefined) checkPositiveInts({ steps: o.maxSteps }, TrainError);
    else if (!(o.epochs > 0 && Number.isFinite(o.epochs))) throw new TrainError(`epochs must be a number > 0, got ${o.epochs}`);
    if (o.warmupSteps !== undefined && !(Number.isInteger(o.warmupSteps) && o.warmupSteps >= 0))
      throw new TrainError(`warmup steps must be an integer >= 0, got ${o.warmupSteps}`);
    if (!Number.isInteger(o.seed)) throw new TrainError(`the seed must be an integer, got ${o.seed}`);
    if (trainData.length === 0) throw new TrainError('the training set is empty');
    if (evalData && evalData.length === 0) throw new TrainError('the evaluation set is empty; leave it out or give it examples');
    const pref = o.preference !== undefined;
    checkExamples(model, trainData, 'training', pref);
    if (evalData) {
      checkExamples(model, evalData, 'evaluation', pref);
      if (
        !pref &&
        (evalData as readonly Example[]).every((ex) =>
          isClassificationExample(ex) ? ex.label === IGNORE_INDEX : ex.labels.every((l) => l === IGNORE_INDEX),
        )
      ) {
        throw new TrainError(
          'no evaluation example has a label (every label is -100), so there would be no eval loss; give evaluation rows with completions, or leave the evaluation set out',
        );
      }
    }
  }

  /** Asks the run to stop after the step in progress, with a checkpoint written (Ctrl-C). */
  requestStop(): void {
    this.stop = true;
  }

  get stopRequested(): boolean {
    return this.stop;
  }

  /** Optimizer steps the run makes: maxSteps, or ceil(epochs * batches per epoch / accumulation). */
  get totalSteps(): number {
    return totalStepsFor(this.trainData.length, this.opts);
  }

  private signature(totalSteps: number, warmupSteps: number): RunSignature {
    const o = this.opts;
    const params = [...this.model.parameters()].map(([n, t]) => `${n}:${t.shape.join('x')}`).join(',');
    return {
      method: this.model.peftType,
      params: createHash('sha256').update(params).digest('hex').slice(0, 16),
      train_data: fingerprintExamples(this.trainData),
      learning_rate: o.learningRate,
      weight_decay: o.weightDecay,
      adam_beta1: o.adamBetas[0],
      adam_beta2: o.adamBetas[1],
      adam_epsilon: o.adamEps,
      batch_size: o.batchSize,
      gradient_accumulation_steps: o.gradAccum,
      max_steps: totalSteps,
      lr_scheduler_type: o.schedule,
      warmup_steps: warmupSteps,
      max_grad_norm: o.maxGradNorm,
      dropout_masks: KEEP_MASK_SCHEME,
      seed: o.seed,
      pad_token_id: o.padTokenId,
      ...(o.preference ? { objective: o.preference.objective, beta: o.preference.beta ?? null } : {}),
    };
  }

  /** Mean loss of the eval set with the current parameters (token-weighted; example-weighted with accuracy for a classifier). */
  async evaluate(step?: EvalStep | PreferenceStep): Promise<EvalResult> {
    if (!this.evalData) throw new TrainError('no evaluation set was given');
    if (this.opts.preference) return this.evaluatePreference(step as PreferenceStep | undefined);
    const own = (step as EvalStep | undefined) ?? (await EvalStep.compile(this.model, this.opts.runtime));
    try {
      let sum = 0;
      let tokens = 0;
      let correct: number | undefined;
      const params = this.model.parameters();
      for (const batch of evalBatches(this.evalData as readonly Example[], this.opts.batchSize, this.opts.padTokenId)) {
        const r = await own.run(batch, params);
        if (r.tokens === 0) continue;
        sum += r.loss * r.tokens;
        tokens += r.tokens;
        if (r.correct !== undefined) correct = (correct ?? 0) + r.correct;
      }
      if (tokens === 0) {
        throw new TrainError(
          `no evaluation example has a label ${labelKindOf(this.model) === 'classes' ? 'to score' : 'token left after --max-len truncation'} (every label is -100), so there is no eval loss; give evaluation rows with completions, or a larger --max-len`,
        );
      }
      const loss = sum / tokens;
      if (correct !== undefined) return { loss, accuracy: correct / tokens, tokens };
      return { loss, perplexity: Math.exp(loss), tokens };
    } finally {
      if (!step) await own.dispose();
    }
  }

  /** Preference eval: the mean loss over pairs, the preference accuracy and TRL's reward metrics. */
  private async evaluatePreference(step?: PreferenceStep): Promise<EvalResult> {
    const pairs = this.evalData as readonly PreferencePair[];
    const own = step ?? (await PreferenceStep.compile(this.model, { ...this.opts.runtime, ...this.opts.preference!, training: false }));
    try {
      const params = this.model.parameters();
      let loss = 0;
      let right = 0;
      const chosen: number[] = [];
      const rejected: number[] = [];
      for (let s = 0; s < pairs.length; s += this.opts.batchSize) {
        const part = pairs.slice(s, s + this.opts.batchSize);
        const r = await own.run(collatePairs(part, this.opts.padTokenId), params);
        loss += r.loss * part.length;
        right += preferenceAccuracy(r.logps, part.length) * part.length;
        chosen.push(...r.rewardsChosen);
        rejected.push(...r.rewardsRejected);
      }
      const rewards = rewardMetrics({ rewardsChosen: Float32Array.from(chosen), rewardsRejected: Float32Array.from(rejected) });
      return { loss: loss / pairs.length, accuracy: right / pairs.length, tokens: pairs.length, rewards };
    } finally {
      if (!step) await own.dispose();
    }
  }

  async train(): Promise<TrainResult> {
    const o = this.opts;
    const out = o.outputDir;
    const ckptDir = join(out, CHECKPOINTS_DIR);
    const totalSteps = this.totalSteps;
    const warmupSteps = warmupStepsFor(totalSteps, { warmupSteps: o.warmupSteps, warmupRatio: o.warmupRatio });
    const signature = this.signature(totalSteps, warmupSteps);
    const params = this.model.parameters();

    // Everything that can be refused is checked before the output folder is touched.
    const state = await checkRunFolder(out, o);
    let resumed: Checkpoint | undefined;
    if (o.resume) {
      const path = await resolveCheckpoint(out, o.resume);
      resumed = await loadCheckpoint(path);
      const diffs = Object.keys({ ...signature, ...resumed.state.signature })
        .filter((k) => signature[k] !== resumed!.state.signature[k])
        .map((k) => `${k}: checkpoint ${JSON.stringify(resumed!.state.signature[k])}, now ${JSON.stringify(signature[k])}`);
      if (diffs.length)
        throw new CheckpointError(
          `cannot resume exactly from ${path}: the run settings differ (${diffs.join('; ')}); use the original settings`,
        );
      for (const [n, t] of params) {
        const saved = resumed.params.get(n);
        if (!saved || saved.length !== t.data.length)
          throw new CheckpointError(
            `checkpoint ${path} has no tensor "${n}" of ${t.data.length} values; it belongs to another model or method`,
          );
      }
      if (resumed.state.globalStep >= totalSteps)
        throw new CheckpointError(`checkpoint ${path} is at step ${resumed.state.globalStep}, already the end of a ${totalSteps}-step run`);
    }
    // One run at a time per folder (a second one fails here at once); a run that is not resumed
    // starts from an empty folder, so nothing of an earlier run (its adapter, metrics, checkpoints)
    // is left to be mistaken for this one's.
    const folder = await claimOutputDir(out, {
      command: 'train',
      continueOwn: true,
      overwrite: o.overwrite,
      clear: state === 'own' && !resumed,
    });
    try {
      const trainStep = o.preference
        ? await PreferenceStep.compile(this.model, { ...o.runtime, ...o.preference })
        : await TrainStep.compile(this.model, o.runtime);
      let evalStep: EvalStep | PreferenceStep | undefined;
      try {
        evalStep = !this.evalData
          ? undefined
          : o.preference
            ? await PreferenceStep.compile(this.model, { ...o.runtime, ...o.preference, training: false })
            : await EvalStep.compile(this.model, o.runtime);
        if (trainStep instanceof TrainStep && (!evalStep || evalStep instanceof EvalStep)) releaseInt8Only(this.model, trainStep, evalStep);
        return await this.loop({ trainStep, evalStep, totalSteps, warmupSteps, signature, resumed, ckptDir, folder });
      } finally {
        await trainStep.dispose();
        await evalStep?.dispose();
      }
    } finally {
      await folder.release();
    }
  }

  private async loop(a: {
    trainStep: TrainStep | PreferenceStep;
    evalStep?: EvalStep | PreferenceStep;
    totalSteps: number;
    warmupSteps: number;
    signature: RunSignature;
    resumed?: Checkpoint;
    ckptDir: string;
    folder: OutputDir;
  }): Promise<TrainResult> {
    const o = this.opts;
    const out = o.outputDir;
    const { trainStep, evalStep, totalSteps, resumed } = a;
    const params = this.model.parameters();
    const decay = this.model.decayParameters();
    const optimizer = new AdamW({ lr: o.learningRate, betas: o.adamBetas, eps: o.adamEps, weightDecay: o.weightDecay });
    const schedule = new LrSchedule({ name: o.schedule, baseLr: o.learningRate, totalSteps, warmupSteps: a.warmupSteps });
    let rng = Rng.fromSeed(o.seed, 7);
    let step = 0;
    let tokensSeen = 0;
    let position = { epoch: 0, index: 0 };

    this.history.length = 0;
    if (resumed) {
      for (const [n, t] of params) t.data.set(resumed.params.get(n)!);
      optimizer.state = resumed.optimizer;
      rng = Rng.fromState(resumed.rng);
      step = resumed.state.globalStep;
      tokensSeen = resumed.state.tokensSeen;
      position = resumed.state.dataPosition;
      this.history.push(...resumed.state.logHistory);
    }
    const metrics = new MetricsLog(join(out, METRICS_FILE));
    await metrics.reset(this.history);
    const stream = o.preference
      ? new BatchStream<TrainItem>(this.trainData, o.batchSize, o.padTokenId, o.seed, true, position, (rows, pad) =>
          collatePairs(rows as PreferencePair[], pad),
        )
      : new BatchStream<TrainItem>(this.trainData, o.batchSize, o.padTokenId, o.seed, true, position);
    const startStep = step;
    let lastCheckpoint: string | undefined;
    let lastEvalStep = -1;
    const record = async (r: MetricRecord): Promise<void> => {
      this.history.push(r);
      await metrics.append(r);
      if (o.onRecord) await o.onRecord(r);
    };
    // the best evaluation so far and evaluations since it, rebuilt from the history on resume
    const bestMetric = o.metricForBestModel ?? 'eval_loss';
    const greater = o.greaterIsBetter ?? !/loss|perplexity/.test(bestMetric);
    const trackBest = o.saveBest === true || o.earlyStoppingPatience !== undefined || o.metricForBestModel !== undefined;
    let best: { step: number; value: number } | undefined;
    let sinceBest = 0;
    let earlyStopped = false;
    const noteEval = (r: EvalRecord): boolean => {
      const v = (r as unknown as Record<string, unknown>)[bestMetric];
      if (typeof v !== 'number' || !Number.isFinite(v)) return false;
      if (best === undefined || (greater ? v > best.value : v < best.value)) {
        best = { step: r.step, value: v };
        sinceBest = 0;
        return true;
      }
      sinceBest += 1;
      return false;
    };
    if (trackBest) for (const m of this.history) if (m.kind === 'eval') noteEval(m);
    const runEval = async (): Promise<void> => {
      if (!evalStep) return;
      const e = await this.evaluate(evalStep);
      const r: EvalRecord =
        e.rewards !== undefined
          ? {
              kind: 'eval',
              step,
              epoch: stream.epochProgress,
              eval_loss: e.loss,
              eval_accuracy: e.accuracy,
              eval_pairs: e.tokens,
              ...Object.fromEntries(Object.entries(e.rewards).map(([k, v]) => [`eval_${k}`, v])),
            }
          : e.accuracy !== undefined
            ? { kind: 'eval', step, epoch: stream.epochProgress, eval_loss: e.loss, eval_accuracy: e.accuracy, eval_examples: e.tokens }
            : { kind: 'eval', step, epoch: stream.epochProgress, eval_loss: e.loss, eval_perplexity: e.perplexity, eval_tokens: e.tokens };
      if (o.evalMetrics) for (const [k, v] of Object.entries(await o.evalMetrics())) r[`eval_${k}`] = v;
      if (trackBest && !(bestMetric in r))
        throw new TrainError(
          `the metric for the best model, ${bestMetric}, is not among this run's eval metrics (${Object.keys(r)
            .filter((k) => k.startsWith('eval_'))
            .join(', ')})`,
        );
      await record(r);
      o.progress.eval(r);
      lastEvalStep = step;
      if (trackBest) {
        const improved = noteEval(r);
        if (improved && (o.saveBest ?? o.earlyStoppingPatience !== undefined)) await this.model.savePretrained(join(out, BEST_DIR));
        if (o.earlyStoppingPatience !== undefined && sinceBest >= o.earlyStoppingPatience) {
          earlyStopped = true;
          o.progress.message(
            `early stopping: ${bestMetric} has not improved for ${sinceBest} evaluations (best ${best!.value.toFixed(4)} at step ${best!.step})`,
          );
        }
      }
    };
    const checkpoint = async (): Promise<void> => {
      lastCheckpoint = await saveCheckpoint(
        a.ckptDir,
        {
          state: {
            globalStep: step,
            totalSteps,
            dataPosition: stream.position,
            epoch: stream.epochProgress,
            tokensSeen,
            signature: a.signature,
            logHistory: [...this.history],
          },
          params: new Map([...params].map(([n, t]) => [n, t.data])),
          optimizer: optimizer.state,
          schedule: schedule.toJSON(),
          rng: rng.state(),
        },
        this.model,
      );
    };
    const lastGood = (): string => {
      const where = lastCheckpoint ?? (resumed ? 'the checkpoint this run resumed from' : undefined);
      return where
        ? `the last good checkpoint (${where}) is kept; resume from it with a lower --lr`
        : 'no checkpoint was written yet; restart with a lower --lr or a smaller --max-grad-norm';
    };

    o.progress.start(totalSteps, step);
    const t0 = performance.now();
    let finalLoss: number | undefined;
    try {
      if (o.evalAtStart && step === 0) await runEval();
      while (step < totalSteps && !this.stop && !earlyStopped) {
        const ts = performance.now();
        const lr = schedule.lrAt(step);
        let acc: Map<string, Float32Array> | undefined;
        let lossSum = 0;
        let tokens = 0;
        const rewards: Record<string, number> = {};
        for (let k = 0; k < o.gradAccum; k++) {
          const batch = stream.next();
          const r = await trainStep.run(batch, params, { lossScale: 1 / o.gradAccum, rng });
          // TRL's rewards/* of a step: the mean over its micro-batches
          if ('rewardsChosen' in r) for (const [m, v] of Object.entries(rewardMetrics(r))) rewards[m] = (rewards[m] ?? 0) + v / o.gradAccum;
          if (!Number.isFinite(r.loss)) {
            throw new TrainError(
              `the loss is ${r.loss} at step ${step + 1} (micro-batch ${k + 1} of ${o.gradAccum}); training stopped without applying it, and ${lastGood()}`,
            );
          }
          lossSum += r.loss;
          tokens += batch.tokens;
          if (!acc) acc = r.grads!;
          else {
            for (const [n, g] of r.grads!) {
              const dst = acc.get(n)!;
              for (let i = 0; i < g.length; i++) dst[i]! += g[i]!;
            }
          }
        }
        const gradNorm = o.maxGradNorm > 0 ? clipGradNorm(acc!, o.maxGradNorm) : clipGradNorm(acc!, Infinity);
        if (!Number.isFinite(gradNorm)) {
          throw new TrainError(
            `the gradient norm is ${gradNorm} at step ${step + 1} (the loss was finite); training stopped without applying it, and ${lastGood()}`,
          );
        }
        optimizer.step(params, acc!, { lr, decay });
        this.model.afterOptimizerStep?.(step, acc!);
        step += 1;
        tokensSeen += tokens;
        finalLoss = lossSum / o.gradAccum;
        const now = performance.now();
        const r: TrainRecord = {
          kind: 'train',
          step,
          epoch: stream.epochProgress,
          loss: finalLoss,
          learning_rate: lr,
          grad_norm: gradNorm,
          tokens,
          tokens_per_second: tokens / Math.max(1e-9, (now - ts) / 1000),
          elapsed_s: (now - t0) / 1000,
          ...rewards,
        };
        await record(r);
        const perStep = (now - t0) / 1000 / (step - startStep);
        o.progress.step(r, perStep * (totalSteps - step));
        if (o.evalEvery > 0 && step % o.evalEvery === 0 && step < totalSteps) await runEval();
        if (o.saveEvery > 0 && step % o.saveEvery === 0 && step < totalSteps) await checkpoint();
        if (o.onStep) await o.onStep(r);
      }
      const interrupted = step < totalSteps && !earlyStopped;
      if (interrupted) {
        if (step > startStep) await checkpoint();
        o.progress.stop();
        o.progress.message(
          step > startStep
            ? `stopped at step ${step}/${totalSteps}; checkpoint written to ${lastCheckpoint}; continue with --resume latest`
            : `stopped before step ${step + 1}; nothing new to save`,
        );
      } else {
        if (lastEvalStep !== step) await runEval();
        await this.model.savePretrained(out);
        if (o.tokenizerDir) await copyTokenizerFiles(o.tokenizerDir, out);
        await a.folder.complete();
        o.progress.stop();
      }
      const evals = this.history.filter((m): m is EvalRecord => m.kind === 'eval');
      return {
        outputDir: out,
        globalStep: step,
        totalSteps,
        interrupted,
        finalLoss,
        initialEvalLoss: evals.find((e) => e.step === 0)?.eval_loss,
        finalEvalLoss: evals.length ? evals[evals.length - 1]!.eval_loss : undefined,
        initialEvalAccuracy: evals.find((e) => e.step === 0)?.eval_accuracy,
        finalEvalAccuracy: evals.length ? evals[evals.length - 1]!.eval_accuracy : undefined,
        lastCheckpoint,
        ...(earlyStopped ? { earlyStopped } : {}),
        ...(trackBest && best ? { best: { step: best.step, metric: bestMetric, value: best.value } } : {}),
        metrics: [...this.history],
      };
    } finally {
      o.progress.stop();
      await writeLossPlot(join(out, PLOT_FILE), this.history, { title: `${this.model.peftType} fine-tuning loss` }).catch(() => undefined);
    }
  }
}
