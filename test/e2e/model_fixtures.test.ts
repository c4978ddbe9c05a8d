// Every fixture model reproduces transformers' numbers: logits and hidden states within 1e-4,
// the loss within 1e-5 relative, through one code path that reads dimensions from config.json.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Graph, type Value } from '../../src/graph/ir.js';
import { BuildContext } from '../../src/nn/context.js';
import { loadModel } from '../../src/models/load.js';
import { RuntimeSession } from '../../src/runtime/session.js';
import { toFloat32 } from '../../src/io/safetensors.js';
import { fixturePath, host, maxAbsDiff, readTensors } from '../helpers/fixtures.js';

for (const name of ['gpt2', 'llama', 'bert']) {
  test(`${name}: logits, hidden states and loss match transformers`, async () => {
    const model = await loadModel(fixturePath('models', name));
    const batch = await readTensors('models', name, 'batch.safetensors');
    const expected = await readTensors('models', name, 'expected_outputs.safetensors');
    const g = new Graph();
    const ctx = new BuildContext(g, model.weights);
    const inputIds = g.input('input_ids', 'int64', ['batch', 'seq']);
    const attentionMask = g.input('attention_mask', 'int64', ['batch', 'seq']);
    const labels = g.input('labels', 'int64', model.task === 'seq-cls' ? ['batch'] : ['batch', 'seq']);
    const out = model.forward(ctx, { inputIds, attentionMask });
    const fetch: Record<string, Value> = { logits: out.logits, loss: model.loss(out.logits, labels) };
    out.hiddenStates.forEach((h, i) => (fetch[`hidden_states.${i}`] = h));
    const sess = await RuntimeSession.fromGraph(g, fetch, { threads: 1 });
    const r = await sess.run({
      input_ids: host(batch.get('input_ids')!),
      attention_mask: host(batch.get('attention_mask')!),
      labels: host(batch.get('labels')!),
    });
    for (const key of Object.keys(fetch)) {
      if (key === 'loss') continue;
      const want = toFloat32(expected.get(key)!);
      assert.deepEqual(r[key]!.shape, expected.get(key)!.shape, key);
      const d = maxAbsDiff(r[key]!.data as Float32Array, want);
      assert.ok(d < 1e-4, `${name} ${key}: max abs diff ${d}`);
    }
    const loss = r.loss!.data[0] as number;
    const wantLoss = toFloat32(expected.get('loss')!)[0]!;
    assert.ok(Math.abs(loss - wantLoss) / Math.abs(wantLoss) < 1e-5, `${name} loss ${loss} vs ${wantLoss}`);
    await sess.dispose();
  });
}
