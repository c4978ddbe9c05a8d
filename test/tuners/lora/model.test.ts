// LoRA's model API as peft defines it: target_modules matching (names, '.'-suffixes, regex full
// match, layer filters, defaults), rank/alpha patterns and rsLoRA scaling, several named adapters
// (set, disable, delete, save in sub-folders), printTrainableParameters' line, merged models saved
// as Hugging Face folders, Python-style JSON, and the typed errors users can run into.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { cp, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { readSafetensors, toFloat32 } from '../../../src/io/safetensors.js';
import { loadModel } from '../../../src/models/load.js';
import { PeftModel, createAdapter, getPeftModel } from '../../../src/tuners/load.js';
import { LoraModel, TargetModulesNotFoundError, UnsupportedLoraFeatureError, saveModelPretrained } from '../../../src/tuners/lora/index.js';
import { pythonFloatRepr as pythonFloat, pythonJsonDumps } from '../../../src/io/pyjson.js';
import { AdapterError, AdapterMismatchError, PeftConfigError, UnknownPeftTypeError } from '../../../src/tuners/types.js';
import { fixturePath, readTensors } from '../../helpers/fixtures.js';
import { assertClose, fixtureBatch, forwardOnce, withTmp } from '../lora_support.js';

const modules = (lm: LoraModel, name = 'default') => [...lm.adapter(name).modules.keys()];

test('Python float and JSON spelling', () => {
  assert.deepEqual([0, 0.05, 1e-5, 1e-4, 123.5, 1e16, 2.5e-7, -3, 0.1 + 0.2].map(pythonFloat), [
    '0.0',
    '0.05',
    '1e-05',
    '0.0001',
    '123.5',
    '1e+16',
    '2.5e-07',
    '-3.0',
    '0.30000000000000004',
  ]);
  assert.equal(
    pythonJsonDumps({ b: [], a: { y: 1, x: 'é' }, c: [1, 'z'] }),
    '{\n  "a": {\n    "x": "\\u00e9",\n    "y": 1\n  },\n  "b": [],\n  "c": [\n    1,\n    "z"\n  ]\n}',
  );
});

test('target_modules: exact names, suffixes, regex full match, layer filters and defaults', async () => {
  const gpt2 = await loadModel(fixturePath('models', 'gpt2'));
  const llama = await loadModel(fixturePath('models', 'llama'));
  const bert = await loadModel(fixturePath('models', 'bert'));
  assert.deepEqual(modules(await getPeftModel(gpt2, { targetModules: ['transformer.h.0.attn.c_attn'] })), ['transformer.h.0.attn.c_attn']);
  assert.deepEqual(modules(await getPeftModel(gpt2, { targetModules: ['c_proj'] })).sort(), [
    'transformer.h.0.attn.c_proj',
    'transformer.h.0.mlp.c_proj',
    'transformer.h.1.attn.c_proj',
    'transformer.h.1.mlp.c_proj',
  ]);
  assert.deepEqual(modules(await getPeftModel(gpt2, { targetModules: '.*\\.h\\.1\\..*c_fc' })), ['transformer.h.1.mlp.c_fc']);
  // A regex string must match the whole name: "c_fc" alone matches nothing.
  await assert.rejects(getPeftModel(gpt2, { targetModules: 'c_fc' }), TargetModulesNotFoundError);
  assert.deepEqual(modules(await getPeftModel(llama, { targetModules: ['q_proj'], layersToTransform: [1] })), [
    'model.layers.1.self_attn.q_proj',
  ]);
  assert.deepEqual(modules(await getPeftModel(llama, { targetModules: ['q_proj'], layersToTransform: 0, layersPattern: 'layers' })), [
    'model.layers.0.self_attn.q_proj',
  ]);
  await assert.rejects(
    getPeftModel(llama, { targetModules: ['q_proj'], layersToTransform: [0], layersPattern: 'h' }),
    TargetModulesNotFoundError,
  );
  await assert.rejects(getPeftModel(llama, { targetModules: 'q_proj', layersToTransform: [0] }), PeftConfigError);
  // Defaults per model type (peft's constants table).
  assert.deepEqual(modules(await getPeftModel(gpt2, {})).length, 2);
  assert.deepEqual(new Set(modules(await getPeftModel(llama, {})).map((n) => n.split('.').pop())), new Set(['q_proj', 'v_proj']));
  assert.deepEqual(new Set(modules(await getPeftModel(bert, {})).map((n) => n.split('.').pop())), new Set(['query', 'value']));
  // all-linear leaves the LM head out.
  assert.ok(!modules(await getPeftModel(llama, { targetModules: 'all-linear' })).includes('lm_head'));
  const err = await getPeftModel(gpt2, { targetModules: ['q_proj'] }).catch((e: unknown) => e);
  assert.ok(err instanceof TargetModulesNotFoundError);
  assert.ok(err.available.includes('transformer.h.0.attn.c_attn'));
  assert.match(err.message, /c_attn, c_proj, c_fc, lm_head/);
  await assert.rejects(
    getPeftModel(gpt2, { targetModules: ['ln_1'] }),
    (e: unknown) => e instanceof PeftConfigError && /not a linear layer/.test((e as Error).message),
  );
});

test('rank_pattern, alpha_pattern and rsLoRA set rank and scaling per module', async () => {
  const gpt2 = await loadModel(fixturePath('models', 'gpt2'));
  const lm = await getPeftModel(gpt2, {
    r: 4,
    loraAlpha: 8,
    targetModules: ['c_attn'],
    rankPattern: { 'h.1.attn.c_attn': 2 },
    alphaPattern: { 'h.0.attn.c_attn': 32 },
  });
  const m0 = lm.adapter('default').modules.get('transformer.h.0.attn.c_attn')!;
  const m1 = lm.adapter('default').modules.get('transformer.h.1.attn.c_attn')!;
  assert.deepEqual([m0.r, m0.alpha, m0.scaling, m1.r, m1.alpha, m1.scaling], [4, 32, 8, 2, 8, 4]);
  assert.deepEqual(m1.A.shape, [2, 64]);
  const rs = await getPeftModel(gpt2, { r: 16, loraAlpha: 8, useRslora: true });
  assert.equal(rs.adapter('default').modules.get('transformer.h.0.attn.c_attn')!.scaling, 2);
});

test('named adapters: set, combine, disable, delete, and save in sub-folders', async () => {
  const base = await loadModel(fixturePath('models', 'gpt2'));
  const batch = await fixtureBatch('gpt2');
  const expect = async (...p: string[]) => toFloat32((await readTensors(...p, 'expected_outputs.safetensors')).get('logits')!);
  const lm = (await PeftModel.fromPretrained(base, fixturePath('adapters', 'gpt2', 'lora_attn'))) as LoraModel;
  await lm.loadAdapter(fixturePath('adapters', 'gpt2', 'lora_dora'), 'dora');
  assert.deepEqual(lm.activeAdapters, ['default']);
  assertClose((await forwardOnce(lm, batch)).logits, await expect('adapters', 'gpt2', 'lora_attn'), 1e-4, 0, 'default');
  lm.setAdapter('dora');
  assertClose((await forwardOnce(lm, batch)).logits, await expect('adapters', 'gpt2', 'lora_dora'), 1e-4, 0, 'dora');
  lm.disableAdapter();
  assert.equal(lm.parameters().size, 0);
  assertClose((await forwardOnce(lm, batch)).logits, await expect('models', 'gpt2'), 1e-4, 0, 'disabled = base');
  lm.enableAdapters();
  lm.setAdapter(['default', 'dora']);
  const both = (await forwardOnce(lm, batch)).logits;
  assert.ok(Math.abs(both[0]! - (await expect('adapters', 'gpt2', 'lora_dora'))[0]!) > 1e-6, 'two active adapters add up');
  await withTmp(async (dir) => {
    await lm.savePretrained(dir);
    assert.ok(existsSync(join(dir, 'adapter_config.json')) && existsSync(join(dir, 'dora', 'adapter_model.safetensors')));
    const again = await LoraModel.fromPretrained(await loadModel(fixturePath('models', 'gpt2')), join(dir, 'dora'), {
      adapterName: 'dora',
    });
    assertClose(
      (await forwardOnce(again, batch)).logits,
      await expect('adapters', 'gpt2', 'lora_dora'),
      1e-4,
      0,
      'dora reloaded from its sub-folder',
    );
  });
  lm.setAdapter('default');
  lm.deleteAdapter('default');
  assert.deepEqual(lm.adapterNames, ['dora']);
  assert.deepEqual(lm.activeAdapters, ['dora']);
  await assert.rejects(lm.loadAdapter(fixturePath('adapters', 'gpt2', 'lora_attn'), 'dora'), PeftConfigError);
  await assert.rejects(lm.loadAdapter(fixturePath('adapters', 'gpt2', 'ia3'), 'ia3'), AdapterError);
});

test("printTrainableParameters prints peft's line", async () => {
  const gpt2 = await loadModel(fixturePath('models', 'gpt2'));
  const base = gpt2.weights.numel();
  const lm = await getPeftModel(gpt2, { r: 8, targetModules: ['c_attn'] });
  // 2 layers x (A 8x64 + B 192x8)
  const all = base + 4096;
  assert.equal(
    lm.printTrainableParameters(() => undefined),
    `trainable params: 4,096 || all params: ${all.toLocaleString('en-US')} || trainable%: ${((100 * 4096) / all).toFixed(4)}`,
  );
  const bert = await loadModel(fixturePath('models', 'bert'));
  const cls = await getPeftModel(bert, { r: 4, taskType: 'SEQ_CLS' });
  // query/value in 2 layers (A 4x64 + B 64x4) plus the classifier copy (2x64 + 2), counted again in all params
  const n = 4 * 512 + 130;
  assert.deepEqual(cls.numParameters(), { trainable: n, all: bert.weights.numel() + n });
  const loaded = await LoraModel.fromPretrained(gpt2, fixturePath('adapters', 'gpt2', 'lora_attn'));
  assert.equal(loaded.numParameters().trainable, 0, 'loaded for inference');
});

test('merge_and_unload saves a Hugging Face model folder that loads back with identical logits', async () => {
  await withTmp(async (dir) => {
    const base = await loadModel(fixturePath('models', 'gpt2'));
    const lm = await LoraModel.fromPretrained(base, fixturePath('adapters', 'gpt2', 'lora_attn'));
    const merged = await lm.mergeAndUnload();
    await saveModelPretrained(merged, dir);
    const names = [...(await readSafetensors(join(dir, 'model.safetensors'))).keys()].sort();
    const want = [...(await readSafetensors(fixturePath('adapters', 'gpt2', 'lora_attn', 'merged', 'model.safetensors'))).keys()].sort();
    assert.deepEqual(names, want, 'tensor names as transformers saves them (no tied lm_head)');
    assert.equal(await readFile(join(dir, 'config.json'), 'utf8'), await readFile(fixturePath('models', 'gpt2', 'config.json'), 'utf8'));
    const batch = await fixtureBatch('gpt2');
    const reloaded = await loadModel(dir);
    assertClose((await forwardOnce(reloaded, batch)).logits, (await forwardOnce(merged, batch)).logits, 0, 0, 'reloaded merged model');
    await assert.rejects(saveModelPretrained(merged, fixturePath('models', 'gpt2')), AdapterError);
  });
});

test('typed errors: unknown peft_type, not an adapter, adapters that do not fit, bad configs, bad output paths', async () => {
  const gpt2 = await loadModel(fixturePath('models', 'gpt2'));
  const llama = await loadModel(fixturePath('models', 'llama'));
  await withTmp(async (dir) => {
    await writeFile(join(dir, 'adapter_config.json'), JSON.stringify({ peft_type: 'MAGIC' }));
    await assert.rejects(PeftModel.fromPretrained(gpt2, dir), UnknownPeftTypeError);
    await assert.rejects(createAdapter(gpt2, { peft_type: 'MAGIC' }), UnknownPeftTypeError);
    await assert.rejects(PeftModel.fromPretrained(gpt2, join(dir, 'nope')), AdapterError);
    // A GPT-2 adapter on Llama: its target modules are not there.
    await assert.rejects(PeftModel.fromPretrained(llama, fixturePath('adapters', 'gpt2', 'lora_attn')), AdapterMismatchError);
    // Same modules, other shapes: the config says r=4, the tensors have r=8.
    const bad = join(dir, 'bad');
    await cp(fixturePath('adapters', 'llama', 'lora_attn'), bad, { recursive: true });
    const cfg = JSON.parse(await readFile(join(bad, 'adapter_config.json'), 'utf8'));
    await writeFile(join(bad, 'adapter_config.json'), JSON.stringify({ ...cfg, r: 4 }));
    await assert.rejects(
      PeftModel.fromPretrained(llama, bad),
      (e: unknown) => e instanceof AdapterMismatchError && /shape/.test((e as Error).message),
    );
    // A peft 0.20 setting that changes the math and is not implemented is refused by name.
    await writeFile(join(bad, 'adapter_config.json'), JSON.stringify({ ...cfg, use_qalora: true }));
    await assert.rejects(
      PeftModel.fromPretrained(llama, bad),
      (e: unknown) => e instanceof UnsupportedLoraFeatureError && e.field === 'use_qalora' && /use_qalora/.test(e.message),
    );
    // An unknown (future) key with a non-default value is refused too.
    await writeFile(join(bad, 'adapter_config.json'), JSON.stringify({ ...cfg, lora_magic: 'on' }));
    await assert.rejects(PeftModel.fromPretrained(llama, bad), PeftConfigError);
    // Newer peft keys at their neutral values are accepted.
    await writeFile(
      join(bad, 'adapter_config.json'),
      JSON.stringify({ ...cfg, lora_bias: false, exclude_modules: null, peft_version: '0.17.0' }),
    );
    assert.ok(await PeftModel.fromPretrained(llama, bad));
    // Saving over a file fails before writing anything.
    const file = join(dir, 'a_file');
    await writeFile(file, 'keep me');
    const lm = await getPeftModel(gpt2, {});
    await assert.rejects(lm.savePretrained(file), AdapterError);
    assert.equal(await readFile(file, 'utf8'), 'keep me');
  });
  for (const bad of [
    { r: 0 },
    { loraDropout: 1 },
    { bias: 'some' as never },
    { initLoraWeights: 'loftq' as never },
    { targetModules: 3 as never },
  ]) {
    await assert.rejects(getPeftModel(gpt2, bad), PeftConfigError, JSON.stringify(bad));
  }
  await assert.rejects(
    createAdapter(gpt2, { peft_type: 'LORA', r: 4, target_modules: ['c_attn'], use_dora: true, megatron_config: { a: 1 } }),
    PeftConfigError,
  );
});

test('weight decay and trainable base weights follow transformers and peft', async () => {
  const gpt2 = await loadModel(fixturePath('models', 'gpt2'));
  const lm = await LoraModel.fromPretrained(gpt2, fixturePath('adapters', 'gpt2', 'lora_bias_all'), { isTrainable: true });
  const base = lm.trainableBaseWeights();
  assert.equal(base.size, 13);
  assert.ok(base.has('transformer.ln_f.bias') && base.has('transformer.h.0.attn.c_attn.bias'));
  const decay = lm.decayParameters();
  assert.ok([...decay].every((n) => n.includes('.lora_')));
  assert.equal(decay.size, 4);
  // LayerNorm biases are not inside a linear layer: the graph needs them as trainable params.
  const { Graph } = await import('../../../src/graph/ir.js');
  const { BuildContext } = await import('../../../src/nn/context.js');
  const g = new Graph();
  const ctx = new BuildContext(g, gpt2.weights);
  const ids = g.input('input_ids', 'int64', ['batch', 'seq']);
  assert.throws(
    () => lm.forward(ctx, { inputIds: ids, attentionMask: g.input('attention_mask', 'int64', ['batch', 'seq']) }),
    AdapterError,
  );
});

test('deleteAdapter keeps the other active adapters active, as peft does', async () => {
  const base = await loadModel(fixturePath('models', 'gpt2'));
  const lm = (await PeftModel.fromPretrained(base, fixturePath('adapters', 'gpt2', 'lora_attn'))) as LoraModel;
  await lm.loadAdapter(fixturePath('adapters', 'gpt2', 'lora_dora'), 'dora');
  await lm.loadAdapter(fixturePath('adapters', 'gpt2', 'lora_bias_all'), 'bias');
  lm.setAdapter(['dora', 'bias']);
  lm.deleteAdapter('dora');
  assert.deepEqual(lm.activeAdapters, ['bias'], 'the remaining active adapter stays active (not the first adapter)');
  lm.deleteAdapter('default');
  assert.deepEqual(lm.activeAdapters, ['bias'], 'deleting an inactive adapter changes nothing');
  await lm.loadAdapter(fixturePath('adapters', 'gpt2', 'lora_attn'), 'again');
  lm.deleteAdapter('bias');
  assert.deepEqual(lm.activeAdapters, ['again'], 'with none left active, the first remaining adapter becomes active');
  lm.deleteAdapter('again');
  assert.deepEqual(lm.activeAdapters, []);
});

test('mergeAndUnload merges the active adapter even while it is disabled, as merge() and peft do', async () => {
  const base = await loadModel(fixturePath('models', 'gpt2'));
  const batch = await fixtureBatch('gpt2');
  const lm = await LoraModel.fromPretrained(base, fixturePath('adapters', 'gpt2', 'lora_attn'));
  const expected = toFloat32((await readTensors('adapters', 'gpt2', 'lora_attn', 'expected_outputs.safetensors')).get('logits')!);
  lm.disableAdapter();
  const merged = await lm.mergeAndUnload();
  assert.equal(lm.isDisabled, true, 'the LoraModel is left as it was');
  assertClose((await forwardOnce(merged, batch)).logits, expected, 1e-4, 1e-4, 'merged while disabled = the adapter applied');
});
