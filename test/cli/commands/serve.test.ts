// `peft serve` end to end: the CLI binds to 127.0.0.1 by default, answers the `openai` client for
// the base and an --adapter NAME=DIR, and stops cleanly on SIGTERM; bad flags are one-line errors.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import OpenAI from 'openai';
import { fixturePath } from '../../helpers/fixtures.js';
import { peft } from '../peft.js';

const MAIN = fileURLToPath(new URL('../../../src/cli/main.js', import.meta.url));

test('peft serve: openai client against the CLI server (base and adapter), SIGTERM stops it', async () => {
  const child = spawn(
    process.execPath,
    [
      MAIN,
      'serve',
      '--model',
      fixturePath('models', 'llama'),
      '--adapter',
      `attn=${fixturePath('adapters', 'llama', 'lora_attn')}`,
      '--port',
      '0',
      '--threads',
      '1',
    ],
    {
      stdio: ['ignore', 'ignore', 'pipe'],
    },
  );
  let err = '';
  const exited = new Promise<number | null>((res) => child.once('exit', (code) => res(code)));
  try {
    const url = await new Promise<string>((res, rej) => {
      child.stderr!.on('data', (d: Buffer) => {
        err += d.toString();
        const m = /at (http:\/\/[^\s]+)\/v1/.exec(err);
        if (m) res(m[1]!);
      });
      void exited.then(() => rej(new Error(`server exited: ${err}`)));
    });
    assert.match(url, /^http:\/\/127\.0\.0\.1:\d+$/);
    const client = new OpenAI({ baseURL: `${url}/v1`, apiKey: 'unused', maxRetries: 0 });
    const ids = (await client.models.list()).data.map((m) => m.id);
    assert.deepEqual(ids, ['llama', 'attn']);
    const prompt = [1, 5, 9, 13];
    const base = await client.completions.create({ model: 'llama', prompt, max_tokens: 6, temperature: 0 });
    const adapted = await client.completions.create({ model: 'attn', prompt, max_tokens: 6, temperature: 0 });
    assert.equal(base.usage!.completion_tokens + adapted.usage!.completion_tokens > 0, true);
    assert.equal(typeof adapted.choices[0]!.text, 'string');
  } finally {
    child.kill('SIGTERM');
  }
  assert.equal(await exited, 0, err);
});

test('peft serve: a non-causal model and an adapter that cannot be served are one-line errors', async () => {
  const r = await peft(['serve', '--model', fixturePath('models', 'bert'), '--port', '0']);
  assert.equal(r.code, 1);
  assert.match(r.stderr, /^error: .*causal language model/m);
  const d = await peft([
    'serve',
    '--model',
    fixturePath('models', 'llama'),
    '--adapter',
    `d=${fixturePath('adapters', 'llama', 'lora_dora')}`,
    '--port',
    '0',
  ]);
  assert.equal(d.code, 1);
  assert.match(d.stderr, /^error: .*DoRA/m);
});
