// The step compiler: one session gives the loss and every trainable tensor's gradient (checked
// against finite differences), loss_scale scales them as gradient accumulation needs, dropout
// masks come from the trainer's seeded RNG, and models it cannot train are refused up front.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { Value } from '../../src/graph/ir.js';
import * as o from '../../src/graph/ops.js';
import { BertModel } from '../../src/models/bert.js';
import { loadModel } from '../../src/models/load.js';
import type { ForwardArgs, ForwardResult, PretrainedModel } from '../../src/models/types.js';
import type { BuildContext } from '../../src/nn/context.js';
import { collate } from '../../src/train/batches.js';
import { TrainError } from '../../src/train/errors.js';
import { Rng } from '../../src/train/rng.js';
import { EvalStep, TrainStep, countLossTokens, resolveDim } from '../../src/train/step.js';
import { getFullFineTuneModel } from '../../src/tuners/full/index.js';
import type { AdaptedModel, TrainableTensor } from '../../src/tuners/types.js';
import { fixturePath } from '../helpers/fixtures.js';

const rows = (n: number, len: number, offset = 0) =>
  Array.from({ length: n }, (_, b) => {
    const ids = Array.from({ length: len }, (_, i) => (17 * (b + offset) + 5 * i + 3) % 500);
    return { inputIds: ids, labels: ids.map((t, i) => (i < 2 ? -100 : t)) };
  });

/** A gain vector on the first MLP input, behind inverted dropout whose keep-mask is a graph input. */
class DropoutGain implements AdaptedModel {
  readonly peftType = 'TEST_DROPOUT';
  private readonly gain: TrainableTensor;
  constructor(
    readonly base: PretrainedModel,
    private readonly ratio: number,
  ) {
    this.gain = { shape: [base.hiddenSize], data: new Float32Array(base.hiddenSize).fill(1) };
  }
  forward(ctx: BuildContext, args: ForwardArgs): ForwardResult {
    const name = 'transformer.h.0.mlp.c_fc';
    ctx.linearHooks.set(name, (x, base) => {
      let h = o.mul(x, ctx.param('gain', this.gain.shape));
      if (ctx.training) h = o.dropout(h, ctx.graph.input('gain_dropout_mask', 'bool', ['batch', 'seq', this.base.hiddenSize]), this.ratio);
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
    return new Set();
  }
  trainableBaseWeights(): Set<string> {
    return new Set();
  }
  async savePretrained(): Promise<void> {}
}

test('gradients match finite differences and loss_scale scales them (accumulation = big-batch mean)', async () => {
  const model = getFullFineTuneModel(await loadModel(fixturePath('models', 'gpt2')), {
    peftType: 'FULL',
    targetModules: ['ln_f', 'c_proj'],
  });
  const step = await TrainStep.compile(model, { threads: 1 });
  const evalStep = await EvalStep.compile(model, { threads: 1 });
  const params = model.parameters();
  assert.ok(
    params.has('transformer.ln_f.bias') && params.has('transformer.h.1.mlp.c_proj.weight') && !params.has('transformer.wte.weight'),
  );
  const batch = collate(rows(4, 9), 0);
  const full = await step.run(batch, params, { lossScale: 1 });
  assert.deepEqual([...full.grads.keys()].sort(), [...params.keys()].sort());

  // Central differences in float32 on a few coordinates of two tensors.
  for (const [name, idx] of [
    ['transformer.ln_f.bias', 3],
    ['transformer.ln_f.weight', 10],
    ['transformer.h.1.mlp.c_proj.weight', 77],
  ] as const) {
    const x = params.get(name)!.data;
    const keep = x[idx]!;
    const h = 1e-2;
    x[idx] = keep + h;
    const up = (await evalStep.run(batch, params)).loss;
    x[idx] = keep - h;
    const down = (await evalStep.run(batch, params)).loss;
    x[idx] = keep;
    const fd = (up - down) / (2 * h);
    const g = full.grads.get(name)![idx]!;
    assert.ok(Math.abs(fd - g) < 2e-3 + 0.05 * Math.abs(g), `${name}[${idx}]: autodiff ${g} vs finite difference ${fd}`);
  }

  // Two half batches at loss_scale 1/2 sum to the big batch's gradient (equal label counts per half).
  const a = await step.run(collate(rows(4, 9).slice(0, 2), 0), params, { lossScale: 0.5 });
  const b = await step.run(collate(rows(4, 9).slice(2), 0), params, { lossScale: 0.5 });
  assert.ok(Math.abs((a.loss + b.loss) / 2 - full.loss) < 1e-5, 'losses are reported unscaled');
  for (const [name, g] of full.grads) {
    const ga = a.grads.get(name)!;
    const gb = b.grads.get(name)!;
    let err = 0;
    let mag = 0;
    for (let i = 0; i < g.length; i++) {
      err = Math.max(err, Math.abs(ga[i]! + gb[i]! - g[i]!));
      mag = Math.max(mag, Math.abs(g[i]!));
    }
    assert.ok(err <= 1e-5 * Math.max(1, mag), `${name}: accumulated gradient differs by ${err}`);
  }
  const doubled = await step.run(batch, params, { lossScale: 2 });
  const g1 = full.grads.get('transformer.ln_f.bias')!;
  doubled.grads.get('transformer.ln_f.bias')!.forEach((v, i) => assert.ok(Math.abs(v - 2 * g1[i]!) <= 1e-6 * Math.max(1, Math.abs(v))));
  assert.equal(countLossTokens(batch), 4 * 7);
  await step.dispose();
  await evalStep.dispose();
});

test('dropout masks are drawn from the RNG it is given; evaluation has none', async () => {
  const model = new DropoutGain(await loadModel(fixturePath('models', 'gpt2')), 0.5);
  const step = await TrainStep.compile(model, { threads: 1 });
  assert.deepEqual(step.dropoutRatios, [0.5]);
  const batch = collate(rows(2, 7), 0);
  const params = model.parameters();
  const r1 = await step.run(batch, params, { rng: Rng.fromSeed(1) });
  const r1again = await step.run(batch, params, { rng: Rng.fromSeed(1) });
  const r2 = await step.run(batch, params, { rng: Rng.fromSeed(2) });
  assert.equal(r1.loss, r1again.loss);
  assert.deepEqual(r1.grads.get('gain'), r1again.grads.get('gain'));
  assert.notEqual(r1.loss, r2.loss);
  await assert.rejects(step.run(batch, params), TrainError);
  const ev = await EvalStep.compile(model, { threads: 1 });
  const e1 = await ev.run(batch, params);
  assert.equal((await ev.run(batch, params)).loss, e1.loss);
  await step.dispose();
  await ev.dispose();
});

test('models the trainer cannot train are refused with a TrainError', async () => {
  const gpt2 = await loadModel(fixturePath('models', 'gpt2'));
  class Strange extends DropoutGain {
    override forward(ctx: BuildContext, args: ForwardArgs): ForwardResult {
      ctx.param('gain', [gpt2.hiddenSize]);
      const extra = ctx.graph.input('mystery', 'float32', ['batch']);
      const out = super.forward(ctx, args);
      return { ...out, logits: o.add(out.logits, o.sum(extra)) };
    }
  }
  await assert.rejects(TrainStep.compile(new Strange(gpt2, 0.1)), (e: unknown) => e instanceof TrainError && /"mystery"/.test(e.message));
  class Undeclared extends DropoutGain {
    override forward(ctx: BuildContext, args: ForwardArgs): ForwardResult {
      ctx.param('other', [3]);
      return super.forward(ctx, args);
    }
  }
  await assert.rejects(
    TrainStep.compile(new Undeclared(gpt2, 0.1)),
    (e: unknown) => e instanceof TrainError && /"other".*parameters\(\)/.test(e.message),
  );
  const bert = await loadModel(fixturePath('models', 'bert'));
  const headless = getFullFineTuneModel(new BertModel(bert.config, bert.weights, bert.dir, 'base'));
  await assert.rejects(
    TrainStep.compile(headless),
    (e: unknown) => e instanceof TrainError && /causal language models and sequence classifiers/.test(e.message),
  );
});

test('symbolic dims of masks resolve for each batch', () => {
  assert.equal(resolveDim('batch*seq', { batch: 3, seq: 5 }), 15);
  assert.equal(resolveDim('seq-1', { batch: 3, seq: 5 }), 4);
  assert.equal(resolveDim('2*(seq+1)', { batch: 3, seq: 5 }), 12);
  assert.equal(resolveDim(7, {}), 7);
  assert.throws(() => resolveDim('past+seq', { batch: 1, seq: 1 }), TrainError);
});
