// LoRA initialisation and training-time behaviour: peft's init modes (kaiming-uniform A and zero B,
// Gaussian A, nn.Linear defaults), seeded determinism, PiSSA (SVD factors, base residual, outputs
// unchanged at init, reload rebuilds the residual), the top-k SVD against an exact reference,
// DoRA's initial magnitude, and lora_dropout's fed keep-masks.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { loadModel } from '../../../src/models/load.js';
import { LoraModel, TopSvd } from '../../../src/tuners/lora/index.js';
import { getPeftModel } from '../../../src/tuners/load.js';
import { symmetricEigen } from '../../../src/tuners/lora/init.js';
import { fixturePath } from '../../helpers/fixtures.js';
import { rng } from '../../helpers/gradcheck.js';
import { type Batch, assertClose, compile, fixtureBatch, forwardOnce, withTmp } from '../lora_support.js';

const state = (lm: LoraModel, m: string) => lm.adapter('default').modules.get(m)!;

test('init_lora_weights: true, "gaussian" and false as peft draws them; seeded', async () => {
  const gpt2 = await loadModel(fixturePath('models', 'gpt2'));
  const m = 'transformer.h.0.attn.c_attn';
  const def = await getPeftModel(gpt2, { r: 8 }, { seed: 7 });
  const s = state(def, m);
  assert.ok(
    s.B.data.every((x) => x === 0),
    'B starts at zero',
  );
  const bound = 1 / Math.sqrt(64);
  assert.ok(
    s.A.data.every((x) => Math.abs(x) <= bound) && s.A.data.some((x) => Math.abs(x) > 0.9 * bound),
    'A ~ U(-1/sqrt(in), 1/sqrt(in))',
  );
  assert.deepEqual([...state(await getPeftModel(gpt2, { r: 8 }, { seed: 7 }), m).A.data], [...s.A.data], 'same seed, same A');
  assert.notDeepEqual([...state(await getPeftModel(gpt2, { r: 8 }, { seed: 8 }), m).A.data], [...s.A.data]);
  const batch = await fixtureBatch('gpt2');
  assertClose((await forwardOnce(def, batch)).logits, (await forwardOnce(gpt2, batch)).logits, 0, 0, 'zero B: base outputs');

  const g = state(await getPeftModel(gpt2, { r: 4, initLoraWeights: 'gaussian' }), m).A.data;
  const std = Math.sqrt(g.reduce((a, x) => a + x * x, 0) / g.length);
  assert.ok(Math.abs(std - 1 / 4) < 0.02, `gaussian A std ${std} ~ 1/r`);
  const off = state(await getPeftModel(gpt2, { r: 4, initLoraWeights: false }), m);
  assert.ok(off.B.data.some((x) => x !== 0) && off.B.data.every((x) => Math.abs(x) <= 0.5), 'B ~ U(-1/sqrt(r), 1/sqrt(r))');
});

test('top-k SVD by subspace iteration matches an exact eigen-decomposition', async () => {
  const rand = rng(3);
  const rows = 150;
  const cols = 90;
  const w = new Float32Array(rows * cols);
  for (let i = 0; i < w.length; i++) w[i] = rand() - 0.5 + (i % cols === 3 ? 0.3 : 0);
  const svd = new TopSvd();
  try {
    for (const [r, c, data] of [
      [rows, cols, w],
      [cols, rows, transpose(w, rows, cols)],
    ] as const) {
      const k = 5;
      const { U, S, Vt } = await svd.compute(data, r, c, k);
      // Exact reference: eigenvalues of the Gram matrix of the smaller side.
      const n = Math.min(r, c);
      const gram = new Float64Array(n * n);
      for (let a = 0; a < n; a++) {
        for (let b = 0; b < n; b++) {
          let s = 0;
          if (c <= r) for (let i = 0; i < r; i++) s += data[i * c + a]! * data[i * c + b]!;
          else for (let j = 0; j < c; j++) s += data[a * c + j]! * data[b * c + j]!;
          gram[a * n + b] = s;
        }
      }
      const exact = symmetricEigen(gram, n).values;
      for (let j = 0; j < k; j++)
        assert.ok(Math.abs(S[j]! - Math.sqrt(exact[j]!)) < 1e-9 * S[0]!, `sigma ${j}: ${S[j]} vs ${Math.sqrt(exact[j]!)}`);
      // W v_j = sigma_j u_j
      for (let j = 0; j < k; j++) {
        let err = 0;
        for (let i = 0; i < r; i++) {
          let wv = 0;
          for (let t = 0; t < c; t++) wv += data[i * c + t]! * Vt[j * c + t]!;
          err = Math.max(err, Math.abs(wv - S[j]! * U[i * k + j]!));
        }
        assert.ok(err < 1e-6, `singular triplet ${j} residual ${err}`);
      }
    }
  } finally {
    await svd.dispose();
  }
});

function transpose(a: Float32Array, rows: number, cols: number): Float32Array {
  const t = new Float32Array(a.length);
  for (let i = 0; i < rows; i++) for (let j = 0; j < cols; j++) t[j * rows + i] = a[i * cols + j]!;
  return t;
}

test('PiSSA: principal factors, residual base weights, unchanged outputs; reload rebuilds the residual', async () => {
  for (const [model, target] of [
    ['gpt2', 'transformer.h.0.attn.c_attn'],
    ['llama', 'model.layers.0.self_attn.q_proj'],
  ] as const) {
    const base = await loadModel(fixturePath('models', model));
    const batch = await fixtureBatch(model);
    const before = await forwardOnce(base, batch);
    const original = base.weights.get(`${target}.weight`);
    const lm = await getPeftModel(base, { r: 4, loraAlpha: 8, initLoraWeights: 'pissa', targetModules: [target] });
    assert.notEqual(base.weights.get(`${target}.weight`), original, 'base weight replaced by the residual');
    assertClose((await forwardOnce(lm, batch)).logits, before.logits, 2e-5, 0, `${model}: PiSSA keeps the outputs at init`);
    // A A^T = diag(S/s): rows of A are orthogonal.
    const s = state(lm, target);
    const inF = s.spec.inFeatures;
    for (let a = 0; a < 4; a++) {
      for (let b = a + 1; b < 4; b++) {
        let d = 0;
        for (let c = 0; c < inF; c++) d += s.A.data[a * inF + c]! * s.A.data[b * inF + c]!;
        assert.ok(Math.abs(d) < 1e-4, `A rows ${a},${b} orthogonal (${d})`);
      }
    }
    // Train a bit (perturb), save, load onto a fresh copy of the original model: same outputs.
    for (const t of lm.parameters().values()) for (let i = 0; i < t.data.length; i++) t.data[i] *= 1 + 0.1 * Math.sin(i);
    const trained = await forwardOnce(lm, batch);
    await withTmp(async (dir) => {
      await lm.savePretrained(dir);
      const again = await LoraModel.fromPretrained(await loadModel(fixturePath('models', model)), dir);
      assertClose((await forwardOnce(again, batch)).logits, trained.logits, 2e-5, 0, `${model}: PiSSA adapter reloaded`);
    });
  }
});

test('pissa_niter_<n>: a fixed number of block iterations, still an exact residual', async () => {
  const base = await loadModel(fixturePath('models', 'llama'));
  const batch = await fixtureBatch('llama');
  const before = await forwardOnce(base, batch);
  const lm = await getPeftModel(base, { r: 2, initLoraWeights: 'pissa_niter_2', targetModules: ['q_proj', 'down_proj'] });
  assert.equal(lm.peftConfig().initLoraWeights, 'pissa_niter_2');
  assertClose((await forwardOnce(lm, batch)).logits, before.logits, 2e-5, 0, 'outputs at init');
});

test("DoRA's initial magnitude is the row norm of the base weight", async () => {
  const gpt2 = await loadModel(fixturePath('models', 'gpt2'));
  const lm = await getPeftModel(gpt2, { r: 4, useDora: true, targetModules: ['c_attn'] });
  const s = state(lm, 'transformer.h.0.attn.c_attn');
  const w = gpt2.weights.get('transformer.h.0.attn.c_attn.weight');
  const [inF, outF] = w.shape as [number, number];
  const want = new Float32Array(outF);
  for (let o = 0; o < outF; o++) {
    let sq = 0;
    for (let i = 0; i < inF; i++) sq += w.data[i * outF + o]! ** 2;
    want[o] = Math.sqrt(sq);
  }
  assertClose(s.magnitude!.data, want, 1e-6, 1e-6, 'magnitude');
  const batch = await fixtureBatch('gpt2');
  assertClose((await forwardOnce(lm, batch)).logits, (await forwardOnce(gpt2, batch)).logits, 1e-5, 0, 'DoRA at init = base');
});

test('lora_dropout: keep-masks are graph inputs the caller feeds; dropping everything leaves the base output', async () => {
  const gpt2 = await loadModel(fixturePath('models', 'gpt2'));
  const lm = await LoraModel.fromPretrained(gpt2, fixturePath('adapters', 'gpt2', 'lora_attn'), { isTrainable: true });
  assert.equal(lm.peftConfig().loraDropout, 0.05);
  const batch: Batch = await fixtureBatch('gpt2');
  const c = await compile(lm, batch, { training: true });
  try {
    const masks = [...c.ctx.dropoutMasks.keys()];
    assert.deepEqual(masks, [
      'base_model.model.transformer.h.0.attn.c_attn.lora_dropout.default.keep_mask',
      'base_model.model.transformer.h.1.attn.c_attn.lora_dropout.default.keep_mask',
    ]);
    const shape = c.ctx.dropoutMaskShape(masks[0]!, { input_ids: batch.input_ids.shape });
    assert.deepEqual(shape, [3, 12, 64]);
    const feeds: Record<string, unknown> = {};
    for (const m of masks) feeds[m] = { dtype: 'bool', shape, data: new Uint8Array(3 * 12 * 64) };
    const params: Record<string, unknown> = {};
    for (const p of c.params) {
      const t = lm.parameters().get(p.name)!;
      params[p.name] = { dtype: 'float32', shape: t.shape, data: t.data };
    }
    const r = await c.sess.run({
      ...(batch as unknown as Record<string, never>),
      ...(feeds as Record<string, never>),
      ...(params as Record<string, never>),
    });
    assertClose(r.logits!.data as Float32Array, (await forwardOnce(gpt2, batch)).logits, 1e-5, 0, 'all dropped = base');
  } finally {
    await c.dispose();
  }
});
