// Every decoder family of the 2026 fixtures through the command line: `peft info` describes the
// fixture model (architecture, shapes, parameter count from its own tensors), a few LoRA steps of
// `peft train` on it lower the evaluation loss, and for model types peft has no default LoRA
// targets for (phi3, smollm3) training without --target is a one-line error before --out exists.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { readSafetensors } from '../../../../src/io/safetensors.js';
import { parseMetrics, type EvalRecord } from '../../../../src/train/metrics.js';
import { DECODERS_2026 } from '../../../helpers/decoders.js';
import { fixture2026Path } from '../../../helpers/fixtures.js';
import { writeSwapTask } from '../../../train/synthetic.js';
import { peft } from '../../peft.js';
import type { LooseJson } from '../../../helpers/json.js';

for (const [name, fx] of Object.entries(DECODERS_2026)) {
  test(`${name}: peft info describes the model, and peft train (LoRA) lowers the loss`, async () => {
    const model = fixture2026Path('models', name);
    const config = JSON.parse(readFileSync(join(model, 'config.json'), 'utf8')) as Record<string, LooseJson>;
    const info = await peft(['info', model, '--json']);
    assert.equal(info.code, 0, info.stderr);
    const j = JSON.parse(info.stdout) as Record<string, LooseJson>;
    assert.equal(j.kind, 'model');
    assert.equal(j.supported, true);
    assert.equal(j.architecture, config.architectures[0]);
    assert.equal(j.model_type, config.model_type);
    assert.deepEqual(
      [j.layers, j.hidden_size, j.attention_heads, j.kv_heads],
      [config.num_hidden_layers, config.hidden_size, config.num_attention_heads, config.num_key_value_heads],
    );
    let params = 0;
    for (const t of (await readSafetensors(join(model, 'model.safetensors'))).values()) params += t.shape.reduce((a, b) => a * b, 1);
    assert.equal(j.weights.parameters, params);

    const task = await writeSwapTask();
    const out = join(task.dir, 'out');
    const target = fx.trainTargets ? ['--target', fx.trainTargets.join(',')] : [];
    const args = [
      'train',
      '--model',
      model,
      '--data',
      task.train,
      '--eval-data',
      task.eval,
      '--steps',
      '8',
      '--eval-every',
      '8',
      '--lr',
      '1e-2',
      '--batch',
      '8',
      '--threads',
      '1',
      '--log-every',
      '4',
    ];
    if (!fx.trainTargets) {
      // peft's default targets for this model type (q_proj, v_proj)
      const r = await peft([...args, '--out', out]);
      assert.equal(r.code, 0, r.stderr);
    } else {
      const refused = await peft([...args, '--out', out]);
      assert.equal(refused.code, 1);
      const errors = refused.stderr.split('\n').filter((l) => l.startsWith('error:'));
      assert.equal(errors.length, 1, refused.stderr);
      assert.match(errors[0]!, /no default LoRA target_modules for model_type .*--target/);
      assert.ok(!existsSync(out), '--out is not created');
      const r = await peft([...args, ...target, '--out', out]);
      assert.equal(r.code, 0, r.stderr);
    }
    const cfg = JSON.parse(await readFile(join(out, 'adapter_config.json'), 'utf8')) as Record<string, LooseJson>;
    assert.equal(cfg.peft_type, 'LORA');
    const evals = parseMetrics(await readFile(join(out, 'metrics.jsonl'), 'utf8')).filter((m): m is EvalRecord => m.kind === 'eval');
    assert.deepEqual(
      evals.map((e) => e.step),
      [0, 8],
    );
    assert.ok(evals[1]!.eval_loss < evals[0]!.eval_loss, `${name}: eval loss ${evals[0]!.eval_loss} -> ${evals[1]!.eval_loss}`);
  });
}
