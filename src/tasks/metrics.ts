// How a task output is scored: exact match after stripping surrounding whitespace, or, for a
// classification task, whether the output's first word is the reference's label word.

import type { TaskSpec } from './tasks.js';

/** The answer as compared: surrounding whitespace stripped. */
export function normalizeAnswer(text: string): string {
  return text.trim();
}

/** The label an output names: its first word, case-insensitively, when that word is one of `labels`. */
export function labelOf(text: string, labels: readonly string[]): string | undefined {
  const m = /^\s*([\p{L}\p{N}_-]+)/u.exec(text);
  if (!m) return undefined;
  const word = m[1]!.toLowerCase();
  return labels.find((l) => l.toLowerCase() === word);
}

/** Whether `prediction` counts as a correct answer to an example whose completion is `reference`. */
export function isCorrect(task: Pick<TaskSpec, 'metric' | 'labels'>, prediction: string, reference: string): boolean {
  if (task.metric === 'accuracy') {
    const labels = task.labels ?? [];
    const want = labelOf(reference, labels);
    return want !== undefined && labelOf(prediction, labels) === want;
  }
  return normalizeAnswer(prediction) === normalizeAnswer(reference);
}
