// Weighted adapter merges (peft 0.20's add_weighted_adapter) against fixtures-2026/adapters/qwen3/
// weighted_*: every type reproduces peft's saved lora_A/lora_B (the *_svd ones up to the SVD's
// per-component signs, so their products B·A are compared) and its logits and loss. DARE draws its
// Bernoulli masks from torch's global CPU generator right after torch.manual_seed(seed) (the seed is
// in MANIFEST.json): src/nn/torch_rng.ts replays that stream, so dare_linear, dare_ties and
// dare_ties_svd are reproduced from the seed too; another seed gives another adapter, and our masks
// keep about `density` of the values. The jacobi SVD is checked on its own, and the CLI verb end to
// end.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { readSafetensors, toFloat32 } from '../../../src/io/safetensors.js';
import { loadModel } from '../../../src/models/load.js';
import { LoraModel } from '../../../src/tuners/lora/model.js';
import { type CombinationType, jacobiSvd } from '../../../src/tuners/lora/weighted.js';
import { PeftConfigError } from '../../../src/tuners/types.js';
import { mulberry32 } from '../../../src/nn/random.js';
import { fixture2026Path, host, inTempDir } from '../../helpers/fixtures.js';
import { peft } from '../../cli/peft.js';
import { assertClose, type Batch, forwardOnce } from '../lora_support.js';

const MODEL = fixture2026Path('models', 'qwen3');
const dir = (c: string) => fixture2026Path('adapters', 'qwen3', c);
const SOURCES = ['merge_src_a', 'merge_src_b', 'merge_src_c'];
const WEIGHTS = [1.0, 0.6, -0.4];

interface Case {
  type: CombinationType;
  density?: number;
  majoritySignMethod?: 'total' | 'frequency';
  /** the torch.manual_seed right before add_weighted_adapter */
  seed: number;
}
async function fixtureCase(c: string): Promise<Case> {
  const m = JSON.parse(await readFile(fixture2026Path('MANIFEST.json'), 'utf8')) as {
    adapters: {
      name: string;
      seed: number;
      weighted_merge?: {
        combination_type: CombinationType;
        kwargs: { density?: number; majority_sign_method?: 'total' | 'frequency' };
        weights: number[];
        rng: string;
      };
    }[];
  };
  const entry = m.adapters.find((a) => a.name === `qwen3/${c}`)!;
  const w = entry.weighted_merge!;
  assert.deepEqual(w.weights, WEIGHTS);
  assert.ok(w.rng.startsWith(`torch.manual_seed(${entry.seed}) immediately before add_weighted_adapter`), w.rng);
  return { type: w.combination_type, density: w.kwargs.density, majoritySignMethod: w.kwargs.majority_sign_method, seed: entry.seed };
}

async function batch(): Promise<Batch> {
  const b = await readSafetensors(join(MODEL, 'batch.safetensors'));
  return { input_ids: host(b.get('input_ids')!), attention_mask: host(b.get('attention_mask')!), labels: host(b.get('labels')!) };
}

async function sources(): Promise<LoraModel> {
  const lm = await LoraModel.fromPretrained(await loadModel(MODEL), dir(SOURCES[0]!), { adapterName: SOURCES[0]! });
  for (const s of SOURCES.slice(1)) await lm.loadAdapter(dir(s), s);
  return lm;
}

function matmul(B: Float32Array, A: Float32Array, rows: number, r: number, cols: number): Float64Array {
  const out = new Float64Array(rows * cols);
  for (let i = 0; i < rows; i++)
    for (let k = 0; k < r; k++) for (let j = 0; j < cols; j++) out[i * cols + j] += B[i * r + k]! * A[k * cols + j]!;
  return out;
}

async function check(c: string, expectTensors: 'exact' | 'product'): Promise<void> {
  const k = await fixtureCase(c);
  const lm = await sources();
  await lm.addWeightedAdapter(SOURCES, WEIGHTS, 'w', k.type, {
    density: k.density,
    majoritySignMethod: k.majoritySignMethod,
    seed: k.seed,
  });
  const theirsCfg = JSON.parse(await readFile(join(dir(c), 'adapter_config.json'), 'utf8'));
  const mine = lm.peftConfig('w');
  assert.equal(mine.r, theirsCfg.r);
  assert.equal(mine.loraAlpha, theirsCfg.lora_alpha);
  assert.deepEqual(new Set(mine.targetModules as string[]), new Set(theirsCfg.target_modules));
  const state = lm.stateDict('w');
  const theirs = await readSafetensors(join(dir(c), 'adapter_model.safetensors'));
  assert.deepEqual([...state.keys()].sort(), [...theirs.keys()].sort());
  for (const [key, t] of theirs) {
    if (expectTensors === 'exact') assertClose(state.get(key)!.data, toFloat32(t), 2e-6, 1e-5, `${c} ${key}`);
    else if (key.endsWith('lora_B.weight')) {
      const aKey = key.replace('lora_B', 'lora_A');
      const [rows, r] = t.shape as [number, number];
      const cols = theirs.get(aKey)!.shape[1]!;
      const want = matmul(toFloat32(t), toFloat32(theirs.get(aKey)!), rows, r, cols);
      const got = matmul(state.get(key)!.data, state.get(aKey)!.data, rows, r, cols);
      assertClose(got, want, 2e-6, 1e-4, `${c} B·A of ${key}`);
    }
  }
  lm.setAdapter('w');
  const want = new Map([...(await readSafetensors(join(dir(c), 'expected_outputs.safetensors')))].map(([n, t]) => [n, toFloat32(t)]));
  const r = await forwardOnce(lm, await batch());
  assertClose(r.logits, want.get('logits')!, 1e-4, 1e-4, `${c} logits`);
  assert.ok(Math.abs(r.loss - want.get('loss')![0]!) <= 1e-5 * Math.abs(want.get('loss')![0]!), `${c} loss`);
}

for (const c of [
  'weighted_linear',
  'weighted_cat',
  'weighted_ties',
  'weighted_magnitude_prune',
  'weighted_dare_linear',
  'weighted_dare_ties',
]) {
  test(`qwen3/${c}: peft's lora_A / lora_B, logits and loss`, () => check(c, 'exact'));
}
for (const c of ['weighted_svd', 'weighted_ties_svd', 'weighted_dare_ties_svd']) {
  test(`qwen3/${c}: peft's B·A (SVD signs aside), logits and loss`, () => check(c, 'product'));
}

for (const c of ['weighted_dare_linear', 'weighted_dare_ties', 'weighted_dare_ties_svd']) {
  test(`qwen3/${c}: another seed gives another adapter; our masks keep ~density; the same seed the same adapter`, async () => {
    const k = await fixtureCase(c);
    const lm = await sources();
    const other = k.seed + 1;
    await lm.addWeightedAdapter(SOURCES, WEIGHTS, 'w', k.type, {
      density: k.density,
      majoritySignMethod: k.majoritySignMethod,
      seed: other,
    });
    const theirs = await readSafetensors(join(dir(c), 'adapter_model.safetensors'));
    const key = 'base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight';
    const mine = lm.stateDict('w').get(key)!.data;
    const diff = Math.max(...toFloat32(theirs.get(key)!).map((x, i) => Math.abs(Math.abs(x) - Math.abs(mine[i]!))));
    assert.ok(diff > 1e-3, `seed ${other} should not give the seed-${k.seed} adapter`);
    await lm.addWeightedAdapter(SOURCES, WEIGHTS, 'w2', k.type, {
      density: k.density,
      majoritySignMethod: k.majoritySignMethod,
      seed: other,
    });
    assert.deepEqual(lm.stateDict('w2').get(key)!.data, mine);
    if (k.type.endsWith('svd')) return;
    // Only merge_src_b targets o_proj: about density of its A values survive (binomial, 6 sigma).
    const A = lm.adapter('w').modules.get('model.layers.0.self_attn.o_proj')!.A.data;
    const n = A.length;
    const kept = A.filter((x) => x !== 0).length;
    const sd = Math.sqrt(n * k.density! * (1 - k.density!));
    assert.ok(Math.abs(kept - n * k.density!) < 6 * sd, `kept ${kept} of ${n}, expected about ${n * k.density!}`);
  });
}

test('weighted merges refuse what peft refuses, in typed errors', async () => {
  const lm = await sources();
  await assert.rejects(lm.addWeightedAdapter(SOURCES, [1, 2], 'x', 'linear'), PeftConfigError);
  await assert.rejects(lm.addWeightedAdapter(SOURCES, WEIGHTS, 'x', 'ties'), /needs a density/);
  await assert.rejects(lm.addWeightedAdapter(SOURCES, WEIGHTS, 'x', 'svd', { svdRank: 1000 }), /svd rank 1000/);
});

test('a DoRA first source: the combined adapter is DoRA with magnitudes ||W|| (peft initialises it at injection), A/B combined as usual', async () => {
  const lm = await LoraModel.fromPretrained(await loadModel(MODEL), dir('lora_dora'), { adapterName: 'dora' });
  await lm.loadAdapter(dir('merge_src_a'), 'a');
  await lm.addWeightedAdapter(['dora', 'a'], [0.5, 0.5], 'w', 'linear');
  const w = lm.adapter('w');
  assert.ok(w.config.useDora);
  const q = w.modules.get('model.layers.0.self_attn.q_proj')!;
  const W = lm.base.weights.get('model.layers.0.self_attn.q_proj.weight');
  const [rows, cols] = W.shape as [number, number];
  const norms = Array.from({ length: rows }, (_, i) => Math.hypot(...W.data.subarray(i * cols, (i + 1) * cols)));
  assertClose(q.magnitude!.data, norms, 1e-5, 1e-5, 'magnitude = row norms of W');
  // o_proj: only the DoRA source has it; A = sign(0.5 s) sqrt(0.5 s) A_dora
  const o = w.modules.get('model.layers.0.self_attn.o_proj')!;
  const src = lm.adapter('dora').modules.get('model.layers.0.self_attn.o_proj')!;
  assertClose(
    o.A.data,
    src.A.data.map((x) => x * Math.sqrt(0.5 * src.scaling)),
    1e-6,
    1e-5,
    'o_proj A',
  );
  lm.setAdapter('w');
  assert.ok((await forwardOnce(lm, await batch())).logits.every(Number.isFinite));
});

test('jacobiSvd: U S Vt reproduces the matrix, U and V orthonormal, S descending', () => {
  const rand = mulberry32(3);
  for (const [m, n] of [
    [7, 5],
    [5, 7],
    [12, 12],
    [30, 4],
  ] as const) {
    const a = Float64Array.from({ length: m * n }, () => rand() - 0.5);
    const { U, S, Vt } = jacobiSvd(a, m, n);
    const k = Math.min(m, n);
    for (let i = 0; i < m; i++) {
      for (let j = 0; j < n; j++) {
        let s = 0;
        for (let q = 0; q < k; q++) s += U[i * k + q]! * S[q]! * Vt[q * n + j]!;
        assert.ok(Math.abs(s - a[i * n + j]!) < 1e-12, `${m}x${n} reconstruction`);
      }
    }
    for (let p = 0; p < k; p++) {
      if (p) assert.ok(S[p]! <= S[p - 1]!);
      for (let q = 0; q < k; q++) {
        let u = 0;
        let v = 0;
        for (let i = 0; i < m; i++) u += U[i * k + p]! * U[i * k + q]!;
        for (let j = 0; j < n; j++) v += Vt[p * n + j]! * Vt[q * n + j]!;
        assert.ok(Math.abs(u - (p === q ? 1 : 0)) < 1e-12 && Math.abs(v - (p === q ? 1 : 0)) < 1e-12, `${m}x${n} orthonormal`);
      }
    }
  }
});

test('peft merge-adapters writes the combined adapter as a peft folder (ties, as the fixture)', async () => {
  await inTempDir('peft-wmerge-', async (tmp) => {
    const out = join(tmp, 'merged');
    const args = [
      'merge-adapters',
      '--model',
      MODEL,
      ...SOURCES.flatMap((s) => ['--adapter', `${s}=${dir(s)}`]),
      '--weights',
      WEIGHTS.join(','),
      '--type',
      'ties',
      '--density',
      '0.6',
      '--majority-sign-method',
      'total',
      '--out',
      out,
    ];
    const r = await peft(args);
    assert.equal(r.code, 0, r.stderr);
    const mine = await readSafetensors(join(out, 'adapter_model.safetensors'));
    const theirs = await readSafetensors(join(dir('weighted_ties'), 'adapter_model.safetensors'));
    assert.deepEqual([...mine.keys()].sort(), [...theirs.keys()].sort());
    for (const [k, t] of theirs) assertClose(toFloat32(mine.get(k)!), toFloat32(t), 2e-6, 1e-5, k);
    const cfg = JSON.parse(await readFile(join(out, 'adapter_config.json'), 'utf8'));
    assert.equal(cfg.r, 4);
    assert.equal(cfg.lora_alpha, 4);
    // --out must be new; a missing density for ties is one line.
    const again = await peft(args);
    assert.equal(again.code, 1);
    assert.match(again.stderr, /^error: .*holds an earlier peft merge-adapters output; pass --overwrite/);
    const noDensity = await peft(
      args.filter((a, i) => a !== '--density' && args[i - 1] !== '--density').map((a) => (a === out ? join(tmp, 'x') : a)),
    );
    assert.equal(noDensity.code, 1);
    assert.match(noDensity.stderr, /^error: .*density/);
  });
});

test("peft merge-adapters --seed S reproduces peft's DARE after torch.manual_seed(S) (dare_ties, as the fixture)", async () => {
  const k = await fixtureCase('weighted_dare_ties');
  await inTempDir('peft-wmerge-dare-', async (tmp) => {
    const out = join(tmp, 'merged');
    const args = [
      'merge-adapters',
      '--model',
      MODEL,
      ...SOURCES.flatMap((s) => ['--adapter', `${s}=${dir(s)}`]),
      '--weights',
      WEIGHTS.join(','),
      '--type',
      'dare_ties',
      '--density',
      String(k.density),
      '--majority-sign-method',
      k.majoritySignMethod!,
      '--seed',
      String(k.seed),
      '--out',
      out,
    ];
    const r = await peft(args);
    assert.equal(r.code, 0, r.stderr);
    const mine = await readSafetensors(join(out, 'adapter_model.safetensors'));
    const theirs = await readSafetensors(join(dir('weighted_dare_ties'), 'adapter_model.safetensors'));
    for (const [key, t] of theirs) assertClose(toFloat32(mine.get(key)!), toFloat32(t), 2e-6, 1e-5, key);
    const neg = await peft(args.map((a) => (a === String(k.seed) ? '-3' : a === out ? join(tmp, 'neg') : a)));
    assert.equal(neg.code, 1);
    assert.match(neg.stderr, /--seed needs an integer >= 0/);
  });
});
