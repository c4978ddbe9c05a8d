// The trainer end to end on fixture models: a real fine-tune that lowers the eval loss, exact
// resume (10 steps straight = 5 steps, stop, resume 5, bitwise), checkpoint contents, the NaN
// stop that keeps the last good checkpoint, and runs refused before the disk is touched.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { readFile, readdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { Value } from '../../src/graph/ir.js';
import * as o from '../../src/graph/ops.js';
import { Tokenizer } from '../../src/io/tokenizer.js';
import { loadModel } from '../../src/models/load.js';
import type { ForwardArgs, ForwardResult, PretrainedModel } from '../../src/models/types.js';
import type { BuildContext } from '../../src/nn/context.js';
import { loadCheckpoint } from '../../src/train/checkpoint.js';
import { type TokenizedExample, parseJsonl, prepareExamples, tokenizeRecords } from '../../src/train/data.js';
import { CheckpointError, TrainError } from '../../src/train/errors.js';
import { parseMetrics } from '../../src/train/metrics.js';
import { Trainer, type TrainerOptions } from '../../src/train/trainer.js';
import { getFullFineTuneModel } from '../../src/tuners/full/index.js';
import type { AdaptedModel, TrainableTensor } from '../../src/tuners/types.js';
import { fixturePath } from '../helpers/fixtures.js';
import { jsonl, swapRecords, tempDir } from './synthetic.js';

async function swapTask(family: string): Promise<{ train: TokenizedExample[]; eval: TokenizedExample[]; padId: number }> {
  const tok = await Tokenizer.fromDir(fixturePath('models', family));
  const { examples } = tokenizeRecords(parseJsonl(jsonl(swapRecords())), tok);
  const { examples: rows } = prepareExamples(examples, { maxLength: 32 });
  return { train: rows.slice(0, 48), eval: rows.slice(48), padId: tok.padTokenId ?? tok.eosTokenId! };
}

/** A trainable gain on one MLP input behind dropout (mask from the trainer's RNG): resume must replay its draws. */
class DropoutGain implements AdaptedModel {
  readonly peftType = 'TEST_DROPOUT';
  private readonly gain: TrainableTensor;
  constructor(readonly base: PretrainedModel) {
    this.gain = { shape: [base.hiddenSize], data: new Float32Array(base.hiddenSize).fill(1) };
  }
  forward(ctx: BuildContext, args: ForwardArgs): ForwardResult {
    ctx.linearHooks.set('transformer.h.1.mlp.c_fc', (x, base) => {
      let h = o.mul(x, ctx.param('gain', this.gain.shape));
      if (ctx.training) h = o.dropout(h, ctx.graph.input('gain_mask', 'bool', ['batch', 'seq', this.base.hiddenSize]), 0.3);
      return base(h);
    });
    return this.base.forward(ctx, args);
  }
  loss(logits: Value, labels: Value): Value {
    return this.base.loss(logits, labels);
  }
  parameters(): Map<string, TrainableTensor> {
    return new Map([['gain', this.gain]]);
  }
  decayParameters(): Set<string> {
    return new Set(['gain']);
  }
  trainableBaseWeights(): Set<string> {
    return new Set();
  }
  async savePretrained(): Promise<void> {}
}

test('full fine-tuning of gpt2 and llama on the swap task cuts the eval loss by more than 30%', async () => {
  for (const family of ['gpt2', 'llama']) {
    const t0 = performance.now();
    const data = await swapTask(family);
    const model = getFullFineTuneModel(await loadModel(fixturePath('models', family)));
    const out = await tempDir();
    const r = await new Trainer(model, data.train, data.eval, {
      outputDir: out,
      padTokenId: data.padId,
      learningRate: 3e-3,
      maxSteps: 30,
      batchSize: 8,
      warmupSteps: 2,
      evalEvery: 10,
      runtime: { threads: 2 },
    }).train();
    const seconds = (performance.now() - t0) / 1000;
    assert.ok(r.initialEvalLoss! > 5, `${family}: the untrained model cannot do the task (eval loss ${r.initialEvalLoss})`);
    assert.ok(r.finalEvalLoss! < 0.7 * r.initialEvalLoss!, `${family}: eval loss ${r.initialEvalLoss} -> ${r.finalEvalLoss}`);
    assert.ok(seconds < 30, `${family}: ${seconds.toFixed(1)} s`);
    assert.equal(r.globalStep, 30);
    assert.equal(r.interrupted, false);
    // The output folder holds the fine-tuned model (loadable), the metrics and the plot.
    for (const f of ['config.json', 'model.safetensors', 'metrics.jsonl', 'loss.svg']) assert.ok(existsSync(join(out, f)), f);
    const metrics = parseMetrics(await readFile(join(out, 'metrics.jsonl'), 'utf8'));
    assert.equal(metrics.filter((m) => m.kind === 'train').length, 30);
    assert.deepEqual(
      metrics.filter((m) => m.kind === 'eval').map((m) => m.step),
      [0, 10, 20, 30],
    );
    const reloaded = await loadModel(out);
    assert.deepEqual(reloaded.weights.get('lm_head.weight').data, model.base.weights.get('lm_head.weight').data);
  }
});

async function runPair(
  makeModel: () => Promise<AdaptedModel>,
  data: { train: TokenizedExample[]; eval: TokenizedExample[]; padId: number },
  opts: Partial<TrainerOptions>,
) {
  const common: Omit<TrainerOptions, 'outputDir'> = { padTokenId: data.padId, maxSteps: 10, runtime: { threads: 2 }, ...opts };
  const straightDir = await tempDir();
  const straight = await makeModel();
  const s = await new Trainer(straight, data.train, data.eval, { ...common, outputDir: straightDir }).train();

  const splitDir = await tempDir();
  const first = await makeModel();
  const stopper: Trainer = new Trainer(first, data.train, data.eval, {
    ...common,
    outputDir: splitDir,
    onStep: (r) => void (r.step === 5 && stopper.requestStop()),
  });
  const half = await stopper.train();
  assert.equal(half.interrupted, true);
  assert.equal(half.globalStep, 5);
  assert.equal(half.lastCheckpoint, join(splitDir, 'checkpoints', 'checkpoint-5'));
  const second = await makeModel();
  const rest = await new Trainer(second, data.train, data.eval, { ...common, outputDir: splitDir, resume: 'latest' }).train();
  assert.equal(rest.globalStep, 10);
  return { straight, second, s, rest, straightDir, splitDir };
}

function assertBitwise(a: AdaptedModel, b: AdaptedModel): void {
  const pa = a.parameters();
  const pb = b.parameters();
  assert.deepEqual([...pa.keys()], [...pb.keys()]);
  for (const [name, t] of pa) {
    const u = pb.get(name)!;
    let diff = 0;
    for (let i = 0; i < t.data.length; i++) diff = Math.max(diff, Math.abs(t.data[i]! - u.data[i]!));
    assert.equal(diff, 0, `${name}: max diff ${diff}`);
    assert.ok(
      Buffer.from(t.data.buffer, t.data.byteOffset, t.data.byteLength).equals(
        Buffer.from(u.data.buffer, u.data.byteOffset, u.data.byteLength),
      ),
      `${name} differs bitwise`,
    );
  }
}

test('10 steps straight = 5 steps, stop, resume 5: identical tensors, optimizer and metrics', async () => {
  const data = await swapTask('gpt2');
  const small = { train: data.train.slice(0, 10), eval: data.eval.slice(0, 4), padId: data.padId };
  // Full fine-tuning with accumulation, weight decay, warmup + cosine, an epoch boundary mid-step and periodic checkpoints.
  const full = await runPair(async () => getFullFineTuneModel(await loadModel(fixturePath('models', 'gpt2'))), small, {
    learningRate: 2e-3,
    batchSize: 3,
    gradAccum: 2,
    weightDecay: 0.1,
    warmupSteps: 2,
    schedule: 'cosine',
    saveEvery: 3,
    evalEvery: 4,
  });
  assertBitwise(full.straight, full.second);
  const strip = (ms: typeof full.s.metrics) => ms.map((m) => (m.kind === 'train' ? { ...m, tokens_per_second: 0, elapsed_s: 0 } : m));
  assert.deepEqual(strip(full.rest.metrics), strip(full.s.metrics));
  const logged = parseMetrics(await readFile(join(full.splitDir, 'metrics.jsonl'), 'utf8'));
  assert.deepEqual(strip(logged), strip(full.s.metrics), 'metrics.jsonl has each step once');
  assert.deepEqual(
    (await readdir(join(full.splitDir, 'checkpoints'))).sort(),
    ['checkpoint-3', 'checkpoint-5', 'checkpoint-6', 'checkpoint-9'],
    'periodic checkpoints, the stop checkpoint, and no temp folders',
  );
  const ck = await loadCheckpoint(join(full.splitDir, 'checkpoints', 'checkpoint-5'));
  assert.equal(ck.optimizer.step, 5);
  assert.equal(ck.state.globalStep, 5);
  assert.deepEqual(
    ck.state.dataPosition,
    { epoch: 2, index: 6 },
    '10 micro-batches of 3 over 10 examples: two epochs of 4 batches, then 2 more',
  );
  for (const f of [
    'config.json',
    'model.safetensors',
    'trainable.safetensors',
    'optimizer.safetensors',
    'scheduler.json',
    'rng_state.json',
    'trainer_state.json',
  ]) {
    assert.ok(existsSync(join(full.splitDir, 'checkpoints', 'checkpoint-5', f)), f);
  }

  // Dropout: the resumed run must draw the masks the straight run drew.
  const drop = await runPair(async () => new DropoutGain(await loadModel(fixturePath('models', 'gpt2'))), small, {
    learningRate: 1e-2,
    batchSize: 4,
  });
  assertBitwise(drop.straight, drop.second);
  assert.notDeepEqual(drop.second.parameters().get('gain')!.data, new Float32Array(64).fill(1));
});

test('a NaN loss stops the run with a TrainError and keeps the last good checkpoint', async () => {
  const data = await swapTask('gpt2');
  const out = await tempDir();
  const model = getFullFineTuneModel(await loadModel(fixturePath('models', 'gpt2')));
  const trainer = new Trainer(model, data.train.slice(0, 8), undefined, {
    outputDir: out,
    padTokenId: data.padId,
    learningRate: 1e30,
    schedule: 'constant',
    maxSteps: 5,
    batchSize: 4,
    saveEvery: 1,
    runtime: { threads: 2 },
  });
  await assert.rejects(trainer.train(), (e: unknown) => {
    assert.ok(e instanceof TrainError, String(e));
    assert.match(e.message, /the loss is (NaN|Infinity) at step 2/);
    assert.match(e.message, /checkpoint-1/);
    return true;
  });
  assert.deepEqual(await readdir(join(out, 'checkpoints')), ['checkpoint-1']);
  assert.ok(existsSync(join(out, 'loss.svg')));
  assert.equal(parseMetrics(await readFile(join(out, 'metrics.jsonl'), 'utf8')).length, 1);
});

test('runs that cannot continue exactly are refused before anything on disk changes', async () => {
  const data = await swapTask('gpt2');
  const train = data.train.slice(0, 8);
  const out = await tempDir();
  const make = async () => getFullFineTuneModel(await loadModel(fixturePath('models', 'gpt2')));
  const opts: TrainerOptions = {
    outputDir: out,
    padTokenId: data.padId,
    maxSteps: 4,
    batchSize: 4,
    learningRate: 1e-3,
    runtime: { threads: 2 },
  };
  await assert.rejects(
    new Trainer(await make(), train, undefined, { ...opts, resume: 'latest' }).train(),
    (e: unknown) => e instanceof CheckpointError && /no checkpoint/.test(e.message),
  );
  const t = new Trainer(await make(), train, undefined, { ...opts, onStep: (r) => void (r.step === 2 && t.requestStop()) });
  await t.train();
  const before = await readFile(join(out, 'metrics.jsonl'), 'utf8');
  await assert.rejects(
    new Trainer(await make(), train, undefined, opts).train(),
    (e: unknown) => e instanceof TrainError && /--resume latest.*--overwrite/.test(e.message),
  );
  await assert.rejects(
    new Trainer(await make(), train, undefined, { ...opts, resume: 'latest', learningRate: 2e-3 }).train(),
    (e: unknown) => e instanceof CheckpointError && /learning_rate: checkpoint 0.001, now 0.002/.test(e.message),
  );
  await assert.rejects(
    new Trainer(await make(), train.slice(1), undefined, { ...opts, resume: 'latest' }).train(),
    (e: unknown) => e instanceof CheckpointError && /train_data/.test(e.message),
  );
  // a checkpoint that does not name the keep-mask scheme (written before it was recorded) would resume with other masks
  const [ckpt] = await readdir(join(out, 'checkpoints'));
  const stateFile = join(out, 'checkpoints', ckpt!, 'trainer_state.json');
  const state = JSON.parse(await readFile(stateFile, 'utf8')) as { run_signature: Record<string, unknown> };
  const { dropout_masks: scheme, ...older } = state.run_signature;
  assert.equal(typeof scheme, 'string');
  await writeFile(stateFile, JSON.stringify({ ...state, run_signature: older }));
  await assert.rejects(
    new Trainer(await make(), train, undefined, { ...opts, resume: 'latest' }).train(),
    (e: unknown) => e instanceof CheckpointError && /dropout_masks: checkpoint undefined/.test(e.message),
  );
  await writeFile(stateFile, JSON.stringify(state));
  assert.equal(await readFile(join(out, 'metrics.jsonl'), 'utf8'), before);
  assert.throws(
    () => new Trainer({} as AdaptedModel, train, undefined, { ...opts, batchSize: 0 }),
    (e: unknown) => e instanceof TrainError && /batch size/.test(e.message),
  );
  const over = await new Trainer(await make(), train, undefined, { ...opts, overwrite: true }).train();
  assert.equal(over.globalStep, 4);
  assert.deepEqual(await readdir(join(out, 'checkpoints')).catch(() => []), []);
});

test('an evaluation set with no label token is refused up front, and evaluate() never reports NaN', async () => {
  const data = await swapTask('gpt2');
  const model = getFullFineTuneModel(await loadModel(fixturePath('models', 'gpt2')));
  const unlabeled = data.eval.map((ex) => ({ ...ex, labels: ex.labels.map(() => -100) }));
  const opts = { outputDir: await tempDir(), padTokenId: data.padId, maxSteps: 1, runtime: { threads: 1 } };
  assert.throws(
    () => new Trainer(model, data.train, unlabeled, opts),
    (e: unknown) => e instanceof TrainError && /no evaluation example has a label/.test(e.message),
  );
  // only the first position labelled: the shifted loss has no target, so there is no eval loss to report
  const firstOnly = data.eval.map((ex) => ({ ...ex, labels: ex.labels.map((l, i) => (i === 0 ? ex.inputIds[0]! : -100)) }));
  const t = new Trainer(model, data.train, firstOnly, opts);
  await assert.rejects(t.evaluate(), (e: unknown) => e instanceof TrainError && /no evaluation example has a label token/.test(e.message));
});
