// Scores a model (base or adapted) on a task: greedy generation for every eval prompt, batched with
// one compiled Generator, each output cut at its first newline and compared with the reference by
// the task's metric. Used by `peft quickstart` and by method comparisons.

import { Generator, type InferenceModel } from '../generate/index.js';
import type { Tokenizer } from '../io/tokenizer.js';
import type { RuntimeOptions } from '../runtime/session.js';
import { isCorrect } from './metrics.js';
import { type TaskExample, type TaskMetric, type TaskSpec, TaskError } from './tasks.js';

export interface TaskEvalOptions {
  /** prompts per generation batch (default 16) */
  batchSize?: number;
  /** score only the first `limit` examples */
  limit?: number;
  runtime?: RuntimeOptions;
  /** called after every batch with the examples scored so far */
  onProgress?: (done: number, total: number) => void;
}

export interface TaskPrediction {
  prompt: string;
  reference: string;
  /** the generated text up to the end token or the first newline */
  prediction: string;
  correct: boolean;
}

export interface TaskEvaluation {
  task: string;
  metric: TaskMetric;
  /** correct / total, in [0, 1] */
  score: number;
  correct: number;
  total: number;
  predictions: TaskPrediction[];
  seconds: number;
}

export async function evaluateTask(
  model: InferenceModel,
  tokenizer: Tokenizer,
  task: TaskSpec,
  examples: readonly TaskExample[],
  opts: TaskEvalOptions = {},
): Promise<TaskEvaluation> {
  const batchSize = opts.batchSize ?? 16;
  if (!Number.isInteger(batchSize) || batchSize < 1) throw new TaskError(`batchSize must be a positive integer, got ${batchSize}`);
  if (opts.limit !== undefined && !(Number.isInteger(opts.limit) && opts.limit > 0))
    throw new TaskError(`limit must be a positive integer, got ${opts.limit}`);
  const chosen = examples.slice(0, opts.limit ?? examples.length);
  if (chosen.length === 0) throw new TaskError(`no examples to evaluate the ${task.name} task on`);
  const t0 = performance.now();
  const generator = await Generator.create(model, { tokenizer, runtime: opts.runtime });
  const predictions: TaskPrediction[] = [];
  try {
    for (let s = 0; s < chosen.length; s += batchSize) {
      const batch = chosen.slice(s, s + batchSize);
      const out = await generator.generate(
        batch.map((ex) => ex.prompt),
        { maxNewTokens: task.maxNewTokens, doSample: false, stopStrings: ['\n'] },
      );
      batch.forEach((ex, i) => {
        const prediction = out.sequences[i]!.text ?? '';
        predictions.push({ prompt: ex.prompt, reference: ex.completion, prediction, correct: isCorrect(task, prediction, ex.completion) });
      });
      opts.onProgress?.(predictions.length, chosen.length);
    }
  } finally {
    await generator.dispose();
  }
  const correct = predictions.filter((p) => p.correct).length;
  return {
    task: task.name,
    metric: task.metric,
    score: correct / predictions.length,
    correct,
    total: predictions.length,
    predictions,
    seconds: (performance.now() - t0) / 1000,
  };
}

/** "accuracy 93.0% (93/100)" */
export function formatScore(e: Pick<TaskEvaluation, 'metric' | 'score' | 'correct' | 'total'>): string {
  return `${e.metric === 'accuracy' ? 'accuracy' : 'exact match'} ${(100 * e.score).toFixed(1)}% (${e.correct}/${e.total})`;
}
