// The package entry point: `import ... from 'peft-ts'` resolves (package.json "exports") to the
// public API the README uses, and that API runs end to end on the bundled model.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, readFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

test("import 'peft-ts' gives the public API, and it loads, adapts, saves and reloads", async () => {
  const peft = await import('peft-ts');
  for (const name of [
    'loadModel',
    'getPeftModel',
    'loadAdapter',
    'createAdapter',
    'Trainer',
    'Generator',
    'generate',
    'loadDataset',
    'AdamW',
    'quantize4bit',
    'runQuickstart',
    'runComparison',
    'Tokenizer',
    'grad',
    'Graph',
    'RuntimeSession',
  ]) {
    assert.equal(typeof (peft as Record<string, unknown>)[name], 'function', name);
  }
  const base = await peft.loadModel(peft.bundledModelDir());
  const lora = await peft.getPeftModel(base, { r: 4, loraAlpha: 8, targetModules: ['q_proj', 'v_proj'] });
  const dir = await mkdtemp(join(tmpdir(), 'peft-package-'));
  await lora.savePretrained(dir);
  const config = JSON.parse(await readFile(join(dir, 'adapter_config.json'), 'utf8')) as Record<string, unknown>;
  assert.equal(config.peft_type, 'LORA');
  const again = await peft.loadAdapter(base, dir);
  assert.equal(again.peftType, 'LORA');
  // deep imports by path stay available
  const deep = await import('peft-ts/dist/src/models/load.js');
  assert.equal(deep.loadModel, peft.loadModel);
});
