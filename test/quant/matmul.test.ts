// Quantized fixture models: loadModel(dir, { quantization }) holds every linear weight but the head
// 4-bit, and its forward pass equals (within 1e-5) the same model whose weights were replaced by
// their NF4 round trip on the host: the in-graph dequantization is the only difference, and it is exact.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Graph, type Value } from '../../src/graph/ir.js';
import { BuildContext } from '../../src/nn/context.js';
import { loadModel } from '../../src/models/load.js';
import type { PretrainedModel } from '../../src/models/types.js';
import { RuntimeSession, type HostTensor } from '../../src/runtime/session.js';
import { toFloat32 } from '../../src/io/safetensors.js';
import { QuantizationError } from '../../src/quant/errors.js';
import { fixturePath, host, maxAbsDiff, readTensors } from '../helpers/fixtures.js';

async function forward(
  model: PretrainedModel,
  batch: Map<string, import('../../src/io/safetensors.js').RawTensor>,
): Promise<{ logits: HostTensor; loss: number }> {
  const g = new Graph();
  const ctx = new BuildContext(g, model.weights);
  const inputIds = g.input('input_ids', 'int64', ['batch', 'seq']);
  const attentionMask = g.input('attention_mask', 'int64', ['batch', 'seq']);
  const labels = g.input('labels', 'int64', model.task === 'seq-cls' ? ['batch'] : ['batch', 'seq']);
  const out = model.forward(ctx, { inputIds, attentionMask });
  const fetch: Record<string, Value> = { logits: out.logits, loss: model.loss(out.logits, labels) };
  const s = await RuntimeSession.fromGraph(g, fetch, { threads: 1 });
  try {
    const r = await s.run({
      input_ids: host(batch.get('input_ids')!),
      attention_mask: host(batch.get('attention_mask')!),
      labels: host(batch.get('labels')!),
    });
    return { logits: r.logits!, loss: r.loss!.data[0] as number };
  } finally {
    await s.dispose();
  }
}

const HEADS: Record<string, string> = { gpt2: 'lm_head', llama: 'lm_head', bert: 'classifier' };

for (const name of ['llama', 'gpt2', 'bert']) {
  test(`${name}: NF4 model forward equals the model with host-dequantized (round-tripped) weights`, async () => {
    const dir = fixturePath('models', name);
    const q = await loadModel(dir, { quantization: { bits: 4, type: 'nf4', doubleQuant: true, blockSize: 64 } });
    const expectQuantized = q
      .linears()
      .filter((s) => s.name !== HEADS[name])
      .map((s) => `${s.name}.weight`)
      .sort();
    assert.deepEqual(q.weights.quantizedNames().sort(), expectQuantized);
    for (const s of q.linears()) {
      const w = `${s.name}.weight`;
      if (!q.weights.isQuantized(w)) continue;
      const held = q.weights.getQuantized(w)!;
      assert.deepEqual(held.quant.shape, [s.outFeatures, s.inFeatures], `${w} is quantized as an nn.Linear weight [out, in]`);
      assert.equal(held.transposed, s.layout === 'conv1d');
      assert.throws(() => q.weights.get(w), QuantizationError);
    }
    const ref = await loadModel(dir);
    for (const w of q.weights.quantizedNames()) ref.weights.set(w, q.weights.dequantized(w));
    const batch = await readTensors('models', name, 'batch.safetensors');
    const a = await forward(q, batch);
    const b = await forward(ref, batch);
    assert.deepEqual(a.logits.shape, b.logits.shape);
    const d = maxAbsDiff(a.logits.data as Float32Array, b.logits.data as Float32Array);
    assert.ok(d <= 1e-5, `${name}: logits differ by ${d}`);
    assert.ok(Math.abs(a.loss - b.loss) <= 1e-5 * Math.abs(b.loss), `loss ${a.loss} vs ${b.loss}`);
    // NF4 does change the model: the logits move away from transformers' full-precision ones
    const want = toFloat32((await readTensors('models', name, 'expected_outputs.safetensors')).get('logits')!);
    const err = maxAbsDiff(a.logits.data as Float32Array, want);
    assert.ok(err > 1e-4 && err < 1, `${name}: NF4 moves the logits by ${err}`);
  });
}

test('options are checked: bits, type, block size, trainable quantized weights', async () => {
  const dir = fixturePath('models', 'llama');
  await assert.rejects(loadModel(dir, { quantization: { bits: 8 as 4, type: 'nf4' } }), QuantizationError);
  await assert.rejects(loadModel(dir, { quantization: { bits: 4, type: 'int4' as 'nf4' } }), QuantizationError);
  await assert.rejects(loadModel(dir, { quantization: { bits: 4, type: 'nf4', blockSize: 100 } }), QuantizationError);
  const m = await loadModel(dir, {
    quantization: { bits: 4, type: 'fp4', doubleQuant: false, blockSize: 128, skipModules: ['q_proj', 'model.layers.1'] },
  });
  const names = m.weights.quantizedNames();
  assert.ok(!names.some((n) => n.endsWith('q_proj.weight') || n.startsWith('model.layers.1.')));
  assert.ok(names.includes('model.layers.0.mlp.up_proj.weight'));
  const held = m.weights.getQuantized('model.layers.0.mlp.up_proj.weight')!;
  assert.equal(held.quant.type, 'fp4');
  assert.equal(held.quant.blockSize, 128);
  assert.equal(held.quant.absmax.kind, 'plain');
  const g = new Graph();
  const ctx = new BuildContext(g, m.weights, { trainable: new Set(['model.layers.0.mlp.up_proj.weight']) });
  assert.throws(() => ctx.weight('model.layers.0.mlp.up_proj.weight'), QuantizationError);
});
