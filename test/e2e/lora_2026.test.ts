// LoRA as current peft (0.20) writes it, checked against fixtures-2026/adapters/qwen3/lora_*:
// lora_bias, LoRA on the tied embedding (with its saved base embedding and peft's merged
// behaviour), trainable tokens (tied lm_head follows), modules_to_save, rank/alpha patterns,
// layers_to_transform, PiSSA/OLoRA (initialisation against peft's initial adapter and residual
// base weights, and the conversion to a plain LoRA on save). Every case reproduces peft's logits
// (1e-4) and loss (rtol 1e-5), and merged logits where peft merges.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { readSafetensors, toFloat32 } from '../../src/io/safetensors.js';
import { loadModel } from '../../src/models/load.js';
import { PeftModel, getPeftModel } from '../../src/tuners/load.js';
import { LoraModel, loraConfigFromJson } from '../../src/tuners/lora/index.js';
import { AdapterError } from '../../src/tuners/types.js';
import { fixture2026Path, host, maxAbsDiff } from '../helpers/fixtures.js';
import { assertClose, type Batch, forwardOnce, withTmp } from '../tuners/lora_support.js';

const MODEL = fixture2026Path('models', 'qwen3');
const adapterDir = (c: string) => fixture2026Path('adapters', 'qwen3', c);

async function batch(): Promise<Batch> {
  const b = await readSafetensors(join(MODEL, 'batch.safetensors'));
  return { input_ids: host(b.get('input_ids')!), attention_mask: host(b.get('attention_mask')!), labels: host(b.get('labels')!) };
}

async function expected(c: string): Promise<Map<string, Float32Array>> {
  const raw = await readSafetensors(join(adapterDir(c), 'expected_outputs.safetensors'));
  return new Map([...raw].map(([k, t]) => [k, toFloat32(t)]));
}

const CASES: { c: string; merged: boolean }[] = [
  { c: 'lora_bias', merged: false },
  { c: 'lora_embed_tokens', merged: true },
  { c: 'lora_trainable_tokens', merged: true },
  { c: 'lora_modules_to_save', merged: true },
  { c: 'lora_rank_alpha_pattern', merged: true },
  { c: 'lora_layers_to_transform', merged: true },
  { c: 'lora_pissa', merged: true },
  { c: 'lora_olora', merged: true },
];

for (const { c, merged } of CASES) {
  test(`qwen3/${c}: peft 0.20 adapter reproduces peft's logits, loss${merged ? ' and merged logits' : ''}`, async () => {
    const base = await loadModel(MODEL);
    const lm = await PeftModel.fromPretrained(base, adapterDir(c));
    assert.ok(lm instanceof LoraModel);
    const want = await expected(c);
    const b = await batch();
    const r = await forwardOnce(lm, b);
    assertClose(r.logits, want.get('logits')!, 1e-4, 1e-4, `${c} logits`);
    const wantLoss = want.get('loss')![0]!;
    assert.ok(Math.abs(r.loss - wantLoss) <= 1e-5 * Math.abs(wantLoss), `${c} loss ${r.loss} vs ${wantLoss}`);
    if (merged) {
      const m = await lm.mergeAndUnload();
      const ml = (await forwardOnce(m, b)).logits;
      assertClose(ml, want.get('merged_logits')!, 1e-4, 1e-4, `${c} merged logits`);
      // in place, and back
      await lm.merge();
      assertClose((await forwardOnce(lm, b)).logits, want.get('merged_logits')!, 1e-4, 1e-4, `${c} merged in place`);
      lm.unmerge();
      assertClose((await forwardOnce(lm, b)).logits, r.logits, 0, 0, `${c} after unmerge`);
    } else {
      // lora_bias on bias-less projections: peft's merge raises; here a typed error before anything changes.
      await assert.rejects(lm.mergeAndUnload(), (e: unknown) => e instanceof AdapterError && /lora_bias/.test((e as Error).message));
      await assert.rejects(lm.merge(), AdapterError);
      assertClose((await forwardOnce(lm, b)).logits, r.logits, 0, 0, `${c} unchanged after a refused merge`);
    }
    // Saved again, the folder holds the same tensors under the same keys, and the same config.
    await withTmp(async (dir) => {
      await lm.savePretrained(dir);
      const mine = await readSafetensors(join(dir, 'adapter_model.safetensors'));
      const theirs = await readSafetensors(join(adapterDir(c), 'adapter_model.safetensors'));
      assert.deepEqual([...mine.keys()].sort(), [...theirs.keys()].sort(), `${c} saved keys`);
      for (const [k, t] of theirs) assert.equal(maxAbsDiff(toFloat32(mine.get(k)!), toFloat32(t)), 0, `${c} ${k}`);
      assert.equal(
        await readFile(join(dir, 'adapter_config.json'), 'utf8'),
        await readFile(join(adapterDir(c), 'adapter_config.json'), 'utf8'),
        `${c} adapter_config.json`,
      );
    });
  });
}

test('qwen3/lora_embed_tokens: unmerged, the LoRA changes only the input lookup; merged, the tied lm_head changes too', async () => {
  const want = await expected('lora_embed_tokens');
  // peft's quirk recorded by the fixture: merged and unmerged logits differ by O(1) and more.
  assert.ok(maxAbsDiff(want.get('logits')!, want.get('merged_logits')!) > 1);
});

test('qwen3/lora_trainable_tokens: created, the rows start as the embedding rows and only trainable_tokens_delta is trained', async () => {
  const base = await loadModel(MODEL);
  const lm = await getPeftModel(
    base,
    { r: 4, targetModules: ['q_proj', 'v_proj'], trainableTokenIndices: [5, 17, 101], taskType: 'CAUSAL_LM' },
    { seed: 1 },
  );
  const names = [...lm.parameters().keys()].filter((n) => n.includes('token_adapter'));
  assert.deepEqual(names, ['base_model.model.model.embed_tokens.token_adapter.trainable_tokens_delta.default']);
  const delta = lm.parameters().get(names[0]!)!;
  const emb = base.weights.get('model.embed_tokens.weight');
  const H = emb.shape[1]!;
  [5, 17, 101].forEach((t, i) =>
    assert.deepEqual([...delta.data.subarray(i * H, (i + 1) * H)], [...emb.data.subarray(t * H, (t + 1) * H)]),
  );
  // B is zero and the rows are the originals: the adapter is a no-op until trained.
  const b = await batch();
  assertClose((await forwardOnce(lm, b)).logits, (await forwardOnce(base, b)).logits, 1e-6, 0, 'fresh adapter is the identity');
});

for (const method of ['pissa', 'olora'] as const) {
  test(`qwen3/lora_${method}: initialisation matches peft's initial adapter and residual base weights; saving converts to peft's plain LoRA`, async () => {
    const dir = adapterDir(`lora_${method}`);
    const initCfg = loraConfigFromJson(JSON.parse(await readFile(join(dir, 'initial_adapter', 'adapter_config.json'), 'utf8')));
    const base = await loadModel(MODEL);
    const lm = await getPeftModel(base, { ...initCfg, initLoraWeights: method, inferenceMode: false }, { seed: 0 });
    // Residual base weights W - s·B0A0 (independent of the SVD's / QR's sign conventions).
    const residual = await readSafetensors(join(dir, 'residual_base_weights.safetensors'));
    for (const [k, t] of residual) assertClose(base.weights.get(k).data, toFloat32(t), 2e-6, 1e-5, `${method} residual ${k}`);
    // A0/B0: PiSSA's singular vectors are defined up to a sign per component; OLoRA's QR uses LAPACK's convention.
    const init = await readSafetensors(join(dir, 'initial_adapter', 'adapter_model.safetensors'));
    const state = lm.stateDict();
    for (const [k, t] of init) {
      const mine = state.get(k)!;
      const theirs = toFloat32(t);
      if (method === 'olora') assertClose(mine.data, theirs, 2e-5, 1e-4, `olora ${k}`);
      else assertClose(mine.data.map(Math.abs), theirs.map(Math.abs), 2e-5, 1e-4, `pissa |${k}|`);
    }
    // Training stand-in: the fixture's final (converted) file holds [A | A0] and [B | -B0]; take A and B from it.
    const final = await readSafetensors(join(dir, 'adapter_model.safetensors'));
    const params = lm.parameters();
    for (const [k, t] of final) {
      const r = initCfg.r;
      const data = toFloat32(t);
      const param = k.replace(/\.lora_([AB])\.weight$/, '.lora_$1.default.weight');
      const p = params.get(param)!;
      if (k.includes('lora_A')) p.data.set(data.subarray(0, r * t.shape[1]!));
      else for (let i = 0; i < t.shape[0]!; i++) p.data.set(data.subarray(i * 2 * r, i * 2 * r + r), i * r);
    }
    await withTmp(async (out) => {
      await lm.savePretrained(out, { pathInitialModelForWeightConversion: join(dir, 'initial_adapter') });
      const mine = await readSafetensors(join(out, 'adapter_model.safetensors'));
      assert.deepEqual([...mine.keys()].sort(), [...final.keys()].sort());
      for (const [k, t] of final) assert.equal(maxAbsDiff(toFloat32(mine.get(k)!), toFloat32(t)), 0, `${method} converted ${k}`);
      const cfg = JSON.parse(await readFile(join(out, 'adapter_config.json'), 'utf8'));
      const theirs = JSON.parse(await readFile(join(dir, 'adapter_config.json'), 'utf8'));
      for (const key of ['r', 'lora_alpha', 'init_lora_weights', 'rank_pattern', 'alpha_pattern'])
        assert.deepEqual(cfg[key], theirs[key], key);
      // The converted adapter on the ORIGINAL base gives peft's logits.
      const reloaded = await PeftModel.fromPretrained(await loadModel(MODEL), out);
      assertClose(
        (await forwardOnce(reloaded, await batch())).logits,
        (await expected(`lora_${method}`)).get('logits')!,
        1e-4,
        1e-4,
        `${method} converted logits`,
      );
    });
  });
}

test('LoRA and DoRA on an untied embedding (llama): fresh adapters are the identity, merged equals unmerged, save/load round-trips', async () => {
  const { fixtureBatch, fixturePath } = await import('../helpers/fixtures.js');
  const b = await fixtureBatch('llama');
  for (const useDora of [false, true]) {
    const base = await loadModel(fixturePath('models', 'llama'));
    const plain = (await forwardOnce(base, b)).logits;
    const lm = await getPeftModel(
      base,
      { r: 4, loraAlpha: 8, targetModules: ['embed_tokens', 'q_proj'], useDora, taskType: 'CAUSAL_LM' },
      { seed: 5 },
    );
    assertClose((await forwardOnce(lm, b)).logits, plain, 1e-5, 0, `fresh ${useDora ? 'DoRA' : 'LoRA'} on embed_tokens`);
    // "train": non-zero A everywhere, magnitudes moved
    let s = 17;
    for (const [, t] of lm.parameters())
      for (let i = 0; i < t.data.length; i++) t.data[i] += ((s = (s * 1103515245 + 12345) % 2147483648) / 2147483648 - 0.5) * 0.2;
    const r = (await forwardOnce(lm, b)).logits;
    assert.ok(maxAbsDiff(r, plain) > 1e-3, 'the adapter changes the outputs');
    assertClose((await forwardOnce(await lm.mergeAndUnload(), b)).logits, r, 1e-4, 1e-4, `${useDora ? 'DoRA' : 'LoRA'} embedding merged`);
    await withTmp(async (dir) => {
      await lm.savePretrained(dir);
      const keys = [...(await readSafetensors(join(dir, 'adapter_model.safetensors'))).keys()];
      assert.ok(keys.includes('base_model.model.model.embed_tokens.lora_embedding_A'));
      assert.ok(keys.includes('base_model.model.model.embed_tokens.base_layer.weight'));
      assert.equal(keys.includes('base_model.model.model.embed_tokens.lora_magnitude_vector'), useDora);
      const again = await PeftModel.fromPretrained(await loadModel(fixturePath('models', 'llama')), dir);
      assertClose((await forwardOnce(again, b)).logits, r, 0, 0, 'reloaded');
    });
  }
});

test('gradients of lora_B.bias, embedding LoRA and trainable tokens match central differences of the loss', async () => {
  const { fixtureBatch, fixturePath } = await import('../helpers/fixtures.js');
  const { compile } = await import('../tuners/lora_support.js');
  const b = await fixtureBatch('llama');
  const ids = [...(b.input_ids.data as BigInt64Array)].map(Number);
  const configs = [
    { r: 4, targetModules: ['q_proj', 'v_proj'], loraBias: true, trainableTokenIndices: [ids[1]!, ids[2]!] },
    { r: 4, targetModules: ['embed_tokens', 'q_proj'] },
    { r: 4, targetModules: ['embed_tokens'], useDora: true },
  ] as { r: number; targetModules: string[]; loraBias?: boolean; trainableTokenIndices?: number[]; useDora?: boolean }[];
  for (const cfg of configs) {
    const lm = await getPeftModel(await loadModel(fixturePath('models', 'llama')), { ...cfg, taskType: 'CAUSAL_LM' }, { seed: 2 });
    let s = 5;
    for (const [, t] of lm.parameters())
      for (let i = 0; i < t.data.length; i++) t.data[i] += ((s = (s * 1103515245 + 12345) % 2147483648) / 2147483648 - 0.5) * 0.2;
    const c = await compile(lm, b, { grads: true });
    try {
      const params = lm.parameters();
      const r = await c.run(b, params);
      let checked = 0;
      for (const [name, t] of params) {
        // DoRA's norm is detached (as in peft), so only its magnitude's gradient is the loss's derivative.
        if (!(cfg.useDora ? /magnitude/ : /lora_B\.default\.bias|lora_embedding|trainable_tokens/).test(name)) continue;
        const g = r[`grad:${name}`]!.data as Float32Array;
        // the three largest gradient entries of the tensor
        const idx = Array.from(g.keys())
          .sort((x, y) => Math.abs(g[y]!) - Math.abs(g[x]!))
          .slice(0, 3);
        for (const i of idx) {
          const h = 1e-2;
          const orig = t.data[i]!;
          t.data[i] = orig + h;
          const up = (await c.run(b, params)).loss!.data[0] as number;
          t.data[i] = orig - h;
          const down = (await c.run(b, params)).loss!.data[0] as number;
          t.data[i] = orig;
          const fd = (up - down) / (2 * h);
          assert.ok(Math.abs(fd - g[i]!) <= 2e-4 + 5e-2 * Math.abs(g[i]!), `${name}[${i}]: autodiff ${g[i]} vs central difference ${fd}`);
          checked++;
        }
      }
      assert.ok(checked >= 3, `checked ${checked} entries`);
    } finally {
      await c.dispose();
    }
  }
});
