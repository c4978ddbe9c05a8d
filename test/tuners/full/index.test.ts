// Full fine-tuning as an AdaptedModel: which weights train (all, or selected like peft's
// target_modules), which get weight decay (not biases or norms), and savePretrained writing a
// Hugging Face model folder that loads back with the trained values.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { mkdtemp } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { loadModel } from '../../../src/models/load.js';
import { fullConfig, getFullFineTuneModel } from '../../../src/tuners/full/index.js';
import { PeftConfigError } from '../../../src/tuners/types.js';
import { fixturePath } from '../../helpers/fixtures.js';

test('every weight trains by default; decay skips biases and norm weights', async () => {
  const gpt2 = await loadModel(fixturePath('models', 'gpt2'));
  const full = getFullFineTuneModel(gpt2);
  assert.equal(full.peftType, 'FULL');
  assert.deepEqual([...full.trainableBaseWeights()].sort(), gpt2.weights.names().sort());
  assert.ok(!full.trainableBaseWeights().has('lm_head.weight'), 'the tied head trains through the embedding it aliases');
  const decay = full.decayParameters();
  for (const n of ['transformer.wte.weight', 'transformer.h.0.attn.c_attn.weight', 'transformer.h.1.mlp.c_proj.weight'])
    assert.ok(decay.has(n), n);
  for (const n of ['transformer.h.0.attn.c_attn.bias', 'transformer.h.0.ln_1.weight', 'transformer.ln_f.weight', 'transformer.ln_f.bias'])
    assert.ok(!decay.has(n), n);
  const counts = full.parameterCounts();
  assert.equal(counts.trainable, counts.total);

  const llama = await loadModel(fixturePath('models', 'llama'));
  const ld = getFullFineTuneModel(llama).decayParameters();
  assert.ok(
    !ld.has('model.norm.weight') &&
      !ld.has('model.layers.0.input_layernorm.weight') &&
      !ld.has('model.layers.1.post_attention_layernorm.weight'),
  );
  assert.ok(ld.has('model.layers.0.self_attn.q_proj.weight') && ld.has('lm_head.weight'));
});

test('target and exclude modules select weights as peft matches module names', async () => {
  const llama = await loadModel(fixturePath('models', 'llama'));
  assert.deepEqual(
    [...getFullFineTuneModel(llama, fullConfig({ targetModules: ['q_proj'] })).trainableBaseWeights()],
    ['model.layers.0.self_attn.q_proj.weight', 'model.layers.1.self_attn.q_proj.weight'],
  );
  const re = getFullFineTuneModel(llama, fullConfig({ targetModules: 'model\\.layers\\.1\\..*_proj' }));
  assert.equal(re.trainableBaseWeights().size, 7);
  const ex = getFullFineTuneModel(llama, fullConfig({ excludeModules: ['embed_tokens', 'lm_head'] }));
  assert.equal(ex.trainableBaseWeights().size, llama.weights.names().length - 2);
  assert.throws(
    () => getFullFineTuneModel(llama, fullConfig({ targetModules: ['c_attn'] })),
    (e: unknown) => e instanceof PeftConfigError && /module names look like/.test(e.message),
  );
  assert.throws(() => fullConfig({ targetModules: '(' }), PeftConfigError);
  assert.throws(() => fullConfig({ targetModules: [3 as never] }), PeftConfigError);
});

test('savePretrained writes a model folder that loads back with the updated weights', async () => {
  const dir = fixturePath('models', 'gpt2');
  const full = getFullFineTuneModel(await loadModel(dir));
  const bias = full.parameters().get('transformer.ln_f.bias')!;
  bias.data.fill(0.25);
  const out = await mkdtemp(join(tmpdir(), 'peft-full-'));
  await full.savePretrained(out);
  const back = await loadModel(out);
  assert.deepEqual(back.weights.get('transformer.ln_f.bias').data, bias.data);
  assert.deepEqual(back.weights.names().sort(), full.base.weights.names().sort());
  assert.deepEqual(
    JSON.parse(await readFile(join(out, 'config.json'), 'utf8')),
    JSON.parse(await readFile(join(dir, 'config.json'), 'utf8')),
  );
  assert.equal(await readFile(join(out, 'generation_config.json'), 'utf8'), await readFile(join(dir, 'generation_config.json'), 'utf8'));
});
