// The decoder families of the 2026 fixture set (transformers 4.57.6, peft 0.20.0) reproduce the
// reference numbers: base logits, hidden states and loss; transformers' greedy generate() ids with
// the KV cache; LoRA, rsLoRA-on-all-linear and DoRA adapters (logits, loss, merged logits); and the
// LoRA gradient trace (losses, gradients, AdamW moments and parameters over three steps).

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { Graph, type Value } from '../../src/graph/ir.js';
import { BuildContext } from '../../src/nn/context.js';
import { loadModel } from '../../src/models/load.js';
import { RuntimeSession } from '../../src/runtime/session.js';
import { Generator } from '../../src/generate/index.js';
import { readSafetensors, toBigInt64, toFloat32, type RawTensor } from '../../src/io/safetensors.js';
import { AdamW } from '../../src/train/adamw.js';
import { PeftModel } from '../../src/tuners/load.js';
import { LoraModel } from '../../src/tuners/lora/index.js';
import { DECODERS_2026, comparedPositions } from '../helpers/decoders.js';
import { fixture2026Path, host, maxAbsDiff, type Batch } from '../helpers/fixtures.js';
import { assertClose, compile, forwardOnce } from '../tuners/lora_support.js';

const read = (...parts: string[]): Promise<Map<string, RawTensor>> => readSafetensors(fixture2026Path(...parts));

async function batchOf(name: string): Promise<Batch> {
  const b = await read('models', name, 'batch.safetensors');
  return { input_ids: host(b.get('input_ids')!), attention_mask: host(b.get('attention_mask')!), labels: host(b.get('labels')!) };
}

/** |got - want| <= atol + rtol |want| at the kept positions (or within `tol(i)` when given). */
function closeAt(
  got: Float32Array,
  want: Float32Array,
  keep: (i: number) => boolean,
  atol: number,
  rtol: number,
  what: string,
  tol?: (i: number) => number,
  label = what,
): void {
  assert.equal(got.length, want.length, `${label}: length`);
  let worst = 0;
  let at = -1;
  for (let i = 0; i < got.length; i++) {
    if (!keep(i)) continue;
    const d = Math.abs(got[i]! - want[i]!) - (tol ? tol(i) : atol + rtol * Math.abs(want[i]!));
    if (d > worst) {
      worst = d;
      at = i;
    }
  }
  assert.ok(worst === 0, `${label}: element ${at} is ${got[at]} vs ${want[at]}, beyond the tolerance by ${worst}`);
}

const manifest = JSON.parse(readFileSync(fixture2026Path('MANIFEST.json'), 'utf8')) as {
  grad_traces: {
    name: string;
    model: string;
    adamw: { lr: number; betas: [number, number]; eps: number; weight_decay: number };
    losses: number[];
  }[];
};

for (const [name, cases] of Object.entries(DECODERS_2026)) {
  test(`${name}: logits, hidden states and loss match transformers 4.57`, async () => {
    const model = await loadModel(fixture2026Path('models', name));
    const batch = await batchOf(name);
    const expected = await read('models', name, 'expected_outputs.safetensors');
    const g = new Graph();
    const ctx = new BuildContext(g, model.weights);
    const out = model.forward(ctx, {
      inputIds: g.input('input_ids', 'int64', ['batch', 'seq']),
      attentionMask: g.input('attention_mask', 'int64', ['batch', 'seq']),
    });
    const fetch: Record<string, Value> = { logits: out.logits, loss: model.loss(out.logits, g.input('labels', 'int64', ['batch', 'seq'])) };
    out.hiddenStates.forEach((h, i) => (fetch[`hidden_states.${i}`] = h));
    assert.equal(out.hiddenStates.length, model.numLayers + 1);
    const sess = await RuntimeSession.fromGraph(g, fetch, { threads: 1 });
    try {
      const r = await sess.run({ input_ids: batch.input_ids, attention_mask: batch.attention_mask, labels: batch.labels });
      for (const key of Object.keys(fetch)) {
        if (key === 'loss') continue;
        const want = expected.get(key)!;
        assert.deepEqual(r[key]!.shape, want.shape, key);
        const width = want.shape[2]!;
        closeAt(
          r[key]!.data as Float32Array,
          toFloat32(want),
          comparedPositions(name, batch.attention_mask.data as BigInt64Array, width),
          1e-4,
          1e-4,
          `${name} ${key}`,
        );
      }
      const loss = r.loss!.data[0] as number;
      const wantLoss = toFloat32(expected.get('loss')!)[0]!;
      assert.ok(Math.abs(loss - wantLoss) <= 1e-5 * Math.abs(wantLoss), `${name} loss ${loss} vs ${wantLoss}`);
    } finally {
      await sess.dispose();
    }
  });

  test(`${name}: greedy generation with the KV cache reproduces transformers' generate() ids`, async () => {
    const model = await loadModel(fixture2026Path('models', name));
    const expected = await read('models', name, 'expected_outputs.safetensors');
    const prompt = Array.from(toBigInt64(expected.get('generate.prompt_ids')!), Number);
    const greedy = Array.from(toBigInt64(expected.get('generate.greedy_ids')!), Number);
    const gen = await Generator.create(model, { runtime: { threads: 1 } });
    try {
      const r = await gen.generate([prompt], { maxNewTokens: greedy.length - prompt.length, stopTokenIds: [] });
      assert.deepEqual([...r.sequences[0]!.promptIds, ...r.sequences[0]!.tokenIds], greedy);
    } finally {
      await gen.dispose();
    }
  });

  for (const c of cases.adapters) {
    test(`${name}/${c}: adapter logits, loss and merged logits match peft 0.20`, async () => {
      const base = await loadModel(fixture2026Path('models', name));
      const lm = await PeftModel.fromPretrained(base, fixture2026Path('adapters', name, c));
      assert.ok(lm instanceof LoraModel);
      const batch = await batchOf(name);
      const expected = await read('adapters', name, c, 'expected_outputs.safetensors');
      const want = toFloat32(expected.get('logits')!);
      const width = expected.get('logits')!.shape[2]!;
      const keep = comparedPositions(name, batch.attention_mask.data as BigInt64Array, width);
      const r = await forwardOnce(lm, batch);
      const baseLogits = toFloat32((await read('models', name, 'expected_outputs.safetensors')).get('logits')!);
      assert.ok(maxAbsDiff(r.logits, baseLogits) > 1e-3, `${name}/${c}: the adapter changes the outputs`);
      closeAt(r.logits, want, keep, 1e-4, 1e-4, `${name}/${c} logits`);
      const wantLoss = toFloat32(expected.get('loss')!)[0]!;
      assert.ok(Math.abs(r.loss - wantLoss) <= 1e-5 * Math.abs(wantLoss), `${name}/${c} loss ${r.loss} vs ${wantLoss}`);
      const merged = await lm.mergeAndUnload();
      closeAt(
        (await forwardOnce(merged, batch)).logits,
        toFloat32(expected.get('merged_logits')!),
        keep,
        1e-4,
        1e-4,
        `${name}/${c} merged logits`,
      );
    });
  }

  test(`grad trace ${cases.trace}: losses, gradients and 3 AdamW steps match torch 2.13`, async () => {
    const trace = manifest.grad_traces.find((t) => t.name === cases.trace)!;
    const base = await loadModel(fixture2026Path('models', trace.model));
    const lm = await LoraModel.fromPretrained(base, fixture2026Path('grad_traces', cases.trace), { isTrainable: true });
    const batch = await batchOf(trace.model);
    const c = await compile(lm, batch, { grads: true, training: true });
    const adamw = () =>
      new AdamW({ lr: trace.adamw.lr, betas: trace.adamw.betas, eps: trace.adamw.eps, weightDecay: trace.adamw.weight_decay });
    const file = (f: string) => read('grad_traces', cases.trace, f);
    try {
      const savedOf = (param: string): string => lm.savedNameOf(param)!;
      const refGrads = await Promise.all([0, 1, 2].map((i) => file(`grads_step${i}.safetensors`)));
      assert.deepEqual(c.params.map((p) => savedOf(p.name)).sort(), [...refGrads[0]!.keys()].sort());
      const after = { 1: await file('params_after_1_step.safetensors'), 3: await file('params_after_3_steps.safetensors') };

      // 1. Teacher-forced: at torch's parameters of every step, our loss and gradients are torch's,
      //    and torch's gradients through our AdamW give torch's parameters and moments.
      const forced = new Map(
        c.params.map((p) => [p.name, { shape: [...lm.parameters().get(p.name)!.shape], data: lm.parameters().get(p.name)!.data.slice() }]),
      );
      const opt = adamw();
      for (let step = 0; step < 3; step++) {
        const r = await c.run(batch, forced);
        const loss = r.loss!.data[0] as number;
        assert.ok(Math.abs(loss - trace.losses[step]!) <= 1e-5 * trace.losses[step]!, `step ${step} loss ${loss} vs ${trace.losses[step]}`);
        for (const p of c.params) {
          assertClose(
            r[`grad:${p.name}`]!.data as Float32Array,
            toFloat32(refGrads[step]!.get(savedOf(p.name))!),
            1e-6,
            1e-4,
            `step ${step} grad ${savedOf(p.name)}`,
          );
        }
        opt.step(forced, new Map(c.params.map((p) => [p.name, toFloat32(refGrads[step]!.get(savedOf(p.name))!)])));
        if (step === 0) {
          const state = await file('adamw_state_after_1_step.safetensors');
          for (const p of c.params) {
            assertClose(
              opt.state.expAvg.get(p.name)!,
              toFloat32(state.get(`${savedOf(p.name)}.exp_avg`)!),
              1e-9,
              1e-5,
              `exp_avg ${p.name}`,
            );
            assertClose(
              opt.state.expAvgSq.get(p.name)!,
              toFloat32(state.get(`${savedOf(p.name)}.exp_avg_sq`)!),
              1e-15,
              1e-5,
              `exp_avg_sq ${p.name}`,
            );
          }
        }
        if (step === 0 || step === 2) {
          const want = after[step === 0 ? 1 : 3];
          for (const p of c.params)
            assertClose(
              forced.get(p.name)!.data,
              toFloat32(want.get(savedOf(p.name))!),
              1e-6,
              1e-5,
              `${savedOf(p.name)} after ${step + 1} step(s)`,
            );
        }
      }
      const forcedLast = (await c.run(batch, forced, ['loss'])).loss!.data[0] as number;
      assert.ok(
        Math.abs(forcedLast - trace.losses[3]!) <= 1e-5 * trace.losses[3]!,
        `loss after 3 steps ${forcedLast} vs ${trace.losses[3]}`,
      );

      // 2. Free-running, as `peft train` runs: our gradients through our AdamW. Its first step moves an
      //    element by ~lr * g / (|g| + eps), so where torch's gradient is within ~100 eps of zero,
      //    float32 noise of 1e-9 in g (far inside the gradient tolerance) moves the parameter by up to
      //    1e-4; those elements get lr-scaled slack, every other one atol 1e-6 + rtol 1e-5 after one step.
      //    The next gradients see those moved elements, so after three steps every element gets atol 1e-4
      //    (teacher-forced above, the same steps agree to 1e-6).
      const own = lm.parameters();
      const opt2 = adamw();
      for (let step = 0; step < 3; step++) {
        const r = await c.run(batch, own);
        const loss = r.loss!.data[0] as number;
        assert.ok(
          Math.abs(loss - trace.losses[step]!) <= 1e-5 * trace.losses[step]!,
          `free-running step ${step} loss ${loss} vs ${trace.losses[step]}`,
        );
        opt2.step(own, new Map(c.params.map((p) => [p.name, r[`grad:${p.name}`]!.data as Float32Array])));
        if (step === 0 || step === 2) {
          const want = after[step === 0 ? 1 : 3];
          for (const [key, t] of lm.stateDict()) {
            const w = toFloat32(want.get(key)!);
            const small = [0, 1, 2].slice(0, step + 1).map((s) => toFloat32(refGrads[s]!.get(key)!));
            const slack = trace.adamw.lr * (step + 1) * 0.1;
            closeAt(
              t.data,
              w,
              () => true,
              0,
              0,
              key,
              (i) => (small.some((g) => Math.abs(g[i]!) < 1e-6) ? slack : (step === 0 ? 1e-6 : 1e-4) + 1e-5 * Math.abs(w[i]!)),
              `free-running ${key} after ${step + 1} step(s)`,
            );
          }
        }
      }
      const last = (await c.run(batch, own, ['loss'])).loss!.data[0] as number;
      assert.ok(
        Math.abs(last - trace.losses[3]!) <= 1e-5 * trace.losses[3]!,
        `free-running loss after 3 steps ${last} vs ${trace.losses[3]}`,
      );
    } finally {
      await c.dispose();
    }
  });
}
