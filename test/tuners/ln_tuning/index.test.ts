// LN tuning (peft's LN_TUNING) on the Llama fixture: gradients of the trained norm copies match
// central differences of the loss; save -> load keeps the logits; merge swaps the copies in with the
// same logits and unmerge restores the base weights exactly; a few steps of training lower the loss.
// The peft logits and merged logits are checked on qwen3 in tuners_2026.test.ts, and
// `peft train --method lntuning` end to end in test/cli/commands/train/tuners.test.ts.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { loadModel } from '../../../src/models/load.js';
import { createAdapter, loadAdapter } from '../../../src/tuners/load.js';
import { LnTuningModel } from '../../../src/tuners/ln_tuning/index.js';
import { fixtureBatch, fixturePath, inTempDir, maxAbsDiff } from '../../helpers/fixtures.js';
import { runAdapted, trainAndEval } from '../adapted_run.js';
import { compile } from '../lora_support.js';

const llama = fixturePath('models', 'llama');

test('LN tuning: gradients of the norm copies match central differences of the loss', async () => {
  const b = await fixtureBatch('llama');
  const m = await createAdapter(await loadModel(llama), { peft_type: 'LN_TUNING', task_type: 'CAUSAL_LM' }, { seed: 1 });
  assert.ok(m instanceof LnTuningModel);
  let s = 3;
  for (const [, t] of m.parameters())
    for (let i = 0; i < t.data.length; i++) t.data[i] += ((s = (s * 1103515245 + 12345) % 2147483648) / 2147483648 - 0.5) * 0.2;
  const params = m.parameters();
  assert.ok(params.size >= 3, `trains ${[...params.keys()].join(', ')}`);
  const c = await compile(m, b, { grads: true });
  try {
    const r = await c.run(b, params);
    let checked = 0;
    for (const [name, t] of params) {
      const g = r[`grad:${name}`]!.data as Float32Array;
      for (const i of Array.from(g.keys())
        .sort((x, y) => Math.abs(g[y]!) - Math.abs(g[x]!))
        .slice(0, 2)) {
        const h = 3e-3;
        const orig = t.data[i]!;
        t.data[i] = orig + h;
        const up = (await c.run(b, params)).loss!.data[0] as number;
        t.data[i] = orig - h;
        const down = (await c.run(b, params)).loss!.data[0] as number;
        t.data[i] = orig;
        const fd = (up - down) / (2 * h);
        assert.ok(Math.abs(fd - g[i]!) <= 2e-4 + 3e-2 * Math.abs(g[i]!), `${name}[${i}]: autodiff ${g[i]} vs central difference ${fd}`);
        checked++;
      }
    }
    assert.ok(checked >= 6);
  } finally {
    await c.dispose();
  }
});

test('LN tuning on Llama: save/load keeps the logits, merge gives them too, unmerge restores the weights, training lowers the loss', async () => {
  const batch = await fixtureBatch('llama');
  const base = await loadModel(llama);
  const m = (await createAdapter(base, { peft_type: 'LN_TUNING', task_type: 'CAUSAL_LM' }, { seed: 5 })) as LnTuningModel;
  for (const [, t] of m.parameters()) for (let i = 0; i < t.data.length; i++) t.data[i] *= 1 + 0.05 * Math.sin(i + 1);
  const plain = await runAdapted(m, batch);
  const before = (await loadModel(llama)).weights;
  // the copies are graph params under the base weight names
  const name = [...m.parameters().keys()][0]!;
  assert.ok(before.has(name), name);
  await inTempDir('peft-ln-', async (dir) => {
    await m.savePretrained(dir);
    const again = await runAdapted(await loadAdapter(await loadModel(llama), dir), batch);
    assert.equal(maxAbsDiff(plain.logits!.data as Float32Array, again.logits!.data as Float32Array), 0);
  });
  m.merge();
  const merged = await runAdapted(m, batch);
  assert.ok(maxAbsDiff(plain.logits!.data as Float32Array, merged.logits!.data as Float32Array) < 1e-5);
  assert.notDeepEqual(base.weights.get(name).data, before.get(name).data);
  m.unmerge();
  for (const n of before.names()) assert.deepEqual(base.weights.get(n).data, before.get(n).data, `${n} restored`);
  const { before: l0, after: l1 } = await trainAndEval(m, [batch], batch, 4, 1e-2);
  assert.ok(l1 < l0, `loss ${l0} -> ${l1}`);
});
