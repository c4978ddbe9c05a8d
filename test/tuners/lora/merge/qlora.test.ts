// Merging a QLoRA adapter: (a) into the dequantized base, a float32 model whose forward equals the
// QLoRA model's (within 1e-5); (b) re-quantized to NF4, which adds one rounding of W + s·BA and keeps
// untouched 4-bit weights bit for bit; both saved as model folders that loadModel reads back.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Graph } from '../../../../src/graph/ir.js';
import { loadModel } from '../../../../src/models/load.js';
import type { PretrainedModel } from '../../../../src/models/types.js';
import { BuildContext } from '../../../../src/nn/context.js';
import { RuntimeSession } from '../../../../src/runtime/session.js';
import { writeQuantizedCheckpoint } from '../../../../src/quant/save.js';
import { saveModelPretrained } from '../../../../src/tuners/lora/index.js';
import { getPeftModel } from '../../../../src/tuners/load.js';
import type { LoraModel } from '../../../../src/tuners/lora/model.js';
import { AdapterError } from '../../../../src/tuners/types.js';
import { fixturePath, host, maxAbsDiff, readTensors } from '../../../helpers/fixtures.js';

const tmp = mkdtempSync(join(tmpdir(), 'peft-qlora-merge-'));
process.on('exit', () => rmSync(tmp, { recursive: true, force: true }));
const NF4 = { bits: 4, type: 'nf4', doubleQuant: true, blockSize: 64 } as const;

async function logits(m: PretrainedModel | LoraModel): Promise<Float32Array> {
  const batch = await readTensors('models', 'llama', 'batch.safetensors');
  const base = 'base' in m ? m.base : m;
  const g = new Graph();
  const ctx = new BuildContext(g, base.weights);
  const out = m.forward(ctx, {
    inputIds: g.input('input_ids', 'int64', ['batch', 'seq']),
    attentionMask: g.input('attention_mask', 'int64', ['batch', 'seq']),
  });
  const s = await RuntimeSession.fromGraph(g, { logits: out.logits }, { threads: 2 });
  try {
    const feeds: Record<string, ReturnType<typeof host>> = {
      input_ids: host(batch.get('input_ids')!),
      attention_mask: host(batch.get('attention_mask')!),
    };
    if ('parameters' in m) for (const [k, t] of m.parameters()) feeds[k] = { dtype: 'float32', shape: t.shape, data: t.data };
    return (await s.run(feeds)).logits!.data as Float32Array;
  } finally {
    await s.dispose();
  }
}

const CONFIG = { r: 8, loraAlpha: 32, initLoraWeights: false, targetModules: ['q_proj', 'v_proj', 'down_proj'] } as const;

test('merge (a): dequantized full precision equals the QLoRA model; (b): re-quantized NF4 adds one rounding', async () => {
  const q = await loadModel(fixturePath('models', 'llama'), { quantization: NF4 });
  const m = await getPeftModel(q, { ...CONFIG, targetModules: [...CONFIG.targetModules] }, { seed: 2 });
  const want = await logits(m);

  const a = await m.mergeAndUnload();
  assert.deepEqual(a.weights.quantizedNames(), []);
  const da = maxAbsDiff(await logits(a), want);
  assert.ok(da <= 1e-5, `(a) differs from the QLoRA model by ${da}`);

  const b = await m.mergeAndUnload({ requantize: true });
  assert.deepEqual(b.weights.quantizedNames().sort(), q.weights.quantizedNames().sort());
  // untouched weights keep their 4-bit data; merged ones are new 4-bit data
  assert.equal(
    b.weights.getQuantized('model.layers.0.self_attn.o_proj.weight'),
    q.weights.getQuantized('model.layers.0.self_attn.o_proj.weight'),
  );
  assert.notDeepEqual(
    b.weights.getQuantized('model.layers.0.self_attn.q_proj.weight')!.quant.packed,
    q.weights.getQuantized('model.layers.0.self_attn.q_proj.weight')!.quant.packed,
  );
  const db = maxAbsDiff(await logits(b), want);
  assert.ok(db > 1e-5 && db < 0.5, `(b) differs from the QLoRA model by ${db}`);
  // the base and the adapter are left as they were
  assert.ok(maxAbsDiff(await logits(m), want) === 0);

  // both save as model folders loadModel reads back: (b) 4-bit with quantization_config, (a) float32
  for (const [label, model, diff] of [
    ['a', a, da],
    ['b', b, db],
  ] as const) {
    const dir = join(tmp, `merged-${label}`);
    await saveModelPretrained(model, dir);
    const config = JSON.parse(readFileSync(join(dir, 'config.json'), 'utf8')) as Record<string, unknown>;
    assert.equal(config.quantization_config !== undefined, label === 'b');
    const back = await loadModel(dir);
    assert.equal(back.weights.quantizedNames().length, label === 'b' ? q.weights.quantizedNames().length : 0);
    const d = maxAbsDiff(await logits(back), want);
    assert.ok(Math.abs(d - diff) <= 1e-5, `${label}: reloaded model differs by ${d}, in memory by ${diff}`);
  }
});

test('merge() in place over 4-bit weights is exact and unmerge() restores the 4-bit data', async () => {
  const q = await loadModel(fixturePath('models', 'llama'), { quantization: NF4 });
  const m = await getPeftModel(q, { ...CONFIG, targetModules: [...CONFIG.targetModules] }, { seed: 4 });
  const want = await logits(m);
  const before = q.weights.getQuantized('model.layers.1.mlp.down_proj.weight');
  await m.merge();
  assert.equal(q.weights.isQuantized('model.layers.1.mlp.down_proj.weight'), false);
  const d = maxAbsDiff(await logits(m), want);
  assert.ok(d <= 1e-5, `merged model differs by ${d}`);
  m.unmerge();
  assert.equal(q.weights.getQuantized('model.layers.1.mlp.down_proj.weight'), before);
  assert.equal(maxAbsDiff(await logits(m), want), 0);
});

test('a checkpoint saved 4-bit merges into a float32 folder without quantization_config; requantize needs a 4-bit base', async () => {
  const src = fixturePath('models', 'llama');
  const held = await loadModel(src, { quantization: NF4 });
  const quantDir = join(tmp, 'llama-nf4');
  await writeQuantizedCheckpoint(src, quantDir, {
    quantized: (n) => held.weights.getQuantized(n)?.quant ?? held.weights.getQuantized(`model.${n}`)?.quant,
    config: { type: 'nf4', doubleQuant: true },
  });
  const q = await loadModel(quantDir);
  assert.ok(q.weights.quantizedNames().length > 0);
  const m = await getPeftModel(q, { ...CONFIG, targetModules: [...CONFIG.targetModules] }, { seed: 6 });
  const out = join(tmp, 'merged-from-nf4');
  await saveModelPretrained(await m.mergeAndUnload(), out);
  const config = JSON.parse(readFileSync(join(out, 'config.json'), 'utf8')) as Record<string, unknown>;
  assert.equal(config.quantization_config, undefined);
  const back = await loadModel(out);
  assert.equal(back.weights.quantizedNames().length, 0);
  assert.ok(maxAbsDiff(await logits(back), await logits(m)) <= 1e-5);

  const f = await getPeftModel(await loadModel(src), { r: 4, targetModules: ['q_proj'] });
  await assert.rejects(f.mergeAndUnload({ requantize: true }), AdapterError);
});
