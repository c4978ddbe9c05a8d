// Mixed-adapter batches: one forward with a different LoRA/IA3 adapter (or none) per row equals each
// row run alone with its own adapter (both strategies, different ranks and target sets), hot swap
// keeps held slots, and adapters that cannot join a mixed batch are refused with a typed error.
// The qwen3/mixed_batch fixture (peft's adapter_names) is checked when the model loads here.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { loadModel } from '../../../src/models/load.js';
import { ForwardSession, Generator } from '../../../src/generate/index.js';
import type { InferenceModel } from '../../../src/generate/index.js';
import type { HostTensor } from '../../../src/runtime/session.js';
import { loadAdapter } from '../../../src/tuners/load.js';
import { BASE_ADAPTER, MixedBatchError, MultiAdapterModel, type MixedStrategy } from '../../../src/tuners/multi/index.js';
import { toFloat32, readSafetensors } from '../../../src/io/safetensors.js';
import { fixture2026Path, fixtureBatch, fixturePath, maxAbsDiff } from '../../helpers/fixtures.js';

const runtime = { threads: 1 };
const ADAPTERS: Record<string, string> = {
  attn: fixturePath('adapters', 'llama', 'lora_attn'), // r 8, q/v
  all: fixturePath('adapters', 'llama', 'lora_all_linear_rslora'), // r 4, every linear, rsLoRA
  ia3: fixturePath('adapters', 'llama', 'ia3'), // k/v outputs, down_proj input
};

/** The fixture batch with its rows repeated to `rows` rows. */
async function batchOf(rows: number): Promise<{ inputIds: HostTensor; attentionMask: HostTensor }> {
  const b = await fixtureBatch('llama');
  const [n, s] = b.input_ids.shape as [number, number];
  const ids = new BigInt64Array(rows * s);
  const mask = new BigInt64Array(rows * s);
  for (let r = 0; r < rows; r++) {
    ids.set((b.input_ids.data as BigInt64Array).subarray((r % n) * s, ((r % n) + 1) * s), r * s);
    mask.set((b.attention_mask.data as BigInt64Array).subarray((r % n) * s, ((r % n) + 1) * s), r * s);
  }
  return { inputIds: { dtype: 'int64', shape: [rows, s], data: ids }, attentionMask: { dtype: 'int64', shape: [rows, s], data: mask } };
}

async function logitsOf(
  model: InferenceModel,
  batch: { inputIds: HostTensor; attentionMask: HostTensor },
  adapterIndex?: BigInt64Array,
): Promise<Float32Array> {
  const f = await ForwardSession.create(model, { runtime });
  try {
    const out = await f.run({
      ...batch,
      adapterIndex: adapterIndex && { dtype: 'int64', shape: [adapterIndex.length], data: adapterIndex },
    });
    return out.logits.data as Float32Array;
  } finally {
    await f.dispose();
  }
}

const rowNames = ['attn', BASE_ADAPTER, 'all', 'ia3', 'attn'];

for (const strategy of ['concat', 'gather'] as MixedStrategy[]) {
  test(`llama: a ${strategy} mixed batch equals each row run alone (LoRA r8 + rsLoRA r4 all-linear + IA3 + base)`, async () => {
    const batch = await batchOf(rowNames.length);
    const base = await loadModel(fixturePath('models', 'llama'));
    const multi = await MultiAdapterModel.fromFolders(base, ADAPTERS, { strategy });
    const mixed = await logitsOf(multi, batch, multi.rowIndex(rowNames));
    const per = mixed.length / rowNames.length;
    const alone = new Map<string, Float32Array>();
    alone.set(BASE_ADAPTER, await logitsOf(base, batch));
    for (const [name, dir] of Object.entries(ADAPTERS)) alone.set(name, await logitsOf(await loadAdapter(base, dir), batch));
    // Every adapter changes the logits, so a row that took another row's adapter would fail.
    assert.ok(maxAbsDiff(alone.get('attn')!, alone.get(BASE_ADAPTER)!) > 1e-3);
    assert.ok(maxAbsDiff(alone.get('ia3')!, alone.get(BASE_ADAPTER)!) > 1e-3);
    rowNames.forEach((n, r) => {
      const d = maxAbsDiff(mixed.subarray(r * per, (r + 1) * per), alone.get(n)!.subarray(r * per, (r + 1) * per));
      assert.ok(d < 2e-5, `row ${r} (${n}): max |mixed - alone| = ${d}`);
    });
  });
}

test('hot swap: replacing or unloading an adapter keeps held slots, and changes what a new lookup gets, without new sessions', async () => {
  const batch = await batchOf(2);
  const base = await loadModel(fixturePath('models', 'llama'));
  const multi = await MultiAdapterModel.fromFolders(
    base,
    { a: ADAPTERS.attn! },
    { targetModules: ['q_proj', 'k_proj', 'v_proj', 'o_proj', 'gate_proj', 'up_proj', 'down_proj'] },
  );
  const f = await ForwardSession.create(multi, { runtime });
  const run = async (slots: number[]) =>
    (await f.run({ ...batch, adapterIndex: { dtype: 'int64', shape: [2], data: BigInt64Array.from(slots.map(BigInt)) } })).logits
      .data as Float32Array;
  try {
    const held = multi.acquire('a');
    const before = await run([held, 0]);
    // Replace "a" with another adapter of a different rank and target set: same session.
    await multi.loadAdapter('a', ADAPTERS.all!, { replace: true });
    const fresh = Number(multi.rowIndex(['a'])[0]);
    assert.notEqual(fresh, held);
    const after = await run([held, fresh]);
    const per = before.length / 2;
    assert.equal(maxAbsDiff(before.subarray(0, per), after.subarray(0, per)), 0, 'the held slot still computes the old adapter');
    const expectAll = await logitsOf(await loadAdapter(base, ADAPTERS.all!), batch);
    assert.ok(maxAbsDiff(after.subarray(per), expectAll.subarray(per)) < 2e-5, 'a new lookup of "a" gets the replacement');
    multi.release(held);
    multi.unloadAdapter('a');
    assert.throws(() => multi.rowIndex(['a']), MixedBatchError);
    // An IA3 adapter needs hooks the compiled graph does not have: refused, typed.
    await assert.rejects(multi.loadAdapter('i', ADAPTERS.ia3!), MixedBatchError);
  } finally {
    await f.dispose();
  }
});

test('adapters that cannot join a mixed batch are refused with a typed error', async () => {
  const base = await loadModel(fixturePath('models', 'llama'));
  const multi = new MultiAdapterModel(base);
  await assert.rejects(multi.loadAdapter('d', fixturePath('adapters', 'llama', 'lora_dora')), MixedBatchError);
  await assert.rejects(multi.loadAdapter('m', fixturePath('adapters', 'llama', 'lora_mts_lm_head')), MixedBatchError);
  await assert.rejects(multi.loadAdapter('p', fixturePath('adapters', 'llama', 'prompt_tuning_random')), MixedBatchError);
  await assert.rejects(multi.loadAdapter('__base__', ADAPTERS.attn!), MixedBatchError);
  assert.throws(() => multi.rowIndex(['nope']), MixedBatchError);
});

test('generate: a mixed batch gives each row the tokens of its adapter alone (greedy, KV cache)', async () => {
  const base = await loadModel(fixturePath('models', 'llama'));
  const multi = await MultiAdapterModel.fromFolders(base, ADAPTERS);
  const prompts = [
    [1, 5, 9, 13, 2],
    [1, 7],
    [1, 3, 3, 8, 20, 4],
    [1, 11, 12],
  ];
  const names = ['attn', 'ia3', BASE_ADAPTER, 'all'];
  const g = await Generator.create(multi, { runtime, defaults: { eosTokenIds: [], doSample: false, temperature: 1, topK: 0, topP: 1 } });
  const mixed = await g.generate(prompts, { maxNewTokens: 6, adapters: names });
  await g.dispose();
  for (const [r, n] of names.entries()) {
    const model = n === BASE_ADAPTER ? base : await loadAdapter(base, ADAPTERS[n]!);
    const alone = await Generator.create(model, {
      runtime,
      defaults: { eosTokenIds: [], doSample: false, temperature: 1, topK: 0, topP: 1 },
    });
    const one = await alone.generate([prompts[r]!], { maxNewTokens: 6 });
    await alone.dispose();
    assert.deepEqual(mixed.sequences[r]!.tokenIds, one.sequences[0]!.tokenIds, `row ${r} (${n})`);
  }
});

const MIXED = fixture2026Path('adapters', 'qwen3', 'mixed_batch');
test('qwen3/mixed_batch fixture: one forward with adapter_names reproduces peft', async () => {
  assert.ok(existsSync(join(MIXED, 'mixed_batch.json')));
  const base = await loadModel(fixture2026Path('models', 'qwen3'));
  const spec = JSON.parse(readFileSync(join(MIXED, 'mixed_batch.json'), 'utf8')) as {
    adapters: Record<string, string>;
    adapter_names: string[];
  };
  const multi = await MultiAdapterModel.fromFolders(
    base,
    Object.entries(spec.adapters).map(([n, d]) => [n, join(MIXED, d)] as [string, string]),
  );
  const b = await readSafetensors(fixture2026Path('models', 'qwen3', 'batch.safetensors'));
  const { host } = await import('../../helpers/fixtures.js');
  const logits = await logitsOf(
    multi,
    { inputIds: host(b.get('input_ids')!), attentionMask: host(b.get('attention_mask')!) },
    multi.rowIndex(spec.adapter_names),
  );
  const expected = toFloat32((await readSafetensors(join(MIXED, 'expected_outputs.safetensors'))).get('logits')!);
  let worst = 0;
  for (let i = 0; i < expected.length; i++) worst = Math.max(worst, Math.abs(logits[i]! - expected[i]!) - 1e-4 * Math.abs(expected[i]!));
  assert.ok(worst <= 1e-4, `logits off by ${worst} beyond rtol`);
});

test('LoRA on embeddings and trainable tokens are refused for mixed batches', async () => {
  const base = await loadModel(fixture2026Path('models', 'qwen3'));
  const multi = new MultiAdapterModel(base);
  for (const c of ['lora_embed_tokens', 'lora_trainable_tokens', 'lora_bias', 'lora_modules_to_save']) {
    await assert.rejects(multi.loadAdapter('x', fixture2026Path('adapters', 'qwen3', c)), MixedBatchError, c);
  }
  assert.deepEqual(multi.adapterNames, []);
});
