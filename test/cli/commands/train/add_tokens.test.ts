// peft train --add-tokens end to end on the bundled tiny Llama (tied lm_head): the new tokens
// encode as single ids, the embedding grows with mean-initialised rows, only the new rows (as
// peft's trainable tokens) and LoRA train, the adapter loads back on the resized base, and
// `peft merge` writes a model whose config, weights and tokenizer hold the tokens and whose logits
// are the adapter's; bad --add-tokens input is one line before any output.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ForwardSession } from '../../../../src/generate/index.js';
import type { InferenceModel } from '../../../../src/generate/index.js';
import { Tokenizer } from '../../../../src/io/tokenizer.js';
import { loadModel, resizeTokenEmbeddings } from '../../../../src/models/load.js';
import { loadAdapter } from '../../../../src/tuners/load.js';
import { fixturePath, maxAbsDiff } from '../../../helpers/fixtures.js';
import { peft } from '../../peft.js';

const tmp = mkdtempSync(join(tmpdir(), 'peft-add-tokens-'));
process.on('exit', () => rmSync(tmp, { recursive: true, force: true }));
const MODEL = 'models/tiny-llama';
const DATA = join(tmp, 'calls.jsonl');
const rows = Array.from({ length: 16 }, (_, i) => ({
  prompt: `Weather in city ${i}?`,
  completion: ` <tool_call>{"name":"weather","city":${i}}</tool_call>`,
}));
writeFileSync(DATA, rows.map((r) => JSON.stringify(r)).join('\n') + '\n');
const TRAIN = [
  'train',
  '--model',
  MODEL,
  '--data',
  DATA,
  '--steps',
  '4',
  '--batch',
  '4',
  '--max-len',
  '64',
  '--lr',
  '1e-2',
  '--threads',
  '1',
  '--no-eval-at-start',
];

async function logits(model: InferenceModel, ids: number[]): Promise<Float32Array> {
  const s = await ForwardSession.create(model, { runtime: { threads: 1 } });
  try {
    const n = ids.length;
    const out = await s.run({
      inputIds: { dtype: 'int64', shape: [1, n], data: BigInt64Array.from(ids.map(BigInt)) },
      attentionMask: { dtype: 'int64', shape: [1, n], data: new BigInt64Array(n).fill(1n) },
    });
    return out.logits.data as Float32Array;
  } finally {
    await s.dispose();
  }
}

test('peft train --add-tokens: single-token encoding, trainable new rows, adapter reload, merge with the tokens', async () => {
  const out = join(tmp, 'run');
  const r = await peft([...TRAIN, '--out', out, '--add-tokens', '<tool_call>, </tool_call>']);
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stderr, /added 2 tokens \(ids 1536, 1537\): vocabulary 1538/);

  // the tokenizer saved with the adapter keeps each new token whole
  const tok = await Tokenizer.fromDir(out);
  assert.equal(tok.vocabSize, 1538);
  const ids = tok.encode('Weather?<tool_call>{"a":1}</tool_call>');
  assert.equal(ids.filter((i) => i === 1536).length, 1);
  assert.equal(ids.filter((i) => i === 1537).length, 1);
  assert.equal(tok.decode(ids, { skipSpecialTokens: true }), 'Weather?<tool_call>{"a":1}</tool_call>');

  // peft's format: trainable_token_indices and the token_adapter delta next to LoRA
  const config = JSON.parse(readFileSync(join(out, 'adapter_config.json'), 'utf8')) as Record<string, unknown>;
  assert.deepEqual(config.trainable_token_indices, [1536, 1537]);

  // the resized base: old rows unchanged, new rows the mean of the old ones
  const base = await loadModel(MODEL);
  const before = Float32Array.from(base.weights.get('model.embed_tokens.weight').data);
  const H = base.hiddenSize;
  const resized = resizeTokenEmbeddings(base, tok.vocabSize);
  assert.equal(resized.vocabSize, 1538);
  const emb = resized.weights.get('model.embed_tokens.weight');
  assert.deepEqual(emb.shape, [1538, H]);
  assert.deepEqual(emb.data.subarray(0, 1536 * H), before);
  for (const c of [0, 7, H - 1]) {
    let m = 0;
    for (let r = 0; r < 1536; r++) m += before[r * H + c]!;
    assert.ok(Math.abs(emb.data[1536 * H + c]! - m / 1536) < 1e-6 && Math.abs(emb.data[1537 * H + c]! - m / 1536) < 1e-6);
  }
  const adapted = await loadAdapter(resized, out);
  const params = adapted.parameters();
  const deltaName = [...params.keys()].find((k) => k.includes('token_adapter.trainable_tokens_delta'))!;
  assert.ok(deltaName, [...params.keys()].join(', '));
  const delta = params.get(deltaName)!;
  assert.deepEqual(delta.shape, [2, H]);
  // the new rows trained away from their mean initialisation
  assert.ok(maxAbsDiff(delta.data, emb.data.subarray(1536 * H)) > 1e-3);
  const loraB = [...params.entries()].filter(([k]) => k.includes('lora_B'));
  assert.ok(loraB.length > 0 && loraB.some(([, t]) => t.data.some((x) => x !== 0)), 'LoRA trained too');

  // merge: config, weights and tokenizer carry the tokens; only the new embedding rows (tied head) changed
  const merged = join(tmp, 'merged');
  const m = await peft(['merge', '--model', MODEL, '--adapter', out, '--out', merged, '--dtype', 'float32']);
  assert.equal(m.code, 0, m.stderr);
  assert.equal((JSON.parse(readFileSync(join(merged, 'config.json'), 'utf8')) as { vocab_size: number }).vocab_size, 1538);
  const tj = JSON.parse(readFileSync(join(merged, 'tokenizer.json'), 'utf8')) as { added_tokens: { id: number; content: string }[] };
  assert.deepEqual(
    tj.added_tokens.slice(-2).map((t) => [t.id, t.content]),
    [
      [1536, '<tool_call>'],
      [1537, '</tool_call>'],
    ],
  );
  const tc = JSON.parse(readFileSync(join(merged, 'tokenizer_config.json'), 'utf8')) as {
    added_tokens_decoder: Record<string, { content: string }>;
  };
  assert.equal(tc.added_tokens_decoder['1536']!.content, '<tool_call>');
  assert.equal(tc.added_tokens_decoder['1537']!.content, '</tool_call>');
  const mergedModel = await loadModel(merged);
  const memb = mergedModel.weights.get('model.embed_tokens.weight');
  assert.deepEqual(memb.data.subarray(0, 1536 * H), before);
  assert.ok(maxAbsDiff(memb.data.subarray(1536 * H), delta.data) < 1e-7);
  const mtok = await Tokenizer.fromDir(merged);
  assert.deepEqual(mtok.encode('x<tool_call>y</tool_call>'), tok.encode('x<tool_call>y</tool_call>'));

  // the merged model's logits are the unmerged adapter's, on text holding the new tokens
  const probe = tok.encode('Weather in city 3? <tool_call>{"name":"weather"}</tool_call>');
  const want = await logits(adapted, probe);
  const got = await logits(mergedModel, probe);
  const d = maxAbsDiff(got, want);
  assert.ok(d < 1e-4, `merged vs adapter logits: max abs diff ${d}`);
  // and the adapter changed them (the new rows matter): the resized base alone differs
  assert.ok(maxAbsDiff(await logits(resizeTokenEmbeddings(await loadModel(MODEL), 1538), probe), want) > 1e-3);

  const g = await peft(['generate', '--model', merged, '--prompt', 'Weather in city 3?', '--max-new-tokens', '4', '--threads', '1']);
  assert.equal(g.code, 0, g.stderr);
});

test("peft train --add-tokens on an untied lm_head: the head's new rows train too, and the merged model gives the adapter's logits", async () => {
  const model = fixturePath('models', 'llama');
  const out = join(tmp, 'untied');
  const r = await peft([
    'train',
    '--model',
    model,
    '--data',
    DATA,
    '--steps',
    '3',
    '--batch',
    '4',
    '--max-len',
    '64',
    '--lr',
    '1e-2',
    '--threads',
    '1',
    '--no-eval-at-start',
    '--out',
    out,
    '--add-tokens',
    '<tool_call>,</tool_call>',
  ]);
  assert.equal(r.code, 0, r.stderr);
  const tok = await Tokenizer.fromDir(out);
  const config = JSON.parse(readFileSync(join(out, 'adapter_config.json'), 'utf8')) as {
    trainable_token_indices: Record<string, number[]>;
  };
  const ids = [tok.vocabSize - 2, tok.vocabSize - 1];
  assert.deepEqual(config.trainable_token_indices, { embed_tokens: ids, lm_head: ids });
  const base = await loadModel(model);
  const head = Float32Array.from(base.weights.get('lm_head.weight').data);
  const adapted = await loadAdapter(resizeTokenEmbeddings(base, tok.vocabSize), out);
  const merged = join(tmp, 'untied-merged');
  const m = await peft(['merge', '--model', model, '--adapter', out, '--out', merged, '--dtype', 'float32']);
  assert.equal(m.code, 0, m.stderr);
  const mergedModel = await loadModel(merged);
  assert.equal(mergedModel.vocabSize, tok.vocabSize);
  const mhead = mergedModel.weights.get('lm_head.weight').data;
  assert.deepEqual(mhead.subarray(0, head.length), head);
  const probe = tok.encode('Weather in city 3? <tool_call>{"name":"weather"}</tool_call>');
  assert.ok(probe.includes(ids[0]!) && probe.includes(ids[1]!));
  const d = maxAbsDiff(await logits(mergedModel, probe), await logits(adapted, probe));
  assert.ok(d < 1e-4, `merged vs adapter logits: max abs diff ${d}`);
});

test('peft train --add-tokens: an empty token, a token already in the vocabulary or a non-LoRA method is one line before any output', async () => {
  const cases: [string[], RegExp][] = [
    [['--add-tokens', '<a>,,<b>'], /^--add-tokens "<a>,,<b>" has an empty token/],
    [['--add-tokens', '<a>,<a>'], /^--add-tokens lists "<a>" twice/],
    [
      ['--add-tokens', '<tool_call>,</s>'],
      /^--add-tokens: "<\/s>" is already token 2 of the tokenizer in models\/tiny-llama; remove it from --add-tokens/,
    ],
    [
      ['--add-tokens', '<a>', '--method', 'ia3'],
      /^--add-tokens trains the new rows with LoRA's trainable tokens; use --method lora or qlora, not ia3/,
    ],
  ];
  for (const [i, [args, message]] of cases.entries()) {
    const out = join(tmp, `bad${i}`);
    const r = await peft([...TRAIN, '--out', out, ...args]);
    assert.equal(r.code, 1, r.stderr);
    const lines = r.stderr.trim().split('\n');
    assert.equal(lines.length, 1, r.stderr);
    assert.match(lines[0]!.replace(/^error: /, ''), message);
    assert.ok(!existsSync(out), 'refused before the output folder exists');
  }
});
