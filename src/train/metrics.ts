// The machine-readable log of a run: one JSON object per optimizer step and per evaluation in
// metrics.jsonl, named as transformers' log_history names them. On resume the file is rewritten
// from the checkpoint's history, so steps redone after the checkpoint are not logged twice.

import { appendFile } from '../storage/index.js';
import { writeError, writeFileAtomic } from '../io/atomic.js';

export interface TrainRecord {
  kind: 'train';
  step: number;
  /** fractional epochs consumed */
  epoch: number;
  /** mean loss over the step's micro-batches */
  loss: number;
  learning_rate: number;
  /** global gradient norm before clipping */
  grad_norm: number;
  /** real tokens in the step's micro-batches */
  tokens: number;
  tokens_per_second: number;
  elapsed_s: number;
  /** preference tuning: TRL's rewards/chosen, rewards/rejected, rewards/accuracies, rewards/margins (mean over the step's pairs) */
  [reward: `rewards/${string}`]: number | undefined;
}

export interface EvalRecord {
  kind: 'eval';
  step: number;
  epoch: number;
  /** mean loss over the eval set, weighted by label tokens (causal LM) or examples (classification) */
  eval_loss: number;
  /** causal LM: exp(eval_loss) */
  eval_perplexity?: number;
  /** causal LM: label tokens the loss averages over */
  eval_tokens?: number;
  /** classification: fraction of examples whose argmax logit is their label */
  eval_accuracy?: number;
  /** classification: examples evaluated */
  eval_examples?: number;
  /** preference tuning: pairs evaluated (eval_accuracy is then the preference accuracy, eval_rewards/* TRL's reward metrics) */
  eval_pairs?: number;
  /** extra metrics (TrainerOptions.evalMetrics), e.g. eval_exact from generation */
  [metric: `eval_${string}`]: number | undefined;
}

export type MetricRecord = TrainRecord | EvalRecord;

export class MetricsLog {
  constructor(readonly path: string) {}

  /** Replaces the file with `records` (atomically: temp file, then rename). */
  async reset(records: readonly MetricRecord[]): Promise<void> {
    await writeFileAtomic(this.path, records.map((r) => JSON.stringify(r) + '\n').join(''));
  }

  async append(record: MetricRecord): Promise<void> {
    await appendFile(this.path, JSON.stringify(record) + '\n').catch((e: unknown) => {
      throw writeError(this.path, e);
    });
  }
}

/** Reads metrics.jsonl back (skipping a torn last line a crash may leave). */
export function parseMetrics(text: string): MetricRecord[] {
  const out: MetricRecord[] = [];
  for (const line of text.split('\n')) {
    if (!line.trim()) continue;
    try {
      out.push(JSON.parse(line) as MetricRecord);
    } catch {
      break;
    }
  }
  return out;
}
