// Preference-tuning losses (DPO, ORPO) as graph compositions of existing ops, for a causal LM batch
// that holds every pair's chosen row and rejected row. Rows are paired by a [pairs, batch] input
// matrix (+1 at a pair's chosen row, -1 at its rejected row), so no symbolic dim is divided.
// Sequence log-probs are over the completion tokens: labels != -100 after the causal shift.

import type { Value } from '../graph/ir.js';
import * as o from '../graph/ops.js';

export type PreferenceObjective = 'dpo' | 'orpo';

/** TRL's defaults: DPOConfig.beta and ORPOConfig.beta (ORPO's lambda). */
export const DEFAULT_BETA: Record<PreferenceObjective, number> = { dpo: 0.1, orpo: 0.1 };

export interface SequenceLogps {
  /** [batch]: the sum of the completion tokens' log-probs of each row */
  sum: Value;
  /** [batch]: how many completion tokens each row has */
  count: Value;
  /** [batch]: the summed negative log-likelihood (= -sum) */
  nll: Value;
}

/**
 * Per-row log-probs of the labelled tokens of a causal LM: logits [batch, seq, vocab] against labels
 * [batch, seq] shifted left by one as causalLmLoss does (labels already line up with the logits:
 * callers with prepended virtual tokens pass labels padded in front with -100).
 */
export function sequenceLogps(logits: Value, labels: Value): SequenceLogps {
  const vocab = logits.shape[2];
  if (typeof vocab !== 'number') throw new Error(`sequenceLogps needs a static vocab dim, got logits ${logits.toString()}`);
  const shifted = o.sub(o.pad(o.add(o.slice(labels, 1, 1), 100), [0, 0, 0, 1]), 100);
  const perToken = o.softmaxCrossEntropy(o.reshape(logits, [-1, vocab]), o.reshape(shifted, [-1]));
  const nll = o.sum(o.reshapeLike(perToken, shifted), 1);
  const valid = o.cast(o.not(o.equal(shifted, labels.graph.scalar(-100, shifted.dtype))), logits.dtype);
  return { sum: o.neg(nll), count: o.sum(valid, 1), nll };
}

/** log(sigmoid(x)) without overflow: min(x, 0) - log(1 + exp(-|x|)). */
export function logSigmoid(x: Value): Value {
  const negPart = o.relu(o.neg(x));
  const abs = o.add(o.relu(x), negPart);
  return o.sub(o.neg(negPart), o.log(o.add(o.exp(o.neg(abs)), 1)));
}

/** pairing [pairs, batch] @ v [batch] -> [pairs] */
function pairApply(m: Value, v: Value): Value {
  return o.squeeze(o.matmul(m, o.unsqueeze(v, 1)), 1);
}

export interface PreferenceLoss {
  loss: Value;
  /** [pairs]: TRL's rewards/chosen and rewards/rejected (DPO: beta * (pi - ref); ORPO: beta * mean log-prob) */
  rewardsChosen: Value;
  rewardsRejected: Value;
}

/**
 * TRL's DPO sigmoid loss: mean over pairs of -logsigmoid(beta * ((pi_c - ref_c) - (pi_r - ref_r)))
 * with pi/ref the sums of the completion tokens' log-probs under the policy and the reference.
 * refLogps [batch] is fed (computed by a forward-only session of the reference model).
 */
export function dpoLoss(logits: Value, labels: Value, pairing: Value, refLogps: Value, beta: number): PreferenceLoss {
  const { sum } = sequenceLogps(logits, labels);
  const ratio = o.sub(sum, o.cast(refLogps, sum.dtype));
  const p = o.cast(pairing, sum.dtype);
  const chosen = o.mul(pairApply(o.relu(p), ratio), beta);
  const rejected = o.mul(pairApply(o.relu(o.neg(p)), ratio), beta);
  const loss = o.neg(o.mean(logSigmoid(o.sub(chosen, rejected)), 0));
  return { loss, rewardsChosen: chosen, rewardsRejected: rejected };
}

/**
 * TRL's ORPO loss: NLL of the chosen rows (mean over all their completion tokens) minus
 * beta * mean over pairs of logsigmoid(log_odds), log_odds = (a_c - a_r) - (log(1 - e^a_c) - log(1 - e^a_r))
 * with a the MEAN completion-token log-prob of a row.
 */
export function orpoLoss(logits: Value, labels: Value, pairing: Value, beta: number): PreferenceLoss {
  const { sum, count, nll } = sequenceLogps(logits, labels);
  const p = o.cast(pairing, sum.dtype);
  const pc = o.relu(p);
  const pr = o.relu(o.neg(p));
  // a row with no completion token would divide by 0: max(count, 1) keeps its mean at 0
  const avg = o.div(sum, o.add(o.relu(o.sub(count, 1)), 1));
  const ac = pairApply(pc, avg);
  const ar = pairApply(pr, avg);
  const log1mExp = (a: Value): Value => o.log(o.sub(1, o.exp(a)));
  const logOdds = o.sub(o.sub(ac, ar), o.sub(log1mExp(ac), log1mExp(ar)));
  const chosenNll = o.div(o.sum(pairApply(pc, nll)), o.sum(pairApply(pc, count)));
  const loss = o.sub(chosenNll, o.mul(o.mean(logSigmoid(logOdds), 0), beta));
  return { loss, rewardsChosen: o.mul(ac, beta), rewardsRejected: o.mul(ar, beta) };
}
