// Prefix tuning against peft: every PREFIX_TUNING fixture (GPT-2, Llama with grouped-query
// attention, BERT; with and without the projection MLP), the prefix computed from the trained
// MLP weights, saved files and round trip, prefill + decode, errors and a tiny training run.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { loadModel } from '../../../src/models/load.js';
import { PrefixTuningModel, loadPrefixTuning, prefixTuningConfigFromDisk } from '../../../src/tuners/prefix_tuning/index.js';
import { PeftConfigError } from '../../../src/tuners/types.js';
import { fixturePath, maxAbsDiff } from '../../helpers/fixtures.js';
import {
  checkFixtureCase,
  checkOutputs,
  fixtureBatch,
  fixtureConfig,
  markerBatch,
  prefillDecodeMatches,
  repeatedTokenBatch,
  trainAndEval,
  trainableState,
} from '../prompt_learning_support.js';

for (const name of ['gpt2', 'llama', 'bert']) {
  test(`${name}: prefix tuning fixtures (plain, projection) reproduce peft; save is byte-exact; round trip`, async () => {
    const base = await loadModel(fixturePath('models', name));
    const batch = await fixtureBatch(name);
    for (const c of ['prefix_tuning', 'prefix_tuning_projection']) {
      const caseDir = join('adapters', name, c);
      const { model, used } = await checkFixtureCase(base, caseDir, batch, loadPrefixTuning, 'prefix');
      assert.equal(model.projected, false, 'a loaded adapter uses the saved prefix');
      // From the in-memory peft state: the projection MLP recomputes the saved prefix.
      const fresh = PrefixTuningModel.create(base, prefixTuningConfigFromDisk(await fixtureConfig(caseDir)), { seed: 5 });
      assert.equal(fresh.projected, c === 'prefix_tuning_projection');
      fresh.loadTrainableState(await trainableState(caseDir));
      const d = maxAbsDiff((await fresh.promptEmbeddings()).data, used);
      assert.ok(d < 1e-5, `${caseDir}: prefix from trainable_state differs by ${d}`);
      await checkOutputs(fresh, caseDir, batch);
    }
  });
}

test('prefix tuning config follows peft: GQA uses key/value heads, encoder_hidden_size defaults to token_dim', async () => {
  const llama = await loadModel(fixturePath('models', 'llama'));
  const m = PrefixTuningModel.create(llama, { numVirtualTokens: 3 });
  assert.equal(m.config.numAttentionHeads, 2);
  assert.equal(m.config.tokenDim, 32);
  assert.equal(m.config.encoderHiddenSize, 32);
  assert.deepEqual(m.parameters().get('prompt_encoder.default.embedding.weight')!.shape, [3, 2 * 2 * 32]);
  const gpt2 = await loadModel(fixturePath('models', 'gpt2'));
  assert.throws(
    () => PrefixTuningModel.create(gpt2, { numVirtualTokens: 3, tokenDim: 48 }),
    (e: Error) => e instanceof PeftConfigError && /4 heads of 16/.test(e.message),
  );
  assert.throws(
    () => PrefixTuningModel.create(gpt2, { numVirtualTokens: 3, numLayers: 5 }),
    (e: Error) => e instanceof PeftConfigError && /num_layers is 5/.test(e.message),
  );
  await assert.rejects(
    loadPrefixTuning(gpt2, fixturePath('adapters', 'gpt2', 'p_tuning_mlp')),
    (e: Error) => e instanceof PeftConfigError && /loadPTuning/.test(e.message),
  );
  await assert.rejects(
    loadPrefixTuning(gpt2, fixturePath('adapters', 'llama', 'prefix_tuning')),
    (e: Error) => e instanceof PeftConfigError && /token_dim 64/.test(e.message),
  );
  // A BERT loaded as a masked LM (or bare encoder) has no peft task type for prompt learning.
  const bert = await loadModel(fixturePath('models', 'bert'));
  const maskedLm = Object.create(bert, { task: { value: 'masked-lm' } }) as typeof bert;
  assert.throws(
    () => PrefixTuningModel.create(maskedLm, { numVirtualTokens: 3 }),
    (e: Error) => e instanceof PeftConfigError && /BertForSequenceClassification/.test(e.message),
  );
});

test('generation contract: the prefix is the past of the prefill; decode steps extend it (gpt2, llama GQA)', async () => {
  for (const name of ['gpt2', 'llama']) {
    const base = await loadModel(fixturePath('models', name));
    for (const c of ['prefix_tuning', 'prefix_tuning_projection']) {
      const model = await loadPrefixTuning(base, fixturePath('adapters', name, c));
      assert.ok((await prefillDecodeMatches(model, [5, 77, 300, 12, 9, 41])) < 1e-4, `${name}/${c}`);
    }
    const fresh = PrefixTuningModel.create(base, { numVirtualTokens: 4, prefixProjection: true }, { seed: 2 });
    assert.ok((await prefillDecodeMatches(fresh, [5, 77, 300, 12])) < 1e-4, `${name} projection`);
  }
});

test('prefix tuning lowers eval loss on tiny tasks (gpt2 with projection, bert marker classification)', async () => {
  const gpt2 = await loadModel(fixturePath('models', 'gpt2'));
  const lm = PrefixTuningModel.create(gpt2, { numVirtualTokens: 4, prefixProjection: true, encoderHiddenSize: 32 }, { seed: 21 });
  const a = await trainAndEval(lm, repeatedTokenBatch(gpt2, 16, 1), repeatedTokenBatch(gpt2, 16, 2), 25, 0.01);
  assert.ok(a.after < a.before - 0.1, `gpt2 eval loss ${a.before} -> ${a.after}`);
  const bert = await loadModel(fixturePath('models', 'bert'));
  const cls = PrefixTuningModel.create(bert, { numVirtualTokens: 4 }, { seed: 22 });
  const b = await trainAndEval(cls, markerBatch(bert, 32, 3), markerBatch(bert, 32, 4), 120, 0.01);
  assert.ok(b.after < b.before - 0.04 && b.after < Math.LN2 - 0.03, `bert eval loss ${b.before} -> ${b.after}`);
});
