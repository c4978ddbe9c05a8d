// Checks that the three fixture config.json files normalize to the values transformers used when it
// built the fixture models, that Llama-family variants (Qwen2, Mistral, llama3 RoPE) keep their
// quirks, and that broken folders give ConfigErrors naming the file and field.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { ConfigError } from '../../src/io/hfconfig.js';
import { loadConfig, parseConfig } from '../../src/models/config.js';

import { FIXTURES } from '../helpers/fixtures.js';
const modelDir = (name: string) => path.join(FIXTURES, 'models', name);

async function withTempConfig(contents: string, fn: (dir: string) => Promise<void>): Promise<void> {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'peft-config-'));
  try {
    await writeFile(path.join(dir, 'config.json'), contents);
    await fn(dir);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

test('gpt2 fixture config', async () => {
  const c = await loadConfig(modelDir('gpt2'));
  assert.equal(c.modelType, 'gpt2');
  assert.equal(c.family, 'gpt2');
  assert.deepEqual(c.architectures, ['GPT2LMHeadModel']);
  assert.equal(c.vocabSize, 557);
  assert.equal(c.hiddenSize, 64);
  assert.equal(c.numHiddenLayers, 2);
  assert.equal(c.numAttentionHeads, 4);
  assert.equal(c.numKeyValueHeads, 4);
  assert.equal(c.headDim, 16);
  assert.equal(c.intermediateSize, 256, 'n_inner null means 4 * n_embd');
  assert.equal(c.maxPositionEmbeddings, 128);
  assert.equal(c.hiddenAct, 'gelu_new');
  assert.equal(c.normType, 'layernorm');
  assert.equal(c.normEps, 1e-5);
  assert.equal(c.tieWordEmbeddings, true);
  assert.equal(c.qkvBias && c.attnOutputBias && c.mlpBias, true);
  assert.equal(c.bosTokenId, 556);
  assert.equal(c.eosTokenId, 556);
  assert.equal(c.padTokenId, undefined);
  assert.equal(c.ropeTheta, undefined);
  assert.equal(c.numLabels, 2);
  assert.equal(c.torchDtype, 'float32');
  assert.equal(c.raw.summary_type, 'cls_index');
});

test('llama fixture config (grouped-query attention)', async () => {
  const c = await loadConfig(modelDir('llama'));
  assert.equal(c.modelType, 'llama');
  assert.equal(c.family, 'llama');
  assert.deepEqual(c.architectures, ['LlamaForCausalLM']);
  assert.equal(c.vocabSize, 560);
  assert.equal(c.hiddenSize, 64);
  assert.equal(c.numHiddenLayers, 2);
  assert.equal(c.numAttentionHeads, 4);
  assert.equal(c.numKeyValueHeads, 2);
  assert.equal(c.headDim, 16);
  assert.equal(c.intermediateSize, 128);
  assert.equal(c.maxPositionEmbeddings, 128);
  assert.equal(c.hiddenAct, 'silu');
  assert.equal(c.normType, 'rmsnorm');
  assert.equal(c.normEps, 1e-6);
  assert.equal(c.ropeTheta, 10000);
  assert.equal(c.ropeScaling, undefined);
  assert.equal(c.tieWordEmbeddings, false);
  assert.equal(c.attentionBias, false);
  assert.equal(c.qkvBias || c.attnOutputBias || c.mlpBias, false);
  assert.deepEqual([c.bosTokenId, c.eosTokenId, c.padTokenId], [557, 558, 559]);
  assert.equal(c.slidingWindow, undefined);
});

test('bert fixture config (sequence classification)', async () => {
  const c = await loadConfig(modelDir('bert'));
  assert.equal(c.modelType, 'bert');
  assert.equal(c.family, 'bert');
  assert.deepEqual(c.architectures, ['BertForSequenceClassification']);
  assert.equal(c.vocabSize, 561);
  assert.equal(c.hiddenSize, 64);
  assert.equal(c.numHiddenLayers, 2);
  assert.equal(c.numAttentionHeads, 4);
  assert.equal(c.headDim, 16);
  assert.equal(c.intermediateSize, 128);
  assert.equal(c.hiddenAct, 'gelu');
  assert.equal(c.normType, 'layernorm');
  assert.equal(c.normEps, 1e-12);
  assert.equal(c.typeVocabSize, 2);
  assert.equal(c.positionEmbeddingType, 'absolute');
  assert.equal(c.maxPositionEmbeddings, 128);
  assert.equal(c.padTokenId, 556);
  // The fixture has no id2label, so transformers' default of two labels applies (logits are [3, 2]).
  assert.equal(c.numLabels, 2);
  assert.deepEqual(c.id2label, { 0: 'LABEL_0', 1: 'LABEL_1' });
  assert.deepEqual(c.label2id, { LABEL_0: 0, LABEL_1: 1 });
});

test('raw keeps config.json exactly as written', async () => {
  for (const name of ['gpt2', 'llama', 'bert']) {
    const c = await loadConfig(modelDir(name));
    assert.deepEqual(c.raw, JSON.parse(await readFile(path.join(modelDir(name), 'config.json'), 'utf8')));
  }
});

const BERT_BASE = { vocab_size: 10, hidden_size: 8, num_hidden_layers: 1, num_attention_heads: 2, intermediate_size: 16 };

test('id2label decides num_labels', () => {
  const c = parseConfig({
    ...BERT_BASE,
    model_type: 'bert',
    id2label: { '0': 'neg', '1': 'neutral', '2': 'pos' },
    problem_type: 'single_label_classification',
  });
  assert.equal(c.numLabels, 3);
  assert.deepEqual(c.label2id, { neg: 0, neutral: 1, pos: 2 });
  assert.equal(c.padTokenId, 0, 'BertConfig default pad_token_id');
  assert.equal(c.problemType, 'single_label_classification');
  const roberta = parseConfig({ ...BERT_BASE, model_type: 'roberta', num_labels: 4 });
  assert.equal(roberta.family, 'bert');
  assert.equal(roberta.padTokenId, 1, 'RobertaConfig default pad_token_id');
  assert.equal(roberta.numLabels, 4);
});

const LLAMA_BASE = {
  vocab_size: 100,
  hidden_size: 64,
  num_hidden_layers: 2,
  num_attention_heads: 8,
  intermediate_size: 128,
};

test('qwen2: q/k/v biases without an o_proj bias, tied embeddings from the config, sliding window only when enabled', () => {
  const c = parseConfig({
    ...LLAMA_BASE,
    model_type: 'qwen2',
    num_key_value_heads: 2,
    tie_word_embeddings: true,
    sliding_window: 32,
    use_sliding_window: false,
  });
  assert.equal(c.family, 'llama');
  assert.equal(c.qkvBias, true);
  assert.equal(c.attnOutputBias, false);
  assert.equal(c.tieWordEmbeddings, true);
  assert.equal(c.numKeyValueHeads, 2);
  assert.equal(c.slidingWindow, undefined);
  assert.equal(parseConfig({ ...LLAMA_BASE, model_type: 'qwen2', use_sliding_window: true, sliding_window: 32 }).slidingWindow, 32);
});

test('mistral: sliding window default and explicit head_dim', () => {
  const c = parseConfig({ ...LLAMA_BASE, model_type: 'mistral', head_dim: 32, rope_theta: 1000000.0 });
  assert.equal(c.slidingWindow, 4096);
  assert.equal(c.headDim, 32);
  assert.equal(c.numKeyValueHeads, 8);
  assert.equal(c.ropeTheta, 1e6);
  assert.equal(parseConfig({ ...LLAMA_BASE, model_type: 'mistral', sliding_window: null }).slidingWindow, undefined);
});

test('llama3 rope scaling is normalized and validated', () => {
  const c = parseConfig({
    ...LLAMA_BASE,
    model_type: 'llama',
    rope_theta: 500000.0,
    eos_token_id: [128001, 128008, 128009],
    rope_scaling: { factor: 8.0, low_freq_factor: 1.0, high_freq_factor: 4.0, original_max_position_embeddings: 8192, rope_type: 'llama3' },
  });
  assert.equal(c.ropeTheta, 500000);
  assert.deepEqual(c.eosTokenId, [128001, 128008, 128009]);
  assert.equal(c.ropeScaling?.ropeType, 'llama3');
  assert.equal(c.ropeScaling?.factor, 8);
  assert.equal(c.ropeScaling?.lowFreqFactor, 1);
  assert.equal(c.ropeScaling?.highFreqFactor, 4);
  assert.equal(c.ropeScaling?.originalMaxPositionEmbeddings, 8192);
  const linear = parseConfig({ ...LLAMA_BASE, model_type: 'llama', rope_scaling: { type: 'linear', factor: 2.0 } });
  assert.equal(linear.ropeScaling?.ropeType, 'linear');
  assert.equal(linear.ropeScaling?.factor, 2);
  assert.throws(
    () => parseConfig({ ...LLAMA_BASE, model_type: 'llama', rope_scaling: { rope_type: 'llama3', factor: 8.0 } }),
    (err: unknown) => err instanceof ConfigError && err.field === 'rope_scaling.low_freq_factor',
  );
});

test('missing config.json is a ConfigError that names the file', async () => {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'peft-config-empty-'));
  try {
    await assert.rejects(loadConfig(dir), (err: unknown) => {
      assert.ok(err instanceof ConfigError);
      assert.equal(err.file, path.join(dir, 'config.json'));
      assert.match(err.message, /save_pretrained/);
      return true;
    });
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test('bad JSON is a ConfigError that names the file', async () => {
  await withTempConfig('{"model_type": "gpt2", ', async (dir) => {
    await assert.rejects(loadConfig(dir), (err: unknown) => {
      assert.ok(err instanceof ConfigError);
      assert.match(err.message, /not valid JSON/);
      assert.match(err.message, /config\.json/);
      return true;
    });
  });
});

test('missing or malformed required fields name the field', async () => {
  const gpt2 = JSON.parse(await readFile(path.join(modelDir('gpt2'), 'config.json'), 'utf8'));
  delete gpt2.n_embd;
  await withTempConfig(JSON.stringify(gpt2), async (dir) => {
    await assert.rejects(loadConfig(dir), (err: unknown) => {
      assert.ok(err instanceof ConfigError);
      assert.equal(err.field, 'n_embd');
      assert.match(err.message, /"n_embd" is required for model_type "gpt2"/);
      assert.ok(err.message.includes(path.join(dir, 'config.json')));
      return true;
    });
  });
  assert.throws(
    () => parseConfig({ ...LLAMA_BASE, model_type: 'llama', num_hidden_layers: '2' }),
    (err: unknown) => err instanceof ConfigError && err.field === 'num_hidden_layers',
  );
  assert.throws(
    () => parseConfig({ ...LLAMA_BASE, model_type: 'llama', num_key_value_heads: 3 }),
    (err: unknown) => err instanceof ConfigError && err.field === 'num_key_value_heads',
  );
  assert.throws(
    () => parseConfig({ vocab_size: 3 }),
    (err: unknown) => err instanceof ConfigError && err.field === 'model_type',
  );
  assert.throws(() => parseConfig({ ...LLAMA_BASE, model_type: 't5' }), /not supported/);
  assert.throws(() => parseConfig([1, 2]), ConfigError);
});
