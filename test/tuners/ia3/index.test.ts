// IA3 against peft 0.13.2: every fixture case reproduces peft's logits, loss and merged logits;
// saved folders are peft's byte for byte and round-trip; the additive variant and the typed
// errors behave as documented; training lowers the eval loss.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { loadModel } from '../../../src/models/load.js';
import { readSafetensors, toFloat32 } from '../../../src/io/safetensors.js';
import { IA3Model, loadIA3 } from '../../../src/tuners/ia3/index.js';
import { PeftConfigError, AdapterError } from '../../../src/tuners/types.js';
import { fixtureBatch, fixturePath, inTempDir, maxAbsDiff, readTensors } from '../../helpers/fixtures.js';
import { Trainer } from '../../../src/train/trainer.js';
import { createAdapter, loadAdapter } from '../../../src/tuners/load.js';
import { classificationBatches, countingExamples, runAdapted, runBase, trainAndEval } from '../adapted_run.js';

function relDiff(a: number, b: number): number {
  return Math.abs(a - b) / Math.abs(b);
}

function withTmp<T>(fn: (dir: string) => Promise<T>): Promise<T> {
  return inTempDir('ia3-', fn);
}

for (const name of ['gpt2', 'llama', 'bert']) {
  const caseDir = fixturePath('adapters', name, 'ia3');

  test(`${name}/ia3: logits, loss and merged logits match peft`, async () => {
    const base = await loadModel(fixturePath('models', name));
    const batch = await fixtureBatch(name);
    const expected = await readTensors('adapters', name, 'ia3', 'expected_outputs.safetensors');
    const ia3 = await loadIA3(base, caseDir);
    const r = await runAdapted(ia3, batch);
    const logitsDiff = maxAbsDiff(r.logits!.data as Float32Array, toFloat32(expected.get('logits')!));
    assert.ok(logitsDiff < 1e-4, `logits max abs diff ${logitsDiff}`);
    const wantLoss = toFloat32(expected.get('loss')!)[0]!;
    assert.ok(relDiff(r.loss!.data[0] as number, wantLoss) < 1e-5, `loss ${r.loss!.data[0]} vs ${wantLoss}`);

    // merge(): the hooks go away and the folded weights give the same logits.
    const before = new Map(ia3.targets.map((t) => [t.spec.name, Float32Array.from(base.weights.get(`${t.spec.name}.weight`).data)]));
    ia3.merge();
    const rm1 = await runAdapted(ia3, batch);
    assert.ok(maxAbsDiff(rm1.logits!.data as Float32Array, r.logits!.data as Float32Array) < 1e-5);
    ia3.unmerge();
    for (const [m, w] of before) assert.ok(maxAbsDiff(base.weights.get(`${m}.weight`).data, w) < 1e-6, `unmerge restores ${m}`);

    const merged = ia3.mergeAndUnload();
    const rm2 = await runBase(merged, batch);
    const mergedDiff = maxAbsDiff(rm2.logits!.data as Float32Array, toFloat32(expected.get('merged_logits')!));
    assert.ok(mergedDiff < 1e-5, `merged logits max abs diff ${mergedDiff}`);
    assert.throws(() => ia3.parameters() && ia3.forward(null as never, null as never), AdapterError);
  });

  test(`${name}/ia3: saved folder is peft's layout and round-trips`, async () => {
    const base = await loadModel(fixturePath('models', name));
    const batch = await fixtureBatch(name);
    const ia3 = await loadIA3(base, caseDir);
    const r1 = await runAdapted(ia3, batch);
    await withTmp(async (dir) => {
      await ia3.savePretrained(dir);
      // adapter_config.json byte for byte, tensors with the same names, shapes and values
      assert.equal(await readFile(join(dir, 'adapter_config.json'), 'utf8'), await readFile(join(caseDir, 'adapter_config.json'), 'utf8'));
      const mine = await readSafetensors(join(dir, 'adapter_model.safetensors'));
      const theirs = await readSafetensors(join(caseDir, 'adapter_model.safetensors'));
      assert.deepEqual([...mine.keys()].sort(), [...theirs.keys()].sort());
      for (const [k, t] of theirs) {
        assert.deepEqual(mine.get(k)!.shape, t.shape, k);
        assert.deepEqual(toFloat32(mine.get(k)!), toFloat32(t), k);
      }
      const bytesMine = await readFile(join(dir, 'adapter_model.safetensors'));
      const bytesTheirs = await readFile(join(caseDir, 'adapter_model.safetensors'));
      assert.ok(bytesMine.equals(bytesTheirs), 'adapter_model.safetensors bytes');
      const again = await loadIA3(await loadModel(fixturePath('models', name)), dir);
      const r2 = await runAdapted(again, batch);
      assert.deepEqual(r2.logits!.data, r1.logits!.data);
      assert.equal(r2.loss!.data[0], r1.loss!.data[0]);
    });
  });

  test(`${name}/ia3: a new adapter has peft's default config and starts at the base model`, async () => {
    const base = await loadModel(fixturePath('models', name));
    const batch = await fixtureBatch(name);
    const fixture = JSON.parse(await readFile(join(caseDir, 'adapter_config.json'), 'utf8')) as Record<string, unknown>;
    const ia3 = IA3Model.create(base, { baseModelNameOrPath: `models/${name}` });
    await withTmp(async (dir) => {
      await ia3.savePretrained(dir);
      const mine = JSON.parse(await readFile(join(dir, 'adapter_config.json'), 'utf8')) as Record<string, unknown>;
      assert.deepEqual(Object.keys(mine).sort(), Object.keys(fixture).sort());
      for (const k of Object.keys(fixture)) {
        const a = mine[k];
        const b = fixture[k];
        // peft holds module lists as Python sets: their saved order is not meaningful
        if (Array.isArray(a) && Array.isArray(b)) assert.deepEqual([...a].sort(), [...b].sort(), k);
        else assert.deepEqual(a, b, k);
      }
      const keys = [...(await readSafetensors(join(dir, 'adapter_model.safetensors'))).keys()].sort();
      const want = [...(await readSafetensors(join(caseDir, 'adapter_model.safetensors'))).keys()].sort();
      assert.deepEqual(keys, want);
    });
    for (const t of ia3.targets) assert.ok(ia3.vector(t.spec.name).data.every((x) => x === 1));
    const r = await runAdapted(ia3, batch);
    const b = await runBase(base, batch);
    assert.ok(maxAbsDiff(r.logits!.data as Float32Array, b.logits!.data as Float32Array) === 0, 'ones reproduce the base model');
  });
}

test('ia3: additive variant starts at the base model, merges into the bias, saves its own key', async () => {
  const base = await loadModel(fixturePath('models', 'gpt2'));
  const batch = await fixtureBatch('gpt2');
  const ia3 = IA3Model.create(base, { variant: 'additive' });
  const b = await runBase(base, batch);
  const r0 = await runAdapted(ia3, batch);
  assert.equal(maxAbsDiff(r0.logits!.data as Float32Array, b.logits!.data as Float32Array), 0);
  // random vectors: logits change; merge folds them into the biases exactly enough
  let s = 1;
  for (const t of ia3.targets)
    for (let i = 0; i < ia3.vector(t.spec.name).data.length; i++) ia3.vector(t.spec.name).data[i] = Math.sin(s++) * 0.3;
  const r1 = await runAdapted(ia3, batch);
  assert.ok(maxAbsDiff(r1.logits!.data as Float32Array, b.logits!.data as Float32Array) > 1e-3);
  ia3.merge();
  const rm = await runBase(base, batch);
  assert.ok(maxAbsDiff(rm.logits!.data as Float32Array, r1.logits!.data as Float32Array) < 1e-5);
  ia3.unmerge();
  const ru = await runBase(base, batch);
  assert.ok(maxAbsDiff(ru.logits!.data as Float32Array, b.logits!.data as Float32Array) < 1e-5);
  await withTmp(async (dir) => {
    await ia3.savePretrained(dir);
    const cfg = JSON.parse(await readFile(join(dir, 'adapter_config.json'), 'utf8'));
    assert.equal(cfg.ia3_variant, 'additive');
    assert.equal(cfg.peft_type, 'IA3');
    const keys = [...(await readSafetensors(join(dir, 'adapter_model.safetensors'))).keys()].sort();
    assert.deepEqual(keys, [
      'base_model.model.transformer.h.0.attn.c_attn.ia3_m',
      'base_model.model.transformer.h.0.mlp.c_proj.ia3_m',
      'base_model.model.transformer.h.1.attn.c_attn.ia3_m',
      'base_model.model.transformer.h.1.mlp.c_proj.ia3_m',
    ]);
    const again = await loadIA3(await loadModel(fixturePath('models', 'gpt2')), dir);
    assert.equal(again.config.variant, 'additive');
    const r2 = await runAdapted(again, batch);
    assert.deepEqual(r2.logits!.data, r1.logits!.data);
  });
});

test('ia3: typed errors for targets that match nothing, non-linear targets and bad subsets', async () => {
  const base = await loadModel(fixturePath('models', 'llama'));
  assert.throws(
    () => IA3Model.create(base, { targetModules: ['qkv'], feedforwardModules: [] }),
    (e: Error) =>
      e instanceof PeftConfigError && /match no module/.test(e.message) && /model\.layers\.0\.self_attn\.q_proj/.test(e.message),
  );
  assert.throws(
    () => IA3Model.create(base, { targetModules: ['input_layernorm'], feedforwardModules: [] }),
    (e: Error) => e instanceof PeftConfigError && /not linear/.test(e.message),
  );
  assert.throws(
    () => IA3Model.create(base, { targetModules: ['k_proj'], feedforwardModules: ['down_proj'] }),
    (e: Error) => e instanceof PeftConfigError && /subset/.test(e.message),
  );
  await withTmp(async (dir) => {
    await assert.rejects(loadIA3(base, dir), AdapterError);
  });
});

test('ia3: training lowers the eval loss (gpt2 with src/train Trainer, bert classification)', async () => {
  const gpt2 = await loadModel(fixturePath('models', 'gpt2'));
  const lm = IA3Model.create(gpt2);
  await withTmp(async (dir) => {
    const r = await new Trainer(lm, countingExamples(1, 32, 12, 100, 40), countingExamples(99, 8, 12, 100, 40), {
      outputDir: dir,
      padTokenId: 0,
      learningRate: 0.05,
      schedule: 'constant',
      maxSteps: 40,
      batchSize: 8,
      runtime: { threads: 1 },
    }).train();
    assert.ok(r.finalEvalLoss! < r.initialEvalLoss! - 0.05, `gpt2 eval loss ${r.initialEvalLoss} -> ${r.finalEvalLoss}`);
  });
  // the trained vectors save and reload through the registry (peft_type dispatch)
  await withTmp(async (dir) => {
    await lm.savePretrained(dir);
    const again = await loadAdapter(await loadModel(fixturePath('models', 'gpt2')), dir);
    assert.ok(again instanceof IA3Model);
    assert.deepEqual([...again.parameters().keys()], [...lm.parameters().keys()]);
    for (const [k, t] of lm.parameters()) assert.deepEqual(again.parameters().get(k)!.data, t.data);
  });

  // sequence classification trains the vectors and the classifier (modules_to_save)
  const bert = await loadModel(fixturePath('models', 'bert'));
  const cls = IA3Model.create(bert);
  assert.deepEqual([...cls.trainableBaseWeights()].sort(), ['classifier.bias', 'classifier.weight']);
  const ctrain = classificationBatches(3, 4, 16, 8, 50, 200);
  const [ceval] = classificationBatches(77, 1, 16, 8, 50, 200);
  const c = await trainAndEval(cls, ctrain, ceval!, 30, 0.02);
  assert.ok(c.after < c.before - 0.05, `bert eval loss ${c.before} -> ${c.after}`);
});

test('ia3: the registry creates and loads IA3 from adapter_config.json fields', async () => {
  const base = await loadModel(fixturePath('models', 'llama'));
  const m = await createAdapter(base, { peft_type: 'IA3', target_modules: ['q_proj', 'down_proj'], feedforward_modules: ['down_proj'] });
  assert.ok(m instanceof IA3Model);
  assert.deepEqual(
    m.targets.map((t) => `${t.spec.name}:${t.feedforward ? 'in' : 'out'}`),
    [
      'model.layers.0.self_attn.q_proj:out',
      'model.layers.0.mlp.down_proj:in',
      'model.layers.1.self_attn.q_proj:out',
      'model.layers.1.mlp.down_proj:in',
    ],
  );
  await assert.rejects(createAdapter(base, { peft_type: 'IA3', target_modulez: ['q_proj'] }), PeftConfigError);
  // "all-linear": every linear module but the LM head, expanded into the saved list as peft does
  const all = (await createAdapter(base, { peft_type: 'IA3', target_modules: 'all-linear' })) as IA3Model;
  assert.deepEqual(all.config.targetModules, ['q_proj', 'k_proj', 'v_proj', 'o_proj', 'gate_proj', 'up_proj', 'down_proj']);
  assert.equal(all.targets.length, 14);
  assert.deepEqual(
    all.targets.filter((t) => t.feedforward).map((t) => t.spec.name),
    ['model.layers.0.mlp.down_proj', 'model.layers.1.mlp.down_proj'],
  );
  const loaded = await loadAdapter(base, fixturePath('adapters', 'llama', 'ia3'));
  assert.ok(loaded instanceof IA3Model && loaded.config.inferenceMode);
});
