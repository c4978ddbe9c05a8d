// Training on the int8 base (issue #19): the evaluation runs on the same int8 base as the train
// step, the float32 arrays of the matrices both hold only as int8 are released from the model, and
// anything asking for one later reads back exactly the checkpoint's values.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Tokenizer } from '../../../src/io/tokenizer.js';
import { loadModel } from '../../../src/models/load.js';
import { EvalStep, TrainStep } from '../../../src/train/step.js';
import { parseJsonl, prepareExamples, tokenizeRecords } from '../../../src/train/data.js';
import { Trainer } from '../../../src/train/trainer.js';
import { getPeftModel } from '../../../src/tuners/load.js';
import { fixturePath } from '../../helpers/fixtures.js';
import { jsonl, swapRecords, tempDir } from '../synthetic.js';

test('int8 base: eval on int8, float32 copies of int8-only matrices released and read back exactly', async () => {
  const dir = fixturePath('models', 'gpt2');
  const tok = await Tokenizer.fromDir(dir);
  const rows = prepareExamples(tokenizeRecords(parseJsonl(jsonl(swapRecords())), tok).examples, { maxLength: 32 }).examples;
  const model = await getPeftModel(await loadModel(dir), { r: 4, loraAlpha: 8, targetModules: ['c_attn'] }, { seed: 0 });
  const weights = model.base.weights;
  const fresh = (await loadModel(dir)).weights;

  // The eval step holds the frozen matrices as int8, and the tied embedding as int8 (the LM head)
  // plus a float16 copy (the lookup): none of them as float32.
  const ev = await EvalStep.compile(model, { threads: 1, basePrecision: 'int8' });
  await ev.dispose();
  assert.ok(ev.int8OnlyWeights.includes('transformer.h.0.mlp.c_fc.weight'), ev.int8OnlyWeights.join(', '));
  assert.ok(ev.int8OnlyWeights.includes('transformer.wte.weight'), ev.int8OnlyWeights.join(', '));
  // with the loss in one product, autodiff's LM-head backward product reads the float32 matrix
  const one = await TrainStep.compile(model, { threads: 1, basePrecision: 'int8', lossChunks: 1 });
  await one.dispose();
  assert.ok(!one.int8OnlyWeights.includes('transformer.wte.weight'));
  assert.ok(one.int8OnlyWeights.includes('transformer.h.0.mlp.c_fc.weight'));

  const r = await new Trainer(model, rows.slice(0, 16), rows.slice(16, 24), {
    outputDir: await tempDir(),
    padTokenId: tok.padTokenId ?? tok.eosTokenId!,
    learningRate: 1e-2,
    maxSteps: 2,
    batchSize: 8,
    runtime: { threads: 1, basePrecision: 'int8' },
  }).train();
  assert.ok(Number.isFinite(r.initialEvalLoss) && Number.isFinite(r.finalEvalLoss));

  const released = weights.releasedNames();
  // at least c_fc, the MLP's c_proj and the attention's c_proj of every layer
  assert.ok(released.length >= 3 * model.base.numLayers, `released: ${released.join(', ')}`);
  // the tied embedding too (issue #19: the lookup and the loss's label rows read its float16 copy)
  assert.ok(released.includes('transformer.wte.weight'), `released: ${released.join(', ')}`);
  const before = weights.heldBytes();
  for (const n of released) {
    assert.equal(
      weights.numel((k) => k === n),
      fresh.get(n).data.length,
      n,
    );
    assert.deepEqual(weights.get(n).data, fresh.get(n).data, n);
  }
  assert.equal(weights.releasedNames().length, 0);
  assert.ok(weights.heldBytes() > before);
  assert.equal(weights.get('lm_head.weight'), weights.get('transformer.wte.weight'));
});
