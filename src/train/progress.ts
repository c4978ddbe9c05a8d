// What a run shows while it trains: the reporter interface the trainer calls, and the formatting
// shared by its implementations (the terminal ones are in progress_terminal.ts, which needs Node).

import type { EvalRecord, TrainRecord } from './metrics.js';

export interface ProgressReporter {
  /** training begins (or resumes) at `startStep` of `totalSteps` */
  start(totalSteps: number, startStep: number): void;
  step(record: TrainRecord, etaSeconds: number): void;
  eval(record: EvalRecord): void;
  /** a line of text outside the bar */
  message(text: string): void;
  stop(): void;
}

export const silentProgress: ProgressReporter = { start() {}, step() {}, eval() {}, message() {}, stop() {} };

export function formatDuration(seconds: number): string {
  if (!Number.isFinite(seconds) || seconds < 0) return '?';
  const s = Math.round(seconds);
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m${String(s % 60).padStart(2, '0')}s`;
  return `${Math.floor(s / 3600)}h${String(Math.floor((s % 3600) / 60)).padStart(2, '0')}m`;
}

export const fmtLoss = (x: number): string => (Number.isFinite(x) ? x.toFixed(4) : String(x));
export const fmtLr = (x: number): string => x.toExponential(2);
/** An accuracy as a percentage with one decimal: 0.875 -> "87.5%". */
export const fmtAccuracy = (x: number): string => `${(100 * x).toFixed(1)}%`;
