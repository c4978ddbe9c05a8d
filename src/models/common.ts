// Pieces shared by the architecture files: input embeddings, position ids, the key/value cache,
// losses and module-name listings.

import type { Value } from '../graph/ir.js';
import * as o from '../graph/ops.js';
import type { BuildContext } from '../nn/context.js';
import { type ForwardArgs, type KV, ModelError, type PretrainedModel } from './types.js';

/** inputs_embeds when given, else the token embeddings of input_ids. */
export function inputEmbeddings(model: PretrainedModel, ctx: BuildContext, args: ForwardArgs): Value {
  if (args.inputsEmbeds != null) return args.inputsEmbeds;
  if (args.inputIds == null) throw new ModelError('inputIds or inputsEmbeds is required');
  return model.embedTokens(ctx, args.inputIds);
}

/** arange(past, past + seq) for every row, as transformers builds position ids without a mask. */
export function defaultPositions(tokens: Value, past?: KV[]): { positions: Value; pastLength?: Value } {
  const pastLength = past && past.length ? o.dimOf(past[0]!.key, 2) : undefined;
  let pos = o.arangeOfDim(tokens, 1);
  if (pastLength) pos = o.add(pos, pastLength);
  return { positions: o.unsqueeze(pos, 0), pastLength };
}

/**
 * One layer's keys and values [batch, heads, past + seq, headDim]: the cached `past` (if any) in
 * front of this step's `k` and `v`, recorded in `presents` for the next decode step.
 */
export function appendPast(past: KV | undefined, k: Value, v: Value, presents: KV[]): KV {
  const key = past ? o.concat([past.key, k], 2) : k;
  const value = past ? o.concat([past.value, v], 2) : v;
  presents.push({ key, value });
  return { key, value };
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

/** residual + output, unless a tuner hooks this sub-layer (bottleneck adapters). */
export function applySublayer(ctx: BuildContext, key: string, layer: number, output: Value, residual: Value, norm?: (x: Value) => Value): Value {
  const hook = ctx.sublayerHooks.get(key);
  if (hook) return hook({ layer, output, residual, norm, ctx });
  return norm ? norm(o.add(output, residual)) : o.add(output, residual);
}
