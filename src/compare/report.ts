// The comparison as files: the JSON report (every measured number, snake_case like metrics.jsonl)
// and its Markdown rendering: the measured table, the ratings next to the folklore, what every
// column means, the flexibility definition and runs, the thresholds and the per-method settings.

import type { Flexibility } from './flexibility.js';
import type { Quality } from './job.js';
import type { CompareMethod } from './methods.js';
import { CRITERIA, CRITERION_LABELS, type Criterion, type Rating } from './ratings.js';
import type { MetricRecord } from '../train/metrics.js';
import { type Advice, adviceMarkdown } from './recommend.js';

export interface MethodRow {
  method: CompareMethod;
  label: string;
  settings: string;
  learning_rate: number;
  status: 'ok' | 'failed';
  /** why the run failed (status 'failed') */
  error?: string;
  peft_type?: string;
  trainable_params?: number;
  total_params?: number;
  trainable_share?: number;
  step_time_ms?: number;
  step_time_vs_full?: number;
  inference_latency_ms?: number;
  /** the untuned base model's latency, timed interleaved with this method's in the same process */
  base_latency_ms?: number;
  latency_vs_base?: number;
  peak_train_rss_bytes?: number;
  peak_vs_full?: number;
  stored_bytes?: number;
  stored_vs_full?: number;
  stored_files?: string[];
  quality?: Quality;
  /** gain over the base / full fine-tuning's gain */
  relative_gain?: number;
  gain_basis?: 'metric' | 'eval loss';
  flexibility?: Flexibility;
  ratings?: Record<Criterion, { measured: Rating; folklore: Rating }>;
  final_loss?: number | null;
  train_seconds?: number;
  run_seconds?: number;
  steps?: number;
  loss_curve?: MetricRecord[];
}

export interface ComparisonReport {
  created: string;
  command: string | null;
  machine: {
    nproc: number;
    cpu: string;
    memory_gib: number;
    node: string;
    onnxruntime_node: string;
    platform: string;
    loadavg_start: number[];
    loadavg_end: number[];
  };
  model: { dir: string; total_params: number };
  /** classification: a sequence classifier on {"text","label"} rows, scored by the argmax of its logits, its latency one forward pass */
  task: {
    name: string;
    metric: string;
    classification?: boolean;
    train_file: string;
    eval_file: string;
    eval_examples_scored: number | null;
  };
  budget: {
    steps: number;
    batch_size: number;
    max_length: number;
    seed: number;
    schedule: string;
    eval_limit: number | null;
    flex_eval_limit: number | null;
  };
  base: { quality: Quality; latency_ms: number; latency_prompts: number; latency_tokens: number; flex_tasks: Quality[] };
  flexibility_definition: string;
  flex_lr_scales: number[];
  flex_tasks: string[];
  rating_rules: Readonly<Record<Criterion, string>>;
  methods: MethodRow[];
  wall_seconds: number;
  /** "which method for you": advice from these measurements under the user's constraints */
  recommendations?: Advice;
}

export function formatBytes(n: number): string {
  if (n < 1024) return `${n} B`;
  if (n < 1024 ** 2) return `${(n / 1024).toFixed(1)} KiB`;
  if (n < 1024 ** 3) return `${(n / 1024 ** 2).toFixed(1)} MiB`;
  return `${(n / 1024 ** 3).toFixed(2)} GiB`;
}

const METRIC_NAMES: Record<string, string> = { accuracy: 'accuracy', exact_match: 'exact match', eval_loss: 'eval loss' };

/** "accuracy 93.0% (93/100)", or "eval loss 1.234" for loss-scored data. */
export function formatQuality(q: Quality): string {
  if (q.metric === 'eval_loss') return `eval loss ${q.evalLoss.toFixed(3)}`;
  return `${METRIC_NAMES[q.metric] ?? q.metric} ${(100 * q.value).toFixed(1)}%${q.total !== undefined ? ` (${q.correct}/${q.total})` : ''}`;
}

function qualityCell(q: Quality): string {
  return q.metric === 'eval_loss' ? `loss ${q.evalLoss.toFixed(3)}` : `${(100 * q.value).toFixed(1)}%`;
}

const fmtInt = (n: number): string => n.toLocaleString('en-US');
const fmtShare = (x: number): string => `${(100 * x).toFixed(x < 0.001 ? 4 : x < 0.01 ? 3 : 2)}%`;
const fmtRatio = (x: number): string => `${x.toFixed(2)}x`;
const fmtMs = (x: number): string => `${x.toFixed(x < 10 ? 2 : 1)} ms`;

function duration(s: number): string {
  const m = Math.floor(s / 60);
  return m ? `${m} min ${Math.round(s - 60 * m)} s` : `${s.toFixed(0)} s`;
}

function table(header: string[], rows: string[][]): string[] {
  const esc = (c: string) => c.replace(/\|/g, '\\|');
  return [`| ${header.join(' | ')} |`, `| ${header.map(() => '---').join(' | ')} |`, ...rows.map((r) => `| ${r.map(esc).join(' | ')} |`)];
}

/** The head of the report: setup, the measured table and the ratings (what `peft compare` prints). */
function summaryLines(r: ComparisonReport): string[] {
  const metricName = METRIC_NAMES[r.task.metric] ?? r.task.metric;
  const ok = r.methods.filter((m) => m.status === 'ok');
  const L: string[] = [];
  L.push(`# PEFT methods compared on ${r.task.name}`, '');
  L.push(
    `- model: \`${r.model.dir}\`, ${fmtInt(r.model.total_params)} parameters`,
    `- task: ${r.task.name}, ${r.task.metric === 'eval_loss' ? 'scored by eval loss' : r.task.classification ? `${metricName} of a sequence classifier (argmax of its logits vs the label)` : `${metricName} of greedy generations`} on ${r.task.eval_examples_scored ?? 'all'} eval examples (\`${r.task.eval_file}\`, trained on \`${r.task.train_file}\`); untuned base model: ${formatQuality(r.base.quality)}${r.base.quality.chance !== undefined ? `; always answering the most common label: ${(100 * r.base.quality.chance).toFixed(1)}%` : ''}`,
    `- budget: ${r.budget.steps} optimizer steps x batch ${r.budget.batch_size} per run, ${r.budget.schedule}, max length ${r.budget.max_length}, seed ${r.budget.seed}`,
    `- machine: nproc ${r.machine.nproc}, ${r.machine.cpu}, ${r.machine.memory_gib} GiB RAM, ${r.machine.platform}; load average ${r.machine.loadavg_start.join(' / ')} at start, ${r.machine.loadavg_end.join(' / ')} at the end; node ${r.machine.node}, onnxruntime-node ${r.machine.onnxruntime_node}`,
    ...(r.command ? [`- command: \`${r.command}\``] : []),
    `- wall time: ${duration(r.wall_seconds)}`,
    '',
  );

  L.push('## Measured', '');
  L.push(
    ...table(
      [
        'method',
        'trainable params',
        'share of model',
        'train step',
        'vs full FT',
        'inference latency',
        'vs base',
        'peak train RSS',
        'stored per task',
        'vs full FT',
        metricName,
        'flexibility',
      ],
      r.methods.map((m) =>
        m.status === 'ok'
          ? [
              m.label,
              fmtInt(m.trainable_params!),
              fmtShare(m.trainable_share!),
              fmtMs(m.step_time_ms!),
              fmtRatio(m.step_time_vs_full!),
              fmtMs(m.inference_latency_ms!),
              fmtRatio(m.latency_vs_base!),
              formatBytes(m.peak_train_rss_bytes!),
              formatBytes(m.stored_bytes!),
              fmtShare(m.stored_vs_full!),
              qualityCell(m.quality!),
              m.flexibility!.value.toFixed(2),
            ]
          : [m.label, ...Array<string>(11).fill(`failed`)],
      ),
    ),
    '',
  );
  for (const m of r.methods.filter((x) => x.status === 'failed')) L.push(`- ${m.label} failed: ${m.error}`);
  if (r.methods.some((x) => x.status === 'failed')) L.push('');

  L.push('## Ratings: measured / folklore', '');
  L.push(
    ...table(
      ['method', ...CRITERIA.map((c) => CRITERION_LABELS[c])],
      ok.map((m) => [
        m.label,
        ...CRITERIA.map((c) => {
          const x = m.ratings![c];
          return x.measured === x.folklore ? `${x.measured} / ${x.folklore}` : `**${x.measured}** / ${x.folklore}`;
        }),
      ]),
    ),
    '',
    'Bold: the measurement on this model disagrees with the folklore rating (the usual claim about the method).',
    '',
  );
  return L;
}

/** The setup, the measured table, the ratings and the flexibility definition, as Markdown. */
export function comparisonSummary(r: ComparisonReport): string {
  return [...summaryLines(r), `Flexibility: ${r.flexibility_definition}`, ''].join('\n');
}

/** The whole report as Markdown; `figures` are the SVG file names relative to it. */
export function comparisonMarkdown(r: ComparisonReport, figures: { lossCurves: string; qualityVsParams: string }): string {
  const metricName = METRIC_NAMES[r.task.metric] ?? r.task.metric;
  const ok = r.methods.filter((m) => m.status === 'ok');
  const L = summaryLines(r);

  if (r.recommendations) L.push(adviceMarkdown(r.recommendations));

  L.push('## What the columns mean', '');
  L.push(
    "- **trainable params, share of model**: values the optimizer updates, and their share of the base model's parameters (parameter efficiency).",
    "- **train step**: median wall time of one optimizer step (forward, backward and AdamW; the first step is left out), at the same batch; **vs full FT**: divided by full fine-tuning's (computational efficiency, training).",
    `- **inference latency**: ${r.task.classification ? `median time of one forward pass of one eval example through the classifier (batch 1, logits only; no generation) over ${r.base.latency_prompts} examples` : `median time to generate ${r.base.latency_tokens} tokens for one eval prompt (batch 1, greedy, KV cache, no early stop) over ${r.base.latency_prompts} prompts`}, with the adapter applied as trained (unmerged; LoRA and IA3 can be merged into the base for no overhead); **vs base**: divided by the untuned base model's, timed prompt by prompt in turn with it in the same process so machine load affects both alike (${fmtMs(r.base.latency_ms)} in the base-model run) (computational efficiency, inference).`,
    "- **peak train RSS**: peak resident memory of the run's own process at the end of training: runtime, model, compiled sessions, optimizer state (space efficiency, training). On a model this small the runtime itself dominates.",
    "- **stored per task**: bytes of the folder `savePretrained` writes, i.e. what must be kept per task (adapter_config.json + weights; for full fine-tuning the whole model in float32); **vs full FT**: as a share of full fine-tuning's (space efficiency, storage).",
    `- **${metricName}**: ${r.task.metric === 'eval_loss' ? 'token-weighted eval loss of the trained model' : `the task metric on the eval set after training, ${r.task.classification ? 'the share of examples whose largest logit is their label' : 'by greedy generation cut at the first newline'} (performance); the untuned base model scores ${formatQuality(r.base.quality)}${r.base.quality.chance !== undefined ? `, always answering the most common label ${(100 * r.base.quality.chance).toFixed(1)}%` : ''}`}.`,
    `- **flexibility**: ${r.flexibility_definition}`,
    '',
  );

  L.push('## Rating thresholds', '');
  for (const c of CRITERIA) L.push(`- ${CRITERION_LABELS[c]}: ${r.rating_rules[c]}`);
  L.push('');

  L.push('## Flexibility runs', '');
  const scales = r.flex_lr_scales;
  const tasks = [r.task.name, ...r.flex_tasks];
  const gridHeader = scales.length > 1 ? scales.map((s) => `${r.task.name} lr x${s}`) : [];
  L.push(
    ...table(
      ['method', ...gridHeader, ...tasks.map((t) => `${t} (default lr)`), 'LR stability', 'task retention', 'flexibility'],
      ok.map((m) => {
        const f = m.flexibility!;
        const cell = (p: { gain: number; ratio: number | null; basis: string; failure?: string; diverged?: boolean }) =>
          p.failure
            ? p.diverged
              ? 'diverged'
              : 'failed (left out)'
            : `${p.basis === 'metric' ? `${100 * p.gain >= 0 ? '+' : ''}${(100 * p.gain).toFixed(1)} pt` : `${p.gain >= 0 ? '+' : ''}${p.gain.toFixed(3)} exp(-loss)`}${p.ratio === null ? ' (left out)' : ''}`;
        return [
          m.label,
          ...(scales.length > 1 ? f.lrGrid.map(cell) : []),
          ...f.tasks.map(cell),
          f.lrStability === undefined ? 'not measured' : f.lrStability.toFixed(2),
          f.taskRetention.toFixed(2),
          f.value.toFixed(2),
        ];
      }),
    ),
    '',
    `Cells are gains over the untuned base model, or over always answering the most common label where that scores higher (points of the metric, or of exp(-eval loss) where no run improved the metric beyond its noise, 1/sqrt(n) on n scored examples). ${r.flex_tasks.length ? `Tasks other than ${r.task.name} are scored on ${r.budget.flex_eval_limit ?? 'all'} eval examples each; base model there: ${r.base.flex_tasks.map((q) => `${q.task} ${formatQuality(q)}`).join(', ')}.` : ''}`,
    '',
  );
  const notes = ok.flatMap((m) => m.flexibility!.notes.map((n) => `- ${m.label}: ${n}`));
  if (notes.length) L.push(...notes, '');

  L.push('## Method settings', '');
  L.push(
    ...table(
      ['method', 'settings', 'learning rate', 'final train loss', 'train time'],
      r.methods.map((m) => [
        m.label,
        m.settings,
        m.learning_rate.toExponential(1),
        m.final_loss == null ? '-' : m.final_loss.toFixed(4),
        m.train_seconds === undefined ? '-' : `${m.train_seconds.toFixed(1)} s`,
      ]),
    ),
    '',
  );

  L.push(
    '## Figures',
    '',
    `![loss per method](${figures.lossCurves})`,
    '',
    `![quality vs trainable parameters](${figures.qualityVsParams})`,
    '',
  );
  return L.join('\n');
}
