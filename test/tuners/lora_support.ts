// Shared pieces of the LoRA tests: the fixture batch, one compiled forward (optionally with
// gradients of every graph param) fed from an adapted model's parameters, and comparisons.

import assert from 'node:assert/strict';
import { grad } from '../../src/autodiff/grad.js';
import { Graph, type Value } from '../../src/graph/ir.js';
import type { PretrainedModel } from '../../src/models/types.js';
import { BuildContext } from '../../src/nn/context.js';
import { RuntimeSession, type HostTensor } from '../../src/runtime/session.js';
import type { AdaptedModel, TrainableTensor } from '../../src/tuners/types.js';
import { type Batch, fixtureBatch, inTempDir } from '../helpers/fixtures.js';

export { type Batch, fixtureBatch };

export interface Compiled {
  sess: RuntimeSession;
  ctx: BuildContext;
  params: Value[];
  run(batch: Batch, values: Map<string, TrainableTensor>, fetch?: string[]): Promise<Record<string, HostTensor>>;
  dispose(): Promise<void>;
}

/**
 * Compiles logits + loss (and with `grads`, d loss / d every graph param as "grad:<name>") of an
 * adapted model or a plain one. Shapes are the batch's, static, as training steps compile them.
 */
export async function compile(
  m: AdaptedModel | PretrainedModel,
  batch: Batch,
  opts: { grads?: boolean; training?: boolean } = {},
): Promise<Compiled> {
  const adapted = 'peftType' in m ? m : undefined;
  const base = adapted ? adapted.base : (m as PretrainedModel);
  const g = new Graph();
  const ctx = new BuildContext(g, base.weights, {
    trainable: adapted?.trainableBaseWeights() ?? new Set(),
    training: opts.training ?? false,
  });
  const inputIds = g.input('input_ids', 'int64', batch.input_ids.shape);
  const attentionMask = g.input('attention_mask', 'int64', batch.attention_mask.shape);
  const labels = g.input('labels', 'int64', batch.labels.shape);
  const out = adapted ? adapted.forward(ctx, { inputIds, attentionMask }) : base.forward(ctx, { inputIds, attentionMask });
  const loss = (adapted ?? base).loss(out.logits, labels);
  const fetch: Record<string, Value> = { logits: out.logits, loss };
  const params = [...g.params];
  if (opts.grads) {
    const gs = grad(loss, params);
    params.forEach((p, i) => (fetch[`grad:${p.name}`] = gs[i]!));
  }
  const sess = await RuntimeSession.fromGraph(g, fetch, { threads: 2 });
  return {
    sess,
    ctx,
    params,
    run: (b, values, fetchNames) => {
      const feeds: Record<string, HostTensor> = { input_ids: b.input_ids, attention_mask: b.attention_mask, labels: b.labels };
      for (const p of params) {
        const t = values.get(p.name);
        if (!t) throw new Error(`no value for graph param ${p.name}`);
        feeds[p.name] = { dtype: 'float32', shape: t.shape, data: t.data };
      }
      return sess.run(feeds, fetchNames);
    },
    dispose: () => sess.dispose(),
  };
}

/** Logits and loss of a model on a batch. */
export async function forwardOnce(m: AdaptedModel | PretrainedModel, batch: Batch): Promise<{ logits: Float32Array; loss: number }> {
  const c = await compile(m, batch);
  try {
    const r = await c.run(batch, 'peftType' in m ? m.parameters() : new Map());
    return { logits: r.logits!.data as Float32Array, loss: r.loss!.data[0] as number };
  } finally {
    await c.dispose();
  }
}

/** |a - b| <= atol + rtol * |b| elementwise, reporting the worst element. */
export function assertClose(a: ArrayLike<number>, b: ArrayLike<number>, atol: number, rtol: number, what: string): void {
  assert.equal(a.length, b.length, `${what}: length ${a.length} vs ${b.length}`);
  let worst = 0;
  let at = -1;
  for (let i = 0; i < a.length; i++) {
    const excess = Math.abs(a[i]! - b[i]!) - (atol + rtol * Math.abs(b[i]!));
    if (excess > worst) {
      worst = excess;
      at = i;
    }
  }
  assert.ok(at < 0, `${what}: element ${at} is ${a[at]} vs ${b[at]} (beyond atol ${atol} + rtol ${rtol})`);
}

export function withTmp<T>(fn: (dir: string) => Promise<T>): Promise<T> {
  return inTempDir('lora-', fn);
}
