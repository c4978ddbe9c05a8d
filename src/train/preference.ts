// Preference-tuning losses (DPO, ORPO) as graph compositions of existing ops, for a causal LM batch
// that holds every pair's chosen row and rejected row. Rows are paired by a [pairs, batch] input
// matrix (+1 at a pair's chosen row, -1 at its rejected row), so no symbolic dim is divided.
// Sequence log-probs are over the completion tokens: labels != -100 after the causal shift.

import { grad } from '../autodiff/grad.js';
import { Graph, type Value } from '../graph/ir.js';
import * as o from '../graph/ops.js';
import { BuildContext } from '../nn/context.js';
import { type HostTensor, RuntimeSession } from '../runtime/session.js';
import { prependConstant } from '../tuners/prompt_learning/model.js';
import type { AdaptedModel, TrainableTensor } from '../tuners/types.js';
import type { Tokenizer } from '../io/tokenizer.js';
import { type Batch, collate } from './batches.js';
import { type JsonlRecord, type TokenizeOptions, type TokenizedExample, hasLearnableLabel, readJsonl, tokenizeRecords } from './data.js';
import { DatasetError, TrainError } from './errors.js';
import type { Rng } from './rng.js';
import {
  addGradientOutputs,
  DEFAULT_GRADIENT_CHECKPOINTING,
  DEFAULT_SELECTIVE_RECOMPUTE,
  type StepOptions,
  gradName,
  keepMaskFeeds,
  labelKindOf,
  paramFeeds,
} from './step.js';

const PAIRING = 'pairing';
const REF_LOGPS = 'ref_logps';
const LOSS_SCALE = 'loss_scale';

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

/**
 * log(sigmoid(x)) without overflow: (x - |x|) / 2 - log(1 + exp(-|x|)) (= min(x, 0) - log1p(e^-|x|)).
 * min(x, 0) is written through |x| = relu(x) + relu(-x), whose derivative at 0 is 0 whatever
 * relu'(0) is, so the gradient at x = 0 is the true 1/2. (Written as -relu(-x), min's derivative at 0
 * was relu'(0) = 0 and the gradient there was 0: DPO starts at exactly x = 0, the adapter being a
 * no-op, so its first step had no gradient and it never moved.)
 */
export function logSigmoid(x: Value): Value {
  const abs = o.add(o.relu(x), o.relu(o.neg(x)));
  return o.sub(o.mul(o.sub(x, abs), 0.5), o.log(o.add(o.exp(o.neg(abs)), 1)));
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

// ---- the step: policy loss + gradients in one session, reference log-probs in another ----------

export interface PreferenceStepOptions extends StepOptions {
  objective: PreferenceObjective;
  /** DPO beta / ORPO lambda (default 0.1, TRL's) */
  beta?: number;
}

export interface PreferenceStepResult {
  loss: number;
  /** gradients of loss * lossScale, by parameter name (absent for an eval run) */
  grads?: Map<string, Float32Array>;
  /** per pair: TRL's rewards/chosen and rewards/rejected */
  rewardsChosen: Float32Array;
  rewardsRejected: Float32Array;
  /** per row (chosen rows, then rejected rows): the policy's summed completion log-probs */
  logps: Float32Array;
}

/** The [pairs, batch] pairing matrix of a batch whose first half is the chosen rows and second half their rejected rows. */
function halvesPairing(batchSize: number): HostTensor {
  if (batchSize % 2 !== 0)
    throw new TrainError(`a preference batch holds chosen rows then their rejected rows; got an odd size ${batchSize}`);
  const pairs = batchSize / 2;
  const data = new Float32Array(pairs * batchSize);
  for (let k = 0; k < pairs; k++) {
    data[k * batchSize + k] = 1;
    data[k * batchSize + pairs + k] = -1;
  }
  return { dtype: 'float32', shape: [pairs, batchSize], data };
}

/**
 * DPO or ORPO for a causal LM: a session giving the loss, the rewards and (when training) the
 * gradients of every trainable tensor; DPO adds a forward-only session of the base model with no
 * adapter (prompt-learning methods: no virtual tokens) for the reference log-probs of each batch.
 * A batch holds chosen rows first and their rejected rows second (halvesPairing).
 */
export class PreferenceStep {
  private readonly masks = new Map<string, Uint8Array>();
  private constructor(
    private readonly session: RuntimeSession,
    private readonly reference: RuntimeSession | undefined,
    readonly paramNames: readonly string[],
    private readonly dropouts: readonly { name: string; shape: readonly (number | string)[]; ratio: number }[],
    private readonly training: boolean,
  ) {}

  static async compile(model: AdaptedModel, opts: PreferenceStepOptions & { training?: boolean }): Promise<PreferenceStep> {
    if (labelKindOf(model) !== 'tokens')
      throw new TrainError('preference tuning (DPO, ORPO) trains causal language models; this model is a sequence classifier');
    const beta = opts.beta ?? DEFAULT_BETA[opts.objective];
    if (!(beta > 0 && Number.isFinite(beta))) throw new TrainError(`--beta must be a positive number, got ${beta}`);
    const training = opts.training ?? true;
    const { objective, beta: _b, training: _t, ...runtime } = opts;
    const graph = new Graph();
    const ctx = new BuildContext(graph, model.base.weights, {
      trainable: model.trainableBaseWeights(),
      training,
      quantKernel: runtime.quantKernel,
      gradientCheckpointing: training && (runtime.gradientCheckpointing ?? DEFAULT_GRADIENT_CHECKPOINTING),
      selectiveRecompute: runtime.selectiveRecompute ?? DEFAULT_SELECTIVE_RECOMPUTE,
      basePrecision: runtime.basePrecision,
    });
    const inputIds = graph.input('input_ids', 'int64', ['batch', 'seq']);
    const attentionMask = graph.input('attention_mask', 'int64', ['batch', 'seq']);
    const labels = graph.input('labels', 'int64', ['batch', 'seq']);
    const pairing = graph.input(PAIRING, 'float32', ['pairs', 'batch']);
    const out = model.forward(ctx, { inputIds, attentionMask });
    const count = model.prependedLabels ?? 0;
    const aligned = count > 0 ? prependConstant(labels, count, -100) : labels;
    const r =
      objective === 'dpo'
        ? dpoLoss(out.logits, aligned, pairing, graph.input(REF_LOGPS, 'float32', ['batch']), beta)
        : orpoLoss(out.logits, aligned, pairing, beta);
    const logps = sequenceLogps(out.logits, aligned).sum;
    const params = new Map(ctx.params);
    if (params.size === 0)
      throw new TrainError(`the ${model.peftType} model has no trainable tensors in its graph; check the target modules`);
    const names = [...params.keys()];
    const outputs: Record<string, Value> = { loss: r.loss, rewards_chosen: r.rewardsChosen, rewards_rejected: r.rewardsRejected, logps };
    if (training) {
      const grads = grad(r.loss, [...params.values()], graph.input(LOSS_SCALE, 'float32', []));
      addGradientOutputs(graph, names, grads, outputs);
    }
    const dropouts: { name: string; shape: readonly (number | string)[]; ratio: number }[] = [];
    for (const n of graph.nodes) {
      if (n.op !== 'Dropout') continue;
      const mask = n.inputs[1]!;
      if (mask.kind !== 'input' || dropouts.some((d) => d.name === mask.name)) continue;
      dropouts.push({ name: mask.name, shape: mask.shape, ratio: (n.attrs as { ratio: number }).ratio });
    }
    const session = await RuntimeSession.fromGraph(graph, outputs, {
      memPattern: false,
      // each parameter's gradient finished as the backward pass reaches it (LowerOptions.outputsLast)
      outputsLast: training,
      ...runtime,
      name: `${model.peftType} ${objective} ${training ? 'train' : 'eval'} step`,
    });
    let reference: RuntimeSession | undefined;
    if (objective === 'dpo') {
      const rg = new Graph();
      // the reference holds the base as the policy does (same precision), so with a no-op adapter the two agree
      const rctx = new BuildContext(rg, model.base.weights, {
        training: false,
        quantKernel: runtime.quantKernel,
        basePrecision: runtime.basePrecision,
      });
      const rIds = rg.input('input_ids', 'int64', ['batch', 'seq']);
      const rMask = rg.input('attention_mask', 'int64', ['batch', 'seq']);
      const rLabels = rg.input('labels', 'int64', ['batch', 'seq']);
      const logps = sequenceLogps(model.base.forward(rctx, { inputIds: rIds, attentionMask: rMask }).logits, rLabels).sum;
      reference = await RuntimeSession.fromGraph(
        rg,
        { ref_logps: logps },
        { memPattern: false, ...runtime, name: `${model.base.family} reference` },
      );
    }
    return new PreferenceStep(session, reference, names, dropouts, training);
  }

  /** The reference model's summed completion log-probs of each row ([batch]); DPO only. */
  async referenceLogps(batch: Batch): Promise<Float32Array> {
    if (!this.reference) throw new TrainError('ORPO uses no reference model');
    const out = await this.reference.run(tokenFeeds(batch), ['ref_logps']);
    return out.ref_logps!.data as Float32Array;
  }

  async run(
    batch: Batch,
    params: Map<string, TrainableTensor>,
    opts: { lossScale?: number; rng?: Rng } = {},
  ): Promise<PreferenceStepResult> {
    const feeds = tokenFeeds(batch);
    feeds[PAIRING] = halvesPairing(batch.size);
    if (this.reference) feeds[REF_LOGPS] = { dtype: 'float32', shape: [batch.size], data: await this.referenceLogps(batch) };
    if (this.training) feeds[LOSS_SCALE] = { dtype: 'float32', shape: [], data: Float32Array.of(opts.lossScale ?? 1) };
    paramFeeds(this.paramNames, params, feeds);
    keepMaskFeeds(this.dropouts, this.masks, batch, opts.rng, 'preference step', feeds);
    const out = await this.session.run(feeds);
    const res: PreferenceStepResult = {
      loss: out.loss!.data[0] as number,
      rewardsChosen: out.rewards_chosen!.data as Float32Array,
      rewardsRejected: out.rewards_rejected!.data as Float32Array,
      logps: out.logps!.data as Float32Array,
    };
    if (this.training) {
      res.grads = new Map();
      for (const name of this.paramNames) res.grads.set(name, out[gradName(name)]!.data as Float32Array);
    }
    return res;
  }

  async dispose(): Promise<void> {
    await this.session.dispose();
    await this.reference?.dispose();
  }
}

/** TRL's reward metrics of a batch: mean rewards, accuracy (chosen > rejected) and margin. */
export function rewardMetrics(r: Pick<PreferenceStepResult, 'rewardsChosen' | 'rewardsRejected'>): Record<string, number> {
  const n = r.rewardsChosen.length;
  let c = 0,
    rj = 0,
    acc = 0;
  for (let k = 0; k < n; k++) {
    c += r.rewardsChosen[k]!;
    rj += r.rewardsRejected[k]!;
    if (r.rewardsChosen[k]! > r.rewardsRejected[k]!) acc++;
  }
  return { 'rewards/chosen': c / n, 'rewards/rejected': rj / n, 'rewards/accuracies': acc / n, 'rewards/margins': (c - rj) / n };
}

function tokenFeeds(batch: Batch): Record<string, HostTensor> {
  if ((batch.labelKind ?? 'tokens') !== 'tokens')
    throw new TrainError('preference tuning needs token labels ({"prompt","chosen","rejected"} rows)');
  const shape = [batch.size, batch.seq];
  return {
    input_ids: { dtype: 'int64', shape, data: batch.inputIds },
    attention_mask: { dtype: 'int64', shape, data: batch.attentionMask },
    labels: { dtype: 'int64', shape, data: batch.labels },
  };
}

/** One preference row tokenized: prompt + chosen and prompt + rejected, labels -100 on the prompt. */
export interface PreferencePair {
  chosen: TokenizedExample;
  rejected: TokenizedExample;
}

export function isPreferencePair(x: object): x is PreferencePair {
  return 'chosen' in x && 'rejected' in x;
}

/** A batch of pairs: their chosen rows first, then their rejected rows in the same order (halvesPairing). */
export function collatePairs(pairs: readonly PreferencePair[], padId: number): Batch {
  return collate([...pairs.map((p) => p.chosen), ...pairs.map((p) => p.rejected)], padId);
}

/** The data's own names for the three fields (TRL's are "prompt", "chosen", "rejected"). */
export interface PreferenceKeys {
  prompt?: string;
  chosen?: string;
  rejected?: string;
}

/** {"prompt","chosen","rejected"} rows as token pairs: prompt + chosen and prompt + rejected, labels -100 on the prompt. */
export function tokenizePreferenceRecords(
  records: readonly JsonlRecord[],
  tokenizer: Tokenizer,
  opts: TokenizeOptions & { keys?: PreferenceKeys } = {},
): { chosen: TokenizedExample[]; rejected: TokenizedExample[] } {
  const file = opts.file;
  if (records.length === 0) throw new DatasetError('the dataset is empty', { file });
  const names = {
    prompt: opts.keys?.prompt ?? 'prompt',
    chosen: opts.keys?.chosen ?? 'chosen',
    rejected: opts.keys?.rejected ?? 'rejected',
  };
  records.forEach((r) => {
    for (const k of Object.values(names)) {
      const v = r.value[k];
      if (typeof v !== 'string') {
        throw new DatasetError(
          `field "${k}" is ${v === undefined ? 'missing' : `a ${Array.isArray(v) ? 'list' : v === null ? 'null' : typeof v}, not a string`}; a preference row is {"${names.prompt}": "...", "${names.chosen}": "...", "${names.rejected}": "..."}`,
          { file, line: r.line },
        );
      }
    }
  });
  const side = (k: 'chosen' | 'rejected') =>
    tokenizeRecords(
      records.map((r) => ({ line: r.line, value: { prompt: r.value[names.prompt], completion: r.value[names[k]] } })),
      tokenizer,
      opts,
    ).examples;
  return { chosen: side('chosen'), rejected: side('rejected') };
}

export interface PreferenceDataset {
  pairs: PreferencePair[];
  /** pairs left out because a side had no completion token within maxLength */
  dropped: number;
  /** pairs with a side cut to maxLength */
  truncated: number;
}

/**
 * Reads {"prompt","chosen","rejected"} jsonl rows (TRL's preference format) as token pairs, each
 * side cut to maxLength tokens on the right; a pair whose cut side keeps no completion token is
 * left out (and counted). A bad row is a DatasetError naming the file, the line and the field.
 */
export async function loadPreferenceDataset(
  file: string,
  tokenizer: Tokenizer,
  opts: { maxLength: number; maxExamples?: number; keys?: PreferenceKeys },
): Promise<PreferenceDataset> {
  let records = await readJsonl(file);
  if (opts.maxExamples !== undefined) records = records.slice(0, opts.maxExamples);
  const { chosen, rejected } = tokenizePreferenceRecords(records, tokenizer, { file, keys: opts.keys });
  const cut = (ex: TokenizedExample): TokenizedExample => ({
    inputIds: ex.inputIds.slice(0, opts.maxLength),
    labels: ex.labels.slice(0, opts.maxLength),
  });
  const pairs: PreferencePair[] = [];
  let dropped = 0;
  let truncated = 0;
  chosen.forEach((c, i) => {
    const r = rejected[i]!;
    if (c.inputIds.length > opts.maxLength || r.inputIds.length > opts.maxLength) truncated++;
    const pair = { chosen: cut(c), rejected: cut(r) };
    if (hasLearnableLabel(pair.chosen) && hasLearnableLabel(pair.rejected)) pairs.push(pair);
    else dropped++;
  });
  if (pairs.length === 0)
    throw new DatasetError(`no preference row keeps a completion token within --max-len ${opts.maxLength}; raise --max-len`, { file });
  return { pairs, dropped, truncated };
}

/**
 * Preference accuracy: the fraction of pairs whose chosen completion the model finds more likely
 * than the rejected one (summed completion log-probs given the prompt; a tie counts as wrong). It
 * needs no reference model, so a base model and a tuned one compare on the same footing.
 */
export function preferenceAccuracy(logps: Float32Array | Float64Array, pairs: number): number {
  if (logps.length !== 2 * pairs) throw new TrainError(`preference accuracy needs 2 x ${pairs} row log-probs, got ${logps.length}`);
  let right = 0;
  for (let k = 0; k < pairs; k++) if (logps[k]! > logps[pairs + k]!) right++;
  return right / pairs;
}
