// `peft info` end to end on the fixture models and on adapters of several methods: the text and
// --json reports give the shapes, parameter counts (checked against the fixtures' own tensors)
// and the adapter's share of its base model; folders that are neither are one-line errors.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { copyFileSync, mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fixturePath, readTensors } from '../../helpers/fixtures.js';
import { peft } from '../peft.js';
import type { LooseJson } from '../../helpers/json.js';

const tmp = mkdtempSync(join(tmpdir(), 'peft-info-'));
process.on('exit', () => rmSync(tmp, { recursive: true, force: true }));

async function numel(...parts: string[]): Promise<number> {
  let n = 0;
  for (const t of (await readTensors(...parts)).values()) n += t.shape.reduce((p, q) => p * q, 1);
  return n;
}

async function infoJson(args: string[]): Promise<Record<string, LooseJson>> {
  const r = await peft(['info', ...args, '--json']);
  assert.equal(r.code, 0, r.stderr);
  return JSON.parse(r.stdout) as Record<string, LooseJson>;
}

test('models: architecture, shapes, parameter count, dtype and size', async () => {
  const [gpt2, llama, bert] = await Promise.all(['gpt2', 'llama', 'bert'].map((m) => infoJson([fixturePath('models', m)])));
  assert.equal(gpt2!.kind, 'model');
  assert.equal(gpt2!.architecture, 'GPT2LMHeadModel');
  assert.deepEqual(
    [gpt2!.layers, gpt2!.hidden_size, gpt2!.attention_heads, gpt2!.kv_heads, gpt2!.vocab_size, gpt2!.tied_embeddings],
    [2, 64, 4, 4, 557, true],
  );
  assert.equal(gpt2!.weights.parameters, await numel('models', 'gpt2', 'model.safetensors'));
  assert.deepEqual(Object.keys(gpt2!.weights.dtypes), ['F32']);
  assert.ok(gpt2!.weights.bytes > 4 * gpt2!.weights.parameters);
  assert.deepEqual(
    [llama!.model_type, llama!.attention_heads, llama!.kv_heads, llama!.head_dim, llama!.intermediate_size, llama!.tied_embeddings],
    ['llama', 4, 2, 16, 128, false],
  );
  assert.equal(llama!.weights.parameters, 145_728);
  assert.deepEqual([bert!.architecture, bert!.num_labels], ['BertForSequenceClassification', 2]);
  assert.ok(gpt2!.tokenizer.files.includes('tokenizer.json'));

  const text = await peft(['info', fixturePath('models', 'llama')]);
  assert.equal(text.code, 0, text.stderr);
  assert.match(text.stdout, /Hugging Face model/);
  assert.match(text.stdout, /attention heads\s+4, key\/value heads 2, head dim 16/);
  assert.match(text.stdout, /parameters\s+145,728 \(145\.7K\)/);
  assert.match(text.stdout, /dtype on disk\s+F32/);
});

test('adapters: method settings, trainable parameters and share of the base model', async () => {
  const cases = [
    'gpt2/lora_attn',
    'llama/ia3',
    'llama/prefix_tuning',
    'gpt2/prefix_tuning_projection',
    'gpt2/p_tuning_mlp',
    'llama/p_tuning_lstm',
    'llama/prompt_tuning_random',
    'gpt2/bn_seq',
  ];
  const infos = await Promise.all(cases.map((c) => infoJson([fixturePath('adapters', ...c.split('/'))])));
  const by = Object.fromEntries(cases.map((c, i) => [c, infos[i]!]));

  const lora = by['gpt2/lora_attn']!;
  assert.deepEqual([lora.kind, lora.format, lora.peft_type, lora.task_type], ['adapter', 'peft', 'LORA', 'CAUSAL_LM']);
  assert.deepEqual([lora.settings.r, lora.settings.lora_alpha, lora.settings.target_modules], [8, 16, ['c_attn']]);
  assert.equal(lora.stored_parameters, await numel('adapters', 'gpt2', 'lora_attn', 'adapter_model.safetensors'));
  // base_model_name_or_path "models/gpt2" is found relative to a folder above the adapter.
  assert.equal(lora.base.path, fixturePath('models', 'gpt2'));
  assert.equal(lora.base.parameters, await numel('models', 'gpt2', 'model.safetensors'));
  assert.ok(Math.abs(lora.share_of_base_percent - (100 * lora.trainable_parameters) / lora.base.parameters) < 1e-9);

  assert.deepEqual(by['llama/ia3']!.settings.feedforward_modules, ['down_proj']);
  assert.equal(by['llama/prefix_tuning']!.settings.num_attention_heads, 2);
  // Methods whose encoder is trained but not saved: trainable = every tensor of the in-memory model.
  for (const c of [
    'gpt2/prefix_tuning_projection',
    'gpt2/p_tuning_mlp',
    'llama/p_tuning_lstm',
    'llama/prompt_tuning_random',
    'llama/ia3',
  ]) {
    const [model, name] = c.split('/') as [string, string];
    assert.equal(by[c]!.trainable_parameters, await numel('adapters', model, name, 'trainable_state.safetensors'), c);
  }
  assert.ok(by['llama/p_tuning_lstm']!.stored_parameters < by['llama/p_tuning_lstm']!.trainable_parameters);

  const bn = by['gpt2/bn_seq']!;
  assert.deepEqual(
    [bn.format, bn.peft_type, bn.settings.architecture, bn.settings.reduction_factor, bn.settings.bottleneck_size],
    ['adapterhub', 'BOTTLENECK', 'Pfeiffer (SeqBn)', 16, 4],
  );
  assert.equal(bn.trainable_parameters, await numel('adapters', 'gpt2', 'bn_seq', 'adapter.safetensors'));
  assert.equal(bn.base.path, fixturePath('models', 'gpt2'));

  const text = await peft(['info', fixturePath('adapters', 'gpt2', 'lora_attn')]);
  assert.equal(text.code, 0, text.stderr);
  assert.match(text.stdout, /LoRA adapter/);
  assert.match(text.stdout, /scaling\s+2 \(alpha \/ r\)/);
  assert.match(text.stdout, /trainable parameters\s+4,096 \(4\.1K\) = 2\.85% of the base model's 143,936/);
});

test('adapters: --model names the base; an unknown base is reported, not an error', async () => {
  const copy = join(tmp, 'adapter-only');
  mkdirSync(copy);
  for (const f of ['adapter_config.json', 'adapter_model.safetensors'])
    copyFileSync(fixturePath('adapters', 'llama', 'ia3', f), join(copy, f));
  const lost = await infoJson([copy]);
  assert.deepEqual([lost.base.name, lost.base.path, lost.share_of_base_percent], ['models/llama', null, null]);
  const text = await peft(['info', copy]);
  assert.match(text.stdout, /base model\s+models\/llama \(not found; pass --model DIR\)/);
  const given = await infoJson([copy, '--model', fixturePath('models', 'llama')]);
  assert.deepEqual([given.base.found_by, given.base.parameters], ['--model', 145_728]);
  assert.ok(given.share_of_base_percent > 0);
});

test('peft info: paths that are not a model or adapter folder are one-line errors', async () => {
  const empty = join(tmp, 'empty');
  mkdirSync(empty);
  const cases: [string[], RegExp][] = [
    [[join(tmp, 'absent')], /does not exist/],
    [[fixturePath('models', 'gpt2', 'config.json')], /is a file/],
    [[empty], /neither a model folder \(config\.json\) nor an adapter folder/],
    [[fixturePath('models', 'gpt2'), '--model', fixturePath('models', 'gpt2')], /--model is for adapter folders/],
    [[fixturePath('adapters', 'gpt2', 'lora_attn'), '--model', empty], /not a model folder/],
  ];
  const results = await Promise.all(cases.map(([args]) => peft(['info', ...args])));
  results.forEach((r, i) => {
    assert.equal(r.code, 1, `${cases[i]![0].join(' ')}: ${r.stderr}`);
    assert.match(r.stderr, cases[i]![1]);
    assert.doesNotMatch(r.stderr, /internal error/);
  });
});
