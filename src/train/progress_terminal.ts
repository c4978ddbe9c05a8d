// Progress on a terminal: a cli-progress bar (step, loss, lr, tokens/s, ETA) on a TTY, plain log
// lines when the output is a file or a pipe. Node only (process.stderr, cli-progress).

import cliProgress from 'cli-progress';
import type { EvalRecord, TrainRecord } from './metrics.js';
import { type ProgressReporter, fmtAccuracy, fmtLoss, fmtLr, formatDuration } from './progress.js';

/** One line per `every` steps (and the last), one per evaluation. */
export class LineProgress implements ProgressReporter {
  private total = 0;
  constructor(
    private readonly out: NodeJS.WritableStream = process.stderr,
    private readonly every = 1,
  ) {}
  start(totalSteps: number, startStep: number): void {
    this.total = totalSteps;
    this.out.write(startStep > 0 ? `resuming at step ${startStep}/${totalSteps}\n` : `training for ${totalSteps} steps\n`);
  }
  step(r: TrainRecord, eta: number): void {
    if (r.step % this.every !== 0 && r.step !== this.total) return;
    this.out.write(
      `step ${r.step}/${this.total} | loss ${fmtLoss(r.loss)} | lr ${fmtLr(r.learning_rate)} | grad_norm ${r.grad_norm.toFixed(3)} | ` +
        `${Math.round(r.tokens_per_second)} tok/s | epoch ${r.epoch.toFixed(2)} | ETA ${formatDuration(eta)}\n`,
    );
  }
  eval(r: EvalRecord): void {
    const metric =
      r.eval_accuracy !== undefined ? `accuracy ${fmtAccuracy(r.eval_accuracy)}` : `perplexity ${r.eval_perplexity?.toFixed(3) ?? '-'}`;
    this.out.write(`eval @ step ${r.step} | eval_loss ${fmtLoss(r.eval_loss)} | ${metric}\n`);
  }
  message(text: string): void {
    this.out.write(`${text}\n`);
  }
  stop(): void {}
}

/** A live bar for terminals. */
class BarProgress implements ProgressReporter {
  private bar: cliProgress.SingleBar | null = null;
  private evalText = '-';
  constructor(private readonly out: NodeJS.WritableStream = process.stderr) {}
  start(totalSteps: number, startStep: number): void {
    // {eta} is cli-progress's own token; the estimate from whole steps is {remaining}.
    this.bar = new cliProgress.SingleBar(
      {
        format: 'train |{bar}| {value}/{total} | loss {loss} | lr {lr} | {tps} tok/s | eval {eval} | ETA {remaining}',
        stream: this.out,
        hideCursor: true,
        barsize: 24,
        etaBuffer: 20,
      },
      cliProgress.Presets.shades_classic,
    );
    this.bar.start(totalSteps, startStep, { loss: '-', lr: '-', tps: '-', eval: this.evalText, remaining: '?' });
  }
  step(r: TrainRecord, eta: number): void {
    this.bar?.update(r.step, {
      loss: fmtLoss(r.loss),
      lr: fmtLr(r.learning_rate),
      tps: String(Math.round(r.tokens_per_second)),
      eval: this.evalText,
      remaining: formatDuration(eta),
    });
  }
  eval(r: EvalRecord): void {
    this.evalText = fmtLoss(r.eval_loss) + (r.eval_accuracy !== undefined ? ` acc ${fmtAccuracy(r.eval_accuracy)}` : '');
    this.bar?.update({ eval: this.evalText });
  }
  message(text: string): void {
    if (this.bar) {
      // Print above the bar: clear its line, write, and let the next update redraw it.
      this.out.write(`\r\x1b[2K${text}\n`);
      this.bar.render();
    } else this.out.write(`${text}\n`);
  }
  stop(): void {
    this.bar?.stop();
    this.bar = null;
  }
}

/** The bar on a TTY, log lines otherwise. */
export function progressFor(stream: NodeJS.WriteStream = process.stderr, every = 1): ProgressReporter {
  return stream.isTTY ? new BarProgress(stream) : new LineProgress(stream, every);
}
