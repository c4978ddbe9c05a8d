// The bitsandbytes 4-bit layout on disk: writeQuantizedCheckpoint / `peft quantize` write what
// transformers saves for load_in_4bit models (bnb tensors, untouched full-precision tensors,
// config.json quantization_config), loadModel reads it back quantized with identical bytes and
// outputs, real bitsandbytes bytes load to bitsandbytes' dequantization, and misuse is a clean error.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Graph } from '../../src/graph/ir.js';
import { BuildContext } from '../../src/nn/context.js';
import { loadModel } from '../../src/models/load.js';
import type { PretrainedModel } from '../../src/models/types.js';
import { RuntimeSession } from '../../src/runtime/session.js';
import { type RawTensor, readSafetensors, toFloat32, writeSafetensors } from '../../src/io/safetensors.js';
import { dequantize4bit } from '../../src/quant/blockwise.js';
import { writeQuantizedCheckpoint } from '../../src/quant/save.js';
import { dumpRawJson, parseRawJson } from '../../src/quant/pyjson.js';
import { QuantizationError } from '../../src/quant/errors.js';
import { fixturePath, host, readTensors } from '../helpers/fixtures.js';
import { peft } from '../cli/peft.js';

const tmp = mkdtempSync(join(tmpdir(), 'peft-quant-save-'));
process.on('exit', () => rmSync(tmp, { recursive: true, force: true }));

async function logits(model: PretrainedModel, name: string): Promise<Float32Array> {
  const batch = await readTensors('models', name, 'batch.safetensors');
  const g = new Graph();
  const ctx = new BuildContext(g, model.weights);
  const out = model.forward(ctx, {
    inputIds: g.input('input_ids', 'int64', ['batch', 'seq']),
    attentionMask: g.input('attention_mask', 'int64', ['batch', 'seq']),
  });
  const s = await RuntimeSession.fromGraph(g, { logits: out.logits }, { threads: 1 });
  try {
    const r = await s.run({ input_ids: host(batch.get('input_ids')!), attention_mask: host(batch.get('attention_mask')!) });
    return r.logits!.data as Float32Array;
  } finally {
    await s.dispose();
  }
}

const NF4 = { bits: 4, type: 'nf4', doubleQuant: true, blockSize: 64 } as const;

function heldByName(m: PretrainedModel) {
  return new Map(m.weights.quantizedNames().map((n) => [n, m.weights.getQuantized(n)!.quant]));
}

test('llama: save in the bitsandbytes layout, load back quantized with the same bytes and logits', async () => {
  const src = fixturePath('models', 'llama');
  const m = await loadModel(src, { quantization: NF4 });
  const held = heldByName(m);
  const out = join(tmp, 'llama-nf4');
  const r = await writeQuantizedCheckpoint(src, out, { quantized: (n) => held.get(n), config: { type: 'nf4', doubleQuant: true } });
  assert.equal(r.quantizedTensors, 14);
  // per tensor: packed codes, one absmax code per 64 and a float32 per 256 blocks (~0.5157 B/param),
  // plus fixed tables (16 + 256 floats, the JSON) that only weigh on tiny tensors like these
  const params = [...held.values()].reduce((a, q) => a + q.shape[0]! * q.shape[1]!, 0);
  assert.equal(r.quantizedParams, params);

  const written = await readSafetensors(join(out, 'model.safetensors'));
  const original = await readSafetensors(join(src, 'model.safetensors'));
  for (const [name, t] of original) {
    if (held.has(name)) {
      const q = held.get(name)!;
      assert.equal(written.get(name)!.dtype, 'U8');
      assert.deepEqual(written.get(name)!.shape, [q.packed.length, 1]);
      for (const c of ['absmax', 'quant_map', 'nested_absmax', 'nested_quant_map', 'quant_state.bitsandbytes__nf4'])
        assert.ok(written.has(`${name}.${c}`), `${name}.${c}`);
    } else {
      assert.deepEqual(written.get(name), t, `${name} is copied unchanged`);
    }
  }
  assert.equal(written.size, original.size + 14 * 5);
  let dataBytes = 0;
  for (const n of held.keys()) for (const k of [n, `${n}.absmax`, `${n}.nested_absmax`]) dataBytes += written.get(k)!.data.byteLength;
  assert.ok(dataBytes / params > 0.5 && dataBytes / params < 0.52, `bytes per parameter ${dataBytes / params}`);

  const cfgText = readFileSync(join(out, 'config.json'), 'utf8');
  const srcText = readFileSync(join(src, 'config.json'), 'utf8');
  assert.equal(dumpRawJson(parseRawJson(srcText)) + '\n', srcText, 'a transformers config.json is reproduced byte for byte');
  assert.match(cfgText, /"rope_theta": 10000\.0/);
  assert.match(cfgText, /"llm_int8_threshold": 6\.0/);
  const cfg = JSON.parse(cfgText) as Record<string, unknown>;
  assert.deepEqual(cfg.quantization_config, {
    _load_in_4bit: true,
    _load_in_8bit: false,
    bnb_4bit_compute_dtype: 'float32',
    bnb_4bit_quant_storage: 'uint8',
    bnb_4bit_quant_type: 'nf4',
    bnb_4bit_use_double_quant: true,
    llm_int8_enable_fp32_cpu_offload: false,
    llm_int8_has_fp16_weight: false,
    llm_int8_skip_modules: null,
    llm_int8_threshold: 6,
    load_in_4bit: true,
    load_in_8bit: false,
    quant_method: 'bitsandbytes',
  });
  for (const f of ['tokenizer.json', 'vocab.json', 'merges.txt', 'generation_config.json'])
    assert.deepEqual(readFileSync(join(out, f)), readFileSync(join(src, f)), f);

  const back = await loadModel(out);
  assert.deepEqual(back.weights.quantizedNames().sort(), [...held.keys()].sort());
  for (const [n, q] of held) {
    const b = back.weights.getQuantized(n)!.quant;
    assert.deepEqual(b.packed, q.packed);
    assert.deepEqual(dequantize4bit(b), dequantize4bit(q), n);
  }
  assert.deepEqual(await logits(back, 'llama'), await logits(m, 'llama'));
  // the same quantization asked for again is fine; another one is refused
  await loadModel(out, { quantization: NF4 });
  await assert.rejects(loadModel(out, { quantization: { bits: 4, type: 'fp4' } }), QuantizationError);
  // refusing to write over the model folder itself
  await assert.rejects(
    writeQuantizedCheckpoint(src, src, { quantized: (n) => held.get(n), config: { type: 'nf4', doubleQuant: true } }),
    QuantizationError,
  );
});

test('bytes written by bitsandbytes itself (fixture as_dict) load to bitsandbytes dequantization', async () => {
  const ref = await readTensors('nf4', 'nf4_reference.safetensors');
  const src = fixturePath('models', 'llama');
  const out = join(tmp, 'llama-bnb');
  const m = await loadModel(src, { quantization: NF4 });
  const held = heldByName(m);
  await writeQuantizedCheckpoint(src, out, { quantized: (n) => held.get(n), config: { type: 'nf4', doubleQuant: true } });
  // q_proj is [64, 64] like fixture m0 and up_proj [128, 64] like m1: put bitsandbytes' tensors there
  const tensors = await readSafetensors(join(out, 'model.safetensors'));
  const swap: [string, string][] = [
    ['model.layers.0.self_attn.q_proj.weight', 'm0'],
    ['model.layers.1.mlp.up_proj.weight', 'm1'],
  ];
  const patched = new Map<string, RawTensor>(tensors);
  for (const [w, m] of swap) {
    patched.set(w, ref.get(`${m}.packed`)!);
    for (const c of ['absmax', 'quant_map', 'nested_absmax', 'nested_quant_map', 'quant_state.bitsandbytes__nf4'])
      patched.set(`${w}.${c}`, ref.get(`${m}.serialized.${c}`)!);
  }
  await writeSafetensors(join(out, 'model.safetensors'), patched, { format: 'pt' });
  const back = await loadModel(out);
  for (const [w, m] of swap) {
    const got = back.weights.dequantized(w).data;
    assert.deepEqual(
      new Uint32Array(got.buffer, got.byteOffset, got.length),
      new Uint32Array(toFloat32(ref.get(`${m}.dq.dequant`)!).slice().buffer),
    );
  }
  await logits(back, 'llama');
});

test('peft quantize: gpt2 end to end (Conv1D weights transposed as transformers does), and its errors', async () => {
  const src = fixturePath('models', 'gpt2');
  const out = join(tmp, 'gpt2-nf4');
  const r = await peft(['quantize', '--model', src, '--out', out]);
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, /quantized 8 linear weights .* to nf4 with double quantization/);
  const back = await loadModel(out);
  const direct = await loadModel(src, { quantization: NF4 });
  assert.deepEqual(back.weights.quantizedNames().sort(), direct.weights.quantizedNames().sort());
  const c = back.weights.getQuantized('transformer.h.0.attn.c_attn.weight')!;
  assert.equal(c.transposed, true);
  assert.deepEqual(c.quant.shape, [192, 64]);
  assert.deepEqual(c.shape, [64, 192]);
  assert.deepEqual(await logits(back, 'gpt2'), await logits(direct, 'gpt2'));

  const fp4 = join(tmp, 'gpt2-fp4');
  const r2 = await peft(['quantize', '--model', src, '--out', fp4, '--type', 'fp4', '--no-double-quant', '--skip-modules', 'c_proj']);
  assert.equal(r2.code, 0, r2.stderr);
  const b2 = await loadModel(fp4);
  assert.deepEqual(b2.weights.quantizedNames().sort(), [
    'transformer.h.0.attn.c_attn.weight',
    'transformer.h.0.mlp.c_fc.weight',
    'transformer.h.1.attn.c_attn.weight',
    'transformer.h.1.mlp.c_fc.weight',
  ]);
  assert.equal(b2.weights.getQuantized('transformer.h.0.mlp.c_fc.weight')!.quant.absmax.kind, 'plain');
  const cfg = JSON.parse(readFileSync(join(fp4, 'config.json'), 'utf8')) as { quantization_config: Record<string, unknown> };
  assert.equal(cfg.quantization_config.bnb_4bit_quant_type, 'fp4');
  assert.equal(cfg.quantization_config.bnb_4bit_use_double_quant, false);
  assert.deepEqual(cfg.quantization_config.llm_int8_skip_modules, ['c_proj']);

  const bad = join(tmp, 'bad');
  for (const args of [
    ['--type', 'int8'],
    ['--block-size', '100'],
  ]) {
    const e = await peft(['quantize', '--model', src, '--out', bad, ...args]);
    assert.equal(e.code, 1, e.stderr);
    assert.ok(!existsSync(bad));
  }
  const same = await peft(['quantize', '--model', out, '--out', out]);
  assert.equal(same.code, 1);
  assert.match(same.stderr, /^error: .*new folder/);
  assert.ok(readdirSync(out).includes('model.safetensors'));
});
