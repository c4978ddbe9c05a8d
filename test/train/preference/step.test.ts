// ORPO steps on the bundled tiny-llama with LoRA: a few AdamW steps on swap-task pairs
// (chosen: the swapped words, rejected: the words unswapped) raise the held-out preference accuracy.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { Tokenizer } from '../../../src/io/tokenizer.js';
import { loadModel } from '../../../src/models/load.js';
import { AdamW } from '../../../src/train/adamw.js';
import { collate } from '../../../src/train/batches.js';
import { DatasetError } from '../../../src/train/errors.js';
import {
  PreferenceStep,
  collatePairs,
  loadPreferenceDataset,
  rewardMetrics,
  tokenizePreferenceRecords,
} from '../../../src/train/preference.js';
import { Rng } from '../../../src/train/rng.js';
import { Trainer } from '../../../src/train/trainer.js';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { getPeftModel } from '../../../src/tuners/load.js';
import { swapRecords } from '../synthetic.js';

const DIR = 'models/tiny-llama';

async function run(objective: 'dpo' | 'orpo'): Promise<{ before: number; after: number }> {
  const tok = await Tokenizer.fromDir(DIR);
  const model = await getPeftModel(await loadModel(DIR), { r: 8, loraAlpha: 16, targetModules: ['q_proj', 'v_proj'] }, { seed: 0 });
  const recs = swapRecords()
    .map((r, i) => {
      const [a, b] = r.prompt.replace(' ->', '').split(' ');
      return { line: i + 1, value: { prompt: r.prompt, chosen: r.completion, rejected: ` ${a} ${b}` } };
    })
    .filter((r) => r.value.chosen !== r.value.rejected);
  const { chosen, rejected } = tokenizePreferenceRecords(recs, tok);
  const pad = tok.eosTokenId ?? 0;
  const trainN = 40;
  const evalBatch = collate([...chosen.slice(trainN), ...rejected.slice(trainN)], pad);
  const step = await PreferenceStep.compile(model, { objective, beta: 0.1, threads: 1 });
  const ev = await PreferenceStep.compile(model, { objective, beta: 0.1, threads: 1, training: false });
  const params = model.parameters();
  const accuracy = async () => rewardMetrics(await ev.run(evalBatch, params))['rewards/accuracies']!;
  const before = await accuracy();
  const opt = new AdamW({ lr: 5e-3 });
  for (let s = 0; s < 20; s++) {
    const i = (s * 8) % trainN;
    const b = collate([...chosen.slice(i, i + 8), ...rejected.slice(i, i + 8)], pad);
    const r = await step.run(b, params);
    assert.ok(Number.isFinite(r.loss));
    opt.step(params, r.grads!);
  }
  const after = await accuracy();
  await step.dispose();
  await ev.dispose();
  return { before, after };
}

// DPO starts with every margin exactly 0 (the LoRA adapter is a no-op): it moves only because
// logSigmoid's gradient at 0 is 1/2 (it was 0 once, and DPO never left its start).
for (const objective of ['dpo', 'orpo'] as const) {
  test(`${objective} on tiny-llama LoRA raises held-out preference accuracy`, async () => {
    const { before, after } = await run(objective);
    console.log(`${objective}: eval preference accuracy ${before.toFixed(3)} -> ${after.toFixed(3)}`);
    assert.ok(after > before, `${objective}: accuracy ${before} -> ${after}`);
  });
}

// DPO's reference is the base with the adapter disabled, so before any step the policy (zero-init
// lora_B) must give the reference's log-probs exactly, on the int8 base too: the wrapped modules
// multiply through the same int8 copies as the reference's unwrapped ones (they once ran float32,
// and the margin started at -0.017 here).
test('DPO on the int8 base starts at reward margin 0: policy log-probs = reference log-probs, wrapped and unwrapped modules alike', async () => {
  const tok = await Tokenizer.fromDir(DIR);
  const pairs = (await loadPreferenceDataset('data/tasks/preference/eval.jsonl', tok, { maxLength: 64, maxExamples: 6 })).pairs;
  const batch = collatePairs(pairs, tok.eosTokenId ?? 0);
  const refs: Float32Array[] = [];
  for (const basePrecision of ['int8', 'fp32'] as const) {
    for (const targetModules of basePrecision === 'int8' ? [['q_proj', 'v_proj'], 'all-linear'] : ['all-linear']) {
      const model = await getPeftModel(await loadModel(DIR), { r: 4, loraAlpha: 8, loraDropout: 0.1, targetModules }, { seed: 3 });
      for (const training of basePrecision === 'int8' ? [true, false] : [true]) {
        const step = await PreferenceStep.compile(model, { objective: 'dpo', beta: 0.1, threads: 1, basePrecision, training });
        const r = await step.run(batch, model.parameters(), { rng: Rng.fromSeed(5) });
        const ref = await step.referenceLogps(batch);
        await step.dispose();
        const what = `${basePrecision}, ${String(targetModules)}, ${training ? 'train' : 'eval'}`;
        // equal to float tolerance (they agree bit for bit today; before the fix they were up to 0.8 apart)
        r.logps.forEach((x, i) =>
          assert.ok(Math.abs(x - ref[i]!) <= 1e-5 * Math.max(1, Math.abs(ref[i]!)), `${what}: row ${i}: ${x} vs ${ref[i]}`),
        );
        for (const k of [...r.rewardsChosen, ...r.rewardsRejected]) assert.ok(Math.abs(k) <= 1e-4, `${what}: reward ${k}`);
        assert.ok(Math.abs(rewardMetrics(r)['rewards/margins']!) <= 1e-4, `${what}: margin ${rewardMetrics(r)['rewards/margins']}`);
        if (training) refs.push(ref);
      }
    }
  }
  // the int8 reference is not the float32 one: the base really ran on int8 copies
  assert.ok(
    refs[0]!.some((x, i) => Math.abs(x - refs[2]![i]!) > 1e-3),
    'int8 and float32 reference log-probs are the same',
  );
});

test('a preference row without "rejected" is a DatasetError naming the file, the line and the field', async () => {
  const tok = await Tokenizer.fromDir(DIR);
  assert.throws(
    () => tokenizePreferenceRecords([{ line: 3, value: { prompt: 'a', chosen: 'b' } }], tok, { file: 'p.jsonl' }),
    (e: unknown) => e instanceof DatasetError && /^p\.jsonl:3: field "rejected" is missing/.test((e as Error).message),
  );
});

test('preference rows with other field names (--prompt-key/--chosen-key/--rejected-key) tokenize as the standard ones', async () => {
  const tok = await Tokenizer.fromDir(DIR);
  const std = tokenizePreferenceRecords(
    [{ line: 1, value: { prompt: 'Question: name a day.\nAnswer:', chosen: ' Monday', rejected: ' May' } }],
    tok,
  );
  const own = tokenizePreferenceRecords([{ line: 1, value: { q: 'Question: name a day.\nAnswer:', good: ' Monday', bad: ' May' } }], tok, {
    keys: { prompt: 'q', chosen: 'good', rejected: 'bad' },
  });
  assert.deepEqual(own, std);
  assert.notDeepEqual(std.chosen[0]!.inputIds, std.rejected[0]!.inputIds);
  assert.throws(
    () =>
      tokenizePreferenceRecords([{ line: 4, value: { q: 'a', good: 'b', rejected: 'c' } }], tok, {
        file: 'p.jsonl',
        keys: { prompt: 'q', chosen: 'good', rejected: 'bad' },
      }),
    (e: unknown) =>
      e instanceof DatasetError &&
      /^p\.jsonl:4: field "bad" is missing; a preference row is \{"q": "...", "good": "...", "bad": "..."\}/.test((e as Error).message),
  );
});

test('a DPO run through the Trainer: 6 steps straight = 3, stop, resume 3 (bitwise), with rewards/* in every step record', async () => {
  const tok = await Tokenizer.fromDir(DIR);
  const pairs = (await loadPreferenceDataset('data/tasks/preference/train.jsonl', tok, { maxLength: 64, maxExamples: 10 })).pairs;
  const evalPairs = (await loadPreferenceDataset('data/tasks/preference/eval.jsonl', tok, { maxLength: 64, maxExamples: 6 })).pairs;
  const make = async () =>
    getPeftModel(await loadModel(DIR), { r: 4, loraAlpha: 8, loraDropout: 0.1, targetModules: ['q_proj', 'v_proj'] }, { seed: 1 });
  const common = {
    padTokenId: tok.eosTokenId ?? 0,
    maxSteps: 6,
    batchSize: 3,
    gradAccum: 2,
    learningRate: 2e-3,
    evalEvery: 3,
    runtime: { threads: 1 },
    preference: { objective: 'dpo' as const, beta: 0.2 },
  };
  const dirs = [await mkdtemp(join(tmpdir(), 'pref-a-')), await mkdtemp(join(tmpdir(), 'pref-b-'))];
  try {
    const straight = await make();
    const s = await new Trainer(straight, pairs, evalPairs, { ...common, outputDir: dirs[0]! }).train();
    const first = await make();
    const stopper: Trainer = new Trainer(first, pairs, evalPairs, {
      ...common,
      outputDir: dirs[1]!,
      onStep: (r) => void (r.step === 3 && stopper.requestStop()),
    });
    assert.equal((await stopper.train()).globalStep, 3);
    const second = await make();
    const rest = await new Trainer(second, pairs, evalPairs, { ...common, outputDir: dirs[1]!, resume: 'latest' }).train();
    assert.equal(rest.globalStep, 6);
    for (const [n, t] of straight.parameters()) assert.deepEqual(second.parameters().get(n)!.data, t.data, n);
    const strip = (ms: typeof s.metrics) => ms.map((m) => (m.kind === 'train' ? { ...m, tokens_per_second: 0, elapsed_s: 0 } : m));
    assert.deepEqual(strip(rest.metrics), strip(s.metrics));
    for (const m of s.metrics.filter((x) => x.kind === 'train'))
      for (const k of ['rewards/chosen', 'rewards/rejected', 'rewards/accuracies', 'rewards/margins'])
        assert.equal(typeof (m as unknown as Record<string, unknown>)[k], 'number');
    assert.deepEqual(
      s.metrics.filter((x) => x.kind === 'eval').map((x) => [x.step, (x as unknown as Record<string, unknown>).eval_pairs]),
      [
        [0, 6],
        [3, 6],
        [6, 6],
      ],
    );
    // another objective or beta is another run: resuming it is refused
    await assert.rejects(
      new Trainer(await make(), pairs, evalPairs, {
        ...common,
        outputDir: dirs[1]!,
        overwrite: false,
        resume: join(dirs[1]!, 'checkpoints', 'checkpoint-3'),
        preference: { objective: 'dpo', beta: 0.3 },
      }).train(),
      /beta: checkpoint 0.2, now 0.3/,
    );
  } finally {
    for (const d of dirs) await rm(d, { recursive: true, force: true });
  }
});
