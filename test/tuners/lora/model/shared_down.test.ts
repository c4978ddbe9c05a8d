// LoRA modules that read the same input (Llama's q/k/v and gate/up) share one product of the input
// with their concatenated lora_A matrices in training graphs (LoraModel.sharedDownGroups): the
// graph has one Split per group and layer, and loss and gradients agree with the per-module graph.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { loadModel } from '../../../../src/models/load.js';
import { LoraModel, loraSharedDown } from '../../../../src/tuners/lora/index.js';
import { fixturePath } from '../../../helpers/fixtures.js';
import { assertClose, compile, fixtureBatch } from '../../lora_support.js';

test('shared lora_A product of q/k/v and gate/up: same loss and gradients as one product per module', async () => {
  const base = await loadModel(fixturePath('models', 'llama'));
  const lm = await LoraModel.fromPretrained(base, fixturePath('grad_traces', 'llama_lora'), { isTrainable: true });
  const batch = await fixtureBatch('llama');
  const values = lm.parameters();
  const results: Record<string, Float32Array>[] = [];
  const splits: number[] = [];
  const was = loraSharedDown.enabled;
  try {
    for (const enabled of [true, false]) {
      loraSharedDown.enabled = enabled;
      const c = await compile(lm, batch, { grads: true, training: true });
      try {
        splits.push(c.ctx.graph.nodes.filter((n) => n.op === 'Split').length);
        const r = await c.run(batch, values);
        const out: Record<string, Float32Array> = { loss: r.loss!.data as Float32Array };
        for (const p of c.params) out[p.name] = r[`grad:${p.name}`]!.data as Float32Array;
        results.push(out);
      } finally {
        await c.dispose();
      }
    }
  } finally {
    loraSharedDown.enabled = was;
  }
  const layers = base.config.numHiddenLayers;
  assert.equal(splits[0], 2 * layers, 'one Split for q/k/v and one for gate/up per layer');
  assert.equal(splits[1], 0);
  const [on, off] = results as [Record<string, Float32Array>, Record<string, Float32Array>];
  assert.deepEqual(Object.keys(on).sort(), Object.keys(off).sort());
  for (const k of Object.keys(off)) assertClose(on[k]!, off[k]!, 1e-7, 1e-5, k);
});
