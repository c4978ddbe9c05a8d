// `peft train --method ia3|prompt|prefix|ptuning|adapter` end to end: each writes its adapter in
// its library's layout (peft for the first four, AdapterHub for bottleneck adapters), and the
// folder loads back through loadAdapter.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { loadModel } from '../../../../src/models/load.js';
import { loadAdapter } from '../../../../src/tuners/load.js';
import { fixturePath } from '../../../helpers/fixtures.js';
import { writeSwapTask } from '../../../train/synthetic.js';

const CLI = resolve('dist/src/cli/main.js');
const gpt2 = fixturePath('models', 'gpt2');

const cases: [string, string, string][] = [
  ['ia3', 'adapter_config.json', 'IA3'],
  ['prompt', 'adapter_config.json', 'PROMPT_TUNING'],
  ['prefix', 'adapter_config.json', 'PREFIX_TUNING'],
  ['ptuning', 'adapter_config.json', 'P_TUNING'],
  ['adapter', 'adapter.safetensors', ''],
];

for (const [method, file, peftType] of cases) {
  test(`peft train --method ${method} saves an adapter that loads back`, async () => {
    const task = await writeSwapTask();
    const out = join(task.dir, `out-${method}`);
    const r = spawnSync(
      process.execPath,
      [
        CLI,
        'train',
        '--model',
        gpt2,
        '--method',
        method,
        '--data',
        task.train,
        '--eval-data',
        task.eval,
        '--out',
        out,
        '--steps',
        '3',
        '--threads',
        '1',
        '--log-every',
        '1',
      ],
      { encoding: 'utf8' },
    );
    assert.equal(r.status, 0, r.stderr);
    assert.ok(existsSync(join(out, file)), file);
    // the closing line names the weights file this method actually wrote
    const saved = /saved the adapter \(([^)]*)\)/.exec(r.stdout + r.stderr);
    assert.ok(saved, r.stdout + r.stderr);
    for (const named of saved[1]
      .split(/[,:]/)
      .map((x) => x.trim())
      .filter((x) => x.endsWith('.json') || x.endsWith('.safetensors')))
      assert.ok(existsSync(join(out, named)), named);
    if (peftType) assert.equal(JSON.parse(await readFile(join(out, 'adapter_config.json'), 'utf8')).peft_type, peftType);
    const adapted = await loadAdapter(await loadModel(gpt2), out);
    assert.ok(adapted.parameters().size > 0);
  });
}

test('--target and LoRA flags are refused for methods that do not take them, before --out exists', async () => {
  const task = await writeSwapTask();
  const out = join(task.dir, 'never');
  for (const [flag, value, says] of [
    ['--r', '4', /--r is for --method lora/],
    ['--target', 'c_attn', /--target is for --method lora/],
  ] as const) {
    const r = spawnSync(
      process.execPath,
      [CLI, 'train', '--model', gpt2, '--method', 'ia3', flag, value, '--data', task.train, '--out', out],
      { encoding: 'utf8' },
    );
    assert.equal(r.status, 1, r.stderr);
    assert.match(r.stderr, says);
    assert.ok(!existsSync(out));
  }
});
