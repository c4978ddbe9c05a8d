// Prompt tuning against peft: every PROMPT_TUNING fixture (logits with the virtual positions,
// loss, the prompt used, TEXT init from the tokenizer, saved files and round trip), the gradient
// trace with AdamW, the additive soft prompt, prefill + decode, and a tiny training run.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { readSafetensors, toFloat32 } from '../../../src/io/safetensors.js';
import { loadModel } from '../../../src/models/load.js';
import { AdamW } from '../../../src/train/adamw.js';
import {
  ADDITIVE_PROMPT_EMBEDDING,
  PromptTuningModel,
  loadPromptTuning,
  promptTuningConfigFromDisk,
} from '../../../src/tuners/prompt_tuning/index.js';
import { AdapterError, PeftConfigError } from '../../../src/tuners/types.js';
import { fixturePath, maxAbsDiff, readTensors } from '../../helpers/fixtures.js';
import {
  AdaptedRunner,
  checkFixtureCase,
  checkOutputs,
  prefillDecodeMatches,
  repeatedTokenBatch,
  fixtureBatch,
  fixtureConfig,
  markerBatch,
  trainAndEval,
  trainableState,
  withTempDir,
} from '../prompt_learning_support.js';

const INIT_TEXT_IDS: Record<string, number[]> = {
  gpt2: [34, 75, 289, 82, 72, 69, 88, 259, 265, 323, 508, 323, 298, 299, 325, 376, 85, 72, 68, 86, 25],
  llama: [557, 34, 75, 289, 82, 72, 69, 88, 259, 265, 323, 508, 323, 298, 299, 325, 376, 85, 72, 68, 86, 25],
  bert: [558, 34, 75, 289, 82, 72, 69, 88, 259, 265, 323, 508, 323, 298, 299, 325, 376, 85, 72, 68, 86, 25, 559],
};

for (const name of ['gpt2', 'llama', 'bert']) {
  test(`${name}: prompt tuning fixtures (RANDOM, TEXT) reproduce peft; save is byte-exact; round trip`, async () => {
    const base = await loadModel(fixturePath('models', name));
    const batch = await fixtureBatch(name);
    for (const c of ['prompt_tuning_random', 'prompt_tuning_text']) {
      const caseDir = join('adapters', name, c);
      const { used } = await checkFixtureCase(base, caseDir, batch, loadPromptTuning);
      // The in-memory state peft trains (trainable_state) gives the same prompt.
      const raw = await fixtureConfig(caseDir);
      const input = promptTuningConfigFromDisk(raw);
      const fresh = await PromptTuningModel.create(
        base,
        { ...input, tokenizerNameOrPath: input.tokenizerNameOrPath && fixturePath(input.tokenizerNameOrPath) },
        { seed: 1 },
      );
      if (c === 'prompt_tuning_text') {
        // TEXT init from the tokenizer reproduces peft's initial prompt exactly (the fixture kept it).
        assert.equal(maxAbsDiff((await fresh.promptEmbeddings()).data, used), 0, `${caseDir}: TEXT init`);
      }
      fresh.loadTrainableState(await trainableState(caseDir));
      assert.equal(maxAbsDiff((await fresh.promptEmbeddings()).data, used), 0, `${caseDir}: trainable_state`);
      await checkOutputs(fresh, caseDir, batch);
    }
  });
}

test('TEXT init tokenizes the init text as peft did (special tokens included)', async () => {
  const { Tokenizer } = await import('../../../src/io/tokenizer.js');
  for (const name of ['gpt2', 'llama', 'bert']) {
    const tok = await Tokenizer.fromDir(fixturePath('models', name));
    assert.deepEqual(tok.encode('Classify the sentiment of this review:'), INIT_TEXT_IDS[name], name);
  }
});

test('gpt2 prompt tuning gradient trace: grads and params after 1 and 3 AdamW steps match torch', async () => {
  const base = await loadModel(fixturePath('models', 'gpt2'));
  const dir = join('grad_traces', 'gpt2_prompt_tuning');
  const model = await loadPromptTuning(base, fixturePath(dir));
  const batch = await fixtureBatch('gpt2');
  const runner = await AdaptedRunner.create(model, { grads: true, training: true });
  const key = model.embeddingName;
  const opt = new AdamW({ lr: 0.01, betas: [0.9, 0.999], eps: 1e-8, weightDecay: 0.01 });
  const losses = [6.373258590698242, 6.364007949829102, 6.355267524719238, 6.347193241119385];
  const close = (a: Float32Array, b: Float32Array, atol: number, rtol: number, what: string) => {
    for (let i = 0; i < a.length; i++) {
      assert.ok(Math.abs(a[i]! - b[i]!) <= atol + rtol * Math.abs(b[i]!), `${what}[${i}]: ${a[i]} vs ${b[i]}`);
    }
  };
  try {
    for (let step = 0; step < 3; step++) {
      const r = await runner.run(batch, true);
      assert.ok(Math.abs(r.loss - losses[step]!) / losses[step]! < 1e-5, `loss ${step}: ${r.loss} vs ${losses[step]}`);
      const want = toFloat32((await readTensors(dir, `grads_step${step}.safetensors`)).get('prompt_embeddings')!);
      close(r.grads.get(key)!, want, 1e-6, 1e-4, `grad step ${step}`);
      opt.step(model.parameters(), r.grads);
      if (step === 0 || step === 2) {
        const file = step === 0 ? 'params_after_1_step.safetensors' : 'params_after_3_steps.safetensors';
        close(model.parameters().get(key)!.data, toFloat32((await readTensors(dir, file)).get('prompt_embeddings')!), 1e-6, 1e-5, file);
      }
      if (step === 0) {
        const st = await readTensors(dir, 'adamw_state_after_1_step.safetensors');
        close(opt.state.expAvg.get(key)!, toFloat32(st.get('prompt_embeddings.exp_avg')!), 1e-9, 1e-4, 'exp_avg');
        close(opt.state.expAvgSq.get(key)!, toFloat32(st.get('prompt_embeddings.exp_avg_sq')!), 1e-12, 1e-3, 'exp_avg_sq');
      }
    }
    const last = await runner.run(batch);
    assert.ok(Math.abs(last.loss - losses[3]!) / losses[3]! < 1e-5, `loss 3: ${last.loss}`);
  } finally {
    await runner.dispose();
  }
});

test('generation contract: prefill prepends the virtual tokens once, decode steps with past do not', async () => {
  const base = await loadModel(fixturePath('models', 'llama'));
  const model = await loadPromptTuning(base, fixturePath('adapters', 'llama', 'prompt_tuning_random'));
  assert.ok((await prefillDecodeMatches(model, [5, 77, 300, 12, 9, 41])) < 1e-4);
});

test('additive soft prompt: starts as the base model, trains, saves under its own flag and tensor, reloads', async () => {
  const base = await loadModel(fixturePath('models', 'gpt2'));
  const model = await PromptTuningModel.create(base, { promptCombination: 'ADD' });
  assert.equal(model.numVirtualTokens, 0);
  assert.deepEqual(model.parameters().get(model.embeddingName)!.shape, [1, 64]);
  const batch = await fixtureBatch('gpt2');
  const expectedBase = await readTensors('models', 'gpt2', 'expected_outputs.safetensors');
  const runner = await AdaptedRunner.create(model);
  const r0 = await runner.run(batch);
  await runner.dispose();
  assert.ok(maxAbsDiff(r0.logits.data as Float32Array, toFloat32(expectedBase.get('logits')!)) < 1e-4, 'p = 0 is the base model');
  const { before, after } = await trainAndEval(model, repeatedTokenBatch(base, 16, 1), repeatedTokenBatch(base, 16, 2), 20, 0.05);
  assert.ok(after < before - 0.2, `additive prompt eval loss ${before} -> ${after}`);
  assert.ok((await prefillDecodeMatches(model, [5, 77, 300, 12])) < 1e-4, 'additive prompt applies at every step');
  await withTempDir(async (dir) => {
    await model.savePretrained(dir);
    const cfg = JSON.parse(await readFile(join(dir, 'adapter_config.json'), 'utf8'));
    assert.equal(cfg.prompt_tuning_combination, 'ADD');
    assert.equal(cfg.peft_type, 'PROMPT_TUNING');
    assert.equal(cfg.num_virtual_tokens, 1);
    const tensors = await readSafetensors(join(dir, 'adapter_model.safetensors'));
    assert.deepEqual([...tensors.keys()], [ADDITIVE_PROMPT_EMBEDDING]);
    const again = await loadPromptTuning(base, dir);
    const a = await AdaptedRunner.create(model);
    const b = await AdaptedRunner.create(again);
    assert.equal(maxAbsDiff((await a.run(batch)).logits.data as Float32Array, (await b.run(batch)).logits.data as Float32Array), 0);
    await a.dispose();
    await b.dispose();
  });
});

test('SAMPLE_VOCAB init copies seeded rows of the embedding matrix', async () => {
  const base = await loadModel(fixturePath('models', 'gpt2'));
  const a = await PromptTuningModel.create(base, { numVirtualTokens: 4, promptTuningInit: 'SAMPLE_VOCAB' }, { seed: 3 });
  const b = await PromptTuningModel.create(base, { numVirtualTokens: 4, promptTuningInit: 'SAMPLE_VOCAB' }, { seed: 3 });
  const pa = a.parameters().get(a.embeddingName)!.data;
  assert.equal(maxAbsDiff(pa, b.parameters().get(b.embeddingName)!.data), 0);
  const table = base.weights.get('transformer.wte.weight').data;
  for (let r = 0; r < 4; r++) {
    const row = pa.subarray(r * 64, (r + 1) * 64);
    let found = false;
    for (let v = 0; v < base.vocabSize && !found; v++) found = maxAbsDiff(row, table.subarray(v * 64, (v + 1) * 64)) === 0;
    assert.ok(found, `row ${r} is a vocabulary embedding`);
  }
});

test('prompt tuning config errors are typed and say what to do', async () => {
  const base = await loadModel(fixturePath('models', 'gpt2'));
  await assert.rejects(
    PromptTuningModel.create(base, {}),
    (e: Error) => e instanceof PeftConfigError && /num_virtual_tokens is required/.test(e.message),
  );
  await assert.rejects(
    PromptTuningModel.create(base, { numVirtualTokens: 3, promptTuningInit: 'TEXT', promptTuningInitText: 'hi' }),
    (e: Error) => e instanceof PeftConfigError && /tokenizer_name_or_path/.test(e.message),
  );
  await assert.rejects(
    PromptTuningModel.create(base, { numVirtualTokens: 3, tokenDim: 32 }),
    (e: Error) => e instanceof PeftConfigError && /token_dim is 32/.test(e.message),
  );
  await assert.rejects(
    PromptTuningModel.create(base, { numVirtualTokens: 3, taskType: 'SEQ_CLS' }),
    (e: Error) => e instanceof PeftConfigError && /use task_type CAUSAL_LM/.test(e.message),
  );
  await assert.rejects(
    PromptTuningModel.create(base, { numVirtualTokens: 3, promptCombination: 'ADD' }),
    (e: Error) => e instanceof PeftConfigError && /must be 1/.test(e.message),
  );
  await assert.rejects(
    loadPromptTuning(base, fixturePath('adapters', 'gpt2', 'prefix_tuning')),
    (e: Error) => e instanceof PeftConfigError && /loadPrefixTuning/.test(e.message),
  );
  const model = await PromptTuningModel.create(base, { numVirtualTokens: 5 });
  assert.throws(
    () => model.loadTrainableState(new Map([['prompt_encoder.default.embedding.weight', { shape: [4, 64], data: new Float32Array(256) }]])),
    AdapterError,
  );
});

test('prompt tuning lowers eval loss on tiny tasks (gpt2 repeated token, bert marker classification)', async () => {
  const gpt2 = await loadModel(fixturePath('models', 'gpt2'));
  const lm = await PromptTuningModel.create(gpt2, { numVirtualTokens: 4 }, { seed: 11 });
  const a = await trainAndEval(lm, repeatedTokenBatch(gpt2, 16, 1), repeatedTokenBatch(gpt2, 16, 2), 25, 0.1);
  assert.ok(a.after < a.before - 0.1, `gpt2 eval loss ${a.before} -> ${a.after}`);
  const bert = await loadModel(fixturePath('models', 'bert'));
  const cls = await PromptTuningModel.create(bert, { numVirtualTokens: 4 }, { seed: 12 });
  const b = await trainAndEval(cls, markerBatch(bert, 32, 3), markerBatch(bert, 32, 4), 120, 0.1);
  // below ln 2: the classifier does better than the class prior on fresh rows
  assert.ok(b.after < b.before - 0.04 && b.after < Math.LN2 - 0.03, `bert eval loss ${b.before} -> ${b.after}`);
});
