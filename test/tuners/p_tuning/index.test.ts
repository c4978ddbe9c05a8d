// P-tuning against peft: every P_TUNING fixture (MLP and LSTM encoders on GPT-2, Llama, BERT):
// logits with the virtual positions, loss, the prompt used, the prompt recomputed from the encoder
// weights in trainable_state, saved files and round trip, prefill + decode, a tiny training run.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { loadModel } from '../../../src/models/load.js';
import { PTuningModel, encoderShapes, loadPTuning, promptEncoderConfigFromDisk } from '../../../src/tuners/p_tuning/index.js';
import { PeftConfigError } from '../../../src/tuners/types.js';
import { AdamW } from '../../../src/train/adamw.js';
import type { Batch } from '../../../src/train/batches.js';
import { Rng } from '../../../src/train/rng.js';
import { EvalStep, TrainStep } from '../../../src/train/step.js';
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
  test(`${name}: P-tuning fixtures (MLP, LSTM) reproduce peft; encoders recompute the prompt; save is byte-exact`, async () => {
    const base = await loadModel(fixturePath('models', name));
    const batch = await fixtureBatch(name);
    for (const c of ['p_tuning_mlp', 'p_tuning_lstm']) {
      const caseDir = join('adapters', name, c);
      const { used } = await checkFixtureCase(base, caseDir, batch, loadPTuning);
      // The encoder (MLP, or the LSTM unrolled in the graph) on peft's trained weights gives the saved prompt.
      const fresh = PTuningModel.create(base, promptEncoderConfigFromDisk(await fixtureConfig(caseDir)), { seed: 9 });
      const state = await trainableState(caseDir);
      const mine = [...fresh.parameters().keys()].sort();
      assert.deepEqual(mine, [...state.keys()].sort(), `${caseDir}: in-memory tensor names`);
      fresh.loadTrainableState(state);
      const d = maxAbsDiff((await fresh.promptEmbeddings()).data, used);
      assert.ok(d < 1e-5, `${caseDir}: encoder output differs from prompt_embeddings_used by ${d}`);
      await checkOutputs(fresh, caseDir, batch);
    }
  });
}

test('P-tuning encoder layouts follow peft 0.13.2 (MLP ignores encoder_num_layers; LSTM is bidirectional)', async () => {
  const gpt2 = await loadModel(fixturePath('models', 'gpt2'));
  const mlp = PTuningModel.create(gpt2, { numVirtualTokens: 3, encoderNumLayers: 4 }).config;
  assert.equal(mlp.encoderHiddenSize, 64, 'encoder_hidden_size defaults to token_dim');
  assert.deepEqual(
    [...encoderShapes(mlp).keys()],
    ['mlp_head.0.weight', 'mlp_head.0.bias', 'mlp_head.2.weight', 'mlp_head.2.bias', 'mlp_head.4.weight', 'mlp_head.4.bias'],
  );
  const lstm = PTuningModel.create(gpt2, {
    numVirtualTokens: 3,
    encoderReparameterizationType: 'LSTM',
    encoderHiddenSize: 8,
    encoderNumLayers: 3,
  });
  const shapes = encoderShapes(lstm.config);
  assert.deepEqual(shapes.get('lstm_head.weight_ih_l0'), [32, 64]);
  assert.deepEqual(shapes.get('lstm_head.weight_ih_l2_reverse'), [32, 16]);
  assert.deepEqual(shapes.get('mlp_head.2.weight'), [64, 16]);
  assert.throws(() => PTuningModel.create(gpt2, { numVirtualTokens: 3, encoderDropout: 1.5 }), PeftConfigError);
  assert.throws(
    () => PTuningModel.create(gpt2, { numVirtualTokens: 3, encoderReparameterizationType: 'GRU' as never }),
    (e: Error) => e instanceof PeftConfigError && /MLP or LSTM/.test(e.message),
  );
  await assert.rejects(
    loadPTuning(gpt2, fixturePath('adapters', 'gpt2', 'prompt_tuning_text')),
    (e: Error) => e instanceof PeftConfigError && /loadPromptTuning/.test(e.message),
  );
});

test('generation contract: P-tuning prefill prepends the encoded prompt once (gpt2 LSTM encoder, llama loaded)', async () => {
  const gpt2 = await loadModel(fixturePath('models', 'gpt2'));
  const fresh = PTuningModel.create(
    gpt2,
    { numVirtualTokens: 4, encoderReparameterizationType: 'LSTM', encoderHiddenSize: 16 },
    { seed: 4 },
  );
  assert.ok((await prefillDecodeMatches(fresh, [5, 77, 300, 12, 9])) < 1e-4);
  const llama = await loadModel(fixturePath('models', 'llama'));
  assert.ok(
    (await prefillDecodeMatches(await loadPTuning(llama, fixturePath('adapters', 'llama', 'p_tuning_mlp')), [5, 77, 300, 12, 9])) < 1e-4,
  );
});

test('P-tuning lowers eval loss on tiny tasks (gpt2 LSTM encoder with dropout through the train step, bert MLP encoder)', async () => {
  const gpt2 = await loadModel(fixturePath('models', 'gpt2'));
  const lm = PTuningModel.create(
    gpt2,
    { numVirtualTokens: 4, encoderReparameterizationType: 'LSTM', encoderHiddenSize: 16, encoderDropout: 0.1 },
    { seed: 31 },
  );
  const toStep = (b: ReturnType<typeof repeatedTokenBatch>): Batch => ({
    size: b.input_ids.shape[0]!,
    seq: b.input_ids.shape[1]!,
    inputIds: b.input_ids.data as BigInt64Array,
    attentionMask: b.attention_mask.data as BigInt64Array,
    labels: b.labels.data as BigInt64Array,
    tokens: b.input_ids.data.length,
  });
  const train = toStep(repeatedTokenBatch(gpt2, 16, 1));
  const evalBatch = toStep(repeatedTokenBatch(gpt2, 16, 2));
  const step = await TrainStep.compile(lm, { threads: 1 });
  const evaluate = await EvalStep.compile(lm, { threads: 1 });
  assert.deepEqual(step.dropoutRatios, [0.1], 'one mask between the two LSTM layers');
  const before = (await evaluate.run(evalBatch, lm.parameters())).loss;
  const opt = new AdamW({ lr: 0.01, weightDecay: 0 });
  const rng = Rng.fromSeed(7);
  for (let s = 0; s < 25; s++)
    opt.step(lm.parameters(), (await step.run(train, lm.parameters(), { rng })).grads, { decay: lm.decayParameters() });
  const after = (await evaluate.run(evalBatch, lm.parameters())).loss;
  await step.dispose();
  await evaluate.dispose();
  assert.ok(after < before - 0.1, `gpt2 eval loss ${before} -> ${after}`);
  const bert = await loadModel(fixturePath('models', 'bert'));
  const cls = PTuningModel.create(bert, { numVirtualTokens: 4, encoderHiddenSize: 32 }, { seed: 32 });
  const b = await trainAndEval(cls, markerBatch(bert, 32, 3), markerBatch(bert, 32, 4), 120, 0.1);
  assert.ok(b.after < b.before - 0.04 && b.after < Math.LN2 - 0.02, `bert eval loss ${b.before} -> ${b.after}`);
});
