// Every LoRA fixture made by peft 0.13.2 loads through PeftModel.fromPretrained and reproduces
// peft's logits (1e-4) and loss (rtol 1e-5); merge_and_unload and in-place merge reproduce the
// merged logits, the merged weights match the merged/ folders transformers saved (1e-5), and
// unmerge restores the base weights bit for bit.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { toFloat32 } from '../../src/io/safetensors.js';
import { loadModel } from '../../src/models/load.js';
import { PeftModel } from '../../src/tuners/load.js';
import { LoraModel } from '../../src/tuners/lora/index.js';
import { fixturePath, maxAbsDiff, readTensors } from '../helpers/fixtures.js';
import { assertClose, fixtureBatch, forwardOnce } from '../tuners/lora_support.js';

const CASES: Record<string, string[]> = {
  gpt2: ['lora_attn', 'lora_all_linear_rslora', 'lora_dora', 'lora_bias_all'],
  llama: ['lora_attn', 'lora_all_linear_rslora', 'lora_dora', 'lora_mts_lm_head'],
  bert: ['lora_attn', 'lora_all_linear_rslora', 'lora_dora', 'lora_cls_bias_lora_only'],
};

for (const [model, cases] of Object.entries(CASES)) {
  for (const c of cases) {
    test(`${model}/${c}: outputs, loss, merged outputs and weights match peft`, async () => {
      const base = await loadModel(fixturePath('models', model));
      const originals = new Map(base.weights.names().map((n) => [n, base.weights.get(n)]));
      const lm = await PeftModel.fromPretrained(base, fixturePath('adapters', model, c));
      assert.ok(lm instanceof LoraModel);
      const expected = await readTensors('adapters', model, c, 'expected_outputs.safetensors');
      const batch = await fixtureBatch(model);

      const r = await forwardOnce(lm, batch);
      const baseLogits = toFloat32((await readTensors('models', model, 'expected_outputs.safetensors')).get('logits')!);
      assert.ok(maxAbsDiff(r.logits, baseLogits) > 1e-3, `${model}/${c}: the adapter changes the outputs`);
      assertClose(r.logits, toFloat32(expected.get('logits')!), 1e-4, 0, `${model}/${c} logits`);
      const wantLoss = toFloat32(expected.get('loss')!)[0]!;
      assert.ok(Math.abs(r.loss - wantLoss) <= 1e-5 * Math.abs(wantLoss), `${model}/${c} loss ${r.loss} vs ${wantLoss}`);

      const mergedLogits = toFloat32(expected.get('merged_logits')!);
      const merged = await lm.mergeAndUnload();
      assertClose((await forwardOnce(merged, batch)).logits, mergedLogits, 1e-5, 0, `${model}/${c} merge_and_unload logits`);
      const mergedDir = fixturePath('adapters', model, c, 'merged');
      if (existsSync(mergedDir)) {
        const want = await readTensors('adapters', model, c, 'merged', 'model.safetensors');
        assert.deepEqual(new Set(merged.weights.names()), new Set(want.keys()), 'merged tensor names');
        for (const [name, t] of want) assertClose(merged.weights.get(name).data, toFloat32(t), 1e-5, 0, `merged ${name}`);
      }

      // In place: merged forward equals merge_and_unload's; unmerge gives back the very same tensors.
      await lm.merge();
      assertClose((await forwardOnce(lm, batch)).logits, mergedLogits, 1e-5, 0, `${model}/${c} merged in place`);
      lm.unmerge();
      for (const [n, w] of originals) assert.equal(base.weights.get(n), w, `${n} restored exactly`);
      assertClose((await forwardOnce(lm, batch)).logits, r.logits, 0, 0, `${model}/${c} after unmerge`);
    });
  }
}
