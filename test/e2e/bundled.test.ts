// The files the package ships for the quickstart: models/tiny-llama loads with loadModel (float16,
// tied embeddings, under 10 MB) and its tokenizer round-trips the task texts; data/tasks holds
// exactly what scripts/make_tasks.ts generates, with no eval prompt seen in training; and the base
// model is poor at every task before tuning.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFile, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { SafetensorsFile } from '../../src/io/safetensors.js';
import { Tokenizer } from '../../src/io/tokenizer.js';
import { loadModel } from '../../src/models/load.js';
import { TASK_NAMES, bundledModelDir, evaluateTask, getTask, loadTaskData } from '../../src/tasks/index.js';
import { taskSplits, type TaskName } from '../../scripts/corpus/tasks.js';

const dir = bundledModelDir();

test('the bundled model folder loads: a float16 Llama with tied embeddings, under 10 MB', async () => {
  const model = await loadModel(dir);
  assert.equal(model.family, 'llama');
  assert.equal(model.config.tieWordEmbeddings, true);
  assert.ok(model.weights.isAlias('lm_head.weight'));
  const params = model.weights.numel();
  assert.ok(params > 1e6 && params < 5e6, `${params} parameters`);
  const file = join(dir, 'model.safetensors');
  assert.ok((await stat(file)).size < 10e6);
  const st = await SafetensorsFile.open(file);
  try {
    for (const name of st.names()) assert.equal(st.info(name).dtype, 'F16', name);
  } finally {
    await st.close();
  }
  for (const f of [
    'README.md',
    'config.json',
    'generation_config.json',
    'tokenizer.json',
    'tokenizer_config.json',
    'special_tokens_map.json',
  ]) {
    assert.ok((await stat(join(dir, f))).size > 0, f);
  }
  const card = await readFile(join(dir, 'README.md'), 'utf8');
  assert.match(card, /scripts\/pretrain\.ts/);
  assert.match(card, /final eval loss/);
});

test('the bundled tokenizer round-trips task texts and agrees with config.json on special tokens', async () => {
  const tok = await Tokenizer.fromDir(dir);
  const config = JSON.parse(await readFile(join(dir, 'config.json'), 'utf8'));
  assert.equal(tok.vocabSize, config.vocab_size);
  assert.equal(tok.bosTokenId, config.bos_token_id);
  assert.equal(tok.eosTokenId, config.eos_token_id);
  assert.equal(tok.padTokenId, config.pad_token_id);
  const texts: string[] = ['Caf\u00e9 \u2013 \u{1F642} tabs\tand\n\nnew lines  '];
  for (const task of TASK_NAMES) {
    const data = await loadTaskData(task);
    for (const ex of data.eval.slice(0, 30)) texts.push(ex.prompt, ex.completion, ex.prompt + ex.completion);
  }
  for (const t of texts) {
    const ids = tok.encode(t);
    assert.equal(ids[0], tok.bosTokenId);
    assert.equal(tok.decode(ids, { skipSpecialTokens: true }), t);
  }
  // Digits are never merged: a number is one token per digit.
  assert.deepEqual(tok.tokenize(' 1995').slice(-4), ['1', '9', '9', '5']);
});

test('data/tasks holds what scripts/make_tasks.ts generates, eval prompts unseen in training', async () => {
  for (const task of TASK_NAMES) {
    const data = await loadTaskData(task);
    assert.equal(data.train.length, 400, task);
    assert.equal(data.eval.length, 100, task);
    const expected = taskSplits(task as TaskName, 2024, { train: 400, eval: 100 });
    assert.deepEqual(data.train, expected.train, `${task}/train.jsonl is stale: run npm run make-tasks`);
    assert.deepEqual(data.eval, expected.eval, `${task}/eval.jsonl is stale: run npm run make-tasks`);
    const trainPrompts = new Set(data.train.map((e) => e.prompt));
    assert.equal(trainPrompts.size, 400);
    for (const e of data.eval) assert.ok(!trainPrompts.has(e.prompt), `${task}: eval prompt also in train: ${e.prompt}`);
    for (const e of [...data.train, ...data.eval]) assert.ok(e.completion.startsWith(' ') && !e.completion.includes('\n'));
  }
  const labels = (await loadTaskData('sentiment')).train.map((e) => e.completion.trim());
  const positive = labels.filter((l) => l === 'positive').length;
  assert.equal(positive + labels.filter((l) => l === 'negative').length, 400);
  assert.ok(positive > 150 && positive < 250, `${positive} positive of 400`);
});

test('the base model is poor at every task before tuning', async () => {
  const model = await loadModel(dir);
  const tok = await Tokenizer.fromDir(dir);
  for (const task of TASK_NAMES) {
    const data = await loadTaskData(task);
    const e = await evaluateTask(model, tok, getTask(task), data.eval, { limit: 20, batchSize: 20, runtime: { threads: 2 } });
    assert.ok(e.score <= 0.25, `${task}: the base model already scores ${e.score}`);
  }
});
