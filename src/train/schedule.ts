// Learning-rate schedules as transformers' get_scheduler builds them (a LambdaLR over optimizer
// steps): constant, linear decay and half-cosine decay, each after a linear warmup from 0. The
// k-th update (0-based) uses lr * lambda(k), so with warmup the first update has rate 0, as there.

import { TrainError } from './errors.js';

export type ScheduleName = 'constant' | 'linear' | 'cosine';
export const SCHEDULES: readonly ScheduleName[] = ['constant', 'linear', 'cosine'];

export interface ScheduleOptions {
  name: ScheduleName;
  baseLr: number;
  totalSteps: number;
  warmupSteps: number;
}

/** transformers' TrainingArguments.get_warmup_steps: explicit steps win, else ceil(total * ratio). */
export function warmupStepsFor(totalSteps: number, opts: { warmupSteps?: number; warmupRatio?: number }): number {
  if (opts.warmupSteps !== undefined && opts.warmupSteps > 0) return opts.warmupSteps;
  if (opts.warmupRatio !== undefined) {
    if (!(opts.warmupRatio >= 0 && opts.warmupRatio <= 1))
      throw new TrainError(`the warmup ratio must be in [0, 1], got ${opts.warmupRatio}`);
    return Math.ceil(totalSteps * opts.warmupRatio);
  }
  return 0;
}

/** The multiplier of the base rate at optimizer step `step` (0-based). */
export function lrLambda(name: ScheduleName, step: number, warmupSteps: number, totalSteps: number): number {
  if (step < warmupSteps) return step / Math.max(1, warmupSteps);
  switch (name) {
    case 'constant':
      return 1;
    case 'linear':
      return Math.max(0, (totalSteps - step) / Math.max(1, totalSteps - warmupSteps));
    case 'cosine': {
      const progress = (step - warmupSteps) / Math.max(1, totalSteps - warmupSteps);
      return Math.max(0, 0.5 * (1 + Math.cos(Math.PI * 2 * 0.5 * progress)));
    }
  }
}

export class LrSchedule {
  readonly name: ScheduleName;
  readonly baseLr: number;
  readonly totalSteps: number;
  readonly warmupSteps: number;

  constructor(opts: ScheduleOptions) {
    if (!SCHEDULES.includes(opts.name))
      throw new TrainError(`unknown learning-rate schedule "${opts.name}"; use one of ${SCHEDULES.join(', ')}`);
    if (!(opts.baseLr >= 0 && Number.isFinite(opts.baseLr)))
      throw new TrainError(`the learning rate must be a finite number >= 0, got ${opts.baseLr}`);
    if (!(Number.isInteger(opts.warmupSteps) && opts.warmupSteps >= 0))
      throw new TrainError(`warmup steps must be an integer >= 0, got ${opts.warmupSteps}`);
    this.name = opts.name;
    this.baseLr = opts.baseLr;
    this.totalSteps = opts.totalSteps;
    this.warmupSteps = opts.warmupSteps;
  }

  /** The rate of the update made at optimizer step `step` (0-based). */
  lrAt(step: number): number {
    return this.baseLr * lrLambda(this.name, step, this.warmupSteps, this.totalSteps);
  }

  toJSON(): ScheduleOptions {
    return { name: this.name, baseLr: this.baseLr, totalSteps: this.totalSteps, warmupSteps: this.warmupSteps };
  }
}
