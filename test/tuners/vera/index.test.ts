// VeRA's shared projections as peft makes them: torch.Generator().manual_seed(projection_prng_key)
// and _kaiming_init of vera_A [r, max in] then vera_B [max out, r], replayed from torch's CPU
// generator (src/nn/torch_rng.ts). A new adapter gets exactly the vera_A/vera_B that peft saved in
// fixtures-2026/adapters/qwen3/vera (same key), so an adapter saved with save_projection=false (no
// projections in the file, peft regenerates them) loads with peft's logits, and saving with
// save_projection=false writes no projections.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { cp, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { readSafetensors, toFloat32, writeSafetensors } from '../../../src/io/safetensors.js';
import { loadModel } from '../../../src/models/load.js';
import { createAdapter, loadAdapter } from '../../../src/tuners/load.js';
import type { LinearTunerConfig } from '../../../src/tuners/linear_tuner/config.js';
import type { LinearTunerModel } from '../../../src/tuners/linear_tuner/model.js';
import { fixture2026Path, host, inTempDir, type Batch } from '../../helpers/fixtures.js';
import { runAdapted } from '../adapted_run.js';
import { assertClose } from '../lora_support.js';

const qwen3 = fixture2026Path('models', 'qwen3');
const VERA = fixture2026Path('adapters', 'qwen3', 'vera');

async function batch(): Promise<Batch> {
  const b = await readSafetensors(join(qwen3, 'batch.safetensors'));
  return { input_ids: host(b.get('input_ids')!), attention_mask: host(b.get('attention_mask')!), labels: host(b.get('labels')!) };
}

test("a new VeRA adapter's projections are peft's for the same projection_prng_key; another key gives others", async () => {
  const config = JSON.parse(await readFile(join(VERA, 'adapter_config.json'), 'utf8'));
  const saved = await readSafetensors(join(VERA, 'adapter_model.safetensors'));
  const m = (await createAdapter(
    await loadModel(qwen3),
    { ...config, inference_mode: false },
    { seed: 4 },
  )) as LinearTunerModel<LinearTunerConfig>;
  const state = m.stateDict();
  for (const k of ['base_model.vera_A', 'base_model.vera_B']) {
    assert.deepEqual(state.get(k)!.shape, saved.get(k)!.shape, k);
    assert.deepEqual(state.get(k)!.data, toFloat32(saved.get(k)!), `${k} as peft drew it, bit for bit`);
  }
  const other = (await createAdapter(
    await loadModel(qwen3),
    { ...config, projection_prng_key: 124 },
    { seed: 4 },
  )) as LinearTunerModel<LinearTunerConfig>;
  assert.notDeepEqual(other.stateDict().get('base_model.vera_A')!.data, state.get('base_model.vera_A')!.data);
});

test("save_projection=false: loads with peft's logits (projections regenerated), and saves without them", async () => {
  const expected = toFloat32((await readSafetensors(join(VERA, 'expected_outputs.safetensors'))).get('logits')!);
  const b = await batch();
  await inTempDir('peft-vera-', async (tmp) => {
    // peft's folder as save_projection=False would have written it: no vera_A / vera_B.
    const dir = join(tmp, 'noproj');
    await cp(VERA, dir, { recursive: true });
    const config = JSON.parse(await readFile(join(dir, 'adapter_config.json'), 'utf8'));
    await writeFile(join(dir, 'adapter_config.json'), JSON.stringify({ ...config, save_projection: false }));
    const tensors = await readSafetensors(join(VERA, 'adapter_model.safetensors'));
    for (const k of ['base_model.vera_A', 'base_model.vera_B']) tensors.delete(k);
    await writeSafetensors(join(dir, 'adapter_model.safetensors'), tensors, { format: 'pt' });
    const adapted = await loadAdapter(await loadModel(qwen3), dir);
    const out = await runAdapted(adapted, b);
    assertClose(out.logits!.data as Float32Array, expected, 1e-4, 1e-4, 'save_projection=false logits');
    const again = join(tmp, 'resaved');
    await (adapted as LinearTunerModel<LinearTunerConfig>).savePretrained(again);
    const keys = [...(await readSafetensors(join(again, 'adapter_model.safetensors'))).keys()];
    assert.ok(!keys.some((k) => k.startsWith('base_model.vera_')), `no projections saved: ${keys.join(', ')}`);
    assert.equal(JSON.parse(await readFile(join(again, 'adapter_config.json'), 'utf8')).save_projection, false);
    const reloaded = await runAdapted(await loadAdapter(await loadModel(qwen3), again), b);
    assertClose(reloaded.logits!.data as Float32Array, out.logits!.data as Float32Array, 0, 0, 'reloaded');
  });
});
