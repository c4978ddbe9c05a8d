// Pieces shared by the architecture files: position ids, losses and module-name listings.

import type { Value } from '../graph/ir.js';
import * as o from '../graph/ops.js';
import type { KV } from './types.js';

/** arange(past, past + seq) for every row, as transformers builds position ids without a mask. */
export function defaultPositions(tokens: Value, past?: KV[]): { positions: Value; pastLength?: Value } {
  const pastLength = past && past.length ? o.dimOf(past[0]!.key, 2) : undefined;
  let pos = o.arangeOfDim(tokens, 1);
  if (pastLength) pos = o.add(pos, pastLength);
  return { positions: o.unsqueeze(pos, 0), pastLength };
}

/**
 * Causal-LM loss: logits[:, :-1] against labels[:, 1:], mean over labels != -100. As transformers'
 * ForCausalLMLoss, the labels are shifted left and padded with -100 rather than the logits sliced,
 * so the largest tensor of a training step is never copied.
 */
export function causalLmLoss(logits: Value, labels: Value): Value {
  const vocab = logits.shape[2] as number;
  const shifted = o.sub(o.pad(o.add(o.slice(labels, 1, 1), 100), [0, 0, 0, 1]), 100);
  return o.crossEntropyMean(o.reshape(logits, [-1, vocab]), o.reshape(shifted, [-1]));
}

/** Masked-LM loss: every position, mean over labels != -100. */
export function maskedLmLoss(logits: Value, labels: Value): Value {
  const vocab = logits.shape[2] as number;
  return o.crossEntropyMean(o.reshape(logits, [-1, vocab]), o.reshape(labels, [-1]));
}

/** Sequence classification: cross-entropy for several labels, MSE for one (regression). */
export function sequenceClassificationLoss(logits: Value, labels: Value): Value {
  const n = logits.shape[1] as number;
  if (n === 1) {
    const d = o.sub(o.squeeze(logits, 1), o.cast(labels, logits.dtype));
    return o.mean(o.mul(d, d));
  }
  return o.crossEntropyMean(logits, labels);
}

/** All prefixes of dotted names: "a.b.c" gives "a", "a.b", "a.b.c" (named_modules order aside). */
export function modulePaths(weightNames: Iterable<string>): string[] {
  const out = new Set<string>();
  for (const w of weightNames) {
    const parts = w.split('.');
    for (let i = 1; i < parts.length; i++) out.add(parts.slice(0, i).join('.'));
  }
  return [...out];
}
