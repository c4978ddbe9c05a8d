// DecoderSessions on the position-major cache: a decode step of several new positions equals one
// prefill of them all (GQA fixtures, Gemma 3's sliding window of 4, left padding, rows of
// different lengths, the cache growing inside a step); the cache stops doubling at the model's
// positions; steps that do not fit the cache (one reused after the decode that advanced it, a
// short mask) are typed errors instead of running.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { loadModel } from '../../src/models/load.js';
import { DecoderSessions, type StepInputs } from '../../src/generate/sessions.js';
import { readSafetensors, toBigInt64 } from '../../src/io/safetensors.js';
import { fixture2026Path } from '../helpers/fixtures.js';

const runtime = { threads: 1 };
const WIDTH = 30;

/** Columns [from, to) of rows left-padded to WIDTH: their ids and positions, and the mask of [0, to). */
function columns(rows: number[][], from: number, to: number): StepInputs {
  const n = to - from;
  const inputIds = new BigInt64Array(rows.length * n);
  const positionIds = new BigInt64Array(rows.length * n);
  const attentionMask = new BigInt64Array(rows.length * to);
  rows.forEach((s, r) => {
    const pad = WIDTH - s.length;
    for (let t = 0; t < to; t++) attentionMask[r * to + t] = t < pad ? 0n : 1n;
    for (let t = from; t < to; t++) {
      inputIds[r * n + t - from] = BigInt(t < pad ? 0 : s[t - pad]!);
      positionIds[r * n + t - from] = BigInt(t < pad ? 1 : t - pad);
    }
  });
  return { batch: rows.length, seq: n, inputIds, attentionMask, positionIds };
}

async function fixtureRows(name: string): Promise<number[][]> {
  const batch = await readSafetensors(fixture2026Path('models', name, 'batch.safetensors'));
  const ids = Array.from(toBigInt64(batch.get('input_ids')!), Number);
  // rows of 30 and 23 tokens (the fixture's ids repeated): 7 columns of padding on the second
  return [ids.slice(0, 30), [...ids, ...ids, ...ids].slice(5, 28)];
}

for (const name of ['gemma3_text', 'qwen3', 'llama3', 'phi3']) {
  test(`${name}: decode steps of several positions each (padding split across steps, capacity growing inside a step) equal one prefill`, async () => {
    const model = await loadModel(fixture2026Path('models', name));
    const rows = await fixtureRows(name);
    const s = await DecoderSessions.create(model, runtime);
    const vocab = model.vocabSize;
    try {
      const full = await s.prefill(columns(rows, 0, WIDTH));
      for (const cuts of [
        [10, 13, 17, 22, 30],
        [3, 4, 5, 20, 30],
        [15, 16, 17, 18, 30],
      ]) {
        let out = await s.prefill(columns(rows, 0, cuts[0]!));
        for (let k = 1; k < cuts.length; k++) out = await s.decode(columns(rows, cuts[k - 1]!, cuts[k]!), out.cache);
        assert.equal(out.cache.length, WIDTH);
        let worst = 0;
        for (let i = 0; i < 2 * vocab; i++) worst = Math.max(worst, Math.abs(full.logits[i]! - out.logits[i]!));
        assert.ok(worst < 1e-4, `cuts ${cuts}: max |logits - prefill's| ${worst}`);
        // Every real position's keys and values (padding ones hold whatever masked attention gave).
        for (let l = 0; l < full.cache.numLayers; l++) {
          for (const kind of ['key', 'value'] as const) {
            const a = full.cache.view(l)[kind].data as Float32Array;
            const b = out.cache.view(l)[kind].data as Float32Array;
            const row = a.length / WIDTH / 2;
            let w = 0;
            for (let i = 0; i < a.length; i++) {
              const t = Math.floor(i / (2 * row));
              const r = Math.floor(i / row) % 2;
              if (t >= WIDTH - rows[r]!.length) w = Math.max(w, Math.abs(a[i]! - b[i]!));
            }
            assert.ok(w < 1e-4, `cuts ${cuts}: layer ${l} ${kind}s differ by ${w}`);
          }
        }
      }
    } finally {
      await s.dispose();
    }
  });
}

test("qwen3 (128 positions): the cache grows to the model's positions, not past them", async () => {
  const model = await loadModel(fixture2026Path('models', 'qwen3'));
  const s = await DecoderSessions.create(model, runtime);
  try {
    const prompt = Array.from({ length: 100 }, (_, i) => (i * 7) % 500);
    const step = (ids: number[], from: number, masked: number): StepInputs => ({
      batch: 1,
      seq: ids.length,
      inputIds: BigInt64Array.from(ids.map(BigInt)),
      attentionMask: new BigInt64Array(masked).fill(1n),
      positionIds: BigInt64Array.from(ids.map((_, i) => BigInt(from + i))),
    });
    const out = await s.prefill(step(prompt, 0, 100));
    assert.equal(out.cache.capacity, 100);
    await s.decode(step([1], 100, 101), out.cache);
    assert.equal(out.cache.capacity, 128, 'doubling 100 stops at max_position_embeddings');
    assert.equal(out.cache.length, 101);
  } finally {
    await s.dispose();
  }
});

test('a cache reused after the decode that advanced it, a short mask, or wrong-sized ids are typed errors, and leave the cache as it was', async () => {
  const model = await loadModel(fixture2026Path('models', 'llama3'));
  const rows = await fixtureRows('llama3');
  const s = await DecoderSessions.create(model, runtime);
  try {
    const out = await s.prefill(columns(rows, 0, 20));
    const next = columns(rows, 20, 21);
    await s.decode(next, out.cache);
    // decode advanced the cache in place: the same step again no longer fits it
    await assert.rejects(s.decode(next, out.cache), { name: 'GenerationError', message: /attentionMask holds 42 values, expected 44/ });
    // a mask of one column would broadcast over every cached position (no padding masked)
    await assert.rejects(s.decode({ ...columns(rows, 21, 22), attentionMask: new BigInt64Array(2).fill(1n) }, out.cache), {
      name: 'GenerationError',
    });
    await assert.rejects(s.decode({ ...columns(rows, 21, 22), inputIds: new BigInt64Array(1) }, out.cache), { name: 'GenerationError' });
    assert.equal(out.cache.length, 21);
    // the right step still runs
    await s.decode(columns(rows, 21, 22), out.cache);
    assert.equal(out.cache.length, 22);
  } finally {
    await s.dispose();
  }
});
