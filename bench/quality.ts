// Equal quality of the faster/smaller frozen bases (issue #19): LoRA trained with the base in
// float32 for several seeds gives the seed-to-seed spread of the eval loss curve; the same runs with
// --base-precision int8 and nf4 are checked against that spread, step by step. Two parts:
//   tasks: the quickstart job (runQuickstart: tiny-llama, LoRA r 8 on all linear layers, 150 steps)
//          on every bundled task, eval loss every --eval-every steps and the task metric at the end;
//   real:  a SmolLM-135M-shaped Llama (random N(0, 0.02) weights, bf16 checkpoint written once),
//          LoRA r 8 on all linear layers, a few hundred steps of next-token prediction on text of
//          the pretraining corpus generator (scripts/corpus), eval loss on held-out blocks.
// Every run is a fresh child process whose result is kept in --out; a rerun skips finished runs
// (--fresh redoes them). --write puts the tables into bench/RESULTS.md (one block per job, with its own
// command and load; the blocks of jobs not run are kept) and the plots in bench/quality/.
//
//   npm run build && nice -n 10 node dist/bench/quality.js [--part tasks|real|all] [--write] [--help]

import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { type RawTensor, fromTypedArray, writeSafetensors } from '../src/io/safetensors.js';
import { Tokenizer } from '../src/io/tokenizer.js';
import { loadModel } from '../src/models/load.js';
import { niceTicks } from '../src/train/plot.js';
import type { TokenizedExample } from '../src/train/data.js';
import { silentProgress } from '../src/train/progress.js';
import { Trainer } from '../src/train/trainer.js';
import { runQuickstart } from '../src/tasks/quickstart.js';
import { TASK_NAMES, bundledModelDir } from '../src/tasks/tasks.js';
import { getPeftModel } from '../src/tuners/load.js';
import { Picker } from '../scripts/corpus/lexicon.js';
import { corpusDocument } from '../scripts/corpus/text.js';
import { forEachFlag, helpOrUnknown, intArg, intListArg, listArg, numberArg } from './args.js';
import { RESULTS_FILE, writeResultsSection } from './results.js';
import { machineLines, uptime } from './peer.js';
import { normals } from './random_weights.js';
import { BENCH_CONFIGS, randomBenchModel } from './train_models.js';

const SELF = fileURLToPath(import.meta.url);
const REPO = resolve(SELF, '..', '..', '..');
const PRECISIONS = ['fp32', 'int8', 'nf4'] as const;
type Precision = (typeof PRECISIONS)[number];
/**
 * A base of the runs: a precision, or "int8:<modules>" (real part only): int8 with the products of
 * those linear modules (names or suffixes joined by "+", e.g. int8:lm_head) kept in float32
 * (StepOptions.int8Exclude). The label names the runs, their rows and their curves.
 */
type Base = Precision | `int8:${string}`;
const precisionOf = (b: Base): Precision => (b.startsWith('int8:') ? 'int8' : (b as Precision));
const int8ExcludeOf = (b: Base): string[] | undefined => (b.startsWith('int8:') ? b.slice(5).split('+') : undefined);
const PARTS = ['tasks', 'real', 'all'] as const;

interface Options {
  part: (typeof PARTS)[number];
  tasks: string[];
  seeds: number[];
  precisions: Base[];
  steps: number;
  evalEvery: number;
  realSeeds: number[];
  realPrecisions: Base[];
  realSteps: number;
  realEvalEvery: number;
  realBatch: number;
  realSeq: number;
  realEvalBlocks: number;
  realLr: number;
  threads: number;
  out: string;
  fresh: boolean;
  write: boolean;
  /** start no run: report the finished runs, and unfinished ones up to their last evaluation */
  reportOnly: boolean;
}

const HELP = `node dist/bench/quality.js [options]
  --part tasks|real|all     which part (default all)
  --tasks a,b               bundled tasks (default ${TASK_NAMES.join(',')})
  --seeds 42,43,44          seeds of every task run (default 42,43,44; fp32's spread is over these)
  --precisions fp32,int8,nf4  bases of the task runs (fp32 is always run)
  --steps N --eval-every N  task runs: optimizer steps (150, the quickstart's) and eval interval (15)
  --real-seeds 1,2,3  --real-precisions fp32,int8,nf4  --real-steps 300  --real-eval-every 25
                            (--real-precisions also takes int8:<modules>: int8 with those linear modules'
                            products in float32, names or suffixes joined by +, e.g. int8:lm_head)
  --real-batch 4  --real-seq 128  --real-eval-blocks 16  --real-lr 2e-3   the SmolLM-135M-shape run
  --threads N               ONNX Runtime threads per run (default 2)
  --out DIR                 run results and the random checkpoint (default out/quality)
  --fresh                   redo runs whose results are in --out
  --write                   write the tables of the jobs run into bench/RESULTS.md (other jobs' blocks
                            are kept) and the plots into bench/quality/
  --report-only             start no run: tables from the finished runs, and from unfinished ones up to
                            their last evaluation (every curve of a job is then cut to the shortest)`;

/** fp32 first (the spread the others are read against), then the others asked for. */
const withFp32 = (ps: Precision[]): Precision[] => ['fp32', ...ps.filter((p) => p !== 'fp32')];
/** --real-precisions: the precisions, or int8:<modules> variants (see Base); fp32 first. */
const bases = (text: string): Base[] => {
  const xs = text.split(',').filter(Boolean) as Base[];
  for (const x of xs)
    if (!PRECISIONS.includes(x as Precision) && !/^int8:[\w.]+(\+[\w.]+)*$/.test(x))
      throw new Error(`unknown precision ${x}; choose from ${PRECISIONS.join(', ')} or int8:<module>[+<module>...]`);
  return ['fp32', ...xs.filter((x) => x !== 'fp32')];
};

function parse(argv: readonly string[]): Options {
  const o: Options = {
    part: 'all',
    tasks: [...TASK_NAMES],
    seeds: [42, 43, 44],
    precisions: ['fp32', 'int8', 'nf4'],
    steps: 150,
    evalEvery: 15,
    realSeeds: [1, 2, 3],
    realPrecisions: ['fp32', 'int8', 'nf4'],
    realSteps: 300,
    realEvalEvery: 25,
    realBatch: 4,
    realSeq: 128,
    realEvalBlocks: 16,
    realLr: 2e-3,
    threads: 2,
    out: 'out/quality',
    fresh: false,
    write: false,
    reportOnly: false,
  };
  forEachFlag(argv, (flag, value) => {
    switch (flag) {
      case '--part':
        [o.part] = listArg(value(), PARTS, 'part');
        break;
      case '--tasks':
        o.tasks = value().split(',');
        break;
      case '--seeds':
        o.seeds = intListArg(flag, value());
        break;
      case '--precisions':
        o.precisions = withFp32(listArg(value(), PRECISIONS, 'precision'));
        break;
      case '--steps':
        o.steps = intArg(flag, value(), 1);
        break;
      case '--eval-every':
        o.evalEvery = intArg(flag, value(), 1);
        break;
      case '--real-seeds':
        o.realSeeds = intListArg(flag, value());
        break;
      case '--real-precisions':
        o.realPrecisions = bases(value());
        break;
      case '--real-steps':
        o.realSteps = intArg(flag, value(), 1);
        break;
      case '--real-eval-every':
        o.realEvalEvery = intArg(flag, value(), 1);
        break;
      case '--real-batch':
        o.realBatch = intArg(flag, value(), 1);
        break;
      case '--real-seq':
        o.realSeq = intArg(flag, value(), 2);
        break;
      case '--real-eval-blocks':
        o.realEvalBlocks = intArg(flag, value(), 1);
        break;
      case '--real-lr':
        o.realLr = numberArg(flag, value());
        break;
      case '--threads':
        o.threads = intArg(flag, value(), 1);
        break;
      case '--out':
        o.out = value();
        break;
      case '--fresh':
        o.fresh = true;
        break;
      case '--write':
        o.write = true;
        break;
      case '--report-only':
        o.reportOnly = true;
        break;
      default:
        helpOrUnknown(flag, HELP);
    }
  });
  return o;
}

// ---------------------------------------------------------------------------------- one run

interface RunSpec {
  kind: 'task' | 'real';
  /** the task name, or "smollm-135m" */
  job: string;
  precision: Base;
  seed: number;
  threads: number;
  steps: number;
  evalEvery: number;
  /** where the run's files go; the result is <dir>.json */
  dir: string;
  real?: { modelDir: string; batch: number; seq: number; evalBlocks: number; lr: number };
}

interface RunResult {
  spec: RunSpec;
  /** eval loss by step, step 0 included */
  evals: [number, number][];
  /** the task metric after training (tasks only) */
  score?: number;
  metric?: string;
  trainSeconds: number;
  finishedAt: string;
  load: string;
  /** read from an unfinished run's metrics.jsonl (--report-only) */
  partial?: boolean;
}

const runId = ({ spec: s }: { spec: RunSpec }): string =>
  `${s.job}-${s.precision.replace(':', '-fp32-').replaceAll('+', '-')}-seed${s.seed}`;

async function childRun(spec: RunSpec): Promise<RunResult> {
  const t0 = performance.now();
  let evals: [number, number][];
  let score: number | undefined;
  let metric: string | undefined;
  if (spec.kind === 'task') {
    const r = await runQuickstart({
      task: spec.job,
      out: spec.dir,
      steps: spec.steps,
      evalEvery: spec.evalEvery,
      seed: spec.seed,
      threads: spec.threads,
      basePrecision: precisionOf(spec.precision),
      samples: 0,
    });
    const metrics = readFileSync(join(spec.dir, 'metrics.jsonl'), 'utf8').trim().split('\n');
    evals = metrics
      .map((l) => JSON.parse(l) as { kind: string; step: number; eval_loss?: number })
      .filter((m) => m.kind === 'eval')
      .map((m) => [m.step, m.eval_loss!]);
    score = r.after!.score;
    metric = r.after!.metric;
  } else {
    const re = spec.real!;
    const model = await loadModel(
      re.modelDir,
      spec.precision === 'nf4' ? { quantization: { bits: 4, type: 'nf4', doubleQuant: true, blockSize: 64 } } : {},
    );
    const tok = await Tokenizer.fromDir(bundledModelDir());
    const { train, evalBlocks } = corpusBlocks(tok, re.seq, spec.steps * re.batch, re.evalBlocks);
    const adapted = await getPeftModel(
      model,
      { r: 8, loraAlpha: 16, loraDropout: 0.05, targetModules: 'all-linear', taskType: 'CAUSAL_LM' },
      { seed: spec.seed },
    );
    const trainer = new Trainer(adapted, train, evalBlocks, {
      outputDir: spec.dir,
      padTokenId: tok.eosTokenId ?? 0,
      learningRate: re.lr,
      batchSize: re.batch,
      maxSteps: spec.steps,
      schedule: 'linear',
      warmupRatio: 0.05,
      evalEvery: spec.evalEvery,
      saveEvery: 0,
      seed: spec.seed,
      overwrite: true,
      progress: silentProgress,
      onStep: (r) => void (r.step % 25 === 0 && console.error(`  step ${r.step}: loss ${r.loss.toFixed(4)}`)),
      runtime: {
        threads: spec.threads,
        basePrecision: precisionOf(spec.precision) === 'int8' ? 'int8' : 'fp32',
        int8Exclude: int8ExcludeOf(spec.precision),
      },
    });
    const res = await trainer.train();
    evals = res.metrics.filter((m) => m.kind === 'eval').map((m) => [m.step, (m as { eval_loss: number }).eval_loss]);
  }
  return {
    spec,
    evals,
    score,
    metric,
    trainSeconds: (performance.now() - t0) / 1000,
    finishedAt: new Date().toISOString(),
    load: uptime(),
  };
}

/**
 * Next-token blocks of the pretraining corpus generator's text (scripts/corpus), tokenized with the
 * bundled tokenizer: `count` training blocks from one stream and `evalCount` held-out blocks from
 * another, documents as <s> ... </s> packed back to back.
 */
function corpusBlocks(
  tok: Tokenizer,
  seq: number,
  count: number,
  evalCount: number,
): { train: TokenizedExample[]; evalBlocks: TokenizedExample[] } {
  const pack = (picker: Picker, n: number): TokenizedExample[] => {
    const blocks: TokenizedExample[] = [];
    let cur: number[] = [];
    while (blocks.length < n) {
      for (const id of [...tok.encode(corpusDocument(picker)), tok.eosTokenId ?? 0]) {
        cur.push(id);
        if (cur.length === seq) {
          blocks.push({ inputIds: cur, labels: [...cur] });
          cur = [];
          if (blocks.length === n) break;
        }
      }
    }
    return blocks;
  };
  return { train: pack(new Picker(2026, 11), count), evalBlocks: pack(new Picker(2026, 12), evalCount) };
}

/** The SmolLM-135M-shaped checkpoint (bench/train_models.ts's config), N(0, 0.02) matrices in bf16, written once. */
async function writeSmolLm(dir: string): Promise<void> {
  if (existsSync(join(dir, 'model.safetensors'))) return;
  mkdirSync(dir, { recursive: true });
  const model = randomBenchModel('llama');
  const tensors = new Map<string, RawTensor>();
  let seed = 101;
  for (const name of model.weights.names()) {
    const w = model.weights.get(name);
    const data = w.shape.length === 2 ? normals(w.data.length, 0.02, seed++) : w.data;
    tensors.set(name, fromTypedArray(data, w.shape, 'BF16'));
  }
  await writeSafetensors(join(dir, 'model.safetensors'), tensors, { format: 'pt' });
  writeFileSync(join(dir, 'config.json'), `${JSON.stringify({ ...BENCH_CONFIGS.llama, torch_dtype: 'bfloat16' }, null, 2)}\n`);
}

/** An unfinished run's evaluations so far, from its metrics.jsonl. */
function partialRun(spec: RunSpec): RunResult | undefined {
  const file = join(spec.dir, 'metrics.jsonl');
  if (!existsSync(file)) return undefined;
  const evals = readFileSync(file, 'utf8')
    .trim()
    .split('\n')
    .filter(Boolean)
    .map((l) => JSON.parse(l) as { kind: string; step: number; eval_loss?: number })
    .filter((m) => m.kind === 'eval')
    .map((m): [number, number] => [m.step, m.eval_loss!]);
  if (evals.length < 2) return undefined;
  return { spec, evals, trainSeconds: NaN, finishedAt: new Date().toISOString(), load: uptime(), partial: true };
}

function runChild(spec: RunSpec, fresh: boolean, reportOnly = false): RunResult | undefined {
  const file = `${spec.dir}.json`;
  if ((reportOnly || !fresh) && existsSync(file)) return JSON.parse(readFileSync(file, 'utf8')) as RunResult;
  if (reportOnly) return partialRun(spec);
  console.error(`${new Date().toISOString().slice(11, 19)} ${runId({ spec })} ...`);
  const r = spawnSync(process.execPath, [SELF, '--child', JSON.stringify(spec)], { stdio: ['ignore', 'inherit', 'inherit'] });
  if (r.status !== 0) throw new Error(`run ${runId({ spec })} failed (exit ${r.status})`);
  const res = JSON.parse(readFileSync(file, 'utf8')) as RunResult;
  console.error(
    `  done in ${res.trainSeconds.toFixed(0)} s: final eval loss ${res.evals.at(-1)![1].toFixed(4)}${res.score !== undefined ? `, ${res.metric} ${res.score}` : ''}`,
  );
  return res;
}

// ---------------------------------------------------------------------------------- analysis

interface Verdict {
  precision: Base;
  seed: number;
  /** eval points after step 0 outside the fp32 band, of all after step 0 */
  outside: number;
  points: number;
  /** largest distance outside the band (0 when inside), and the step */
  excursion: number;
  excursionStep: number;
  /** largest |this - fp32 of the same seed| over the steps after 0 */
  pairedDelta: number;
  final: number;
  step0: number;
  score?: number;
}

interface JobSummary {
  job: string;
  steps: number[];
  /** fp32 band per eval step */
  lo: number[];
  hi: number[];
  fp32: RunResult[];
  verdicts: Verdict[];
  /** median over steps > 0 of the band width */
  medianWidth: number;
  /** the runs, cut to the shortest curve */
  runs: RunResult[];
}

function summarize(job: string, all: RunResult[]): JobSummary {
  // unfinished runs (--report-only): every curve cut to the shortest
  const n = Math.min(...all.map((r) => r.evals.length));
  const runs = all.map((r) => ({ ...r, evals: r.evals.slice(0, n) }));
  const fp32 = runs.filter((r) => r.spec.precision === 'fp32');
  const steps = fp32[0]!.evals.map(([s]) => s);
  const at = (r: RunResult, i: number): number => r.evals[i]![1];
  const lo = steps.map((_, i) => Math.min(...fp32.map((r) => at(r, i))));
  const hi = steps.map((_, i) => Math.max(...fp32.map((r) => at(r, i))));
  const widths = steps
    .map((_, i) => hi[i]! - lo[i]!)
    .slice(1)
    .sort((a, b) => a - b);
  const verdicts: Verdict[] = [];
  for (const r of runs) {
    if (r.spec.precision === 'fp32') continue;
    const twin = fp32.find((f) => f.spec.seed === r.spec.seed);
    let outside = 0;
    let excursion = 0;
    let excursionStep = 0;
    let pairedDelta = 0;
    for (let i = 1; i < steps.length; i++) {
      const v = at(r, i);
      const d = Math.max(v - hi[i]!, lo[i]! - v, 0);
      if (d > 0) outside++;
      if (d > excursion) [excursion, excursionStep] = [d, steps[i]!];
      if (twin) pairedDelta = Math.max(pairedDelta, Math.abs(v - at(twin, i)));
    }
    verdicts.push({
      precision: r.spec.precision,
      seed: r.spec.seed,
      outside,
      points: steps.length - 1,
      excursion,
      excursionStep,
      pairedDelta,
      final: at(r, steps.length - 1),
      step0: at(r, 0),
      score: r.score,
    });
  }
  return { job, steps, lo, hi, fp32, verdicts, medianWidth: widths[Math.floor(widths.length / 2)] ?? 0, runs };
}

const f4 = (x: number): string => x.toFixed(4);

function jobTable(s: JobSummary, withScore: boolean): string[] {
  const last = s.steps.length - 1;
  const fpFinal = s.fp32.map((r) => f4(r.evals[last]![1])).join(' / ');
  const fpScore = withScore ? s.fp32.map((r) => pct(r.score)).join(' / ') : '';
  const lines = [
    `| base | seed | eval loss, step 0 | eval loss at step ${s.steps[last]} | points outside the fp32 band (steps > 0) | largest excursion (step) | max \\|Δ\\| vs fp32, same seed |${withScore ? ' metric at the end |' : ''}`,
    `| --- | --- | --- | --- | --- | --- | --- |${withScore ? ' --- |' : ''}`,
    `| fp32 | ${s.fp32.map((r) => r.spec.seed).join(' / ')} | ${f4(s.fp32[0]!.evals[0]![1])} | ${fpFinal} (band ${f4(s.lo[last]!)}-${f4(s.hi[last]!)}) | (band: min-max of these; median width ${f4(s.medianWidth)}) | | |${withScore ? ` ${fpScore} |` : ''}`,
  ];
  for (const v of s.verdicts) {
    lines.push(
      `| ${v.precision} | ${v.seed} | ${f4(v.step0)} | ${f4(v.final)} | ${v.outside === 0 ? `**0 / ${v.points}**` : `${v.outside} / ${v.points}`} | ${v.excursion === 0 ? '0' : `${f4(v.excursion)} (${v.excursionStep})`} | ${f4(v.pairedDelta)} |${withScore ? ` ${pct(v.score)} |` : ''}`,
    );
  }
  return lines;
}

const pct = (x: number | undefined): string => (x === undefined ? '-' : `${(100 * x).toFixed(0)}%`);

function curveTable(s: JobSummary, runs: RunResult[]): string[] {
  const others = runs.filter((r) => r.spec.precision !== 'fp32');
  const head = ['step', 'fp32 min', 'fp32 max', ...others.map((r) => `${r.spec.precision} s${r.spec.seed}`)];
  const lines = [`| ${head.join(' | ')} |`, `| ${head.map(() => '---').join(' | ')} |`];
  s.steps.forEach((step, i) => {
    const cells = others.map((r) => {
      const v = r.evals[i]![1];
      const out = i > 0 && (v > s.hi[i]! || v < s.lo[i]!);
      return out ? `*${f4(v)}*` : f4(v);
    });
    lines.push(`| ${step} | ${f4(s.lo[i]!)} | ${f4(s.hi[i]!)} | ${cells.join(' | ')} |`);
  });
  return lines;
}

/** At how many steps after 0 the mean curve of a base's runs lies outside the fp32 band. */
function meanOutside(s: JobSummary, p: Base): { outside: number; points: number; worst: number } {
  const runs = s.runs.filter((r) => r.spec.precision === p);
  let outside = 0;
  let worst = 0;
  for (let i = 1; i < s.steps.length; i++) {
    const mean = runs.reduce((a, r) => a + r.evals[i]![1], 0) / runs.length;
    const d = Math.max(mean - s.hi[i]!, s.lo[i]! - mean, 0);
    if (d > 0) outside++;
    worst = Math.max(worst, d);
  }
  return { outside, points: s.steps.length - 1, worst };
}

function verdictLine(s: JobSummary): string {
  const by = new Map<Base, Verdict[]>();
  for (const v of s.verdicts) by.set(v.precision, [...(by.get(v.precision) ?? []), v]);
  const parts: string[] = [];
  for (const [p, vs] of by) {
    const out = vs.reduce((a, v) => a + v.outside, 0);
    const pts = vs.reduce((a, v) => a + v.points, 0);
    const worst = Math.max(...vs.map((v) => v.excursion));
    const mean = meanOutside(s, p);
    const each =
      out === 0
        ? `every curve inside the fp32 band (${pts} points)`
        : `${out} of ${pts} points outside the band, by at most ${f4(worst)} nats (${(worst / Math.max(s.medianWidth, 1e-12)).toFixed(1)}x the median band width)`;
    const avg =
      vs.length > 1
        ? mean.outside === 0
          ? `, its mean over ${vs.length} seeds inside the band at every step`
          : `, its mean over ${vs.length} seeds outside at ${mean.outside} of ${mean.points} steps (by at most ${f4(mean.worst)})`
        : '';
    const last = s.steps.length - 1;
    const meanAt = (b: Base): number => {
      const rs = s.runs.filter((r) => r.spec.precision === b);
      return rs.reduce((a, r) => a + r.evals[last]![1], 0) / rs.length;
    };
    const gap = meanAt(p) - meanAt('fp32');
    const end = `; at step ${s.steps[last]} its mean is ${gap >= 0 ? '+' : ''}${f4(gap)} from fp32's mean, whose seeds span ${f4(s.hi[last]! - s.lo[last]!)}`;
    parts.push(`${p}: ${each}${avg}${end}`);
  }
  return `**${s.job}** (fp32 band from ${s.fp32.length} seeds): ${parts.join('; ')}.`;
}

// ---------------------------------------------------------------------------------- the plot

const COLORS: Record<Precision, string> = { fp32: '#1f77b4', int8: '#d62728', nf4: '#2ca02c' };
const VARIANT_COLORS = ['#9467bd', '#ff7f0e', '#8c564b', '#e377c2'];
/** A base's curve colour: its precision's, or for int8:<modules> variants one of VARIANT_COLORS by order of appearance. */
const colorOf = (b: Base, bases: readonly Base[]): string =>
  b.includes(':') ? VARIANT_COLORS[bases.filter((x) => x.includes(':')).indexOf(b) % VARIANT_COLORS.length]! : COLORS[b as Precision];

/** The fp32 band (shaded min-max) with every curve of every base, as an SVG. */
function curvesSvg(title: string, s: JobSummary, runs: RunResult[]): string {
  const bases = [...new Set(runs.map((r) => r.spec.precision))];
  const legend = Math.max(...bases.map((b) => `${b} (3 seeds)`.length));
  const W = 520 + Math.max(120, 48 + 7 * legend);
  const H = 380;
  const m = { left: 64, right: W - 520, top: 36, bottom: 48 };
  const pw = W - m.left - m.right;
  const ph = H - m.top - m.bottom;
  // the first eval (step 0) is the untrained base, far above the rest: the plot starts at the second
  const first = 1;
  const vals = runs.flatMap((r) => r.evals.slice(first).map(([, v]) => v));
  const yt = niceTicks(Math.min(...vals), Math.max(...vals), 6);
  const xt = niceTicks(s.steps[first]!, s.steps.at(-1)!, 6, true);
  const [x0, x1, y0, y1] = [xt[0]!, xt.at(-1)!, yt[0]!, yt.at(-1)!];
  const X = (x: number): number => m.left + ((x - x0) / (x1 - x0)) * pw;
  const Y = (y: number): number => m.top + ph - ((y - y0) / (y1 - y0)) * ph;
  const out: string[] = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" font-family="Helvetica, Arial, sans-serif" font-size="12">`,
    `<rect width="${W}" height="${H}" fill="white"/>`,
    `<text x="${m.left}" y="22" font-size="14">${title}</text>`,
  ];
  for (const t of yt)
    out.push(
      `<line x1="${m.left}" x2="${m.left + pw}" y1="${Y(t)}" y2="${Y(t)}" stroke="#ddd"/><text x="${m.left - 6}" y="${Y(t) + 4}" text-anchor="end">${Number(t.toPrecision(4))}</text>`,
    );
  for (const t of xt)
    out.push(
      `<line x1="${X(t)}" x2="${X(t)}" y1="${m.top}" y2="${m.top + ph}" stroke="#eee"/><text x="${X(t)}" y="${m.top + ph + 16}" text-anchor="middle">${t}</text>`,
    );
  out.push(`<text x="${m.left + pw / 2}" y="${H - 10}" text-anchor="middle">step</text>`);
  out.push(`<text x="16" y="${m.top + ph / 2}" transform="rotate(-90 16 ${m.top + ph / 2})" text-anchor="middle">eval loss</text>`);
  const idx = s.steps.map((_, i) => i).slice(first);
  const band = [...idx.map((i) => `${X(s.steps[i]!)},${Y(s.hi[i]!)}`), ...idx.reverse().map((i) => `${X(s.steps[i]!)},${Y(s.lo[i]!)}`)];
  out.push(`<polygon points="${band.join(' ')}" fill="${COLORS.fp32}" fill-opacity="0.18" stroke="none"/>`);
  for (const r of runs) {
    const pts = r.evals.slice(first).map(([x, y]) => `${X(x)},${Y(y)}`);
    const dash = r.spec.precision === 'fp32' ? '' : ' stroke-dasharray="5,3"';
    out.push(`<polyline points="${pts.join(' ')}" fill="none" stroke="${colorOf(r.spec.precision, bases)}" stroke-width="1.5"${dash}/>`);
  }
  let ly = m.top + 8;
  for (const p of bases) {
    const n = runs.filter((r) => r.spec.precision === p).length;
    out.push(
      `<line x1="${m.left + pw + 12}" x2="${m.left + pw + 36}" y1="${ly}" y2="${ly}" stroke="${colorOf(p, bases)}" stroke-width="2"${p === 'fp32' ? '' : ' stroke-dasharray="5,3"'}/><text x="${m.left + pw + 42}" y="${ly + 4}">${p} (${n} seeds)</text>`,
    );
    ly += 20;
  }
  out.push(
    `<rect x="${m.left + pw + 12}" y="${ly - 6}" width="24" height="12" fill="${COLORS.fp32}" fill-opacity="0.18"/><text x="${m.left + pw + 42}" y="${ly + 4}">fp32 spread</text>`,
  );
  out.push('</svg>');
  return `${out.join('\n')}\n`;
}

// ---------------------------------------------------------------------------------- main

const HOW_TO_READ = [
  'How to read it. A seed sets the LoRA initialization, the data order and the dropout masks, so the float32 runs differ only by',
  'seed; the int8 and nf4 runs use the same seeds, so a "same seed" difference is the base precision alone. The fp32 band at a',
  'step is the min-max of the float32 runs there. With 3 float32 seeds a fourth run drawn from the same distribution lies outside',
  'that range with probability 1/2 at each point (2 / (n + 1)), so single points outside the band are expected even for an',
  "identical path; a base's mean curve outside the band, and excursions large against the band width, are the signals.",
  'Step 0 is the base before training: int8 runs are evaluated on the int8 base they train on (since issue #19; before, on the',
  "float32 base), so their step 0 is close to float32's; nf4 runs are evaluated on their 4-bit base, whose own loss is higher at step 0.",
  "The metric at the end is the task's (accuracy or exact match on the 100 eval examples, greedy generation).",
];

const HEADING = '## Equal quality: int8 and nf4 bases vs float32 (issue #19)';
const START = '<!-- quality: start -->';
/** The notes after this line of the section are kept when --write rewrites it. */
const END = '<!-- quality: end -->';

async function main(): Promise<void> {
  const argv = process.argv.slice(2);
  if (argv[0] === '--child') {
    const spec = JSON.parse(argv[1]!) as RunSpec;
    const res = await childRun(spec);
    writeFileSync(`${spec.dir}.json`, `${JSON.stringify(res, null, 1)}\n`);
    return;
  }
  const o = parse(argv);
  const out = resolve(o.out);
  mkdirSync(join(out, 'runs'), { recursive: true });
  const started = new Date().toISOString();
  const loadStart = uptime();
  const summaries: { title: string; file: string; summary: JobSummary; runs: RunResult[]; withScore: boolean }[] = [];
  const add = (title: string, file: string, job: string, runs: RunResult[], withScore: boolean): void => {
    if (!runs.some((r) => r.spec.precision === 'fp32')) return void console.error(`${job}: no float32 run to compare with; left out`);
    const summary = summarize(job, runs);
    const partial = runs.filter((r) => r.partial);
    const cut = partial.length ? ` (unfinished: ${partial.map(runId).join(', ')}; every curve cut at step ${summary.steps.at(-1)})` : '';
    summaries.push({ title: `${title}${cut}`, file, summary, runs: summary.runs, withScore });
  };
  if (o.part !== 'real') {
    for (const task of o.tasks) {
      const runs: RunResult[] = [];
      for (const seed of o.seeds)
        for (const precision of o.precisions) {
          const spec: RunSpec = {
            kind: 'task',
            job: task,
            precision,
            seed,
            threads: o.threads,
            steps: o.steps,
            evalEvery: o.evalEvery,
            dir: '',
          };
          spec.dir = join(out, 'runs', runId({ spec }));
          const r = runChild(spec, o.fresh, o.reportOnly);
          if (r) runs.push(r);
        }
      add(`${task} (tiny-llama, quickstart job, ${o.steps} steps)`, `task-${task}.svg`, task, runs, true);
    }
  }
  if (o.part !== 'tasks') {
    const modelDir = join(out, 'smollm-135m-random');
    if (!o.reportOnly) await writeSmolLm(modelDir);
    const runs: RunResult[] = [];
    for (const seed of o.realSeeds)
      for (const precision of o.realPrecisions) {
        const spec: RunSpec = {
          kind: 'real',
          job: 'smollm-135m',
          precision,
          seed,
          threads: o.threads,
          steps: o.realSteps,
          evalEvery: o.realEvalEvery,
          dir: '',
          real: { modelDir, batch: o.realBatch, seq: o.realSeq, evalBlocks: o.realEvalBlocks, lr: o.realLr },
        };
        spec.dir = join(out, 'runs', runId({ spec }));
        const r = runChild(spec, o.fresh, o.reportOnly);
        if (r) runs.push(r);
      }
    add(
      `SmolLM-135M shape, LoRA all-linear, ${o.realSteps} steps of ${o.realBatch} x ${o.realSeq} tokens`,
      'smollm-135m.svg',
      'smollm-135m',
      runs,
      false,
    );
  }
  const blocks = new Map<string, string[]>();
  for (const s of summaries) {
    console.log(`\n${verdictLine(s.summary)}`);
    console.log(jobTable(s.summary, s.withScore).join('\n'));
    const md: string[] = [`#### ${s.title}`, ''];
    const times = s.runs.map((r) => r.finishedAt).sort();
    md.push(
      `Written by \`node dist/bench/quality.js ${argv.join(' ')}\` (${started.slice(0, 16).replace('T', ' ')} UTC; runs finished ${times[0]?.slice(0, 16).replace('T', ' ')} to ${times.at(-1)?.slice(0, 16).replace('T', ' ')} UTC).`,
      '',
      ...machineLines(),
      `- load when the command started: \`${loadStart}\`; at the end: \`${uptime()}\``,
      '',
    );
    md.push(verdictLine(s.summary), '', ...jobTable(s.summary, s.withScore), '');
    const variants = [...new Set(s.runs.map((r) => r.spec.precision).filter((b) => b.includes(':')))];
    if (variants.length)
      md.push(
        `${variants.map((b) => `\`${b}\``).join(', ')}: the int8 base with the products of the named linear modules (${variants.map((b) => int8ExcludeOf(b)!.join(' + ')).join('; ')}) kept in float32 (StepOptions.int8Exclude).`,
        '',
      );
    md.push(
      `![${s.title}](quality/${s.file})`,
      '',
      '<details><summary>every eval point (italic: outside the fp32 band after step 0)</summary>',
      '',
    );
    md.push(...curveTable(s.summary, s.runs), '', '</details>', '');
    blocks.set(s.summary.job, md);
  }
  if (o.write) {
    const dir = join(REPO, 'bench', 'quality');
    mkdirSync(dir, { recursive: true });
    for (const s of summaries) writeFileSync(join(dir, s.file), curvesSvg(s.title, s.summary, s.runs));
    const old = existsSync(RESULTS_FILE) ? readFileSync(RESULTS_FILE, 'utf8') : '';
    writeResultsSection(HEADING, withJobBlocks(old, blocks), { keepFrom: END });
    console.error(`wrote bench/RESULTS.md and bench/quality/*.svg`);
  }
}

const jobMarks = (job: string): [string, string] => [`<!-- quality job ${job}: start -->`, `<!-- quality job ${job}: end -->`];

/**
 * The equal-quality section up to its END marker: the how-to-read text, then one block per job
 * between its job's markers (with its own command and load): `blocks` replace their jobs' blocks in
 * `results` (RESULTS.md's text), the blocks of jobs this command did not run are kept, new ones appended.
 */
function withJobBlocks(results: string, blocks: ReadonlyMap<string, string[]>): string {
  const a = results.indexOf(START);
  const b = results.indexOf(END);
  let inner = a >= 0 && b > a ? results.slice(a + START.length, b) : '';
  for (const [job, md] of blocks) {
    const [s, e] = jobMarks(job);
    const block = [s, ...md, e].join('\n');
    const i = inner.indexOf(s);
    const j = inner.indexOf(e);
    inner = i >= 0 && j > i ? inner.slice(0, i) + block + inner.slice(j + e.length) : `${inner.trimEnd()}\n\n${block}\n`;
  }
  const first = inner.indexOf('<!-- quality job ');
  return [HEADING, '', START, ...HOW_TO_READ, '', first >= 0 ? inner.slice(first).trimEnd() : ''].join('\n');
}

main().catch((e: unknown) => {
  console.error(e instanceof Error ? e.message : e);
  process.exit(1);
});
