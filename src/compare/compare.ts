// runComparison: trains every chosen method with the same step budget, each run in its own worker
// process (so peak memory is per run), then derives the ratios, flexibility and ratings and
// writes compare.json, compare.md, loss_curves.svg and quality_vs_params.svg into the output folder.

import { existsSync, host, join, mkdir, path, readFile, readFileSync, relative, resolve, rm } from '../storage/index.js';
import { spawnNodeScript } from '../runtime/node/child.js';
import { loadAverage, machineInfo } from '../runtime/node/machine.js';
import { loadConfig } from '../models/config.js';
import { architectureOf } from '../models/load.js';
import { writeFileAtomic } from '../io/atomic.js';
import { checkOutputDir, claimOutputDir } from '../io/outdir.js';
import { checkPositiveInts } from '../errors.js';
import { Tokenizer } from '../io/tokenizer.js';
import { TASK_NAMES, bundledModelDir, packageRoot } from '../tasks/tasks.js';
import { bundledTask, resolveTask } from './data.js';
import { CompareError } from './errors.js';
import { type FlexInput, type FlexRun, computeFlexibility, flexibilityDefinition, metricNoise, metricZero } from './flexibility.js';
import type { BaseJob, BaseResult, CompareJob, Quality, RunSettings, TaskRef, TrainJob, TrainResult, WorkerOutput } from './job.js';
import {
  type CompareMethod,
  METHOD_SPECS,
  defaultCompareMethods,
  REFERENCE_METHOD,
  VIRTUAL_TOKENS,
  parseMethods,
  usesVirtualTokens,
} from './methods.js';
import { lossCurvesSvg, qualityVsParamsSvg } from './plots.js';
import { CRITERIA, RATING_RULES, measuredRatings } from './ratings.js';
import { type ComparisonReport, type MethodRow, comparisonMarkdown, formatBytes, formatQuality } from './report.js';
import { type Constraints, DEFAULT_CONSTRAINTS, recommend } from './recommend.js';
import { descriptorFor } from '../models/registry.js';

export const COMPARE_FILES = {
  json: 'compare.json',
  markdown: 'compare.md',
  lossCurves: 'loss_curves.svg',
  qualityVsParams: 'quality_vs_params.svg',
  runs: 'runs',
} as const;

/** What `peft compare` runs without flags (measured in docs/COMPARE.md). */
export const COMPARE_DEFAULTS = {
  task: 'sentiment',
  budget: 100,
  batchSize: 16,
  seed: 42,
  flexLrs: [0.5, 1, 2] as readonly number[],
  latencyPrompts: 16,
  latencyTokens: 8,
  flexEvalLimit: 50,
} as const;

export interface CompareOptions {
  /** base model folder (default the bundled models/tiny-llama) */
  modelDir?: string;
  /** a bundled task: its data files are the defaults of trainFile/evalFile and its metric scores the eval set */
  task?: string;
  trainFile?: string;
  evalFile?: string;
  /** methods to compare (default all); full fine-tuning always runs as the reference */
  methods?: readonly string[];
  /** optimizer steps per run (default 100) */
  budget?: number;
  batchSize?: number;
  /** tokens per training sequence at most (default: the model's positions, less VIRTUAL_TOKENS when a soft-prompt method runs on a model with a position table, at most 1024) */
  maxLength?: number;
  seed?: number;
  threads?: number;
  /** score only the first n eval examples by generation (default all) */
  evalLimit?: number;
  /** learning-rate multiples of each method's default rate for flexibility (default 0.5, 1, 2; [1] skips the grid) */
  flexLrs?: readonly number[];
  /** bundled tasks each method also trains on at its default rate (default every bundled task but the primary; [] none) */
  flexTasks?: readonly string[];
  /** eval examples scored on the flexibility runs (default 50, at most evalLimit) */
  flexEvalLimit?: number;
  /** per-method learning rates instead of the defaults */
  learningRates?: Partial<Record<CompareMethod, number>>;
  latencyPrompts?: number;
  latencyTokens?: number;
  /** output folder; an earlier comparison there is replaced */
  outDir: string;
  /** the command line, recorded in the report */
  command?: string;
  /** give up on one run after this many seconds (default 1800) */
  runTimeoutS?: number;
  log?: (line: string) => void;
  signal?: AbortSignal;
  /** the user's constraints for the recommendations (default: quality first, one task, no budgets) */
  constraints?: Constraints;
}

export interface ComparisonResult {
  report: ComparisonReport;
  files: { json: string; markdown: string; lossCurves: string; qualityVsParams: string };
}

/** How a saved adapter names its base: relative to the working folder when inside it. */
function baseName(dir: string): string {
  const rel = relative(process.cwd(), dir);
  const sep = path.sep;
  return rel && !rel.startsWith('..') && !rel.startsWith(sep) ? rel.split(sep).join('/') : dir;
}

function machine(): ComparisonReport['machine'] {
  let ort = 'unknown';
  try {
    ort = (JSON.parse(readFileSync(join(packageRoot(), 'node_modules', 'onnxruntime-node', 'package.json'), 'utf8')) as { version: string })
      .version;
  } catch {
    // reported as unknown
  }
  const m = machineInfo();
  return {
    nproc: m.nproc,
    cpu: m.cpu,
    memory_gib: Math.round(m.memoryBytes / 2 ** 30),
    node: process.version,
    onnxruntime_node: ort,
    platform: m.platform,
    loadavg_start: loadAverage().map((x) => Number(x.toFixed(2))),
    loadavg_end: [],
  };
}

const WORKER = host.fileURLToPath(new URL('./worker.js', import.meta.url));

/** Runs one job in a worker process; its stderr goes to `log`. */
async function runWorker(job: CompareJob, dir: string, timeoutS: number, signal?: AbortSignal): Promise<WorkerOutput> {
  await mkdir(dir, { recursive: true });
  const jobFile = join(dir, 'job.json');
  const resultFile = join(dir, 'result.json');
  const logFile = join(dir, 'worker.log');
  await rm(resultFile, { force: true });
  await writeFileAtomic(jobFile, `${JSON.stringify(job, null, 2)}\n`);
  let reason: string | undefined;
  const child = spawnNodeScript(WORKER, [jobFile, resultFile], logFile);
  const kill = (why: string) => {
    reason = why;
    child.kill();
  };
  const timer = setTimeout(() => kill(`it ran past the ${timeoutS} s limit per run (raise it with --run-timeout)`), timeoutS * 1000);
  const onAbort = () => kill('the comparison was interrupted');
  signal?.addEventListener('abort', onAbort);
  try {
    const { code, signal: sig } = await child.exited;
    if (sig && !reason) reason = `the worker was killed by ${sig}${sig === 'SIGKILL' ? ' (out of memory?)' : ''}`;
    else if (code !== 0 && code !== 1 && !reason) reason = `the worker exited with code ${code}`;
  } finally {
    clearTimeout(timer);
    signal?.removeEventListener('abort', onAbort);
  }
  if (signal?.aborted) throw new CompareError("the comparison was interrupted; the finished runs are under the output folder's runs/");
  if (existsSync(resultFile)) return JSON.parse(await readFile(resultFile, 'utf8')) as WorkerOutput;
  const tail = existsSync(logFile) ? readFileSync(logFile, 'utf8').trim().split('\n').slice(-3).join(' | ') : '';
  return {
    ok: false,
    error: {
      name: 'WorkerError',
      message: `${reason ?? 'the worker wrote no result'}${tail ? `; its log ends: ${tail}` : ''} (full log: ${logFile})`,
    },
  };
}

const pct = (x: number): string => `${(100 * x).toFixed(x < 0.01 ? 3 : 2)}%`;
const ms = (s: number): string => `${(1000 * s).toFixed(1)} ms`;

export async function runComparison(opts: CompareOptions): Promise<ComparisonResult> {
  const t0 = performance.now();
  const log = opts.log ?? (() => undefined);
  const d = COMPARE_DEFAULTS;
  const budget = opts.budget ?? d.budget;
  const batchSize = opts.batchSize ?? d.batchSize;
  const seed = opts.seed ?? d.seed;
  const scales = [...new Set([1, ...(opts.flexLrs ?? d.flexLrs)])].sort((a, b) => a - b);
  checkPositiveInts(
    {
      'the budget (steps)': budget,
      'the batch size': batchSize,
      'the eval limit': opts.evalLimit,
      'the flexibility eval limit': opts.flexEvalLimit,
      threads: opts.threads,
      'the max length': opts.maxLength,
      'latency prompts': opts.latencyPrompts,
      'latency tokens': opts.latencyTokens,
      'the run timeout': opts.runTimeoutS,
    },
    CompareError,
  );
  if (!Number.isInteger(seed)) throw new CompareError(`the seed must be an integer, got ${seed}`);
  for (const s of scales)
    if (!(s > 0 && Number.isFinite(s))) throw new CompareError(`learning-rate multiples must be numbers above 0, got ${s}`);
  for (const [m, lr] of Object.entries(opts.learningRates ?? {})) {
    parseMethods([m]);
    if (!(typeof lr === 'number' && lr > 0 && Number.isFinite(lr)))
      throw new CompareError(`the learning rate for ${m} must be a number above 0, got ${lr}`);
  }
  const chosen = parseMethods([...(opts.methods ?? defaultCompareMethods()), REFERENCE_METHOD]);
  const outDir = resolve(opts.outDir);
  const modelDir = resolve(opts.modelDir ?? bundledModelDir());
  checkOutputDir(outDir, { command: 'compare', replaceOwn: true, inputs: [{ path: modelDir, what: 'base model' }] });
  if (!existsSync(join(modelDir, 'config.json'))) {
    throw new CompareError(
      opts.modelDir === undefined
        ? `the bundled model ${modelDir} is missing; make it with \`npm run pretrain\`, or pass --model DIR`
        : `${modelDir} is not a model folder (no config.json); pass a Hugging Face model folder`,
    );
  }

  // Everything that can be refused is checked before the output folder is touched.
  const tokenizer = await Tokenizer.fromDir(modelDir);
  const config = JSON.parse(await readFile(join(modelDir, 'config.json'), 'utf8')) as {
    max_position_embeddings?: number;
    n_positions?: number;
    architectures?: unknown;
    model_type?: unknown;
  };
  const positions = config.max_position_embeddings ?? config.n_positions ?? 1024;
  // A position-embedding table (BERT, GPT-2; not Llama's rotary positions) must also hold the virtual tokens of the soft-prompt methods.
  const virtual = chosen.some(usesVirtualTokens) && descriptorFor(String(config.model_type))?.positions !== 'rotary' ? VIRTUAL_TOKENS : 0;
  const maxLength = opts.maxLength ?? Math.min(1024, positions - virtual, tokenizer.modelMaxLength ?? Infinity);
  // A sequence classifier (e.g. BertForSequenceClassification) trains on {"text","label"} rows and is scored by accuracy.
  // the class loadModel will build (refused here, before --out is touched, when it cannot)
  const hfConfig = await loadConfig(modelDir);
  const classifier = architectureOf(hfConfig, modelDir).endsWith('ForSequenceClassification');
  const classes = classifier ? { labels: hfConfig, maxLength } : undefined;
  const primary = await resolveTask({ task: opts.task, trainFile: opts.trainFile, evalFile: opts.evalFile }, tokenizer, classes);
  const flexNames = [...new Set(opts.flexTasks ?? TASK_NAMES)].filter((t) => t !== primary.name);
  // The bundled tasks are prompt/completion data for a causal LM: a classifier's flexibility is its LR grid and its own task.
  const flexTasks: TaskRef[] = classifier ? [] : flexNames.map((t) => bundledTask(t));
  const skippedFlexNote =
    classifier && flexNames.length
      ? `bundled task${flexNames.length > 1 ? 's' : ''} ${flexNames.join(', ')} not run: they are prompt/completion tasks for causal language models, and this model is a sequence classifier`
      : undefined;
  const metric = primary.classification ? 'accuracy' : (primary.spec?.metric ?? 'eval_loss');
  const lrOf = (m: CompareMethod): number => opts.learningRates?.[m] ?? METHOD_SPECS[m].learningRate;
  const settings: RunSettings = {
    modelDir,
    baseName: baseName(modelDir),
    batchSize,
    maxLength,
    seed,
    threads: opts.threads,
    evalLimit: opts.evalLimit,
    latencyPrompts: opts.latencyPrompts ?? d.latencyPrompts,
    latencyTokens: opts.latencyTokens ?? d.latencyTokens,
  };
  const flexEvalLimit = Math.min(opts.flexEvalLimit ?? d.flexEvalLimit, opts.evalLimit ?? Infinity);
  const flexSettings: RunSettings = { ...settings, evalLimit: flexEvalLimit };
  const timeoutS = opts.runTimeoutS ?? 1800;
  const info = machine();

  // --out: new, empty, or an earlier comparison's folder (replaced: it is the documented default,
  // out/compare); never a folder holding anything else (src/io/outdir.ts). Locked while running.
  const folder = await claimOutputDir(outDir, { command: 'compare', replaceOwn: true, inputs: [{ path: modelDir, what: 'base model' }] });
  try {
    const runsDir = join(outDir, COMPARE_FILES.runs);
    const extraRuns = scales.length - 1 + flexTasks.length;
    log(
      `comparing ${chosen.map((m) => METHOD_SPECS[m].label).join(', ')} on ${primary.name} (${metric === 'eval_loss' ? 'eval loss' : metric}${primary.classification ? ' of a sequence classifier' : ''}) with ${modelDir}: ` +
        `${budget} steps x batch ${batchSize} per run, ${extraRuns} flexibility run${extraRuns === 1 ? '' : 's'} per method`,
    );
    if (skippedFlexNote) log(`flexibility: ${skippedFlexNote}`);

    // 1. The untuned base: quality on every task (the zero point of every gain) and the latency reference.
    const flexQualityTasks = [primary, ...flexTasks];
    const baseJob: BaseJob = { kind: 'base', settings, tasks: [primary], timeLatency: true, outDir: join(runsDir, 'base') };
    const baseOut = await runWorker(baseJob, baseJob.outDir, timeoutS, opts.signal);
    if (!baseOut.ok) throw new CompareError(`scoring the base model failed: ${baseOut.error.message}`);
    const base = baseOut.result as BaseResult;
    if (flexTasks.length) {
      const flexBaseJob: BaseJob = {
        kind: 'base',
        settings: flexSettings,
        tasks: flexTasks,
        timeLatency: false,
        outDir: join(runsDir, 'base-flex'),
      };
      const o = await runWorker(flexBaseJob, flexBaseJob.outDir, timeoutS, opts.signal);
      if (!o.ok) throw new CompareError(`scoring the base model on ${flexTasks.map((t) => t.name).join(', ')} failed: ${o.error.message}`);
      base.qualities.push(...(o.result as BaseResult).qualities);
    }
    const baseQ = base.qualities[0]!;
    if (!base.latency) throw new CompareError('the base-model run did not time its inference');
    const baseLatency = base.latency;
    log(
      `base model: ${base.totalParams.toLocaleString('en-US')} parameters, ${formatQuality(baseQ)}, latency ${ms(baseLatency.medianS)} (${primary.classification ? 'one forward pass' : `${baseLatency.tokens} tokens`})`,
    );
    const baseQualities = new Map(base.qualities.map((q) => [q.task, q]));

    // 2. Every method: the measured run at the default rate, then the flexibility runs.
    const order = [REFERENCE_METHOD, ...chosen.filter((m) => m !== REFERENCE_METHOD)];
    const main = new Map<CompareMethod, WorkerOutput>();
    const flex = new Map<CompareMethod, FlexInput>();
    let reference: TrainResult | undefined;
    for (const [i, method] of order.entries()) {
      const spec = METHOD_SPECS[method];
      const lr = lrOf(method);
      const job: TrainJob = {
        kind: 'train',
        settings,
        method,
        task: primary,
        learningRate: lr,
        steps: budget,
        measure: true,
        outDir: join(runsDir, method, 'main'),
      };
      const out = await runWorker(job, job.outDir, timeoutS, opts.signal);
      main.set(method, out);
      const tag = `[${i + 1}/${order.length}] ${spec.label}`;
      if (!out.ok) {
        if (method === REFERENCE_METHOD)
          throw new CompareError(`full fine-tuning, the reference of every ratio, failed: ${out.error.message}`);
        log(`${tag}: failed: ${out.error.message}`);
        continue;
      }
      const r = out.result as TrainResult;
      const m = r.measured!;
      if (method === REFERENCE_METHOD) reference = r;
      const ref = reference!.measured!;
      log(
        `${tag}: ${r.trainableParams.toLocaleString('en-US')} trainable (${pct(r.trainableParams / base.totalParams)}) | step ${ms(m.medianStepS)} (${(m.medianStepS / ref.medianStepS).toFixed(2)}x full) | ` +
          `latency ${ms(m.latency.medianS)} (${(m.latency.medianS / m.baseLatency.medianS).toFixed(2)}x base) | peak RSS ${formatBytes(m.peakRssBytes)} | stored ${formatBytes(m.storedBytes)} | ` +
          `${formatQuality(r.quality)} | ${r.seconds.toFixed(0)} s`,
      );
      const asFlex = (o: WorkerOutput, task: string, scale: number, learningRate: number): FlexRun =>
        o.ok
          ? { task, scale, learningRate, quality: (o.result as TrainResult).quality }
          : { task, scale, learningRate, failure: `${o.error.name}: ${o.error.message}`, diverged: o.error.name === 'TrainError' };
      const input: FlexInput = { method, lrGrid: [], tasks: [asFlex(out, primary.name, 1, lr)] };
      if (scales.length > 1) {
        for (const scale of scales) {
          if (scale === 1) {
            input.lrGrid.push(asFlex(out, primary.name, 1, lr));
            continue;
          }
          const fj: TrainJob = { ...job, learningRate: lr * scale, measure: false, outDir: join(runsDir, method, `lr-x${scale}`) };
          const fo = await runWorker(fj, fj.outDir, timeoutS, opts.signal);
          input.lrGrid.push(asFlex(fo, primary.name, scale, lr * scale));
          log(
            `    ${spec.label} lr x${scale} (${(lr * scale).toExponential(1)}) on ${primary.name}: ${fo.ok ? formatQuality((fo.result as TrainResult).quality) : `failed: ${fo.error.message}`}`,
          );
        }
      }
      for (const task of flexTasks) {
        const fj: TrainJob = { ...job, settings: flexSettings, task, measure: false, outDir: join(runsDir, method, `task-${task.name}`) };
        const fo = await runWorker(fj, fj.outDir, timeoutS, opts.signal);
        input.tasks.push(asFlex(fo, task.name, 1, lr));
        log(
          `    ${spec.label} on ${task.name}: ${fo.ok ? formatQuality((fo.result as TrainResult).quality) : `failed: ${fo.error.message}`}`,
        );
      }
      flex.set(method, input);
    }

    // 3. Ratios, flexibility, ratings.
    const results = new Map<CompareMethod, TrainResult>();
    for (const [m, o] of main) if (o.ok) results.set(m, o.result as TrainResult);
    const ok = order.filter((m) => results.has(m));
    const flexibility = computeFlexibility(
      ok.map((m) => flex.get(m)!),
      baseQualities,
    );
    if (skippedFlexNote) for (const fx of flexibility.values()) fx.notes.push(skippedFlexNote);
    const ref = reference!;
    const gainBasis = pickGainBasis(
      [...results.values()].map((r) => r.quality),
      baseQ,
      ref.quality,
    );
    const rows: MethodRow[] = chosen.map((method) => {
      const spec = METHOD_SPECS[method];
      const out = main.get(method)!;
      if (!out.ok) {
        return {
          method,
          label: spec.label,
          settings: spec.settings,
          learning_rate: lrOf(method),
          status: 'failed',
          error: `${out.error.name}: ${out.error.message}`,
        } as MethodRow;
      }
      const r = results.get(method)!;
      const m = r.measured!;
      const fx = flexibility.get(method)!;
      const relativeGain = gainBasis.relative(r.quality);
      const inputs = {
        trainableShare: r.trainableParams / base.totalParams,
        stepVsFull: m.medianStepS / ref.measured!.medianStepS,
        latencyVsBase: m.latency.medianS / m.baseLatency.medianS,
        storedVsFull: m.storedBytes / ref.measured!.storedBytes,
        peakVsFull: m.peakRssBytes / ref.measured!.peakRssBytes,
        relativeGain,
        flexibility: fx.value,
      };
      const measuredR = measuredRatings(inputs);
      return {
        method,
        label: spec.label,
        peft_type: r.peftType,
        settings: spec.settings,
        learning_rate: r.learningRate,
        status: 'ok',
        trainable_params: r.trainableParams,
        total_params: base.totalParams,
        trainable_share: inputs.trainableShare,
        step_time_ms: 1000 * m.medianStepS,
        step_time_vs_full: inputs.stepVsFull,
        inference_latency_ms: 1000 * m.latency.medianS,
        base_latency_ms: 1000 * m.baseLatency.medianS,
        latency_vs_base: inputs.latencyVsBase,
        peak_train_rss_bytes: m.peakRssBytes,
        peak_vs_full: inputs.peakVsFull,
        stored_bytes: m.storedBytes,
        stored_vs_full: inputs.storedVsFull,
        stored_files: m.storedFiles,
        quality: r.quality,
        relative_gain: relativeGain,
        gain_basis: gainBasis.basis,
        flexibility: fx,
        ratings: Object.fromEntries(
          CRITERIA.map((c) => [c, { measured: measuredR[c], folklore: spec.folklore[c] }]),
        ) as MethodRow['ratings'],
        final_loss: r.finalLoss ?? null,
        train_seconds: r.trainSeconds,
        run_seconds: r.seconds,
        steps: r.steps,
        loss_curve: m.metrics,
      };
    });
    info.loadavg_end = loadAverage().map((x) => Number(x.toFixed(2)));
    const report: ComparisonReport = {
      created: new Date().toISOString(),
      command: opts.command ?? null,
      machine: info,
      model: { dir: settings.baseName, total_params: base.totalParams },
      task: {
        name: primary.name,
        metric,
        ...(primary.classification ? { classification: true } : {}),
        train_file: baseName(primary.trainFile),
        eval_file: baseName(primary.evalFile),
        eval_examples_scored: baseQ.total ?? null,
      },
      budget: {
        steps: budget,
        batch_size: batchSize,
        max_length: maxLength,
        seed,
        schedule: 'linear decay after 5% warmup',
        eval_limit: opts.evalLimit ?? null,
        flex_eval_limit: flexTasks.length || scales.length > 1 ? flexEvalLimit : null,
      },
      base: {
        quality: baseQ,
        latency_ms: 1000 * baseLatency.medianS,
        latency_prompts: baseLatency.prompts,
        latency_tokens: baseLatency.tokens,
        flex_tasks: base.qualities.slice(1),
      },
      flexibility_definition: flexibilityDefinition(
        scales,
        primary.name,
        flexQualityTasks.map((t) => t.name),
        primary.classification ? 'the bundled tasks are for causal language models, not this sequence classifier' : undefined,
      ),
      flex_lr_scales: scales,
      flex_tasks: flexTasks.map((t) => t.name),
      rating_rules: RATING_RULES,
      methods: rows,
      wall_seconds: (performance.now() - t0) / 1000,
    };
    report.recommendations = recommend(report, opts.constraints ?? DEFAULT_CONSTRAINTS);
    const files = {
      json: join(outDir, COMPARE_FILES.json),
      markdown: join(outDir, COMPARE_FILES.markdown),
      lossCurves: join(outDir, COMPARE_FILES.lossCurves),
      qualityVsParams: join(outDir, COMPARE_FILES.qualityVsParams),
    };
    const okRows = rows.filter((r) => r.status === 'ok');
    const put = (path: string, text: string) => writeFileAtomic(path, text);
    await put(files.json, `${JSON.stringify(report, null, 2)}\n`);
    await put(
      files.markdown,
      comparisonMarkdown(report, { lossCurves: COMPARE_FILES.lossCurves, qualityVsParams: COMPARE_FILES.qualityVsParams }),
    );
    await put(
      files.lossCurves,
      lossCurvesSvg(
        okRows.map((r) => ({ label: r.label, records: r.loss_curve! })),
        { title: `Loss per method on ${primary.name} (${budget} steps)` },
      ),
    );
    const metricName = metric === 'accuracy' ? 'accuracy' : metric === 'exact_match' ? 'exact match' : 'exp(-eval loss)';
    await put(
      files.qualityVsParams,
      qualityVsParamsSvg(
        okRows.map((r) => ({ label: r.label, trainableParams: r.trainable_params!, quality: r.quality!.value })),
        {
          base: baseQ.value,
          chance: baseQ.chance,
          metric: metricName,
          title: `${primary.name}: ${metricName} vs trainable parameters`,
        },
      ),
    );
    const failed = rows.filter((r) => r.status === 'failed');
    if (failed.length)
      log(`${failed.length} method${failed.length > 1 ? 's' : ''} failed: ${failed.map((r) => r.label).join(', ')} (their rows say why)`);
    await folder.complete();
    return { report, files };
  } finally {
    await folder.release();
  }
}

/**
 * The zero point and scale of "performance": gain over the base relative to full fine-tuning's gain
 * (the best method's where full fine-tuning gained nothing), on the task metric, or on exp(-eval
 * loss) when no method improved the metric beyond its noise (1/sqrt(n) on n examples).
 */
function pickGainBasis(
  qualities: readonly Quality[],
  base: Quality,
  full: Quality,
): { basis: 'metric' | 'eval loss'; relative: (q: Quality) => number } {
  for (const basis of ['metric', 'eval loss'] as const) {
    const v = (q: Quality) => (basis === 'metric' ? q.value : q.lossQuality);
    const zero = basis === 'metric' ? metricZero(base) : base.lossQuality;
    const fullGain = v(full) - zero;
    const best = Math.max(...qualities.map((q) => v(q) - zero));
    const floor = basis === 'metric' ? metricNoise([base, full, ...qualities]) : 0;
    const refGain = fullGain > floor ? fullGain : best;
    if (refGain > floor) return { basis, relative: (q) => (v(q) - zero) / refGain };
  }
  return { basis: 'metric', relative: () => 0 };
}
