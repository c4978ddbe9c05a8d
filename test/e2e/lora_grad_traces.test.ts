// Training LoRA and DoRA against peft + torch: from each recorded initial adapter, three AdamW
// steps on the fixture batch reproduce the losses, the gradient of every trainable tensor
// (atol 1e-6 + rtol 1e-4), AdamW's moments after one step, and the parameters after one and three
// steps (atol 1e-5 + rtol 1e-5). Loss and gradients come from one session run per step.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { toFloat32 } from '../../src/io/safetensors.js';
import { loadModel } from '../../src/models/load.js';
import { AdamW } from '../../src/train/adamw.js';
import { LoraModel } from '../../src/tuners/lora/index.js';
import { fixturePath, readTensors } from '../helpers/fixtures.js';
import { assertClose, compile, fixtureBatch } from '../tuners/lora_support.js';

interface Trace {
  name: string;
  model: string;
  adamw: { lr: number; betas: [number, number]; eps: number; weight_decay: number };
  losses: number[];
}

const manifest = JSON.parse(readFileSync(fixturePath('MANIFEST.json'), 'utf8')) as { grad_traces: Trace[] };

for (const name of ['gpt2_lora', 'llama_lora', 'llama_dora', 'bert_lora']) {
  test(`grad trace ${name}: losses, gradients and 3 AdamW steps match torch`, async () => {
    const trace = manifest.grad_traces.find((t) => t.name === name)!;
    const base = await loadModel(fixturePath('models', trace.model));
    const lm = await LoraModel.fromPretrained(base, fixturePath('grad_traces', name), { isTrainable: true });
    const batch = await fixtureBatch(trace.model);
    const c = await compile(lm, batch, { grads: true, training: true });
    try {
      const values = lm.parameters();
      const savedOf = (param: string): string => lm.savedNameOf(param)!;
      // Every trainable tensor of the trace is a graph param, and nothing else is.
      const traceKeys = [...(await readTensors('grad_traces', name, 'grads_step0.safetensors')).keys()].sort();
      assert.deepEqual(c.params.map((p) => savedOf(p.name)).sort(), traceKeys);
      const opt = new AdamW({ lr: trace.adamw.lr, betas: trace.adamw.betas, eps: trace.adamw.eps, weightDecay: trace.adamw.weight_decay });
      for (let step = 0; step < 3; step++) {
        const r = await c.run(batch, values);
        const loss = r.loss!.data[0] as number;
        assert.ok(Math.abs(loss - trace.losses[step]!) <= 1e-5 * trace.losses[step]!, `step ${step} loss ${loss} vs ${trace.losses[step]}`);
        const want = await readTensors('grad_traces', name, `grads_step${step}.safetensors`);
        const grads = new Map<string, Float32Array>();
        for (const p of c.params) {
          const g = r[`grad:${p.name}`]!.data as Float32Array;
          assertClose(g, toFloat32(want.get(savedOf(p.name))!), 1e-6, 1e-4, `step ${step} grad ${savedOf(p.name)}`);
          grads.set(p.name, g);
        }
        // torch.optim.AdamW over every trainable tensor: weight decay applies to all of them.
        opt.step(values, grads);
        if (step === 0) {
          // m = 0.1 g and v = 0.001 g^2 after one step: the gradient tolerance carried through.
          const state = await readTensors('grad_traces', name, 'adamw_state_after_1_step.safetensors');
          for (const p of c.params) {
            assertClose(
              opt.state.expAvg.get(p.name)!,
              toFloat32(state.get(`${savedOf(p.name)}.exp_avg`)!),
              1e-7,
              1e-4,
              `exp_avg ${p.name}`,
            );
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
          // atol 1e-5: an element whose gradient is near AdamW's eps moves by lr * g / (|g| + eps), which
          // turns float32 noise of 1e-8 in g into a few 1e-6 in the parameter (the manifest's float64
          // vs float32 runs differ by up to 4.3e-6 for bert_lora).
          const wantParams = await readTensors('grad_traces', name, file);
          for (const [key, t] of lm.stateDict()) assertClose(t.data, toFloat32(wantParams.get(key)!), 1e-5, 1e-5, `${file} ${key}`);
        }
      }
      const last = (await c.run(batch, values, ['loss'])).loss!.data[0] as number;
      assert.ok(Math.abs(last - trace.losses[3]!) <= 1e-5 * trace.losses[3]!, `loss after 3 steps ${last} vs ${trace.losses[3]}`);
    } finally {
      await c.dispose();
    }
  });
}
