// AdaLoRA's rank allocator against peft 0.20 itself: fixtures-2026/adapters/qwen3/adalora_allocated
// was made by running peft's update_and_allocate(step) after loss.backward() for step 0..total_step
// (no optimizer step) from an adapter whose A, B and E the fixture generator drew from
// torch.Generator().manual_seed(case seed + 7) in sorted parameter-name order. The pruned rows of
// E are zero in the saved state, so the starting point is regenerated here by replaying torch's
// generator (src/nn/torch_rng.ts) and checked against every value peft kept; then our loss (task
// loss + orthogonal regularizer) must equal peft's logged loss at every step, and our allocator,
// fed our gradients, must arrive at peft's rank_pattern and masked E.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { readSafetensors, toFloat32 } from '../../../src/io/safetensors.js';
import { loadModel } from '../../../src/models/load.js';
import { TorchCpuGenerator } from '../../../src/nn/torch_rng.js';
import type { LinearTunerConfig } from '../../../src/tuners/linear_tuner/config.js';
import type { LinearTunerModel } from '../../../src/tuners/linear_tuner/model.js';
import { createAdapter } from '../../../src/tuners/load.js';
import { fixture2026Path, host } from '../../helpers/fixtures.js';
import { assertClose, type Batch, compile } from '../lora_support.js';

const MODEL = fixture2026Path('models', 'qwen3');
const DIR = fixture2026Path('adapters', 'qwen3', 'adalora_allocated');
const STD: Record<string, number> = { lora_A: 0.1, lora_B: 0.05, lora_E: 0.5 };

interface Entry {
  name: string;
  seed: number;
  adalora_allocation: { procedure: string; log: { step: number; loss: number }[]; rank_pattern: Record<string, boolean[]> };
}

test("qwen3/adalora_allocated: from peft's starting point, our loss and gradients drive our allocator to peft's rank_pattern", async () => {
  const manifest = JSON.parse(await readFile(fixture2026Path('MANIFEST.json'), 'utf8')) as { adapters: Entry[] };
  const entry = manifest.adapters.find((a) => a.name === 'qwen3/adalora_allocated')!;
  assert.match(entry.adalora_allocation.procedure, /update_and_allocate\(step\); grads cleared \(no optimizer step\)/);
  const config = JSON.parse(await readFile(join(DIR, 'adapter_config.json'), 'utf8')) as Record<string, unknown>;
  const base = await loadModel(MODEL);
  const m = (await createAdapter(
    base,
    { ...config, rank_pattern: null, inference_mode: false },
    { seed: 0 },
  )) as LinearTunerModel<LinearTunerConfig>;

  // The starting point: every trainable tensor from torch.Generator().manual_seed(seed + 7), sorted peft names.
  const peftName = (module: string, kind: string) => `base_model.model.${module}.${kind}.default`;
  const slots = [...m.modules].flatMap(([module, mod]) =>
    ['lora_A', 'lora_B', 'lora_E'].map((kind) => ({ name: peftName(module, kind), kind, t: mod.tensors.get(kind)! })),
  );
  slots.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  const gen = new TorchCpuGenerator(entry.seed + 7);
  for (const s of slots) s.t.data.set(gen.normal(s.t.data.length, 0, STD[s.kind]!));
  const after = await readSafetensors(join(DIR, 'trainable_state.safetensors'));
  let pruned = 0;
  for (const s of slots) {
    const want = toFloat32(after.get(s.name)!);
    if (s.kind !== 'lora_E') {
      assertClose(s.t.data, want, 1e-6, 1e-5, `${s.name} as peft drew it`);
      continue;
    }
    const kept = want.map((x, i) => (x === 0 ? s.t.data[i]! : x));
    pruned += want.filter((x) => x === 0).length;
    assertClose(s.t.data, kept, 1e-6, 1e-5, `${s.name}: the entries peft kept`);
  }
  assert.equal(pruned, 36 - 18, 'peft pruned from 6 x init_r 6 to 6 x target_r 3');

  // Replay: loss and gradients at each step, then the allocator, without optimizer steps.
  const raw = await readSafetensors(join(MODEL, 'batch.safetensors'));
  const batch: Batch = {
    input_ids: host(raw.get('input_ids')!),
    attention_mask: host(raw.get('attention_mask')!),
    labels: host(raw.get('labels')!),
  };
  const c = await compile(m, batch, { grads: true });
  try {
    for (const { step, loss } of entry.adalora_allocation.log) {
      const params = m.parameters();
      const r = await c.run(batch, params);
      const got = r.loss!.data[0] as number;
      assert.ok(Math.abs(got - loss) <= 1e-5 * Math.abs(loss), `step ${step}: loss ${got} vs peft's ${loss}`);
      const grads = new Map([...params.keys()].map((n) => [n, r[`grad:${n}`]!.data as Float32Array]));
      m.afterOptimizerStep(step, grads);
    }
  } finally {
    await c.dispose();
  }
  const rankPattern = (m.config as unknown as { rankPattern: Record<string, boolean[]> }).rankPattern;
  assert.deepEqual(rankPattern, config.rank_pattern);
  for (const s of slots.filter((x) => x.kind === 'lora_E'))
    assertClose(s.t.data, toFloat32(after.get(s.name)!), 1e-6, 1e-5, `${s.name} after allocation`);
});
