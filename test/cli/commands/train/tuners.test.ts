// `peft train --method loha|lokr|vera|adalora|oft|boft|lntuning` end to end on the Llama fixture: each
// writes a peft adapter folder of its type that loads back through loadAdapter, and `peft merge`
// folds it into a model folder.

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
const llama = fixturePath('models', 'llama');

const cases: [string, string, string[]][] = [
  ['loha', 'LOHA', ['--r', '4', '--target', 'q_proj,v_proj']],
  ['lokr', 'LOKR', ['--r', '4', '--target', 'q_proj,down_proj']],
  ['vera', 'VERA', ['--r', '8', '--target', 'q_proj,v_proj']],
  ['adalora', 'ADALORA', ['--target', 'q_proj,v_proj']],
  ['oft', 'OFT', ['--target', 'q_proj,o_proj']],
  ['boft', 'BOFT', ['--target', 'q_proj']],
  ['lntuning', 'LN_TUNING', []],
];

for (const [method, peftType, extra] of cases) {
  test(`peft train --method ${method} writes a ${peftType} adapter that loads back and merges`, async () => {
    const task = await writeSwapTask();
    const out = join(task.dir, `out-${method}`);
    const r = spawnSync(
      process.execPath,
      [
        CLI,
        'train',
        '--model',
        llama,
        '--method',
        method,
        ...extra,
        '--data',
        task.train,
        '--out',
        out,
        '--steps',
        '2',
        '--threads',
        '1',
        '--no-eval-at-start',
        '--log-every',
        '1',
      ],
      { encoding: 'utf8' },
    );
    assert.equal(r.status, 0, r.stderr);
    assert.equal(JSON.parse(await readFile(join(out, 'adapter_config.json'), 'utf8')).peft_type, peftType);
    assert.ok(existsSync(join(out, 'adapter_model.safetensors')));
    const adapted = await loadAdapter(await loadModel(llama), out);
    assert.equal(adapted.peftType, peftType);
    if (method === 'adalora') {
      // total_step took the run's 2 steps; the allocator pruned at step 1 (budget 1 - 1/2 of the way:
      // trunc((48 - 32) · 0.5³ + 32) = 34 of 4 layers x init_r 12) and the file keeps only those ranks
      const config = JSON.parse(await readFile(join(out, 'adapter_config.json'), 'utf8'));
      assert.equal(config.total_step, 2);
      const kept = Object.values(config.rank_pattern as Record<string, boolean[]>).map((v) => v.filter(Boolean).length);
      assert.equal(
        kept.reduce((a, b) => a + b, 0),
        34,
      );
      const ranks = [...adapted.parameters().entries()].filter(([n]) => n.includes('.lora_E.')).map(([, t]) => t.shape[0]!);
      assert.deepEqual(ranks.sort(), kept.sort());
    }
    const merged = join(task.dir, `merged-${method}`);
    const m = spawnSync(process.execPath, [CLI, 'merge', '--model', llama, '--adapter', out, '--out', merged], { encoding: 'utf8' });
    assert.equal(m.status, 0, m.stderr);
    assert.ok(existsSync(join(merged, 'model.safetensors')));
  });
}
