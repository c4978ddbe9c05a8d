// `peft serve` driven by the official `openai` npm client on 127.0.0.1: completions and chat (plain
// and streamed), the adapter picked by `model`, concurrent requests batched together with each
// answer equal to the same request run alone, hot load / replace / unload (with a request in
// flight), and the OpenAI-style errors (400, 404, 409, 503, 504), disconnects freeing their rows.

import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import OpenAI from 'openai';
import { loadModel } from '../../src/models/load.js';
import type { PretrainedModel } from '../../src/models/types.js';
import { Tokenizer } from '../../src/io/tokenizer.js';
import { Generator } from '../../src/generate/index.js';
import { loadGenerationDefaults } from '../../src/generate/config.js';
import { LoraModel } from '../../src/tuners/lora/index.js';
import { IA3Model } from '../../src/tuners/ia3/index.js';
import { loadAdapter } from '../../src/tuners/load.js';
import { MultiAdapterModel } from '../../src/tuners/multi/index.js';
import { OpenAIServer, ServeEngine, type EngineResult } from '../../src/serve/index.js';

const MODEL = new URL('../../../models/tiny-llama', import.meta.url).pathname;
const runtime = { threads: 1 };
const CHAT_TEMPLATE =
  '{% for m in messages %}<|{{ m.role }}|>{{ m.content }}\n{% endfor %}{% if add_generation_prompt %}<|assistant|>{% endif %}';

let dir: string;
let base: PretrainedModel;
let tokenizer: Tokenizer;
const folders: Record<string, string> = {};
let engine: ServeEngine;
let server: OpenAIServer;
let client: OpenAI;
let url: string;

before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'peft-serve-'));
  base = await loadModel(MODEL);
  tokenizer = await Tokenizer.fromDir(MODEL);
  // Three adapters of different methods, ranks and targets, with non-trivial weights.
  const a = await LoraModel.create(base, { r: 4, loraAlpha: 8, targetModules: ['q_proj', 'v_proj'], initLoraWeights: false }, { seed: 1 });
  await a.savePretrained((folders.a = join(dir, 'a')));
  const b = await LoraModel.create(
    base,
    {
      r: 8,
      loraAlpha: 16,
      targetModules: ['q_proj', 'k_proj', 'v_proj', 'o_proj', 'gate_proj', 'up_proj', 'down_proj'],
      initLoraWeights: false,
    },
    { seed: 2 },
  );
  await b.savePretrained((folders.b = join(dir, 'b')));
  const c = IA3Model.create(base, {
    targetModules: ['k_proj', 'v_proj', 'down_proj'],
    feedforwardModules: ['down_proj'],
    initIa3Weights: false,
    seed: 3,
  });
  await c.savePretrained((folders.c = join(dir, 'c')));
  const d = await LoraModel.create(base, { r: 2, loraAlpha: 2, targetModules: ['v_proj'], initLoraWeights: false }, { seed: 4 });
  await d.savePretrained((folders.d = join(dir, 'd')));
  const multi = await MultiAdapterModel.fromFolders(base, { a: folders.a, b: folders.b });
  engine = await ServeEngine.create(multi, tokenizer, await loadGenerationDefaults(MODEL, base.config), {
    maxBatch: 8,
    maxQueue: 16,
    runtime,
  });
  server = new OpenAIServer(engine, { modelId: 'tiny', chatTemplate: CHAT_TEMPLATE, maxTokensLimit: 64 });
  url = await server.listen(0, '127.0.0.1');
  client = new OpenAI({ baseURL: `${url}/v1`, apiKey: 'unused', maxRetries: 0 });
});

after(async () => {
  await server?.close();
  await engine?.close();
  await rm(dir, { recursive: true, force: true });
});

/** Greedy text of `prompt` with the named adapter alone (its own LoRA/IA3 model, not the server). */
const aloneCache = new Map<string, string>();
async function alone(adapter: string | null, prompt: string, maxTokens: number, addSpecial = true): Promise<string> {
  const key = `${adapter}|${prompt}|${maxTokens}|${addSpecial}`;
  if (aloneCache.has(key)) return aloneCache.get(key)!;
  const model = adapter ? await loadAdapter(base, folders[adapter]!) : base;
  const g = await Generator.create(model, { tokenizer, runtime });
  const r = await g.generate(prompt, { maxNewTokens: maxTokens, temperature: 0, addSpecialTokens: addSpecial });
  await g.dispose();
  aloneCache.set(key, r.sequences[0]!.text!);
  return r.sequences[0]!.text!;
}

test('GET /v1/models lists the base and the adapters', async () => {
  const ids = [];
  for await (const m of client.models.list()) ids.push(m.id);
  assert.deepEqual(ids, ['tiny', 'a', 'b']);
});

test('completions: the model field picks the adapter; greedy text equals the adapter run alone', async () => {
  for (const [model, adapter] of [
    ['tiny', null],
    ['a', 'a'],
    ['b', 'b'],
  ] as const) {
    const r = await client.completions.create({ model, prompt: 'Once upon a time', max_tokens: 12, temperature: 0 });
    assert.equal(r.object, 'text_completion');
    assert.equal(r.choices[0]!.text, await alone(adapter, 'Once upon a time', 12), model);
    assert.equal(r.usage!.completion_tokens, 12);
    assert.equal(r.choices[0]!.finish_reason, 'length');
  }
  const a = (await client.completions.create({ model: 'a', prompt: 'Once upon a time', max_tokens: 12, temperature: 0 })).choices[0]!.text;
  const b = (await client.completions.create({ model: 'b', prompt: 'Once upon a time', max_tokens: 12, temperature: 0 })).choices[0]!.text;
  assert.notEqual(a, b, 'the two adapters give different text (so a mix-up would show)');
});

test('concurrent requests are batched, and every answer equals the same request alone', async () => {
  const prompts = ['The food', 'We went to the', 'It was a', 'The service', 'My friend said', 'Nothing'];
  const models = ['a', 'b', 'tiny', 'b', 'a', 'tiny'];
  const before = engine.stats().steps;
  const rs = await Promise.all(
    prompts.map((p, i) => client.completions.create({ model: models[i]!, prompt: p, max_tokens: 10 + i, temperature: 0 })),
  );
  for (const [i, r] of rs.entries())
    assert.equal(r.choices[0]!.text, await alone(models[i] === 'tiny' ? null : models[i]!, prompts[i]!, 10 + i), `request ${i}`);
  assert.ok(engine.stats().peakBatch > 1, 'requests shared decode steps');
  // 6 requests of 10..15 tokens in far fewer steps than 75 one after the other.
  assert.ok(engine.stats().steps - before < 40, `${engine.stats().steps - before} steps`);
});

test('rows join a running batch and leave it at different steps (cache rows joined, padded, compacted); every answer equals the request alone', async () => {
  const ask = (prompt: string, adapter: string, maxTokens: number, onText?: () => void) =>
    engine.submit({ promptIds: tokenizer.encode(prompt), adapter, maxTokens, temperature: 0, topP: 1, stop: [], onText });
  // A runs 40 tokens; B joins at A's first text and leaves after 6 tokens; C (a longer prompt) and
  // D join together when B has left, so the running cache is padded on the left, joined and compacted.
  let aDone = false;
  let aRunningAtJoin = false;
  let b: Promise<EngineResult> | undefined;
  let later: Promise<EngineResult>[] = [];
  const a = ask('The food', 'a', 40, () => {
    b ??= ask('We went to the', 'b', 6).then((r) => {
      aRunningAtJoin = !aDone;
      later = [ask('My friend said it was a very', '__base__', 12), ask('Nothing', 'a', 3)];
      return r;
    });
  }).then((r) => {
    aDone = true;
    return r;
  });
  const first = await a;
  const second = await b!;
  const [c, d] = await Promise.all(later);
  assert.ok(aRunningAtJoin, 'C and D joined while A was running');
  assert.equal(first.text, await alone('a', 'The food', 40));
  assert.equal(second.text, await alone('b', 'We went to the', 6));
  assert.equal(c!.text, await alone(null, 'My friend said it was a very', 12));
  assert.equal(d!.text, await alone('a', 'Nothing', 3));
});

test('streaming completions and chat: the chunks add up to the non-streamed text', async () => {
  const stream = await client.completions.create({ model: 'b', prompt: 'The food was', max_tokens: 9, temperature: 0, stream: true });
  let text = '';
  let finish: string | null = null;
  for await (const c of stream) {
    text += c.choices[0]?.text ?? '';
    finish = c.choices[0]?.finish_reason ?? finish;
  }
  assert.equal(text, await alone('b', 'The food was', 9));
  assert.equal(finish, 'length');

  const messages = [{ role: 'user' as const, content: 'Tell me about the food' }];
  const rendered = tokenizer.applyChatTemplate(messages, { addGenerationPrompt: true, chatTemplate: CHAT_TEMPLATE });
  const chat = await client.chat.completions.create({ model: 'a', messages, max_tokens: 8, temperature: 0 });
  assert.equal(chat.object, 'chat.completion');
  assert.equal(chat.choices[0]!.message.role, 'assistant');
  assert.equal(chat.choices[0]!.message.content, await alone('a', rendered, 8, false));
  const chatStream = await client.chat.completions.create({ model: 'a', messages, max_tokens: 8, temperature: 0, stream: true });
  let streamed = '';
  for await (const c of chatStream) streamed += c.choices[0]?.delta?.content ?? '';
  assert.equal(streamed, chat.choices[0]!.message.content);
});

test('sampling: a seed reproduces the text; stop strings cut it', async () => {
  const ask = () => client.completions.create({ model: 'a', prompt: 'The', max_tokens: 12, temperature: 0.9, top_p: 0.9, seed: 7 });
  const [x, y] = await Promise.all([ask(), ask()]);
  assert.equal(x.choices[0]!.text, y.choices[0]!.text);
  const full = await alone('a', 'Once upon a time', 12);
  const cut = full.split(' ').slice(0, 3).join(' ');
  const word = full.slice(cut.length).trimStart().split(' ')[0]!;
  if (word) {
    const r = await client.completions.create({ model: 'a', prompt: 'Once upon a time', max_tokens: 12, temperature: 0, stop: [word] });
    assert.equal(r.choices[0]!.finish_reason, 'stop');
    assert.ok(!r.choices[0]!.text.includes(word) && full.startsWith(r.choices[0]!.text), JSON.stringify(r.choices[0]!.text));
  }
});

test('hot load, replace with a request in flight, and unload', async () => {
  // Load: the new adapter targets a subset of the compiled modules, so no session is rebuilt.
  const loaded = await fetch(`${url}/v1/adapters`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ name: 'd', path: folders.d }),
  });
  assert.equal(loaded.status, 201);
  const r = await client.completions.create({ model: 'd', prompt: 'It was a', max_tokens: 8, temperature: 0 });
  assert.equal(r.choices[0]!.text, await alone('d', 'It was a', 8));

  // Replace "a" with d's weights while a streamed request on "a" is in flight.
  const expectedOld = await alone('a', 'We went to the', 40);
  const stream = await client.completions.create({ model: 'a', prompt: 'We went to the', max_tokens: 40, temperature: 0, stream: true });
  let text = '';
  let swapped = false;
  for await (const c of stream) {
    text += c.choices[0]?.text ?? '';
    if (!swapped) {
      swapped = true;
      const sw = await fetch(`${url}/v1/adapters`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ name: 'a', path: folders.d, replace: true }),
      });
      assert.equal(sw.status, 200);
      const now = await client.completions.create({ model: 'a', prompt: 'It was a', max_tokens: 8, temperature: 0 });
      assert.equal(now.choices[0]!.text, await alone('d', 'It was a', 8), 'a new request on "a" gets the replacement');
    }
  }
  assert.ok(swapped);
  assert.equal(text, expectedOld, 'the request in flight finished with the adapter it started with');

  const del = await fetch(`${url}/v1/adapters/d`, { method: 'DELETE' });
  assert.equal(del.status, 200);
  await assert.rejects(
    client.completions.create({ model: 'd', prompt: 'x', max_tokens: 2 }),
    (e: unknown) => e instanceof OpenAI.NotFoundError,
  );
  // An IA3 adapter needs hooks the compiled sessions do not have: 409, nothing changes.
  const ia3 = await fetch(`${url}/v1/adapters`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ name: 'c', path: folders.c }),
  });
  assert.equal(ia3.status, 409);
  assert.match(((await ia3.json()) as { error: { message: string } }).error.message, /compiled sessions/);
  // Put "a" back for the other tests.
  await fetch(`${url}/v1/adapters`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ name: 'a', path: folders.a, replace: true }),
  });
});

test('bad requests are 400 with an OpenAI error body; unknown model 404; bad adapter folder 400', async () => {
  const isStatus = (s: number) => (e: unknown) => e instanceof OpenAI.APIError && e.status === s;
  await assert.rejects(client.completions.create({ model: 'nope', prompt: 'x' }), isStatus(404));
  await assert.rejects(client.completions.create({ model: 'a', prompt: 'x', max_tokens: 65 }), isStatus(400));
  await assert.rejects(client.completions.create({ model: 'a', prompt: 'x', temperature: 3 }), isStatus(400));
  await assert.rejects(client.completions.create({ model: 'a', prompt: '' }), isStatus(400));
  await assert.rejects(client.chat.completions.create({ model: 'a', messages: [] }), isStatus(400));
  const raw = await fetch(`${url}/v1/completions`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{bad json' });
  assert.equal(raw.status, 400);
  const body = (await raw.json()) as { error: { message: string; type: string } };
  assert.equal(body.error.type, 'invalid_request_error');
  const folder = await fetch(`${url}/v1/adapters`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ name: 'z', path: join(dir, 'missing') }),
  });
  assert.equal(folder.status, 400);
  const big = await fetch(`${url}/v1/completions`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ model: 'a', prompt: 'x'.repeat(2 * 1024 * 1024) }),
  });
  assert.equal(big.status, 413);
});

test('a client that disconnects frees its row; a full queue is 503; a timeout is 504', async () => {
  const ac = new AbortController();
  const stream = await client.completions.create(
    { model: 'b', prompt: 'The', max_tokens: 60, temperature: 0, stream: true },
    { signal: ac.signal },
  );
  const cancelledBefore = engine.stats().cancelled;
  try {
    for await (const _ of stream) ac.abort();
  } catch {
    // the client's own abort
  }
  for (let i = 0; i < 200 && engine.stats().running + engine.stats().waiting > 0; i++) await new Promise((r) => setTimeout(r, 20));
  assert.equal(engine.stats().running, 0, 'the abandoned row left the batch');
  assert.equal(engine.stats().cancelled, cancelledBefore + 1, 'it left because its client went away, not because it finished');

  const tiny = await ServeEngine.create(
    await MultiAdapterModel.fromFolders(base, {}),
    tokenizer,
    await loadGenerationDefaults(MODEL, base.config),
    { maxBatch: 1, maxQueue: 1, runtime },
  );
  const s2 = new OpenAIServer(tiny, { modelId: 'tiny', requestTimeoutMs: 60_000 });
  const u2 = await s2.listen(0, '127.0.0.1');
  const c2 = new OpenAI({ baseURL: `${u2}/v1`, apiKey: 'unused', maxRetries: 0 });
  try {
    const results = await Promise.allSettled(
      [0, 1, 2, 3].map(() => c2.completions.create({ model: 'tiny', prompt: 'The', max_tokens: 20, temperature: 0 })),
    );
    const codes = results.map((r) => (r.status === 'fulfilled' ? 200 : (r.reason as InstanceType<typeof OpenAI.APIError>).status));
    assert.ok(codes.includes(503), `statuses ${codes}`);
    assert.ok(codes.includes(200), `statuses ${codes}`);
  } finally {
    await s2.close();
    await tiny.close();
  }
  const slow = await ServeEngine.create(
    await MultiAdapterModel.fromFolders(base, {}),
    tokenizer,
    await loadGenerationDefaults(MODEL, base.config),
    { runtime },
  );
  const s3 = new OpenAIServer(slow, { modelId: 'tiny', requestTimeoutMs: 1 });
  const u3 = await s3.listen(0, '127.0.0.1');
  try {
    const c3 = new OpenAI({ baseURL: `${u3}/v1`, apiKey: 'unused', maxRetries: 0 });
    await assert.rejects(
      c3.completions.create({ model: 'tiny', prompt: 'The', max_tokens: 50, temperature: 0 }),
      (e: unknown) => e instanceof OpenAI.APIError && e.status === 504,
    );
  } finally {
    await s3.close();
    await slow.close();
  }
});
