// Flexibility, measured: how much of its quality a method keeps across a small learning-rate grid
// and across tasks trained with the same settings (no per-task tuning). The definition is stated
// once here, in words, and the report prints it with the grid and tasks actually used.

import type { Quality } from './job.js';
import type { CompareMethod } from './methods.js';

/** One run that flexibility looks at: a task at a learning rate, its quality, or why it has none. */
export interface FlexRun {
  task: string;
  /** multiple of the method's default learning rate */
  scale: number;
  learningRate: number;
  quality?: Quality;
  /** why the run has no quality */
  failure?: string;
  /** the failure is the training diverging (non-finite loss or gradient): it counts as no gain; other failures are left out */
  diverged?: boolean;
}

export interface FlexInput {
  method: CompareMethod;
  /** the primary task at each grid scale (×1 included) */
  lrGrid: FlexRun[];
  /** each task at the default learning rate (the primary task included) */
  tasks: FlexRun[];
}

export type GainBasis = 'metric' | 'eval loss';

export interface FlexPoint {
  task: string;
  scale: number;
  learningRate: number;
  /** quality minus the base model's on the same task, on `basis` */
  gain: number;
  /** gain / reference gain, clipped to [0, 1]; null where the task is left out */
  ratio: number | null;
  basis: GainBasis;
  failure?: string;
  diverged?: boolean;
}

export interface Flexibility {
  /** in [0, 1]; 1 = keeps its best quality at every grid rate and every task */
  value: number;
  /** mean ratio over the learning-rate grid (absent when the grid is only ×1) */
  lrStability?: number;
  /** mean ratio over the tasks */
  taskRetention: number;
  lrGrid: FlexPoint[];
  tasks: FlexPoint[];
  notes: string[];
}

/**
 * The zero point of a gain on the metric: the untuned base model's score, or for a classification
 * task always answering the most common label, whichever is higher (an untuned model that does not
 * even answer with a label word would otherwise credit learning the format as learning the task).
 */
export function metricZero(base: Quality): number {
  return Math.max(base.value, base.chance ?? 0);
}

/**
 * The smallest metric gain taken as real: 1/sqrt(n) on n scored examples, two standard errors of a
 * proportion near 50%. Below it the eval loss, which moves smoothly, decides instead.
 */
export function metricNoise(qualities: readonly (Quality | undefined)[]): number {
  const totals = qualities.map((q) => q?.total).filter((n): n is number => n !== undefined && n > 0);
  return totals.length ? 1 / Math.sqrt(Math.min(...totals)) : 0;
}

const gainOf = (q: Quality | undefined, base: Quality, basis: GainBasis): number =>
  q === undefined ? 0 : basis === 'metric' ? q.value - metricZero(base) : q.lossQuality - base.lossQuality;

/** The words the report prints, for the grid and tasks of this comparison. */
export function flexibilityDefinition(scales: readonly number[], primary: string, tasks: readonly string[], noOtherTasks?: string): string {
  const grid = scales.map((s) => `×${s}`).join(', ');
  const lr =
    scales.length > 1
      ? `(a) LR stability: on ${primary}, over the learning-rate grid {${grid}} of the method's default rate, the mean of gain(rate) / max gain over the grid; `
      : '(a) LR stability: not measured (the grid is only the default rate; pass --flex-lrs 0.5,1,2); ';
  const taskText =
    tasks.length > 1
      ? `(b) task retention: over the tasks ${tasks.join(', ')}, each trained with the same default settings (no per-task tuning), the mean of gain / the largest gain any compared method reached on that task, clipped to [0, 1] (tasks where no method gained are left out)`
      : `(b) task retention: on ${primary} only (no other tasks were run; ${noOtherTasks ?? 'pass --flex-tasks'}), gain / the largest gain any compared method reached, clipped to [0, 1]`;
  return (
    `flexibility = the mean of ${scales.length > 1 ? '(a) and (b)' : '(b)'}. ${lr}${taskText}. ` +
    "gain = quality − the untuned base model's quality on the same task (for a classification task, the higher of that and the score of always answering the most common label); quality is the task metric, or exp(−eval loss) where no run of the set improved the metric by more than its noise, 1/√n on n scored examples " +
    '(a run whose loss diverges gains 0; a run that fails otherwise is left out). 1 = the method keeps its best quality at every rate and on every task without tuning.'
  );
}

/**
 * Flexibility of every method. `base` holds the untuned model's quality per task; a task's
 * reference gain is the largest gain of any method at its default rate.
 */
export function computeFlexibility(inputs: readonly FlexInput[], base: ReadonlyMap<string, Quality>): Map<CompareMethod, Flexibility> {
  const baseOf = (task: string): Quality => {
    const q = base.get(task);
    if (!q) throw new Error(`no base-model quality for task ${task}`);
    return q;
  };
  // Per task: the basis (metric, else eval loss) and the largest gain any method reached.
  const taskNames = [...new Set(inputs.flatMap((i) => i.tasks.map((t) => t.task)))];
  const reference = new Map<string, { basis: GainBasis; best: number }>();
  for (const task of taskNames) {
    const runs = inputs.flatMap((i) => i.tasks.filter((t) => t.task === task));
    const best = (basis: GainBasis) =>
      Math.max(0, ...runs.filter((r) => !r.failure || r.diverged).map((r) => (r.failure ? 0 : gainOf(r.quality, baseOf(task), basis))));
    const metricBest = best('metric');
    const noise = metricNoise([baseOf(task), ...runs.map((r) => r.quality)]);
    reference.set(task, metricBest > noise ? { basis: 'metric', best: metricBest } : { basis: 'eval loss', best: best('eval loss') });
  }
  const out = new Map<CompareMethod, Flexibility>();
  for (const input of inputs) {
    const notes: string[] = [];
    // (a) learning-rate grid on the primary task, against the method's own best rate
    let lrStability: number | undefined;
    let lrGrid: FlexPoint[] = [];
    if (input.lrGrid.length > 1) {
      const task = input.lrGrid[0]!.task;
      const counted = (r: FlexRun) => !r.failure || r.diverged === true;
      const gains = (basis: GainBasis) => input.lrGrid.map((r) => (r.failure ? 0 : gainOf(r.quality, baseOf(task), basis)));
      let basis: GainBasis = 'metric';
      let g = gains(basis);
      const maxCounted = (xs: number[]) => Math.max(0, ...xs.filter((_, i) => counted(input.lrGrid[i]!)));
      if (maxCounted(g) <= metricNoise(input.lrGrid.map((r) => r.quality))) {
        basis = 'eval loss';
        g = gains(basis);
      }
      const best = maxCounted(g);
      lrGrid = input.lrGrid.map((r, i) => ({
        task,
        scale: r.scale,
        learningRate: r.learningRate,
        gain: g[i]!,
        basis,
        ratio: !counted(r) ? null : best > 0 ? Math.min(1, Math.max(0, g[i]! / best)) : 0,
        ...(r.failure ? { failure: r.failure, diverged: r.diverged === true } : {}),
      }));
      const kept = lrGrid.filter((p) => p.ratio !== null);
      lrStability = kept.length ? kept.reduce((s, p) => s + p.ratio!, 0) / kept.length : 0;
      if (best <= 0) notes.push(`no rate of the grid improved on the base model on ${task}`);
      else if (basis === 'eval loss') notes.push(`LR grid scored by eval loss (no rate improved the ${task} metric beyond its noise)`);
      for (const p of lrGrid.filter((x) => x.failure))
        notes.push(p.diverged ? `lr x${p.scale} diverged (counted as no gain)` : `lr x${p.scale} failed and is left out: ${p.failure}`);
    }
    // (b) tasks at the default rate, against the best method on each
    const tasks: FlexPoint[] = input.tasks.map((r) => {
      const ref = reference.get(r.task)!;
      const gain = r.failure ? 0 : gainOf(r.quality, baseOf(r.task), ref.basis);
      const left = (r.failure && !r.diverged) || !(ref.best > 0);
      return {
        task: r.task,
        scale: r.scale,
        learningRate: r.learningRate,
        gain,
        basis: ref.basis,
        ratio: left ? null : Math.min(1, Math.max(0, gain / ref.best)),
        ...(r.failure ? { failure: r.failure, diverged: r.diverged === true } : {}),
      };
    });
    const counted = tasks.filter((t) => t.ratio !== null);
    const left = tasks.filter((t) => t.ratio === null && !t.failure).map((t) => t.task);
    if (left.length) notes.push(`left out ${left.join(', ')}: no method improved on the base model there`);
    for (const t of tasks.filter((x) => x.failure))
      notes.push(t.diverged ? `${t.task} diverged (counted as no gain)` : `${t.task} failed and is left out: ${t.failure}`);
    const lossTasks = counted.filter((t) => t.basis === 'eval loss').map((t) => t.task);
    if (lossTasks.length) notes.push(`scored by eval loss on ${lossTasks.join(', ')} (no method improved the metric beyond its noise)`);
    const taskRetention = counted.length ? counted.reduce((s, t) => s + t.ratio!, 0) / counted.length : 0;
    const value = lrStability === undefined ? taskRetention : (lrStability + taskRetention) / 2;
    out.set(input.method, { value, lrStability, taskRetention, lrGrid, tasks, notes });
  }
  return out;
}
