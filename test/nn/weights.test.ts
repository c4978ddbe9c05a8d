// WeightStore's released and deferred weights (issue #19, the int8 base's memory): a weight whose
// float32 array is dropped, or never read while loading, reads back exactly what an eager load
// holds, for float32, float16 and bfloat16 files; its int8 copies are the ones quantized from the
// eager array; and a model loaded with deferLinearWeights trains and merges as the eager one.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { dirname, join } from 'node:path';
import { openCheckpoint, writeSafetensors } from '../../src/io/safetensors.js';
import { loadModel } from '../../src/models/load.js';
import { WeightStore, readWeightFile } from '../../src/nn/weights.js';
import { int8Base } from '../../src/quant/int8_base.js';
import { parseJsonl, prepareExamples, tokenizeRecords } from '../../src/train/data.js';
import { Trainer } from '../../src/train/trainer.js';
import { Tokenizer } from '../../src/io/tokenizer.js';
import { getPeftModel } from '../../src/tuners/load.js';
import { fixturePath, inTempDir } from '../helpers/fixtures.js';
import { jsonl, swapRecords, tempDir } from '../train/synthetic.js';

/** float32 values exactly representable in float16 and bfloat16 after the bit patterns below */
function bits16(n: number, seed: number): Uint16Array {
  const out = new Uint16Array(n);
  let x = seed;
  for (let i = 0; i < n; i++) {
    x = (x * 1103515245 + 12345) >>> 0;
    // finite values of both formats: keep the exponent away from all-ones
    out[i] = (x >>> 16) & 0xbbff;
  }
  return out;
}

async function writeMixed(dir: string): Promise<string> {
  const f32 = new Float32Array(24 * 16).map((_, i) => Math.sin(i) * 0.1);
  const file = join(dir, 'model.safetensors');
  await writeSafetensors(file, {
    a: { dtype: 'F32', shape: [24, 16], data: new Uint8Array(f32.buffer) },
    b: { dtype: 'F16', shape: [16, 24], data: new Uint8Array(bits16(16 * 24, 7).buffer) },
    c: { dtype: 'BF16', shape: [16, 16], data: new Uint8Array(bits16(16 * 16, 9).buffer) },
    d: { dtype: 'F32', shape: [16], data: new Uint8Array(new Float32Array(16).fill(1).buffer) },
  });
  return file;
}

async function storeOf(file: string, defer?: (name: string) => boolean): Promise<WeightStore> {
  const src = await openCheckpoint(dirname(file));
  try {
    return await WeightStore.fromSource(src, () => file, { defer });
  } finally {
    await src.close();
  }
}

test('deferred and released weights read back bit-identical for F32, F16 and BF16 files', async () => {
  await inTempDir('peft-weights-', async (dir) => {
    const model = await writeMixed(dir);
    const eager = await storeOf(model);
    const lazy = await storeOf(model, (n) => n !== 'd');
    assert.deepEqual(lazy.releasedNames().sort(), ['a', 'b', 'c']);
    assert.equal(lazy.heldBytes(), 16 * 4, 'only the undeferred vector is held');
    assert.equal(lazy.numel(), eager.numel());
    for (const n of ['a', 'b', 'c']) assert.deepEqual(lazy.shapeOf(n), eager.shapeOf(n), n);
    // int8 copies of a deferred matrix: the eager array's, and the weight stays unread
    for (const [n, layout] of [
      ['a', 'conv1d'],
      ['b', 'linear'],
    ] as const) {
      const q = lazy.int8(n, layout);
      const e = int8Base(eager.get(n).data, eager.shapeOf(n), layout, n);
      assert.deepEqual(q.forward.codes, e.forward.codes, n);
      assert.deepEqual(q.backward.scales, e.backward.scales, n);
      assert.equal(lazy.int8(n, layout).forward.codes, q.forward.codes, `${n}: cached while referenced`);
    }
    assert.deepEqual(lazy.releasedNames().sort(), ['a', 'b', 'c']);
    // read back: exactly the eager upcast (float16 through its table, bfloat16 by shifting)
    for (const n of ['a', 'b', 'c']) {
      const got = lazy.get(n).data;
      const want = eager.get(n).data;
      assert.deepEqual(new Uint32Array(got.buffer), new Uint32Array(want.buffer), n);
    }
    assert.equal(lazy.releasedNames().length, 0);
    // released again (an F16 / BF16 weight too), renamed while released, and read back
    for (const n of ['a', 'b', 'c']) assert.equal(eager.releaseFloat(n), true, n);
    eager.rename('c', 'c2');
    assert.ok(!eager.has('c') && eager.releasedNames().includes('c2'));
    assert.deepEqual(eager.get('c2').data, lazy.get('c').data);
    assert.deepEqual(eager.get('b').data, lazy.get('b').data);
    // a weight set in memory has no file: it is not released
    eager.set('e', { shape: [2], data: Float32Array.of(1, 2) });
    assert.equal(eager.releaseFloat('e'), false);
    assert.deepEqual(readWeightFile({ path: model, offset: lazy.get('d').file!.offset, length: 64 }, [16]), new Float32Array(16).fill(1));
  });
});

test('deferLinearWeights: int8-base training and the merge after it equal the eagerly loaded model', async () => {
  const dir = fixturePath('models', 'gpt2');
  const tok = await Tokenizer.fromDir(dir);
  const rows = prepareExamples(tokenizeRecords(parseJsonl(jsonl(swapRecords())), tok).examples, { maxLength: 32 }).examples;
  const run = async (deferLinearWeights: boolean) => {
    const base = await loadModel(dir, { deferLinearWeights });
    const model = await getPeftModel(base, { r: 4, loraAlpha: 8, targetModules: ['c_attn'] }, { seed: 0 });
    const held = base.weights.heldBytes();
    const r = await new Trainer(model, rows.slice(0, 16), rows.slice(16, 24), {
      outputDir: await tempDir(),
      padTokenId: tok.padTokenId ?? tok.eosTokenId!,
      learningRate: 1e-2,
      maxSteps: 2,
      batchSize: 8,
      seed: 3,
      runtime: { threads: 1, basePrecision: 'int8' },
    }).train();
    const released = base.weights.releasedNames().length;
    const merged = await model.mergeAndUnload!();
    return { r, held, released, merged };
  };
  const eager = await run(false);
  const lazy = await run(true);
  // the linear matrices (c_attn, c_proj, c_fc, mlp.c_proj of each layer) were never held as float32
  assert.ok(lazy.held < eager.held, `${lazy.held} vs ${eager.held}`);
  assert.ok(lazy.released >= 4 * lazy.merged.numLayers, `released ${lazy.released}`);
  // the same int8 copies, so the same losses, bit for bit
  assert.equal(lazy.r.initialEvalLoss, eager.r.initialEvalLoss);
  assert.equal(lazy.r.finalEvalLoss, eager.r.finalEvalLoss);
  // merging reads the released float32 matrices back: the merged weights are the eager model's
  for (const n of eager.merged.weights.names()) {
    if (eager.merged.weights.isAlias(n)) continue;
    assert.deepEqual(lazy.merged.weights.get(n).data, eager.merged.weights.get(n).data, n);
  }
});
