// ServeEngine limits: a request that does not fit the model's positions is refused at submit with
// a typed error (it used to reach the session run, whose failure ends every running request).

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { loadModel } from '../../src/models/load.js';
import { loadGenerationDefaults } from '../../src/generate/config.js';
import { Tokenizer } from '../../src/io/tokenizer.js';
import { MultiAdapterModel } from '../../src/tuners/multi/index.js';
import { ServeEngine } from '../../src/serve/index.js';
import { fixturePath } from '../helpers/fixtures.js';

test('gpt2 (128 learned positions): prompt + max tokens beyond them is refused at submit; a running request finishes', async () => {
  const dir = fixturePath('models', 'gpt2');
  const base = await loadModel(dir);
  assert.equal(base.config.maxPositionEmbeddings, 128);
  const tokenizer = await Tokenizer.fromDir(dir);
  const defaults = await loadGenerationDefaults(dir, base.config);
  const engine = await ServeEngine.create(
    await MultiAdapterModel.fromFolders(base, {}),
    tokenizer,
    { ...defaults, eosTokenIds: [] },
    {
      runtime: { threads: 1 },
    },
  );
  try {
    const ask = (prompt: number, maxTokens: number) =>
      engine.submit({
        promptIds: Array.from({ length: prompt }, (_, i) => (i * 13) % 100),
        adapter: '__base__',
        maxTokens,
        temperature: 0,
        topP: 1,
        stop: [],
      });
    const running = ask(8, 6);
    assert.throws(() => ask(100, 40), {
      name: 'GenerationError',
      message: /100 prompt tokens \+ 40 new tokens exceed the model's 128 positions/,
    });
    assert.throws(() => ask(129, 1), { name: 'GenerationError', message: /129 prompt tokens exceed/ });
    const r = await running;
    assert.equal(r.finishReason, 'length');
    assert.equal(r.tokenIds.length, 6);
    // the largest request that fits runs: 100 + 29 new tokens feed positions 0..127
    assert.equal((await ask(100, 29)).tokenIds.length, 29);
  } finally {
    await engine.close();
  }
});
