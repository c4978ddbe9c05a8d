// Shared pieces of the prompt-learning tests: running an adapted model (forward, loss, gradients)
// in one ORT session, the fixture checks every case repeats (logits, loss, saved files, round
// trip), and a tiny training loop with AdamW that reports eval loss before and after.

import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { grad } from '../../src/autodiff/grad.js';
import { Graph, type Value } from '../../src/graph/ir.js';
import { readSafetensors, toFloat32 } from '../../src/io/safetensors.js';
import type { PretrainedModel } from '../../src/models/types.js';
import { BuildContext } from '../../src/nn/context.js';
import { type HostTensor, RuntimeSession } from '../../src/runtime/session.js';
import { AdamW } from '../../src/train/adamw.js';
import type { AdaptedModel, TrainableTensor } from '../../src/tuners/types.js';
import { type Batch, fixtureBatch, fixturePath, inTempDir, maxAbsDiff, readTensors } from '../helpers/fixtures.js';

export { type Batch, fixtureBatch };

/** One session computing logits, loss and (optionally) the gradient of the loss for every trainable tensor. */
export class AdaptedRunner {
  private constructor(
    readonly model: AdaptedModel,
    private readonly session: RuntimeSession,
    private readonly paramNames: string[],
  ) {}

  static async create(model: AdaptedModel, opts: { grads?: boolean; training?: boolean } = {}): Promise<AdaptedRunner> {
    const g = new Graph();
    const ctx = new BuildContext(g, model.base.weights, { trainable: model.trainableBaseWeights(), training: opts.training ?? false });
    const inputIds = g.input('input_ids', 'int64', ['batch', 'seq']);
    const attentionMask = g.input('attention_mask', 'int64', ['batch', 'seq']);
    const labels = g.input('labels', 'int64', model.base.task === 'seq-cls' ? ['batch'] : ['batch', 'seq']);
    const out = model.forward(ctx, { inputIds, attentionMask });
    const loss = model.loss(out.logits, labels);
    const outputs: Record<string, Value> = { logits: out.logits, loss };
    const names = [...ctx.params.keys()];
    if (opts.grads) {
      const gs = grad(
        loss,
        names.map((n) => ctx.params.get(n)!),
      );
      names.forEach((n, i) => (outputs[`grad:${n}`] = gs[i]!));
    }
    const session = await RuntimeSession.fromGraph(g, outputs, { threads: 1 });
    return new AdaptedRunner(model, session, names);
  }

  private feeds(batch: Batch): Record<string, HostTensor> {
    const f: Record<string, HostTensor> = { ...batch };
    const params = this.model.parameters();
    for (const n of this.paramNames) {
      const t = params.get(n);
      assert.ok(t, `forward built param ${n} that parameters() lacks`);
      f[n] = { dtype: 'float32', shape: t.shape, data: t.data };
    }
    return f;
  }

  async run(batch: Batch, fetchGrads = false): Promise<{ logits: HostTensor; loss: number; grads: Map<string, Float32Array> }> {
    const fetches = ['logits', 'loss', ...(fetchGrads ? this.paramNames.map((n) => `grad:${n}`) : [])];
    const r = await this.session.run(this.feeds(batch), fetches);
    const grads = new Map<string, Float32Array>();
    if (fetchGrads) for (const n of this.paramNames) grads.set(n, Float32Array.from(r[`grad:${n}`]!.data as Float32Array));
    return { logits: r.logits!, loss: Number(r.loss!.data[0]), grads };
  }

  async dispose(): Promise<void> {
    await this.session.dispose();
  }
}

/** Logits within 1e-4 and loss within 1e-5 relative of a fixture's expected_outputs. */
export async function checkOutputs(model: AdaptedModel, caseDir: string, batch: Batch): Promise<void> {
  const expected = await readTensors(caseDir, 'expected_outputs.safetensors');
  const runner = await AdaptedRunner.create(model);
  try {
    const r = await runner.run(batch);
    assert.deepEqual(r.logits.shape, expected.get('logits')!.shape, `${caseDir}: logits shape`);
    const d = maxAbsDiff(r.logits.data as Float32Array, toFloat32(expected.get('logits')!));
    assert.ok(d < 1e-4, `${caseDir}: logits max abs diff ${d}`);
    const want = toFloat32(expected.get('loss')!)[0]!;
    assert.ok(Math.abs(r.loss - want) / Math.abs(want) < 1e-5, `${caseDir}: loss ${r.loss} vs ${want}`);
  } finally {
    await runner.dispose();
  }
}

export async function expectedPrompt(caseDir: string): Promise<Float32Array> {
  const expected = await readTensors(caseDir, 'expected_outputs.safetensors');
  return toFloat32(expected.get('prompt_embeddings_used')!);
}

export function withTempDir<T>(fn: (dir: string) => Promise<T>): Promise<T> {
  return inTempDir('peft-prompt-', fn);
}

/**
 * Saves an adapter loaded from a fixture folder and compares: adapter_config.json and
 * adapter_model.safetensors byte for byte, after a check of names and values that says what differs.
 */
export async function checkSavedMatchesFixture(model: AdaptedModel, caseDir: string, dir: string): Promise<void> {
  await model.savePretrained(dir);
  const mine = await readFile(join(dir, 'adapter_config.json'), 'utf8');
  const theirs = await readFile(fixturePath(caseDir, 'adapter_config.json'), 'utf8');
  assert.equal(mine, theirs, `${caseDir}: adapter_config.json differs`);
  const a = await readSafetensors(join(dir, 'adapter_model.safetensors'));
  const b = await readSafetensors(fixturePath(caseDir, 'adapter_model.safetensors'));
  assert.deepEqual([...a.keys()].sort(), [...b.keys()].sort(), `${caseDir}: tensor names`);
  for (const [k, t] of b) {
    assert.deepEqual(a.get(k)!.shape, t.shape, `${caseDir}: ${k} shape`);
    assert.ok(maxAbsDiff(toFloat32(a.get(k)!), toFloat32(t)) <= 1e-6, `${caseDir}: ${k} values`);
  }
  const bytesA = await readFile(join(dir, 'adapter_model.safetensors'));
  const bytesB = await readFile(fixturePath(caseDir, 'adapter_model.safetensors'));
  assert.ok(bytesA.equals(bytesB), `${caseDir}: adapter_model.safetensors bytes differ from peft's`);
}

/** A prompt-learning adapter as the fixture checks see it. */
type PromptModel = AdaptedModel & { numVirtualTokens: number; promptEmbeddings(): Promise<TrainableTensor> };

/**
 * The checks every fixture case starts with: the adapter `load` reads from `caseDir` has 5 virtual
 * tokens, uses exactly the fixture's prompt (`what` names it in the message), gives its logits and
 * loss, saves byte-exact and reloads to the same outputs. Returns the model and the prompt used.
 */
export async function checkFixtureCase<M extends PromptModel>(
  base: PretrainedModel,
  caseDir: string,
  batch: Batch,
  load: (base: PretrainedModel, dir: string) => Promise<M>,
  what = 'prompt',
): Promise<{ model: M; used: Float32Array }> {
  const model = await load(base, fixturePath(caseDir));
  assert.equal(model.numVirtualTokens, 5);
  const used = await expectedPrompt(caseDir);
  assert.equal(maxAbsDiff((await model.promptEmbeddings()).data, used), 0, `${caseDir}: ${what} used`);
  await checkOutputs(model, caseDir, batch);
  await withTempDir(async (dir) => {
    await checkSavedMatchesFixture(model, caseDir, dir);
    await checkOutputs(await load(base, dir), caseDir, batch);
  });
  return { model, used };
}

export async function fixtureConfig(caseDir: string): Promise<Record<string, unknown>> {
  return JSON.parse(await readFile(fixturePath(caseDir, 'adapter_config.json'), 'utf8')) as Record<string, unknown>;
}

/** Trainable tensors of a fixture case under their in-memory peft names. */
export async function trainableState(caseDir: string): Promise<Map<string, { dtype: 'F32'; shape: number[]; data: Uint8Array }>> {
  return (await readTensors(caseDir, 'trainable_state.safetensors')) as never;
}

/**
 * The generation contract: logits of the last position from one full forward, against a prefill of
 * all but the last token followed by one decode step that takes the prefill's presents as `past`
 * and a mask over numVirtualTokens + T positions. Returns the max abs difference.
 */
export async function prefillDecodeMatches(model: AdaptedModel & { numVirtualTokens: number }, ids: number[]): Promise<number> {
  const base = model.base;
  const T = ids.length;
  const V = base.vocabSize;
  const P = model.numVirtualTokens;
  const g = new Graph();
  const ctx = new BuildContext(g, base.weights);
  const fullIds = g.input('full_ids', 'int64', [1, T]);
  const fullMask = g.input('full_mask', 'int64', [1, T]);
  const full = model.forward(ctx, { inputIds: fullIds, attentionMask: fullMask });
  const preIds = g.input('pre_ids', 'int64', [1, T - 1]);
  const preMask = g.input('pre_mask', 'int64', [1, T - 1]);
  const pre = model.forward(ctx, { inputIds: preIds, attentionMask: preMask });
  const stepIds = g.input('step_ids', 'int64', [1, 1]);
  const stepMask = g.input('step_mask', 'int64', [1, P + T]);
  const step = model.forward(ctx, { inputIds: stepIds, attentionMask: stepMask, past: pre.presents });
  const outs: Record<string, Value> = { full: full.logits, step: step.logits };
  const sess = await RuntimeSession.fromGraph(g, outs, { threads: 1 });
  const i64 = (v: number[], shape: number[]): HostTensor => ({ dtype: 'int64', shape, data: BigInt64Array.from(v.map(BigInt)) });
  const feeds: Record<string, HostTensor> = {
    full_ids: i64(ids, [1, T]),
    full_mask: i64(new Array(T).fill(1), [1, T]),
    pre_ids: i64(ids.slice(0, -1), [1, T - 1]),
    pre_mask: i64(new Array(T - 1).fill(1), [1, T - 1]),
    step_ids: i64(ids.slice(-1), [1, 1]),
    step_mask: i64(new Array(P + T).fill(1), [1, P + T]),
  };
  for (const n of ctx.params.keys()) {
    const t = model.parameters().get(n)!;
    feeds[n] = { dtype: 'float32', shape: t.shape, data: t.data };
  }
  const r = await sess.run(feeds);
  await sess.dispose();
  const fullLogits = r.full!.data as Float32Array;
  const lastFull = fullLogits.subarray(fullLogits.length - V);
  return maxAbsDiff(lastFull, r.step!.data as Float32Array);
}

// ---- a tiny task ------------------------------------------------------------------------------

/** Deterministic integers for the synthetic data sets. */
export function lcg(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    return s / 4294967296;
  };
}

function int64(values: number[], shape: number[]): HostTensor {
  return { dtype: 'int64', shape, data: BigInt64Array.from(values.map((v) => BigInt(v))) };
}

/**
 * Causal LM task: a random first token, then one fixed token repeated, so a prompt that steers the
 * (tiny, randomly initialised) model toward that token lowers the loss on fresh rows.
 */
export function repeatedTokenBatch(base: PretrainedModel, rows: number, seed: number): Batch {
  const rand = lcg(seed);
  const T = 8;
  const ids: number[] = [];
  for (let r = 0; r < rows; r++) ids.push(20 + Math.floor(rand() * (base.vocabSize - 40)), ...new Array<number>(T - 1).fill(11));
  return { input_ids: int64(ids, [rows, T]), attention_mask: int64(new Array(rows * T).fill(1), [rows, T]), labels: int64(ids, [rows, T]) };
}

/**
 * Sequence classification task: rows of class 1 are mostly marker token 30, rows of class 0 mostly
 * marker 31, with random tokens mixed in, so the classes differ in what every position attends to.
 */
export function markerBatch(base: PretrainedModel, rows: number, seed: number): Batch {
  const rand = lcg(seed);
  const T = 8;
  const ids: number[] = [];
  const labels: number[] = [];
  for (let r = 0; r < rows; r++) {
    const label = r % 2;
    for (let t = 0; t < T; t++) ids.push(rand() < 0.6 ? (label ? 30 : 31) : 40 + Math.floor(rand() * (base.vocabSize - 80)));
    labels.push(label);
  }
  return { input_ids: int64(ids, [rows, T]), attention_mask: int64(new Array(rows * T).fill(1), [rows, T]), labels: int64(labels, [rows]) };
}

/** Trains with AdamW on `train` and returns the eval loss before and after. */
export async function trainAndEval(
  model: AdaptedModel,
  train: Batch,
  evalBatch: Batch,
  steps: number,
  lr: number,
): Promise<{ before: number; after: number }> {
  const runner = await AdaptedRunner.create(model, { grads: true, training: true });
  try {
    const before = (await runner.run(evalBatch)).loss;
    const opt = new AdamW({ lr, weightDecay: 0 });
    for (let s = 0; s < steps; s++) {
      const r = await runner.run(train, true);
      assert.ok(Number.isFinite(r.loss), `step ${s}: loss ${r.loss}`);
      opt.step(model.parameters(), r.grads, { decay: model.decayParameters() });
    }
    const after = (await runner.run(evalBatch)).loss;
    return { before, after };
  } finally {
    await runner.dispose();
  }
}
