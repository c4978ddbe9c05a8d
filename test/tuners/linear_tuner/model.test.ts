// The linear-layer tuners (LoHa, LoKr, ...): float64 finite-difference gradient checks of each
// method's forward on a tiny layer, and on the Llama fixture model create -> forward -> save ->
// load (same logits) -> merge (same logits) -> unmerge (weights restored exactly) -> a few
// training steps that lower the loss.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { Value } from '../../../src/graph/ir.js';
import * as o from '../../../src/graph/ops.js';
import { loadModel } from '../../../src/models/load.js';
import type { LinearSpec } from '../../../src/nn/context.js';
import type { LinearTunerConfig } from '../../../src/tuners/linear_tuner/config.js';
import { type LinearMethod, LinearTunerModel } from '../../../src/tuners/linear_tuner/model.js';
import { LOHA } from '../../../src/tuners/loha/index.js';
import { LOKR, factorization } from '../../../src/tuners/lokr/index.js';
import { VERA } from '../../../src/tuners/vera/index.js';
import { ADALORA } from '../../../src/tuners/adalora/index.js';
import { OFT } from '../../../src/tuners/oft/index.js';
import { BOFT, batchedInverse } from '../../../src/tuners/boft/index.js';
import { createAdapter, loadAdapter } from '../../../src/tuners/load.js';
import { fixtureBatch, fixturePath, inTempDir, maxAbsDiff } from '../../helpers/fixtures.js';
import { gradCheck, randn, rng } from '../../helpers/gradcheck.js';
import { runAdapted, runBase, trainAndEval } from '../adapted_run.js';

const llama = fixturePath('models', 'llama');

interface Case {
  method: LinearMethod<LinearTunerConfig>;
  /** fields for the tiny gradient check layer */
  tiny: Record<string, unknown>;
  /** fields for the Llama round trip */
  fields: Record<string, unknown>;
}

const any = (m: unknown) => m as LinearMethod<LinearTunerConfig>;
const CASES: Case[] = [
  {
    method: any(LOHA),
    tiny: { r: 2, alpha: 3 },
    fields: { peft_type: 'LOHA', r: 4, alpha: 8, target_modules: ['q_proj', 'v_proj', 'up_proj'] },
  },
  // r=1 < max(b, d)/2 on the tiny layer: w2 is factorized (w2_a @ w2_b)
  { method: any(LOKR), tiny: { r: 1, alpha: 2 }, fields: { peft_type: 'LOKR', r: 2, alpha: 4, target_modules: ['q_proj', 'down_proj'] } },
  {
    method: any(LOKR),
    tiny: { r: 4, alpha: 2, decompose_both: true },
    fields: { peft_type: 'LOKR', r: 8, alpha: 4, target_modules: ['k_proj'], decompose_both: true },
  },
  { method: any(VERA), tiny: { r: 3 }, fields: { peft_type: 'VERA', r: 8, target_modules: ['q_proj', 'v_proj', 'down_proj'] } },
  {
    method: any(ADALORA),
    tiny: { init_r: 3, lora_alpha: 5 },
    fields: { peft_type: 'ADALORA', init_r: 4, lora_alpha: 8, target_modules: ['q_proj', 'v_proj'] },
  },
  {
    method: any(OFT),
    tiny: { r: 0, oft_block_size: 3 },
    fields: { peft_type: 'OFT', r: 0, oft_block_size: 8, target_modules: ['q_proj', 'o_proj'] },
  },
  {
    method: any(BOFT),
    tiny: { boft_block_size: 3 },
    fields: { peft_type: 'BOFT', boft_block_size: 8, target_modules: ['q_proj', 'o_proj', 'down_proj'] },
  },
  {
    method: any(OFT),
    tiny: { r: 2, oft_block_size: 0, block_share: true, num_cayley_neumann_terms: 4 },
    fields: { peft_type: 'OFT', r: 0, oft_block_size: 4, block_share: true, target_modules: ['v_proj'] },
  },
];

/** Adds N(0, scale) to every trainable tensor (stands in for training, as the fixture generator does). */
function perturb(m: LinearTunerModel<LinearTunerConfig>, seed: number, scale = 0.05): void {
  const rand = rng(seed);
  for (const t of m.parameters().values()) {
    const noise = randn(rand, t.data.length, scale);
    for (let i = 0; i < t.data.length; i++) t.data[i]! += noise[i]!;
  }
}

test('LyCORIS factorization as peft: near-square factors, or the given factor', () => {
  assert.deepEqual(factorization(96), [8, 12]);
  assert.deepEqual(factorization(64), [8, 8]);
  assert.deepEqual(factorization(256), [16, 16]);
  assert.deepEqual(factorization(128), [8, 16]);
  assert.deepEqual(factorization(127), [1, 127]);
  assert.deepEqual(factorization(128, 4), [4, 32]);
});

for (const c of CASES) {
  test(`${c.method.label} ${JSON.stringify(c.tiny)}: float64 gradients of the adapted layer match finite differences`, async () => {
    const spec: LinearSpec = { name: 'layer', inFeatures: 6, outFeatures: 4, bias: true, layout: 'linear' };
    const config = c.method.parseConfig({ peft_type: c.method.peftType, target_modules: ['layer'], ...c.tiny }, 'test');
    const decls = c.method.moduleTensors(spec, config, 'layer');
    const sharedDecls = c.method.sharedTensors?.([spec], config) ?? [];
    const rand = rng(3);
    const params: Record<string, { shape: number[]; init: Float64Array }> = { x: { shape: [2, 3, 6], init: randn(rand, 36) } };
    for (const d of [...decls, ...sharedDecls])
      params[d.kind] = {
        shape: d.shape,
        init: randn(
          rand,
          d.shape.reduce((a, b) => a * b, 1),
          0.5,
        ),
      };
    const W = randn(rand, 24);
    const b = randn(rand, 4);
    await gradCheck(params, (p, g) => {
      const w = g.constant('W', 'float64', [4, 6], W);
      const bias = g.constant('b', 'float64', [4], b);
      const t: Record<string, Value> = {};
      for (const d of decls) t[d.kind] = p[d.kind]!;
      const shared: Record<string, Value> = {};
      for (const d of sharedDecls) shared[d.kind] = p[d.kind]!;
      return c.method.forward({
        x: p.x!,
        base: (x) => o.add(o.matmulT(x, w), bias),
        weight: () => w,
        bias: () => bias,
        spec,
        t,
        shared,
        config,
        ctx: undefined as never,
        dropout: (x) => x,
      });
    });
  });

  test(`${c.method.label} on Llama: save/load keeps the logits, merge gives them too, unmerge restores the weights, training lowers the loss`, async () => {
    const batch = await fixtureBatch('llama');
    const base = await loadModel(llama);
    const m = (await createAdapter(base, c.fields, { seed: 5 })) as LinearTunerModel<LinearTunerConfig>;
    assert.ok(m instanceof LinearTunerModel);
    perturb(m, 9);
    const plain = await runAdapted(m, batch);
    const before = (await loadModel(llama)).weights;
    await inTempDir('peft-lin-', async (dir) => {
      await m.savePretrained(dir);
      const loaded = await loadAdapter(await loadModel(llama), dir);
      const again = await runAdapted(loaded, batch);
      assert.equal(maxAbsDiff(plain.logits!.data as Float32Array, again.logits!.data as Float32Array), 0);
      // a folder with a tensor of the wrong shape is refused by name before anything changes
      await assert.rejects(loadAdapter(await loadModel(fixturePath('models', 'gpt2')), dir), /target_modules|does not fit|not a linear/);
    });
    const name = `${m.modules.keys().next().value}.weight`;
    await m.merge();
    const merged = await runAdapted(m, batch);
    const d = maxAbsDiff(plain.logits!.data as Float32Array, merged.logits!.data as Float32Array);
    assert.ok(d < 1e-4, `merged logits differ by ${d}`);
    assert.notDeepEqual(base.weights.get(name).data, before.get(name).data);
    m.unmerge();
    assert.deepEqual(base.weights.get(name).data, before.get(name).data);
    const { before: l0, after: l1 } = await trainAndEval(m, [batch], batch, 4, 1e-2);
    assert.ok(l1 < l0, `loss ${l0} -> ${l1}`);
  });
}

test('a new adapter changes nothing until trained (peft init); peft counts its trainable parameters; unsupported settings are refused by name', async () => {
  const base = await loadModel(llama);
  const batch = await fixtureBatch('llama');
  const plain = await runBase(base, batch);
  for (const fields of [
    { peft_type: 'LOHA', r: 4, target_modules: ['q_proj'] },
    { peft_type: 'LOKR', r: 4, target_modules: ['q_proj'] },
    { peft_type: 'VERA', r: 4, target_modules: ['q_proj', 'v_proj'] },
    { peft_type: 'ADALORA', init_r: 4, target_modules: ['q_proj'] },
    { peft_type: 'OFT', r: 0, oft_block_size: 8, target_modules: ['q_proj'] },
    { peft_type: 'BOFT', boft_block_size: 8, target_modules: ['q_proj'] },
  ]) {
    const m = (await createAdapter(base, fields, { seed: 1 })) as LinearTunerModel<LinearTunerConfig>;
    const { trainable } = m.numParameters();
    assert.equal(
      trainable,
      [...m.parameters().values()].reduce((n, t) => n + t.data.length, 0),
    );
    const a = await runAdapted(m, batch);
    const d = maxAbsDiff(a.logits!.data as Float32Array, plain.logits!.data as Float32Array);
    assert.ok(d < 1e-5, `${fields.peft_type}: a new adapter moved the logits by ${d}`);
  }
  assert.throws(() => LOHA.parseConfig({ init_weights: 'abba' }, 'x'), /ABBA/);
  assert.throws(() => OFT.parseConfig({ use_cayley_neumann: false, oft_block_size: 8 }, 'x'), /use_cayley_neumann=false/);
  assert.throws(() => OFT.parseConfig({ coft: true, oft_block_size: 8 }, 'x'), /coft/);
  assert.throws(() => BOFT.parseConfig({ boft_block_size: 4, boft_n_butterfly_factor: 2 }, 'x'), /boft_n_butterfly_factor=2/);
  await assert.rejects(
    createAdapter(base, { peft_type: 'LOHA', target_modules: ['q_proj'], module_dropout: 0.1 }),
    /not implemented for training/,
  );
  await assert.rejects(createAdapter(base, { peft_type: 'LOKR', target_modules: ['nothing_here'] }), /nothing_here/);
  await assert.rejects(createAdapter(base, { peft_type: 'OFT', oft_block_size: 7, target_modules: ['q_proj'] }), /not divisible/);
});

test('the in-graph Gauss-Jordan inverse of I + S (S skew) is exact to float64 rounding, and its gradient matches finite differences', async () => {
  const rand = rng(11);
  const b = 4;
  const data = randn(rand, 2 * b * b, 0.7);
  await gradCheck({ a: { shape: [2, b, b], init: data } }, (p, g) => {
    const eye = new Float64Array(2 * b * b);
    for (let k = 0; k < 2; k++) for (let i = 0; i < b; i++) eye[k * b * b + i * b + i] = 1;
    const S = o.sub(p.a!, o.transpose(p.a!, [0, 2, 1]));
    const A = o.add(g.constant('I', 'float64', [2, b, b], eye), S);
    // A · A⁻¹ = I is checked through the value; its gradient through the product's entries
    return o.matmul(A, batchedInverse(A));
  });
});
