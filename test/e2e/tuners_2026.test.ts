// The tuners of the 2026 fixture set on Qwen3 (peft 0.20.0): each saved adapter loads through
// loadAdapter and reproduces peft's logits (and loss where peft recorded one) on the model's batch,
// and merge_and_unload reproduces merged_logits. Every other qwen3 fixture folder either loads or
// is refused with a typed error that names what is not supported.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readdirSync } from 'node:fs';
import { readSafetensors, toFloat32, type RawTensor } from '../../src/io/safetensors.js';
import { loadModel } from '../../src/models/load.js';
import { PeftError } from '../../src/errors.js';
import { loadAdapter } from '../../src/tuners/load.js';
import { tunerOf } from '../../src/tuners/registry.js';
import { describe } from '../../src/cli/commands/info.js';
import { fixture2026Path, host, type Batch } from '../helpers/fixtures.js';
import { runAdapted, runBase } from '../tuners/adapted_run.js';

const read = (...parts: string[]): Promise<Map<string, RawTensor>> => readSafetensors(fixture2026Path(...parts));
const qwen3 = fixture2026Path('models', 'qwen3');

async function batch(): Promise<Batch> {
  const b = await read('models', 'qwen3', 'batch.safetensors');
  return { input_ids: host(b.get('input_ids')!), attention_mask: host(b.get('attention_mask')!), labels: host(b.get('labels')!) };
}

function assertClose(got: Float32Array, want: Float32Array, atol: number, rtol: number, what: string): void {
  assert.equal(got.length, want.length, `${what}: length`);
  let worst = 0;
  let at = -1;
  for (let i = 0; i < got.length; i++) {
    const excess = Math.abs(got[i]! - want[i]!) - (atol + rtol * Math.abs(want[i]!));
    if (excess > worst) [worst, at] = [excess, i];
  }
  assert.ok(worst === 0, `${what}: element ${at} is ${got[at]} vs ${want[at]} (beyond the tolerance by ${worst})`);
}

const CASES = ['loha', 'lokr', 'vera', 'adalora_init', 'adalora_allocated', 'oft', 'boft', 'ln_tuning', 'ia3'];

for (const name of CASES) {
  test(`qwen3/${name}: peft 0.20's logits${name.startsWith('adalora') ? '' : ', loss'} and merged_logits`, async () => {
    const dir = fixture2026Path('adapters', 'qwen3', name);
    const expected = await read('adapters', 'qwen3', name, 'expected_outputs.safetensors');
    const b = await batch();
    const adapted = await loadAdapter(await loadModel(qwen3), dir);
    const out = await runAdapted(adapted, b);
    assertClose(out.logits!.data as Float32Array, toFloat32(expected.get('logits')!), 1e-4, 1e-4, `${name} logits`);
    if (expected.has('loss') && !name.startsWith('adalora')) {
      const want = toFloat32(expected.get('loss')!)[0]!;
      const got = (out.loss!.data as Float32Array)[0]!;
      assert.ok(Math.abs(got - want) <= 1e-5 * Math.abs(want), `${name} loss ${got} vs ${want}`);
    }
    // peft info names the method and counts what trains (VeRA's saved projections are frozen)
    const info = await describe(dir, { model: qwen3 });
    assert.ok(info.kind === 'adapter' && info.method === tunerOf(adapted.peftType)!.label, `${name}: info method`);
    const trained = [...adapted.parameters().values()].reduce((n, t) => n + t.data.length, 0);
    if (info.kind === 'adapter') assert.equal(info.trainable_parameters, trained, `${name}: info trainable parameters`);
    assert.ok(adapted.mergeAndUnload, `${name} merges`);
    const merged = await adapted.mergeAndUnload();
    const m = await runBase(merged, b);
    assertClose(m.logits!.data as Float32Array, toFloat32(expected.get('merged_logits')!), 1e-4, 1e-4, `${name} merged_logits`);
  });
}

test('every qwen3 fixture adapter folder loads, or is refused with a typed error naming what is missing', async () => {
  const refused: string[] = [];
  for (const name of readdirSync(fixture2026Path('adapters', 'qwen3')).sort()) {
    const dir = fixture2026Path('adapters', 'qwen3', name);
    if (!readdirSync(dir).includes('adapter_config.json')) continue;
    try {
      const a = await loadAdapter(await loadModel(qwen3), dir);
      assert.ok(a.parameters().size > 0 || a.peftType === 'LN_TUNING', name);
    } catch (e) {
      assert.ok(e instanceof PeftError, `${name}: ${(e as Error).stack}`);
      assert.ok((e as Error).message.length > 20, `${name}: ${(e as Error).message}`);
      refused.push(`${name}: ${(e as Error).message}`);
    }
  }
  // What remains refused is LoRA settings named in the message (or a folder that is not an adapter).
  for (const r of refused) assert.match(r, /^lora_\w+: .*(lora_bias|trainable_token_indices|not a linear layer|embed)/, r);
});
