// ModernBertForSequenceClassification reproduces transformers 4.57.6 on the 2026 fixture: logits
// and every hidden state (embeddings output, then each layer's output, the last before final_norm)
// within 1e-4, the loss within 1e-5 relative; and the local attention window is really applied.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Graph, type Value } from '../../src/graph/ir.js';
import { BuildContext } from '../../src/nn/context.js';
import { loadModel } from '../../src/models/load.js';
import { parseConfig } from '../../src/models/config.js';
import { ModernBertModel } from '../../src/models/modernbert.js';
import { RuntimeSession } from '../../src/runtime/session.js';
import { readSafetensors, toFloat32 } from '../../src/io/safetensors.js';
import { fixture2026Path, host, maxAbsDiff } from '../helpers/fixtures.js';
import type { PretrainedModel } from '../../src/models/types.js';

const DIR = fixture2026Path('models', 'modernbert');

async function run(model: PretrainedModel): Promise<Record<string, Float32Array>> {
  const batch = await readSafetensors(`${DIR}/batch.safetensors`);
  const g = new Graph();
  const ctx = new BuildContext(g, model.weights);
  const inputIds = g.input('input_ids', 'int64', ['batch', 'seq']);
  const attentionMask = g.input('attention_mask', 'int64', ['batch', 'seq']);
  const labels = g.input('labels', 'int64', ['batch']);
  const out = model.forward(ctx, { inputIds, attentionMask });
  const fetch: Record<string, Value> = { logits: out.logits, loss: model.loss(out.logits, labels) };
  out.hiddenStates.forEach((h, i) => (fetch[`hidden_states.${i}`] = h));
  const sess = await RuntimeSession.fromGraph(g, fetch, { threads: 1 });
  try {
    const r = await sess.run({
      input_ids: host(batch.get('input_ids')!),
      attention_mask: host(batch.get('attention_mask')!),
      labels: host(batch.get('labels')!),
    });
    return Object.fromEntries(Object.entries(r).map(([k, v]) => [k, v.data as Float32Array]));
  } finally {
    await sess.dispose();
  }
}

test('modernbert: logits, hidden states and loss match transformers', async () => {
  const model = await loadModel(DIR);
  assert.ok(model instanceof ModernBertModel);
  assert.equal(model.task, 'seq-cls');
  const expected = await readSafetensors(`${DIR}/expected_outputs.safetensors`);
  const got = await run(model);
  assert.equal(Object.keys(got).filter((k) => k.startsWith('hidden_states.')).length, model.numLayers + 1);
  for (const [key, t] of expected) {
    const want = toFloat32(t);
    if (key === 'loss') {
      assert.ok(Math.abs(got.loss![0]! - want[0]!) <= 1e-5 * Math.abs(want[0]!), `loss ${got.loss![0]} vs ${want[0]}`);
      continue;
    }
    const d = maxAbsDiff(got[key]!, want);
    assert.ok(d < 1e-4, `${key}: max abs diff ${d}`);
  }
});

test('modernbert: the local window matters (a window longer than the batch changes the logits as in the fixture)', async () => {
  const model = await loadModel(DIR);
  const wide = new ModernBertModel(parseConfig({ ...model.config.raw, local_attention: 4096 }), model.weights, model.dir);
  const [a, b] = [await run(model), await run(wide)];
  // MANIFEST feature_checks: 0.0915 for this change.
  const d = maxAbsDiff(a.logits!, b.logits!);
  assert.ok(Math.abs(d - 0.0915) < 0.002, `logits change ${d}`);
});

test('modernbert: config errors name the field', () => {
  const raw = {
    model_type: 'modernbert',
    vocab_size: 10,
    hidden_size: 8,
    num_attention_heads: 2,
    num_hidden_layers: 1,
    intermediate_size: 8,
  };
  const cfg = parseConfig(raw);
  assert.equal(cfg.family, 'modernbert');
  assert.equal(cfg.normEps, 1e-5);
  assert.throws(
    () => new ModernBertModel(parseConfig({ ...raw, classifier_pooling: 'max' }), undefined as never, '.'),
    /classifier_pooling/,
  );
  assert.throws(() => new ModernBertModel(parseConfig({ ...raw, local_attention: -1 }), undefined as never, '.'), /local_attention/);
});

test('modernbert: classifier_pooling "mean" pools the final-normed states over the mask (head checked in float64 from the fixture hidden states)', async () => {
  const model = await loadModel(DIR);
  const mean = new ModernBertModel(parseConfig({ ...model.config.raw, classifier_pooling: 'mean' }), model.weights, model.dir);
  const got = (await run(mean)).logits!;
  // The same head computed here from transformers' last hidden state (before final_norm).
  const expected = await readSafetensors(`${DIR}/expected_outputs.safetensors`);
  const batch = await readSafetensors(`${DIR}/batch.safetensors`);
  const mask = host(batch.get('attention_mask')!).data as BigInt64Array;
  const last = toFloat32(expected.get(`hidden_states.${model.numLayers}`)!);
  const [B, S] = batch.get('attention_mask')!.shape as [number, number];
  const C = model.hiddenSize;
  const w = (n: string) => model.weights.get(n).data;
  const ln = (x: Float64Array, weight: Float32Array): Float64Array => {
    const mu = x.reduce((a, b) => a + b, 0) / x.length;
    const v = x.reduce((a, b) => a + (b - mu) ** 2, 0) / x.length;
    return x.map((t, i) => ((t - mu) / Math.sqrt(v + model.config.normEps)) * weight[i]!);
  };
  const matvec = (m: Float32Array, x: Float64Array, out: number): Float64Array =>
    Float64Array.from({ length: out }, (_, r) => x.reduce((a, t, c) => a + m[r * x.length + c]! * t, 0));
  const erf = (x: number): number => {
    // Numerical Recipes' erfc Chebyshev fit, fractional error below 1.2e-7.
    const t = 1 / (1 + 0.5 * Math.abs(x));
    const y =
      1 -
      t *
        Math.exp(
          -x * x -
            1.26551223 +
            t *
              (1.00002368 +
                t *
                  (0.37409196 +
                    t *
                      (0.09678418 +
                        t * (-0.18628806 + t * (0.27886807 + t * (-1.13520398 + t * (1.48851587 + t * (-0.82215223 + t * 0.17087277)))))))),
        );
    return x >= 0 ? y : -y;
  };
  const want: number[] = [];
  for (let b = 0; b < B; b++) {
    const pooled = new Float64Array(C);
    let n = 0;
    for (let s = 0; s < S; s++) {
      if (mask[b * S + s] !== 1n) continue;
      n++;
      const normed = ln(Float64Array.from(last.subarray((b * S + s) * C, (b * S + s + 1) * C)), w('model.final_norm.weight'));
      normed.forEach((t, i) => (pooled[i] += t));
    }
    pooled.forEach((_, i) => (pooled[i] /= n));
    const dense = matvec(w('head.dense.weight'), pooled, C).map((x) => 0.5 * x * (1 + erf(x / Math.SQRT2)));
    const h = ln(dense, w('head.norm.weight'));
    const logits = matvec(w('classifier.weight'), h, model.config.numLabels).map((x, i) => x + w('classifier.bias')[i]!);
    want.push(...logits);
  }
  const d = maxAbsDiff(got, want);
  assert.ok(d < 1e-4, `mean pooling logits: max abs diff ${d}`);
  assert.ok(maxAbsDiff(got, (await run(model)).logits!) > 1e-3, 'mean and cls pooling differ');
});
