// ModernBERT LoRA adapters made by peft 0.20.0 (task_type SEQ_CLS, classifier in modules_to_save,
// one LoRA pair over the fused Wqkv / Wi outputs) reproduce peft's logits, loss and merged logits;
// the modernbert_lora gradient trace reproduces torch's losses, gradients and AdamW steps.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { readSafetensors, toFloat32 } from '../../src/io/safetensors.js';
import { loadModel } from '../../src/models/load.js';
import { AdamW } from '../../src/train/adamw.js';
import { PeftModel } from '../../src/tuners/load.js';
import { LoraModel, findTargets, loraConfig, resolveTargetModules } from '../../src/tuners/lora/index.js';
import { fixture2026Path, host, maxAbsDiff, type Batch } from '../helpers/fixtures.js';
import { assertClose, compile, forwardOnce } from '../tuners/lora_support.js';

const MODEL = fixture2026Path('models', 'modernbert');

async function batch(): Promise<Batch> {
  const b = await readSafetensors(fixture2026Path('models', 'modernbert', 'batch.safetensors'));
  return { input_ids: host(b.get('input_ids')!), attention_mask: host(b.get('attention_mask')!), labels: host(b.get('labels')!) };
}
const tensors = async (...parts: string[]) => readSafetensors(fixture2026Path(...parts));

for (const c of ['lora_attn', 'lora_all_linear_rslora', 'lora_dora']) {
  test(`modernbert/${c}: logits, loss and merged logits match peft`, async () => {
    const base = await loadModel(MODEL);
    const lm = await PeftModel.fromPretrained(base, fixture2026Path('adapters', 'modernbert', c));
    assert.ok(lm instanceof LoraModel);
    const expected = await tensors('adapters', 'modernbert', c, 'expected_outputs.safetensors');
    const b = await batch();
    const r = await forwardOnce(lm, b);
    const baseLogits = toFloat32((await tensors('models', 'modernbert', 'expected_outputs.safetensors')).get('logits')!);
    assert.ok(maxAbsDiff(r.logits, baseLogits) > 1e-2, `${c}: the adapter changes the outputs`);
    assertClose(r.logits, toFloat32(expected.get('logits')!), 1e-4, 1e-4, `${c} logits`);
    const wantLoss = toFloat32(expected.get('loss')!)[0]!;
    assert.ok(Math.abs(r.loss - wantLoss) <= 1e-5 * Math.abs(wantLoss), `${c} loss ${r.loss} vs ${wantLoss}`);
    const merged = await lm.mergeAndUnload();
    assertClose((await forwardOnce(merged, b)).logits, toFloat32(expected.get('merged_logits')!), 1e-4, 1e-4, `${c} merged logits`);
  });
}

interface Trace {
  name: string;
  adamw: { lr: number; betas: [number, number]; eps: number; weight_decay: number };
  losses: number[];
}

test('grad trace modernbert_lora: losses, gradients and 3 AdamW steps match torch', async () => {
  const manifest = JSON.parse(readFileSync(fixture2026Path('MANIFEST.json'), 'utf8')) as { grad_traces: Trace[] };
  const trace = manifest.grad_traces.find((t) => t.name === 'modernbert_lora')!;
  const dir = fixture2026Path('grad_traces', 'modernbert_lora');
  const lm = await LoraModel.fromPretrained(await loadModel(MODEL), dir, { isTrainable: true });
  const b = await batch();
  const c = await compile(lm, b, { grads: true, training: true });
  try {
    const values = lm.parameters();
    const savedOf = (param: string): string => lm.savedNameOf(param)!;
    const traceKeys = [...(await tensors('grad_traces', 'modernbert_lora', 'grads_step0.safetensors')).keys()].sort();
    assert.deepEqual(c.params.map((p) => savedOf(p.name)).sort(), traceKeys);
    const opt = new AdamW({ lr: trace.adamw.lr, betas: trace.adamw.betas, eps: trace.adamw.eps, weightDecay: trace.adamw.weight_decay });
    for (let step = 0; step < 3; step++) {
      const r = await c.run(b, values);
      const loss = r.loss!.data[0] as number;
      assert.ok(Math.abs(loss - trace.losses[step]!) <= 1e-5 * trace.losses[step]!, `step ${step} loss ${loss} vs ${trace.losses[step]}`);
      const want = await tensors('grad_traces', 'modernbert_lora', `grads_step${step}.safetensors`);
      const grads = new Map<string, Float32Array>();
      for (const p of c.params) {
        const g = r[`grad:${p.name}`]!.data as Float32Array;
        assertClose(g, toFloat32(want.get(savedOf(p.name))!), 1e-6, 1e-4, `step ${step} grad ${savedOf(p.name)}`);
        grads.set(p.name, g);
      }
      opt.step(values, grads);
      if (step === 0) {
        const state = await tensors('grad_traces', 'modernbert_lora', 'adamw_state_after_1_step.safetensors');
        for (const p of c.params) {
          assertClose(opt.state.expAvg.get(p.name)!, toFloat32(state.get(`${savedOf(p.name)}.exp_avg`)!), 1e-7, 1e-4, `exp_avg ${p.name}`);
          assertClose(
            opt.state.expAvgSq.get(p.name)!,
            toFloat32(state.get(`${savedOf(p.name)}.exp_avg_sq`)!),
            1e-12,
            3e-4,
            `exp_avg_sq ${p.name}`,
          );
        }
      }
      if (step === 0 || step === 2) {
        const file = step === 0 ? 'params_after_1_step.safetensors' : 'params_after_3_steps.safetensors';
        const wantParams = await tensors('grad_traces', 'modernbert_lora', file);
        for (const [key, t] of lm.stateDict()) assertClose(t.data, toFloat32(wantParams.get(key)!), 1e-6, 1e-5, `${file} ${key}`);
      }
    }
    const last = (await c.run(b, values, ['loss'])).loss!.data[0] as number;
    assert.ok(Math.abs(last - trace.losses[3]!) <= 1e-5 * trace.losses[3]!, `loss after 3 steps ${last} vs ${trace.losses[3]}`);
  } finally {
    await c.dispose();
  }
});

test('modernbert: "all-linear" for SEQ_CLS wraps what peft wrapped (head.dense yes, classifier no: it is saved in full)', async () => {
  const base = await loadModel(MODEL);
  const saved = JSON.parse(
    readFileSync(fixture2026Path('adapters', 'modernbert', 'lora_all_linear_rslora', 'adapter_config.json'), 'utf8'),
  ) as { target_modules: string[] };
  const config = loraConfig({ targetModules: 'all-linear', taskType: 'SEQ_CLS', modulesToSave: ['classifier', 'score'] });
  const t = findTargets(base, { ...config, targetModules: resolveTargetModules(base, config) });
  assert.deepEqual(t.lora.map((l) => l.spec.name).sort(), [...saved.target_modules].sort());
  assert.deepEqual(t.modulesToSave, ['classifier']);
  // peft has no default targets for modernbert; neither do we.
  assert.throws(
    () => resolveTargetModules(base, loraConfig({ taskType: 'SEQ_CLS' })),
    /no default LoRA target_modules for model_type "modernbert"/,
  );
});
