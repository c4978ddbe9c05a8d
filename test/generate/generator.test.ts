// Cached decoding is exact: greedy with the KV cache gives the tokens of greedy that recomputes the
// whole sequence every step, on left-padded batches of prompts of different lengths; a batch gives
// each prompt's tokens alone; the fixtures' transformers generate() ids are reproduced.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { loadModel } from '../../src/models/load.js';
import { ForwardSession, Generator } from '../../src/generate/index.js';
import { argmax } from '../../src/generate/sampling.js';
import { Rng } from '../../src/train/rng.js';
import { DecoderSessions } from '../../src/generate/sessions.js';
import type { PretrainedModel } from '../../src/models/types.js';
import { loadAdapter } from '../../src/tuners/load.js';
import { loadPromptTuning } from '../../src/tuners/prompt_tuning/index.js';
import type { InferenceModel } from '../../src/generate/index.js';
import { toBigInt64 } from '../../src/io/safetensors.js';
import { fixturePath, readTensors } from '../helpers/fixtures.js';

const runtime = { threads: 1 };

/** Rows of the fixture batch cut to different lengths: prompts of 5, 12 and 8 tokens. */
async function prompts(name: string): Promise<number[][]> {
  const batch = await readTensors('models', name, 'batch.safetensors');
  const ids = toBigInt64(batch.get('input_ids')!);
  const seq = batch.get('input_ids')!.shape[1]!;
  return [5, 12, 8].map((len, r) => Array.from(ids.subarray(r * seq, r * seq + len), Number));
}

/** Left-pads rows into flat int64 ids, mask and mask-derived position ids (cumsum - 1, padding 1). */
function padLeft(seqs: number[][], pad: number): { ids: BigInt64Array; mask: BigInt64Array; pos: BigInt64Array; shape: number[] } {
  const width = Math.max(...seqs.map((s) => s.length));
  const b = seqs.length;
  const ids = new BigInt64Array(b * width);
  const mask = new BigInt64Array(b * width);
  const pos = new BigInt64Array(b * width);
  seqs.forEach((s, r) => {
    const off = width - s.length;
    for (let t = 0; t < width; t++) {
      ids[r * width + t] = BigInt(t < off ? pad : s[t - off]!);
      mask[r * width + t] = t < off ? 0n : 1n;
      pos[r * width + t] = BigInt(t < off ? 1 : t - off);
    }
  });
  return { ids, mask, pos, shape: [b, width] };
}

/** Greedy decoding that runs the full left-padded sequence through a no-cache forward each step. */
async function greedyWithoutCache(model: InferenceModel, rows: number[][], newTokens: number, pad: number): Promise<number[][]> {
  const fwd = await ForwardSession.create(model, { positionIds: true, runtime });
  const seqs = rows.map((r) => [...r]);
  const out: number[][] = rows.map(() => []);
  const vocab = ('base' in model ? model.base : model).vocabSize;
  try {
    for (let step = 0; step < newTokens; step++) {
      const { ids, mask, pos, shape } = padLeft(seqs, pad);
      const width = shape[1]!;
      const { logits } = await fwd.run({
        inputIds: { dtype: 'int64', shape, data: ids },
        attentionMask: { dtype: 'int64', shape, data: mask },
        positionIds: { dtype: 'int64', shape, data: pos },
      });
      const data = logits.data as Float32Array;
      seqs.forEach((s, r) => {
        const last = (r * width + width - 1) * vocab;
        const id = argmax(data.subarray(last, last + vocab));
        s.push(id);
        out[r]!.push(id);
      });
    }
  } finally {
    await fwd.dispose();
  }
  return out;
}

for (const name of ['gpt2', 'llama']) {
  test(`${name}: every decode step's logits equal a full forward's (teacher-forced random tokens, left padding)`, async () => {
    const model = await loadModel(fixturePath('models', name));
    const seqs = await prompts(name);
    const pad = 0;
    const decoder = await DecoderSessions.create(model, runtime);
    const fwd = await ForwardSession.create(model, { positionIds: true, runtime });
    const vocab = model.vocabSize;
    const rng = Rng.fromSeed(7);
    try {
      const first = padLeft(seqs, pad);
      const width = first.shape[1]!;
      let out = await decoder.prefill({ batch: 3, seq: width, inputIds: first.ids, attentionMask: first.mask, positionIds: first.pos });
      const mask = Array.from(first.mask, Number);
      let cols = width;
      const capacities = new Set([out.cache.capacity]);
      for (let step = 0; step < 10; step++) {
        const full = padLeft(seqs, pad);
        const ref = await fwd.run({
          inputIds: { dtype: 'int64', shape: full.shape, data: full.ids },
          attentionMask: { dtype: 'int64', shape: full.shape, data: full.mask },
          positionIds: { dtype: 'int64', shape: full.shape, data: full.pos },
        });
        const data = ref.logits.data as Float32Array;
        let worst = 0;
        for (let r = 0; r < 3; r++) {
          const last = (r * cols + cols - 1) * vocab;
          for (let v = 0; v < vocab; v++) worst = Math.max(worst, Math.abs(data[last + v]! - out.logits[r * vocab + v]!));
        }
        assert.ok(worst < 1e-4, `step ${step}: max |cached - full| logits ${worst}`);
        // Force the next token of every row, then decode one step on the cache.
        const next = seqs.map((s) => {
          const id = Math.floor(rng.nextFloat() * vocab);
          s.push(id);
          return id;
        });
        const grown: number[] = [];
        for (let r = 0; r < 3; r++) grown.push(...mask.slice(r * cols, (r + 1) * cols), 1);
        mask.splice(0, mask.length, ...grown);
        cols++;
        const pos = BigInt64Array.from(seqs.map((s) => BigInt(s.length - 1)));
        out = await decoder.decode(
          {
            batch: 3,
            seq: 1,
            inputIds: BigInt64Array.from(next.map(BigInt)),
            attentionMask: BigInt64Array.from(mask.map(BigInt)),
            positionIds: pos,
          },
          out.cache,
        );
        assert.equal(out.cache.length, cols);
        capacities.add(out.cache.capacity);
      }
      // 12 prompt positions + 10 steps cross the cache's first capacity (16): it grew in between.
      assert.ok(capacities.size > 1, `capacities ${[...capacities].join(', ')}`);
    } finally {
      await decoder.dispose();
      await fwd.dispose();
    }
  });

  test(`${name}: greedy with the KV cache equals greedy recomputing every step (left-padded batch, 20 tokens)`, async () => {
    const model = await loadModel(fixturePath('models', name));
    const rows = await prompts(name);
    const gen = await Generator.create(model, { runtime });
    try {
      const cached = await gen.generate(rows, { maxNewTokens: 20, stopTokenIds: [] });
      const reference = await greedyWithoutCache(model, rows, 20, gen.defaults.padTokenId ?? gen.defaults.eosTokenIds[0]!);
      assert.deepEqual(
        cached.sequences.map((s) => s.tokenIds),
        reference,
      );
      assert.equal(cached.stats.steps, 20);
      // Each prompt alone gives the tokens it gets inside the padded batch.
      for (let r = 0; r < rows.length; r++) {
        const alone = await gen.generate([rows[r]!], { maxNewTokens: 20, stopTokenIds: [] });
        assert.deepEqual(alone.sequences[0]!.tokenIds, cached.sequences[r]!.tokenIds, `row ${r} alone`);
      }
    } finally {
      await gen.dispose();
    }
  });

  test(`${name}: a generation crossing the cache's capacity twice (16, 32 positions) equals greedy recomputing every step`, async () => {
    const model = await loadModel(fixturePath('models', name));
    const rows = await prompts(name);
    const gen = await Generator.create(model, { runtime });
    try {
      // 12 prompt positions + 40 new: the cache doubles at 16 and 32 on the way.
      const cached = await gen.generate(rows, { maxNewTokens: 40, stopTokenIds: [] });
      const reference = await greedyWithoutCache(model, rows, 40, gen.defaults.padTokenId ?? gen.defaults.eosTokenIds[0]!);
      assert.deepEqual(
        cached.sequences.map((s) => s.tokenIds),
        reference,
      );
    } finally {
      await gen.dispose();
    }
  });

  test(`${name}: reproduces transformers' generate() ids of the fixture`, async () => {
    const model = await loadModel(fixturePath('models', name));
    const expected = await readTensors('models', name, 'expected_outputs.safetensors');
    const prompt = Array.from(toBigInt64(expected.get('generate.prompt_ids')!), Number);
    const greedy = Array.from(toBigInt64(expected.get('generate.greedy_ids')!), Number);
    // MANIFEST.json: generate(max_new_tokens=8, do_sample=False, num_beams=1, eos_token_id=None)
    const gen = await Generator.create(model, { runtime });
    try {
      const r = await gen.generate([prompt], { maxNewTokens: greedy.length - prompt.length, stopTokenIds: [] });
      assert.deepEqual([...r.sequences[0]!.promptIds, ...r.sequences[0]!.tokenIds], greedy);
      assert.equal(r.sequences[0]!.finishReason, 'length');
    } finally {
      await gen.dispose();
    }
  });
}

for (const [name, adapter] of [
  ['gpt2', 'lora_attn'],
  ['llama', 'lora_dora'],
  ['llama', 'ia3'],
] as const) {
  test(`${name} + ${adapter}: cached greedy on the adapted model equals recompute, and merged weights give the same tokens`, async () => {
    const base = await loadModel(fixturePath('models', name));
    const adapted = await loadAdapter(base, fixturePath('adapters', name, adapter));
    const rows = await prompts(name);
    const gen = await Generator.create(adapted, { runtime });
    let tokens: number[][];
    try {
      const cached = await gen.generate(rows, { maxNewTokens: 12, stopTokenIds: [] });
      tokens = cached.sequences.map((s) => s.tokenIds);
      assert.deepEqual(tokens, await greedyWithoutCache(adapted, rows, 12, gen.defaults.padTokenId ?? gen.defaults.eosTokenIds[0]!));
      const again = await gen.generate(rows, { maxNewTokens: 12, stopTokenIds: [] });
      assert.deepEqual(
        again.sequences.map((s) => s.tokenIds),
        tokens,
        'a second call on the same sessions',
      );
    } finally {
      await gen.dispose();
    }
    const merged = await (adapted as unknown as { mergeAndUnload(): PretrainedModel | Promise<PretrainedModel> }).mergeAndUnload();
    const mergedGen = await Generator.create(merged, { runtime });
    try {
      const r = await mergedGen.generate(rows, { maxNewTokens: 12, stopTokenIds: [] });
      assert.deepEqual(
        r.sequences.map((s) => s.tokenIds),
        tokens,
      );
    } finally {
      await mergedGen.dispose();
    }
  });
}

test('llama + prompt_tuning_text: virtual tokens grow the cache; the padded batch gives each row its no-cache greedy tokens', async () => {
  const base = await loadModel(fixturePath('models', 'llama'));
  const adapted = await loadPromptTuning(base, fixturePath('adapters', 'llama', 'prompt_tuning_text'));
  const rows = await prompts('llama');
  const gen = await Generator.create(adapted, { runtime });
  const fwd = await ForwardSession.create(adapted, { runtime });
  try {
    const cached = await gen.generate(rows, { maxNewTokens: 10, stopTokenIds: [] });
    for (const [r, row] of rows.entries()) {
      // The reference runs each prompt alone (no padding), recomputing virtual + real tokens every step.
      const seq = [...row];
      for (let step = 0; step < 10; step++) {
        const shape = [1, seq.length];
        const { logits } = await fwd.run({
          inputIds: { dtype: 'int64', shape, data: BigInt64Array.from(seq.map(BigInt)) },
          attentionMask: { dtype: 'int64', shape, data: new BigInt64Array(seq.length).fill(1n) },
        });
        const [, t, v] = logits.shape as [number, number, number];
        seq.push(argmax((logits.data as Float32Array).subarray((t - 1) * v, t * v)));
      }
      assert.deepEqual(cached.sequences[r]!.tokenIds, seq.slice(row.length), `row ${r}`);
    }
  } finally {
    await gen.dispose();
    await fwd.dispose();
  }
});

test("gpt2 + lora_attn: parameter feeds taken once per generation (DecoderSessions.params) give the live feeds' logits, also after an in-place update of B or of A (folded with the scaling)", async () => {
  const base = await loadModel(fixturePath('models', 'gpt2'));
  const adapted = await loadAdapter(base, fixturePath('adapters', 'gpt2', 'lora_attn'));
  const rows = await prompts('gpt2');
  const { ids, mask, pos, shape } = padLeft(rows, 0);
  const step = { batch: shape[0]!, seq: shape[1]!, inputIds: ids, attentionMask: mask, positionIds: pos };
  const sessions = await DecoderSessions.create(adapted, runtime);
  try {
    const live = (await sessions.prefill(step)).logits;
    assert.deepEqual((await sessions.prefill(step, sessions.params())).logits, live);
    // as a training step would: update the host arrays in place
    const Bs = [...adapted.parameters()].filter(([n]) => n.includes('lora_B'));
    assert.ok(Bs.length > 0);
    for (const [, t] of Bs) (t.data as Float32Array).forEach((v, i, a) => (a[i] = 10 * v));
    const updated = (await sessions.prefill(step)).logits;
    assert.notDeepEqual(updated, live);
    assert.deepEqual((await sessions.prefill(step, sessions.params())).logits, updated);
    // The scaling (lora_alpha / r = 2 here) is folded into the smaller factor (A) when the feeds are
    // gathered, so the graph has no scaling for ONNX Runtime to fuse into a product's alpha; the
    // folded copy follows an in-place update of A too.
    const feeds = sessions.params().decode;
    assert.ok(Object.keys(feeds).some((n) => n.includes('lora_A') && n.endsWith('.scaled')));
    assert.ok(!Object.keys(feeds).some((n) => n.includes('lora_B') && n.endsWith('.scaled')));
    const As = [...adapted.parameters()].filter(([n]) => n.includes('lora_A'));
    for (const [, t] of As) (t.data as Float32Array).forEach((v, i, a) => (a[i] = -v));
    const flipped = (await sessions.prefill(step, sessions.params())).logits;
    assert.notDeepEqual(flipped, updated);
    assert.deepEqual((await sessions.prefill(step)).logits, flipped);
    // the decode session takes the same feeds
    const first = await sessions.prefill(step, sessions.params());
    const next = BigInt64Array.from(rows.map(() => 1n));
    const grown = {
      batch: shape[0]!,
      seq: 1,
      inputIds: next,
      attentionMask: new BigInt64Array(shape[0]! * (shape[1]! + 1)).fill(1n),
      positionIds: BigInt64Array.from(rows.map((r) => BigInt(r.length))),
    };
    // decode advances the cache in place: the second run starts from a second prefill
    const again = await sessions.prefill(step, sessions.params());
    assert.deepEqual(
      (await sessions.decode(grown, first.cache, sessions.params())).logits,
      (await sessions.decode(grown, again.cache)).logits,
    );
  } finally {
    await sessions.dispose();
  }
});

/** The largest |a - b| over two logit arrays of one length. */
function maxDiff(a: Float32Array, b: Float32Array): number {
  assert.equal(a.length, b.length);
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]! - b[i]!));
  return m;
}

test('gpt2 + lora_attn: frozen sessions (the adapter baked in as constants) feed no adapter tensor, give the fed logits, and tell when the live values change', async () => {
  const base = await loadModel(fixturePath('models', 'gpt2'));
  const adapted = await loadAdapter(base, fixturePath('adapters', 'gpt2', 'lora_attn'));
  const rows = await prompts('gpt2');
  const { ids, mask, pos, shape } = padLeft(rows, 0);
  const step = { batch: shape[0]!, seq: shape[1]!, inputIds: ids, attentionMask: mask, positionIds: pos };
  const grown = {
    batch: shape[0]!,
    seq: 1,
    inputIds: BigInt64Array.from(rows.map(() => 1n)),
    attentionMask: new BigInt64Array(shape[0]! * (shape[1]! + 1)).fill(1n),
    positionIds: BigInt64Array.from(rows.map((r) => BigInt(r.length))),
  };
  const fed = await DecoderSessions.create(adapted, runtime);
  const frozen = await DecoderSessions.create(adapted, runtime, { frozen: true });
  try {
    assert.equal(fed.frozen, undefined);
    assert.ok(frozen.frozen && frozen.frozen.names.some((n) => n.includes('lora_A') && n.endsWith('.scaled')));
    const feeds = frozen.params();
    assert.deepEqual(Object.keys(feeds.prefill), []);
    assert.deepEqual(Object.keys(feeds.decode), []);
    const a = await fed.prefill(step, fed.params());
    const b = await frozen.prefill(step, feeds);
    // the same products, with B a constant (ONNX Runtime may prepack it): equal up to float32 rounding
    assert.ok(maxDiff(a.logits, b.logits) < 1e-4, `prefill logits differ by ${maxDiff(a.logits, b.logits)}`);
    const da = await fed.decode(grown, a.cache, fed.params());
    const db = await frozen.decode(grown, b.cache, feeds);
    assert.ok(maxDiff(da.logits, db.logits) < 1e-4, `decode logits differ by ${maxDiff(da.logits, db.logits)}`);
    assert.equal(frozen.frozen.changed(), undefined);
    // an in-place update (a training step), of A (folded with the scaling) or of B, is seen
    const [nameA, A] = [...adapted.parameters()].find(([n]) => n.includes('lora_A'))!;
    const old = A.data[0]!;
    A.data[0] = old + 1;
    assert.ok(frozen.frozen.changed()?.startsWith(nameA));
    A.data[0] = old;
    assert.equal(frozen.frozen.changed(), undefined);
    const [nameB, B] = [...adapted.parameters()].find(([n]) => n.includes('lora_B'))!;
    B.data[3] = B.data[3]! * 2 + 1;
    assert.equal(frozen.frozen.changed(), nameB);
  } finally {
    await fed.dispose();
    await frozen.dispose();
  }
});

for (const mode of ['auto', 'frozen'] as const) {
  test(`gpt2 + lora_attn: a Generator (adapterTensors '${mode}') sees an adapter updated after it compiled (${mode === 'auto' ? 'feeds it from then on' : 'compiles the frozen sessions again'})`, async () => {
    const base = await loadModel(fixturePath('models', 'gpt2'));
    const adapted = await loadAdapter(base, fixturePath('adapters', 'gpt2', 'lora_attn'));
    const rows = await prompts('gpt2');
    const opts = { maxNewTokens: 8, stopTokenIds: [] };
    const gen = await Generator.create(adapted, { runtime, adapterTensors: mode });
    try {
      assert.equal(gen.adapterTensors, 'frozen');
      const before = (await gen.generate(rows, opts)).sequences.map((s) => s.tokenIds);
      for (const [n, t] of adapted.parameters())
        if (n.includes('lora_B')) t.data.forEach((v, i, a) => (a[i] = 40 * v + 0.05 * Math.sin(i)));
      const after = (await gen.generate(rows, opts)).sequences.map((s) => s.tokenIds);
      assert.equal(gen.adapterTensors, mode === 'auto' ? 'fed' : 'frozen');
      const fresh = await Generator.create(adapted, { runtime, adapterTensors: 'fed' });
      try {
        assert.deepEqual(
          after,
          (await fresh.generate(rows, opts)).sequences.map((s) => s.tokenIds),
        );
      } finally {
        await fresh.dispose();
      }
      assert.notDeepEqual(after, before, 'the update changes the greedy tokens');
      assert.deepEqual(
        (await gen.generate(rows, opts)).sequences.map((s) => s.tokenIds),
        after,
        'and stays',
      );
    } finally {
      await gen.dispose();
    }
  });
}

test("gpt2 + lora_attn, quantize 'int8': a frozen adapter's factors stay float32 (only the base's products run on int8 weights)", async () => {
  const base = await loadModel(fixturePath('models', 'gpt2'));
  const adapted = await loadAdapter(base, fixturePath('adapters', 'gpt2', 'lora_attn'));
  const rt = { ...runtime, quantize: 'int8' as const };
  const fed = await DecoderSessions.create(adapted, rt);
  const frozen = await DecoderSessions.create(adapted, rt, { frozen: true });
  try {
    assert.ok(fed.memory.decode.int8Products > 0);
    assert.equal(frozen.memory.decode.int8Products, fed.memory.decode.int8Products);
    assert.equal(frozen.memory.prefill.int8Products, fed.memory.prefill.int8Products);
  } finally {
    await fed.dispose();
    await frozen.dispose();
  }
});
