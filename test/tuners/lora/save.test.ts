// Saving is peft's format: an adapter created here with the config peft was given for each
// fixture writes the same adapter_config.json (same keys, order, spelling, defaults) and the same
// tensor names and shapes; a trained (non-zero) adapter saved and loaded into a fresh model object
// gives identical outputs; a fixture adapter loaded and saved again is unchanged byte for byte.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { readSafetensors, SafetensorsFile } from '../../../src/io/safetensors.js';
import { loadModel } from '../../../src/models/load.js';
import { type LoraConfig, LoraModel } from '../../../src/tuners/lora/index.js';
import { getPeftModel } from '../../../src/tuners/load.js';
import { fixturePath } from '../../helpers/fixtures.js';
import { assertClose, fixtureBatch, forwardOnce, withTmp } from '../lora_support.js';

// The LoraConfig arguments peft was called with for each fixture (before peft expanded them).
const CREATED_WITH: Record<string, Partial<LoraConfig>> = {
  'gpt2/lora_attn': { r: 8, loraAlpha: 16, loraDropout: 0.05, taskType: 'CAUSAL_LM' },
  'gpt2/lora_all_linear_rslora': { r: 4, loraAlpha: 8, targetModules: 'all-linear', useRslora: true, taskType: 'CAUSAL_LM' },
  'gpt2/lora_dora': { r: 4, loraAlpha: 8, targetModules: ['c_attn', 'c_proj'], useDora: true, taskType: 'CAUSAL_LM' },
  'gpt2/lora_bias_all': { r: 4, loraAlpha: 8, targetModules: ['c_attn'], bias: 'all', taskType: 'CAUSAL_LM' },
  'llama/lora_attn': { r: 8, loraAlpha: 16, loraDropout: 0.05, taskType: 'CAUSAL_LM' },
  'llama/lora_all_linear_rslora': { r: 4, loraAlpha: 8, targetModules: 'all-linear', useRslora: true, taskType: 'CAUSAL_LM' },
  'llama/lora_dora': { r: 4, loraAlpha: 8, targetModules: ['k_proj', 'v_proj', 'o_proj', 'q_proj'], useDora: true, taskType: 'CAUSAL_LM' },
  'llama/lora_mts_lm_head': { r: 4, loraAlpha: 8, modulesToSave: ['lm_head'], taskType: 'CAUSAL_LM' },
  'bert/lora_attn': { r: 8, loraAlpha: 16, loraDropout: 0.05, taskType: 'SEQ_CLS' },
  'bert/lora_all_linear_rslora': { r: 4, loraAlpha: 8, targetModules: 'all-linear', useRslora: true, taskType: 'SEQ_CLS' },
  'bert/lora_dora': { r: 4, loraAlpha: 8, targetModules: ['key', 'query', 'value'], useDora: true, taskType: 'SEQ_CLS' },
  'bert/lora_cls_bias_lora_only': {
    r: 4,
    loraAlpha: 8,
    targetModules: ['query', 'value'],
    bias: 'lora_only',
    modulesToSave: ['classifier'],
    taskType: 'SEQ_CLS',
  },
};

async function tensorShapes(path: string): Promise<Record<string, number[]>> {
  const out: Record<string, number[]> = {};
  for (const [k, t] of await readSafetensors(path)) out[k] = t.shape;
  return out;
}

/** Deterministic non-zero values, as if trained. */
function perturb(lm: LoraModel, seed: number, skip: (param: string) => boolean = () => false): void {
  let s = seed;
  for (const [name, t] of lm.parameters()) {
    if (skip(name)) continue;
    for (let i = 0; i < t.data.length; i++) {
      s = (s * 1103515245 + 12345) % 2147483648;
      t.data[i] += (s / 2147483648 - 0.5) * 0.05;
    }
  }
}

for (const [name, config] of Object.entries(CREATED_WITH)) {
  const [model, c] = name.split('/') as [string, string];
  test(`${name}: a new adapter saves peft's config and tensor names; trained, it round-trips exactly`, async () => {
    await withTmp(async (dir) => {
      const base = await loadModel(fixturePath('models', model));
      const lm = await getPeftModel(base, { ...config, baseModelNameOrPath: `models/${model}` }, { seed: 3 });
      // bias='lora_only' biases are not saved (peft 0.13.2), so that case leaves them untrained here.
      perturb(lm, 11, (p) => config.bias === 'lora_only' && p.endsWith('.bias') && !p.startsWith('classifier'));
      await lm.savePretrained(dir);

      const want = await readFile(fixturePath('adapters', model, c, 'adapter_config.json'), 'utf8');
      const got = await readFile(join(dir, 'adapter_config.json'), 'utf8');
      const wantObj = JSON.parse(want) as Record<string, unknown>;
      const gotObj = JSON.parse(got) as Record<string, unknown>;
      // peft keeps target_modules in a Python set: same members, an order of its own.
      assert.deepEqual(new Set(gotObj.target_modules as string[]), new Set(wantObj.target_modules as string[]), 'target_modules');
      const reordered = got.replace(/"target_modules": \[[^\]]*\]/, want.match(/"target_modules": \[[^\]]*\]/)![0]);
      assert.equal(reordered, want, 'adapter_config.json text');
      assert.deepEqual(
        await tensorShapes(join(dir, 'adapter_model.safetensors')),
        await tensorShapes(fixturePath('adapters', model, c, 'adapter_model.safetensors')),
      );
      const file = await SafetensorsFile.open(join(dir, 'adapter_model.safetensors'));
      assert.deepEqual(file.metadata, { format: 'pt' });
      await file.close();

      const batch = await fixtureBatch(model);
      const before = await forwardOnce(lm, batch);
      const fresh = await loadModel(fixturePath('models', model));
      const loaded = await LoraModel.fromPretrained(fresh, dir);
      const after = await forwardOnce(loaded, batch);
      assertClose(after.logits, before.logits, 0, 0, `${name} reloaded logits`);
      assert.equal(after.loss, before.loss);
    });
  });
}

test('a fixture adapter loaded and saved again is unchanged byte for byte', async () => {
  await withTmp(async (dir) => {
    for (const [model, c] of [
      ['gpt2', 'lora_dora'],
      ['llama', 'lora_mts_lm_head'],
      ['gpt2', 'lora_bias_all'],
      ['bert', 'lora_all_linear_rslora'],
    ] as const) {
      const out = join(dir, `${model}_${c}`);
      const lm = await LoraModel.fromPretrained(await loadModel(fixturePath('models', model)), fixturePath('adapters', model, c));
      await lm.savePretrained(out);
      for (const f of ['adapter_config.json', 'adapter_model.safetensors']) {
        assert.ok((await readFile(join(out, f))).equals(await readFile(fixturePath('adapters', model, c, f))), `${model}/${c} ${f}`);
      }
    }
  });
});

test('bias="lora_only": trained biases are not saved (as peft 0.13.2) and reload at their base values', async () => {
  await withTmp(async (dir) => {
    const base = await loadModel(fixturePath('models', 'bert'));
    const lm = await getPeftModel(base, CREATED_WITH['bert/lora_cls_bias_lora_only']!, { seed: 1 });
    assert.deepEqual([...lm.trainableBaseWeights()].filter((n) => n.endsWith('.bias') && !n.startsWith('classifier')).sort(), [
      'bert.encoder.layer.0.attention.self.query.bias',
      'bert.encoder.layer.0.attention.self.value.bias',
      'bert.encoder.layer.1.attention.self.query.bias',
      'bert.encoder.layer.1.attention.self.value.bias',
    ]);
    perturb(lm, 5);
    await lm.savePretrained(dir);
    const keys = [...(await readSafetensors(join(dir, 'adapter_model.safetensors'))).keys()];
    assert.ok(!keys.some((k) => k.includes('attention.self.query.bias') || k.includes('base_layer')), 'no lora_only bias saved');
    const loaded = await LoraModel.fromPretrained(await loadModel(fixturePath('models', 'bert')), dir);
    const q = loaded.parameters().get('bert.encoder.layer.0.attention.self.query.bias')!;
    assert.deepEqual([...q.data], [...base.weights.get('bert.encoder.layer.0.attention.self.query.bias').data]);
  });
});
