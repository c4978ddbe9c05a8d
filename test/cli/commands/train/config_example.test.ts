// examples/quickstart.yaml, the run file README shows, parses and runs (one step here), and its
// settings are the quickstart's own (QUICKSTART_DEFAULTS), so the full run reproduces `npm start`.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { QUICKSTART_DEFAULTS } from '../../../../src/tasks/quickstart.js';
import { peft } from '../../peft.js';

test('examples/quickstart.yaml (README) holds the quickstart settings and runs', async () => {
  const readme = readFileSync('README.md', 'utf8');
  assert.match(readme, /peft train --config examples\/quickstart\.yaml/);
  const tmp = mkdtempSync(join(tmpdir(), 'peft-yaml-example-'));
  try {
    const out = join(tmp, 'run');
    const r = await peft([
      'train',
      '--config',
      'examples/quickstart.yaml',
      '--steps',
      '1',
      '--out',
      out,
      '--threads',
      '1',
      '--no-eval-at-start',
    ]);
    assert.equal(r.code, 0, r.stderr);
    const cfg = JSON.parse(readFileSync(join(out, 'run_config.json'), 'utf8')) as Record<string, unknown> & {
      peft: Record<string, unknown>;
    };
    const d = QUICKSTART_DEFAULTS;
    assert.equal(cfg.model, 'models/tiny-llama');
    assert.equal(cfg.data, `data/tasks/${d.task}/train.jsonl`);
    assert.equal(cfg.evalData, `data/tasks/${d.task}/eval.jsonl`);
    assert.equal(cfg.lr, d.learningRate);
    assert.equal(cfg.batch, d.batchSize);
    assert.equal(cfg.seed, d.seed);
    assert.deepEqual(
      [cfg.peft.r, cfg.peft.lora_alpha, cfg.peft.lora_dropout, cfg.peft.target_modules],
      [d.r, d.loraAlpha, d.loraDropout, d.targetModules],
    );
    // the file's own step count is the quickstart's (the flag above overrides it for this test)
    assert.match(readFileSync('examples/quickstart.yaml', 'utf8'), new RegExp(`^steps: ${d.steps}$`, 'm'));
  } finally {
    rmSync(tmp, { recursive: true, force: true });
  }
});
