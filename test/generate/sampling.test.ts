// Sampling and stopping: a seed reproduces a sampled generation, top-k 1 is greedy, the warpers
// keep the token sets transformers keeps, stop tokens and stop strings end a row (others go on),
// streamed text adds up to the returned text, and user mistakes are GenerationErrors.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { loadModel } from '../../src/models/load.js';
import { Tokenizer } from '../../src/io/tokenizer.js';
import {
  Generator,
  GenerationError,
  generate,
  loadGenerationDefaults,
  samplingProbabilities,
  type TokenEvent,
} from '../../src/generate/index.js';
import { fixturePath } from '../helpers/fixtures.js';

const runtime = { threads: 1 };
const PROMPTS = ['The robot walked to the library', 'Low rank', 'It is a simple idea: do not change what works'];

async function llamaGenerator(): Promise<Generator> {
  const dir = fixturePath('models', 'llama');
  return Generator.create(await loadModel(dir), { tokenizer: await Tokenizer.fromDir(dir), runtime });
}

test('samplingProbabilities: temperature, top-k and top-p keep the sets transformers keeps', () => {
  const logits = [2, 1, 0, 3, -1];
  const soft = (xs: number[]) => {
    const m = Math.max(...xs);
    const e = xs.map((x) => Math.exp(x - m));
    const s = e.reduce((p, q) => p + q, 0);
    return e.map((x) => x / s);
  };
  const close = (a: ArrayLike<number>, b: number[]) =>
    b.forEach((x, i) => assert.ok(Math.abs(a[i]! - x) < 1e-12, `${Array.from(a)} vs ${b}`));
  close(samplingProbabilities(logits, { temperature: 1, topK: 0, topP: 1 }), soft(logits));
  close(samplingProbabilities(logits, { temperature: 0.5, topK: 0, topP: 1 }), soft(logits.map((x) => x / 0.5)));
  const top2 = soft([3, 2]);
  close(samplingProbabilities(logits, { temperature: 1, topK: 2, topP: 1 }), [top2[1]!, 0, 0, top2[0]!, 0]);
  // probabilities ~ [.237, .087, .032, .644, .012]: top_p 0.7 keeps {3, 0}; 0.5 keeps {3} only.
  const p = soft(logits);
  close(samplingProbabilities(logits, { temperature: 1, topK: 0, topP: 0.7 }), [p[0]! / (p[0]! + p[3]!), 0, 0, p[3]! / (p[0]! + p[3]!), 0]);
  close(samplingProbabilities(logits, { temperature: 1, topK: 0, topP: 0.5 }), [0, 0, 0, 1, 0]);
});

test('llama: sampling with a seed is reproducible, seeds differ, and top-k 1 is greedy', async () => {
  const gen = await llamaGenerator();
  try {
    const opts = { maxNewTokens: 16, stopTokenIds: [], temperature: 1.5, topK: 0 };
    const a = await gen.generate(PROMPTS, { ...opts, seed: 1 });
    const b = await gen.generate(PROMPTS, { ...opts, seed: 1 });
    const c = await gen.generate(PROMPTS, { ...opts, seed: 2 });
    const ids = (g: typeof a) => g.sequences.map((s) => s.tokenIds);
    assert.deepEqual(ids(a), ids(b));
    assert.notDeepEqual(ids(a), ids(c));
    const greedy = await gen.generate(PROMPTS, { maxNewTokens: 16, stopTokenIds: [] });
    assert.notDeepEqual(ids(a), ids(greedy));
    const topK1 = await gen.generate(PROMPTS, { maxNewTokens: 16, stopTokenIds: [], doSample: true, temperature: 1.5, topK: 1, seed: 5 });
    assert.deepEqual(ids(topK1), ids(greedy));
    const topPTiny = await gen.generate(PROMPTS, { maxNewTokens: 16, stopTokenIds: [], doSample: true, topK: 0, topP: 1e-6, seed: 9 });
    assert.deepEqual(ids(topPTiny), ids(greedy));
  } finally {
    await gen.dispose();
  }
});

test('llama: a stop token ends its row only; finished rows are not padded in the result', async () => {
  const gen = await llamaGenerator();
  try {
    const free = await gen.generate(PROMPTS, { maxNewTokens: 12, stopTokenIds: [] });
    const row0 = free.sequences[0]!.tokenIds;
    const stop = row0[3]!;
    const cut = row0.indexOf(stop) + 1;
    const stopped = await gen.generate(PROMPTS, { maxNewTokens: 12, stopTokenIds: [stop] });
    assert.deepEqual(stopped.sequences[0]!.tokenIds, row0.slice(0, cut));
    assert.equal(stopped.sequences[0]!.finishReason, 'stop');
    for (let r = 1; r < PROMPTS.length; r++) {
      const want = free.sequences[r]!.tokenIds;
      const at = want.indexOf(stop);
      assert.deepEqual(stopped.sequences[r]!.tokenIds, at >= 0 ? want.slice(0, at + 1) : want, `row ${r}`);
    }
  } finally {
    await gen.dispose();
  }
});

test('llama: stop strings stop, the text ends before them, and streamed text adds up to the result', async () => {
  const gen = await llamaGenerator();
  try {
    const free = await gen.generate(PROMPTS, { maxNewTokens: 16, stopTokenIds: [] });
    const text = free.sequences[1]!.text!;
    assert.ok(text.length > 6, `generated text ${JSON.stringify(text)}`);
    const stopString = text.slice(3, 6);
    const events: TokenEvent[] = [];
    const r = await gen.generate(PROMPTS, {
      maxNewTokens: 16,
      stopTokenIds: [],
      stopStrings: [stopString],
      onToken: (e) => events.push(e),
    });
    const row = r.sequences[1]!;
    assert.equal(row.finishReason, 'stop');
    assert.equal(row.stopString, stopString);
    assert.equal(row.text, text.slice(0, text.indexOf(stopString)));
    assert.ok(row.tokenIds.length < 16 && row.tokenIds.length < free.sequences[1]!.tokenIds.length);
    for (let b = 0; b < PROMPTS.length; b++) {
      const mine = events.filter((e) => e.row === b);
      assert.deepEqual(
        mine.map((e) => e.tokenId),
        r.sequences[b]!.tokenIds,
        `row ${b} streamed tokens`,
      );
      assert.equal(mine.map((e) => e.text).join(''), r.sequences[b]!.text, `row ${b} streamed text`);
    }
  } finally {
    await gen.dispose();
  }
});

test('generation_config.json gives eos and pad; generate() runs one prompt; mistakes are GenerationErrors', async () => {
  const dir = fixturePath('models', 'gpt2');
  const model = await loadModel(dir);
  const tokenizer = await Tokenizer.fromDir(dir);
  const gpt2 = await loadGenerationDefaults(dir, model.config);
  assert.deepEqual([gpt2.eosTokenIds, gpt2.padTokenId], [[556], undefined]);
  const llamaDir = fixturePath('models', 'llama');
  const llama = await loadGenerationDefaults(llamaDir, (await loadModel(llamaDir)).config);
  assert.deepEqual([llama.eosTokenIds, llama.padTokenId, llama.bosTokenId], [[558], 559, 557]);
  const g = await generate(model, tokenizer, 'The robot', { maxNewTokens: 4, runtime });
  assert.equal(g.sequences.length, 1);
  assert.ok(g.sequences[0]!.tokenIds.length <= 4);
  await assert.rejects(
    generate(model, tokenizer, ' robot'.repeat(200), { maxNewTokens: 2, runtime }),
    (e: Error) => e instanceof GenerationError && /128 positions/.test(e.message),
  );
  await assert.rejects(
    generate(model, tokenizer, 'The robot', { maxNewTokens: 200, runtime }),
    (e: Error) => e instanceof GenerationError && /lower maxNewTokens/.test(e.message),
  );
  await assert.rejects(generate(model, tokenizer, 'The robot', { topP: 0, runtime }), GenerationError);
  await assert.rejects(generate(model, tokenizer, [[]], { runtime }), /empty/);
  await assert.rejects(generate(model, tokenizer, [[1, 99999]], { runtime }), /outside the model's vocabulary/);
  const bert = await loadModel(fixturePath('models', 'bert'));
  await assert.rejects(generate(bert, tokenizer, 'hi', { runtime }), /causal language model/);
});
