// Adapter compression on save: lora_A/lora_B stored int8 (per row, per block) or NF4, loaded back as
// exactly the dequantized values, smaller on disk by the expected factor, the measured output drift
// recorded (and equal to the drift of the loaded adapter), and refused loudly by a peft-style config.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { readSafetensors } from '../../../src/io/safetensors.js';
import { loadModel } from '../../../src/models/load.js';
import { COMPRESSION_METADATA_KEY, LoraModel, compressionSpec, parseCompressionReport } from '../../../src/tuners/lora/index.js';
import { getPeftModel } from '../../../src/tuners/load.js';
import { roundTrip } from '../../../src/tuners/lora/compress.js';
import { adapterMetadata, decompressAdapterFolder } from '../../../src/tuners/lora/save.js';
import { loraConfigFromJson } from '../../../src/tuners/lora/config.js';
import { PeftConfigError } from '../../../src/tuners/types.js';
import { fixturePath, maxAbsDiff } from '../../helpers/fixtures.js';

const tmp = mkdtempSync(join(tmpdir(), 'peft-compress-'));
process.on('exit', () => rmSync(tmp, { recursive: true, force: true }));

const size = (dir: string) => statSync(join(dir, 'adapter_model.safetensors')).size;

test('int8-row, int8-block and nf4 adapters load back as their dequantized values, smaller and with the recorded drift', async () => {
  const base = await loadModel(fixturePath('models', 'llama'));
  const m = await getPeftModel(
    base,
    {
      r: 8,
      loraAlpha: 16,
      initLoraWeights: false,
      targetModules: ['q_proj', 'k_proj', 'v_proj', 'o_proj', 'gate_proj', 'up_proj', 'down_proj'],
    },
    { seed: 1 },
  );
  const plain = join(tmp, 'plain');
  await m.savePretrained(plain);
  const drifts: Record<string, number> = {};
  for (const [method, minRatio, maxRatio] of [
    ['int8-row', 2.5, 4],
    ['int8-block', 3.5, 4],
    ['nf4', 6, 8],
  ] as const) {
    const dir = join(tmp, method);
    await m.savePretrained(dir, { compression: method });
    assert.ok(size(dir) < size(plain) / 2, `${method}: ${size(dir)} bytes vs ${size(plain)}`);
    const cfg = JSON.parse(readFileSync(join(dir, 'adapter_config.json'), 'utf8')) as Record<string, unknown>;
    assert.equal((cfg.compression as { method: string }).method, method);
    // Python peft's LoraConfig has no "compression" field: this config is refused, not half-loaded
    assert.throws(() => loraConfigFromJson(cfg), PeftConfigError);
    const keys = [...(await readSafetensors(join(dir, 'adapter_model.safetensors'))).keys()];
    assert.ok(
      keys.every((k) => !/lora_[AB]\.weight$/.test(k)),
      'no compressed tensor is stored under its peft key',
    );
    const report = parseCompressionReport((await adapterMetadata(dir))![COMPRESSION_METADATA_KEY]!, dir);
    assert.equal(report.tensors, 2 * 7 * 2);
    // bytes of the LoRA matrices themselves (the file also holds a header with every name)
    const ratio = report.float32_bytes / report.stored_bytes;
    assert.ok(ratio > minRatio && ratio < maxRatio, `${method}: ${ratio.toFixed(2)}x smaller`);
    assert.ok(report.max_abs_logit_diff! > 0 && report.max_abs_logit_diff! < 1, `${method}: drift ${report.max_abs_logit_diff}`);
    drifts[method] = report.max_abs_logit_diff!;

    // loading gives exactly what the drift was measured with: the round trip of every LoRA matrix
    const back = await LoraModel.fromPretrained(await loadModel(fixturePath('models', 'llama')), dir);
    const spec = compressionSpec(method);
    for (const [name, t] of m.parameters()) {
      const u = back.parameters().get(name)!.data;
      assert.deepEqual(u, roundTrip(t, spec), name);
      assert.ok(maxAbsDiff(u, t.data) > 0, `${name} is stored compressed`);
    }

    // peft decompress: the standard folder loads to the same values and is what peft reads
    const std = join(tmp, `${method}-std`);
    await decompressAdapterFolder(dir, std);
    const cfg2 = JSON.parse(readFileSync(join(std, 'adapter_config.json'), 'utf8')) as Record<string, unknown>;
    assert.equal(cfg2.compression, undefined);
    assert.deepEqual(readFileSync(join(std, 'adapter_config.json'), 'utf8'), readFileSync(join(plain, 'adapter_config.json'), 'utf8'));
    const again = await LoraModel.fromPretrained(await loadModel(fixturePath('models', 'llama')), std);
    for (const [name, t] of back.parameters()) assert.deepEqual(again.parameters().get(name)!.data, t.data, name);
  }
  assert.ok(drifts.nf4! > drifts['int8-block']!, `nf4 drift ${drifts.nf4} vs int8-block ${drifts['int8-block']}`);
  await assert.rejects(m.savePretrained(join(tmp, 'bad'), { compression: 'int4' as 'nf4' }), PeftConfigError);
});
