// Test helpers for adapted models: run one forward (logits, loss, hidden states) with the
// adapter's params fed, and a small AdamW training loop whose step is one session run.

import { Graph, type Value } from '../../src/graph/ir.js';
import { grad } from '../../src/autodiff/grad.js';
import { BuildContext } from '../../src/nn/context.js';
import { mulberry32 } from '../../src/nn/random.js';
import { RuntimeSession, type HostTensor } from '../../src/runtime/session.js';
import { AdamW } from '../../src/train/adamw.js';
import type { PretrainedModel } from '../../src/models/types.js';
import type { AdaptedModel, TrainableTensor } from '../../src/tuners/types.js';
import type { Batch } from '../helpers/fixtures.js';

export type { Batch };

interface Compiled {
  sess: RuntimeSession;
  params: Value[];
}

type Builder = (ctx: BuildContext, a: { inputIds: Value; attentionMask: Value }) => { logits: Value; hidden: Value[]; loss: Value };

// `shape` fixes [batch, seq] statically: the BERT classifier's CLS slice (end 1 on the sequence
// axis) has no gradient rule over a symbolic sequence length.
async function compile(
  forward: Builder,
  base: PretrainedModel,
  trainable: ReadonlySet<string>,
  withGrads: boolean,
  shape?: readonly number[],
): Promise<Compiled> {
  const g = new Graph();
  const ctx = new BuildContext(g, base.weights, { trainable: new Set(trainable), training: withGrads });
  const dims = shape ? [...shape] : ['batch', 'seq'];
  const inputIds = g.input('input_ids', 'int64', dims);
  const attentionMask = g.input('attention_mask', 'int64', dims);
  const out = forward(ctx, { inputIds, attentionMask });
  const fetch: Record<string, Value> = { logits: out.logits, loss: out.loss };
  out.hidden.forEach((h, i) => (fetch[`hidden_states.${i}`] = h));
  const params = [...g.params];
  if (withGrads && params.length) {
    const gs = grad(out.loss, params);
    params.forEach((p, i) => (fetch[`grad:${p.name}`] = gs[i]!));
  }
  const sess = await RuntimeSession.fromGraph(g, fetch, { threads: 1 });
  return { sess, params };
}

function labelsInput(base: PretrainedModel, ctx: BuildContext): Value {
  const ids = ctx.graph.inputs.find((v) => v.name === 'input_ids')!;
  return ctx.graph.input('labels', 'int64', base.task === 'seq-cls' ? [ids.shape[0]!] : [...ids.shape]);
}

function feedsOf(batch: Batch, params: Value[], values: Map<string, TrainableTensor>): Record<string, HostTensor> {
  const feeds: Record<string, HostTensor> = { input_ids: batch.input_ids, attention_mask: batch.attention_mask, labels: batch.labels };
  for (const p of params) {
    const t = values.get(p.name);
    if (!t) throw new Error(`no value for graph param ${p.name}`);
    feeds[p.name] = { dtype: 'float32', shape: t.shape, data: t.data };
  }
  return feeds;
}

/** Logits, loss and hidden states of the adapted model on one batch. */
export async function runAdapted(m: AdaptedModel, batch: Batch): Promise<Record<string, HostTensor>> {
  const { sess, params } = await compile(
    (ctx, a) => {
      const out = m.forward(ctx, a);
      return { logits: out.logits, hidden: out.hiddenStates, loss: m.loss(out.logits, labelsInput(m.base, ctx)) };
    },
    m.base,
    m.trainableBaseWeights(),
    false,
  );
  try {
    return await sess.run(feedsOf(batch, params, m.parameters()));
  } finally {
    await sess.dispose();
  }
}

/** The plain base model (e.g. after merge_and_unload) on one batch. */
export async function runBase(base: PretrainedModel, batch: Batch): Promise<Record<string, HostTensor>> {
  const { sess, params } = await compile(
    (ctx, a) => {
      const out = base.forward(ctx, a);
      return { logits: out.logits, hidden: out.hiddenStates, loss: base.loss(out.logits, labelsInput(base, ctx)) };
    },
    base,
    new Set(),
    false,
  );
  try {
    return await sess.run(feedsOf(batch, params, new Map()));
  } finally {
    await sess.dispose();
  }
}

/** Trains with AdamW for `steps` steps cycling over `train`; returns the eval loss before and after. */
export async function trainAndEval(
  m: AdaptedModel,
  train: Batch[],
  evalBatch: Batch,
  steps: number,
  lr: number,
): Promise<{ before: number; after: number; losses: number[] }> {
  const { sess, params } = await compile(
    (ctx, a) => {
      const out = m.forward(ctx, a);
      return { logits: out.logits, hidden: [], loss: m.loss(out.logits, labelsInput(m.base, ctx)) };
    },
    m.base,
    m.trainableBaseWeights(),
    true,
    train[0]!.input_ids.shape,
  );
  try {
    const values = m.parameters();
    const evalLoss = async (): Promise<number> => (await sess.run(feedsOf(evalBatch, params, values), ['loss'])).loss!.data[0] as number;
    const before = await evalLoss();
    const opt = new AdamW({ lr, weightDecay: 0 });
    const losses: number[] = [];
    for (let s = 0; s < steps; s++) {
      const r = await sess.run(feedsOf(train[s % train.length]!, params, values), ['loss', ...params.map((p) => `grad:${p.name}`)]);
      losses.push(r.loss!.data[0] as number);
      const grads = new Map<string, Float32Array>();
      for (const p of params) grads.set(p.name, r[`grad:${p.name}`]!.data as Float32Array);
      opt.step(values, grads, { decay: m.decayParameters() });
    }
    return { before, after: await evalLoss(), losses };
  } finally {
    await sess.dispose();
  }
}

/** Causal-LM batches of a counting task: token t+1 = token t + step (mod span) from random starts. */
export function countingBatches(seedStart: number, n: number, rows: number, seq: number, lo: number, span: number, step = 1): Batch[] {
  const rand = mulberry32(seedStart);
  const out: Batch[] = [];
  for (let b = 0; b < n; b++) {
    const ids = new BigInt64Array(rows * seq);
    for (let r = 0; r < rows; r++) {
      const start = Math.floor(rand() * span);
      for (let t = 0; t < seq; t++) ids[r * seq + t] = BigInt(lo + ((start + t * step) % span));
    }
    const shape = [rows, seq];
    out.push({
      input_ids: { dtype: 'int64', shape, data: ids },
      attention_mask: { dtype: 'int64', shape, data: new BigInt64Array(rows * seq).fill(1n) },
      labels: { dtype: 'int64', shape, data: BigInt64Array.from(ids) },
    });
  }
  return out;
}

/** Sequence-classification batches: label 1 when the first token comes from the upper half of a range. */
export function classificationBatches(seedStart: number, n: number, rows: number, seq: number, lo: number, span: number): Batch[] {
  const rand = mulberry32(seedStart);
  const out: Batch[] = [];
  for (let b = 0; b < n; b++) {
    const ids = new BigInt64Array(rows * seq);
    const labels = new BigInt64Array(rows);
    for (let r = 0; r < rows; r++) {
      const label = rand() < 0.5 ? 0 : 1;
      labels[r] = BigInt(label);
      for (let t = 0; t < seq; t++) ids[r * seq + t] = BigInt(lo + (label ? span / 2 : 0) + Math.floor(rand() * (span / 2)));
    }
    const shape = [rows, seq];
    out.push({
      input_ids: { dtype: 'int64', shape, data: ids },
      attention_mask: { dtype: 'int64', shape, data: new BigInt64Array(rows * seq).fill(1n) },
      labels: { dtype: 'int64', shape: [rows], data: labels },
    });
  }
  return out;
}

/** The counting task as tokenized examples for src/train's Trainer (every position labelled). */
export function countingExamples(
  seed: number,
  n: number,
  seq: number,
  lo: number,
  span: number,
): { inputIds: number[]; labels: number[] }[] {
  const [b] = countingBatches(seed, 1, n, seq, lo, span);
  const ids = Array.from(b!.input_ids.data as BigInt64Array, Number);
  return Array.from({ length: n }, (_, r) => {
    const row = ids.slice(r * seq, (r + 1) * seq);
    return { inputIds: row, labels: [...row] };
  });
}
