// The trainer with LoRA (the method it exists for): a fine-tune of the fixture models that cuts
// the eval loss, an adapter folder in the peft layout, and exact resume with LoRA dropout on.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Tokenizer } from '../../../src/io/tokenizer.js';
import { loadModel } from '../../../src/models/load.js';
import { parseJsonl, prepareExamples, tokenizeRecords } from '../../../src/train/data.js';
import { Trainer, type TrainerOptions } from '../../../src/train/trainer.js';
import { LoraModel, type LoraConfig } from '../../../src/tuners/lora/index.js';
import { getPeftModel } from '../../../src/tuners/load.js';
import { fixturePath } from '../../helpers/fixtures.js';
import { jsonl, swapRecords, tempDir } from '../synthetic.js';

const TARGETS: Record<string, string[]> = {
  gpt2: ['c_attn', 'c_proj', 'c_fc', 'lm_head'],
  llama: ['q_proj', 'k_proj', 'v_proj', 'o_proj', 'gate_proj', 'up_proj', 'down_proj', 'lm_head'],
};

async function setup(family: string, config: Partial<LoraConfig>) {
  const dir = fixturePath('models', family);
  const tok = await Tokenizer.fromDir(dir);
  const { examples } = tokenizeRecords(parseJsonl(jsonl(swapRecords())), tok);
  const rows = prepareExamples(examples, { maxLength: 32 }).examples;
  const model = await getPeftModel(await loadModel(dir), { r: 8, loraAlpha: 16, targetModules: TARGETS[family]!, ...config }, { seed: 0 });
  return { model, train: rows.slice(0, 48), eval: rows.slice(48), padId: tok.padTokenId ?? tok.eosTokenId! };
}

test('LoRA on gpt2 and llama cuts the eval loss by more than 30% and saves a peft adapter', async () => {
  for (const family of ['gpt2', 'llama']) {
    const { model, train, eval: ev, padId } = await setup(family, { loraDropout: 0.05 });
    const out = await tempDir();
    const r = await new Trainer(model, train, ev, {
      outputDir: out,
      padTokenId: padId,
      learningRate: 1e-2,
      maxSteps: 40,
      batchSize: 8,
      evalEvery: 20,
      runtime: { threads: 2 },
    }).train();
    assert.ok(r.finalEvalLoss! < 0.7 * r.initialEvalLoss!, `${family}: eval loss ${r.initialEvalLoss} -> ${r.finalEvalLoss}`);
    for (const f of ['adapter_config.json', 'adapter_model.safetensors', 'metrics.jsonl', 'loss.svg'])
      assert.ok(existsSync(join(out, f)), f);
    const cfg = JSON.parse(await readFile(join(out, 'adapter_config.json'), 'utf8'));
    assert.equal(cfg.peft_type, 'LORA');
    assert.equal(cfg.r, 8);
    // The saved adapter loads back onto a fresh base with the trained values.
    const back = await LoraModel.fromPretrained(await loadModel(fixturePath('models', family)), out);
    for (const [name, t] of model.parameters()) assert.deepEqual(back.parameters().get(name)!.data, t.data, name);
  }
});

test('LoRA with dropout: 10 steps straight = 5, stop, resume 5, bitwise', async () => {
  const opts = (outputDir: string): TrainerOptions => ({
    outputDir,
    padTokenId: 0,
    learningRate: 5e-3,
    maxSteps: 10,
    batchSize: 4,
    gradAccum: 2,
    warmupRatio: 0.2,
    runtime: { threads: 2 },
  });
  const a = await setup('llama', { loraDropout: 0.1 });
  await new Trainer(a.model, a.train.slice(0, 12), undefined, { ...opts(await tempDir()), padTokenId: a.padId }).train();
  const dir = await tempDir();
  const b = await setup('llama', { loraDropout: 0.1 });
  const stopper: Trainer = new Trainer(b.model, b.train.slice(0, 12), undefined, {
    ...opts(dir),
    padTokenId: b.padId,
    onStep: (r) => void (r.step === 5 && stopper.requestStop()),
  });
  assert.equal((await stopper.train()).globalStep, 5);
  for (const f of ['adapter_config.json', 'adapter_model.safetensors'])
    assert.ok(existsSync(join(dir, 'checkpoints', 'checkpoint-5', f)), f);
  const c = await setup('llama', { loraDropout: 0.1 });
  await new Trainer(c.model, c.train.slice(0, 12), undefined, { ...opts(dir), padTokenId: c.padId, resume: 'latest' }).train();
  for (const [name, t] of a.model.parameters()) {
    const u = c.model.parameters().get(name)!.data;
    assert.ok(
      Buffer.from(t.data.buffer, t.data.byteOffset, t.data.byteLength).equals(Buffer.from(u.buffer, u.byteOffset, u.byteLength)),
      `${name} differs`,
    );
  }
});
