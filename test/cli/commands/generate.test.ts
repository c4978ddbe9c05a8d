// `peft generate` end to end: the process prints the fixture models' greedy continuation (as
// transformers' generate() made it), batches prompts in --json mode, reproduces sampling with a
// seed, and turns user mistakes into one-line errors with exit code 1.

import { test } from 'node:test';
import { mkdtempSync, readFileSync, readdirSync, rmSync, symlinkSync } from 'node:fs';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import assert from 'node:assert/strict';
import { Tokenizer } from '../../../src/io/tokenizer.js';
import { toBigInt64 } from '../../../src/io/safetensors.js';
import { fixturePath, readTensors } from '../../helpers/fixtures.js';
import { peft } from '../peft.js';

for (const name of ['gpt2', 'llama']) {
  test(`${name}: peft generate streams the fixture's greedy continuation`, async () => {
    const dir = fixturePath('models', name);
    const tokenizer = await Tokenizer.fromDir(dir);
    const expected = await readTensors('models', name, 'expected_outputs.safetensors');
    const promptIds = Array.from(toBigInt64(expected.get('generate.prompt_ids')!), Number);
    const greedy = Array.from(toBigInt64(expected.get('generate.greedy_ids')!), Number);
    const prompt = tokenizer.decode(promptIds, { skipSpecialTokens: true });
    assert.deepEqual(tokenizer.encode(prompt), promptIds, 'the prompt text encodes back to the fixture ids');
    const r = await peft([
      'generate',
      '--model',
      dir,
      '--prompt',
      prompt,
      '--max-new-tokens',
      String(greedy.length - promptIds.length),
      '--threads',
      '1',
    ]);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout, tokenizer.decode(greedy.slice(promptIds.length), { skipSpecialTokens: true }) + '\n');
    assert.match(r.stderr, /new tokens for 1 prompt/);
  });
}

test('peft generate --json: one line per prompt; a seed reproduces sampling; --stop stops', async () => {
  const dir = fixturePath('models', 'llama');
  const args = [
    'generate',
    '--model',
    dir,
    '--prompt',
    'The robot walked',
    '--prompt',
    'Low rank adaptation trains',
    '--max-new-tokens',
    '12',
    '--json',
    '--threads',
    '1',
  ];
  const sample = [...args, '--temperature', '1.3', '--top-k', '0', '--seed', '11'];
  const [a, b] = await Promise.all([peft(sample), peft(sample)]);
  assert.equal(a.code, 0, a.stderr);
  const lines = a.stdout
    .trim()
    .split('\n')
    .map((l) => JSON.parse(l) as { prompt: string; text: string; token_ids: number[]; finish_reason: string });
  assert.deepEqual(
    lines.map((l) => l.prompt),
    ['The robot walked', 'Low rank adaptation trains'],
  );
  assert.equal(a.stdout, b.stdout);
  const greedy = await peft(args);
  const first = (JSON.parse(greedy.stdout.split('\n')[0]!) as { text: string }).text;
  assert.ok(first.length >= 4, `greedy text ${JSON.stringify(first)}`);
  const stop = first.slice(2, 4);
  const stopped = await peft([...args, '--stop', stop]);
  const row = JSON.parse(stopped.stdout.split('\n')[0]!) as { text: string; finish_reason: string; stop_string: string };
  assert.deepEqual([row.text, row.finish_reason, row.stop_string], [first.slice(0, first.indexOf(stop)), 'stop', stop]);
});

test('peft generate --adapter: LoRA on the fly and merged print the same greedy text', async () => {
  const args = [
    'generate',
    '--model',
    fixturePath('models', 'llama'),
    '--adapter',
    fixturePath('adapters', 'llama', 'lora_dora'),
    '--prompt',
    'The robot walked',
    '--max-new-tokens',
    '12',
    '--threads',
    '1',
  ];
  const [live, merged] = await Promise.all([peft(args), peft([...args, '--merged'])]);
  assert.equal(live.code, 0, live.stderr);
  assert.equal(merged.code, 0, merged.stderr);
  assert.ok(live.stdout.length > 1);
  assert.equal(live.stdout, merged.stdout);
});

test('peft generate --model org/name fetches the model through the Hub client (local server)', async () => {
  const dir = fixturePath('models', 'llama');
  const files = readdirSync(dir).filter((f) => f !== 'expected_outputs.safetensors' && f !== 'batch.safetensors');
  const commit = 'c0ffee'.padEnd(40, '0');
  const server = createServer((req, res) => {
    const url = new URL(req.url ?? '/', 'http://localhost');
    if (url.pathname === '/api/models/fixture-org/tiny-llama/revision/main') {
      res
        .writeHead(200, { 'content-type': 'application/json' })
        .end(JSON.stringify({ sha: commit, siblings: files.map((rfilename) => ({ rfilename })) }));
      return;
    }
    const m = /^\/fixture-org\/tiny-llama\/resolve\/[0-9a-f]{40}\/(.+)$/.exec(url.pathname);
    if (!m || !files.includes(m[1]!)) {
      res.writeHead(404).end();
      return;
    }
    const data = readFileSync(join(dir, m[1]!));
    res.writeHead(200, { etag: `"${m[1]!.replace(/[^\w]/g, '')}${data.length}"`, 'content-length': String(data.length) });
    res.end(req.method === 'HEAD' ? undefined : data);
  });
  await new Promise<void>((ok) => server.listen(0, '127.0.0.1', ok));
  const cache = mkdtempSync(join(tmpdir(), 'peft-hub-'));
  try {
    const endpoint = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
    const env = { HF_ENDPOINT: endpoint, HF_HUB_CACHE: cache, HF_HUB_OFFLINE: undefined, HF_TOKEN: undefined };
    const r = await peft(
      ['generate', '--model', 'fixture-org/tiny-llama', '--prompt', 'The robot walked', '--max-new-tokens', '8', '--threads', '1'],
      env,
    );
    assert.equal(r.code, 0, r.stderr);
    const local = await peft(['generate', '--model', dir, '--prompt', 'The robot walked', '--max-new-tokens', '8', '--threads', '1']);
    assert.equal(r.stdout, local.stdout);
  } finally {
    server.close();
    rmSync(cache, { recursive: true, force: true });
  }
});

test('peft generate: user mistakes are one-line errors with exit code 1', async () => {
  const gpt2 = fixturePath('models', 'gpt2');
  const noTokenizer = mkdtempSync(join(tmpdir(), 'peft-no-tokenizer-'));
  for (const f of ['config.json', 'model.safetensors']) symlinkSync(join(gpt2, f), join(noTokenizer, f));
  const cases: [string[], RegExp][] = [
    [['generate', '--model', fixturePath('models', 'missing'), '--prompt', 'hi'], /neither an existing local folder nor a Hub repo id/],
    [['generate', '--model', gpt2], /at least one --prompt/],
    [['generate', '--model', noTokenizer, '--prompt', 'hi'], /tokenizer\.json/],
    [['generate', '--model', gpt2, '--prompt', 'hi', '--merged'], /--merged needs at least one --adapter/],
    [['generate', '--model', gpt2, '--prompt', 'hi', '--chat'], /no chat template/],
    [['generate', '--model', gpt2, '--prompt', ' robot'.repeat(200)], /longer than the model's 128 positions/],
    [['generate', '--model', gpt2, '--prompt', 'hi', '--top-p', '2'], /topP must be in/],
    [['generate', '--model', gpt2, '--prompt', 'hi', '--max-new-tokens', 'many'], /--max-new-tokens needs an integer/],
    [['generate', '--model', fixturePath('models', 'bert'), '--prompt', 'hi'], /causal language model/],
  ];
  const results = await Promise.all(cases.map(([args]) => peft(args)));
  rmSync(noTokenizer, { recursive: true, force: true });
  results.forEach((r, i) => {
    assert.equal(r.code, 1, `${cases[i]![0].join(' ')}: ${r.stderr}`);
    assert.match(r.stderr, cases[i]![1]);
    assert.doesNotMatch(r.stderr, /internal error/);
  });
});
