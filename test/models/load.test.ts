// Which class loadModel builds: a checkpoint whose config names a task head this library does not
// implement is refused (it would otherwise load, train and save as a causal LM), unless the caller
// picks a class; `peft compare` refuses it before its output folder exists.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { cp, mkdtemp, readFile, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { loadModel } from '../../src/models/load.js';
import { ModelError } from '../../src/models/types.js';
import { fixturePath } from '../helpers/fixtures.js';
import { peft } from '../cli/peft.js';

async function withArchitectures(model: string, architectures: string[]): Promise<string> {
  const dir = join(await mkdtemp(join(tmpdir(), 'peft-arch-')), model);
  await cp(fixturePath('models', model), dir, { recursive: true });
  const config = JSON.parse(await readFile(join(dir, 'config.json'), 'utf8')) as Record<string, unknown>;
  await writeFile(join(dir, 'config.json'), JSON.stringify({ ...config, architectures }));
  return dir;
}

test('an unimplemented task head is refused instead of loading as a causal LM', async () => {
  const dir = await withArchitectures('gpt2', ['GPT2ForSequenceClassification']);
  await assert.rejects(
    loadModel(dir),
    (e: unknown) =>
      e instanceof ModelError && /GPT2ForSequenceClassification checkpoint; that task head is not implemented/.test(e.message),
  );
  const lm = await loadModel(dir, { architecture: 'GPT2LMHeadModel' });
  assert.equal(lm.task, 'causal-lm');
  // an unlisted language-model class still falls back on model_type
  const other = await loadModel(await withArchitectures('llama', ['SomeFutureForCausalLM']));
  assert.equal(other.task, 'causal-lm');

  const out = join(dir, '..', 'cmp');
  const r = await peft([
    'compare',
    '--model',
    dir,
    '--data',
    join(dir, 'x.jsonl'),
    '--eval',
    join(dir, 'x.jsonl'),
    '--methods',
    'lora',
    '--budget',
    '1',
    '--out',
    out,
  ]);
  assert.equal(r.code, 1);
  assert.match(r.stderr, /that task head is not implemented/);
  assert.ok(!existsSync(out));
});
