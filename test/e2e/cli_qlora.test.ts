// QLoRA from the command line: `peft train --method qlora` on the llama fixture records its 4-bit
// base in the adapter; `peft merge` writes the dequantized model by default and a 4-bit one with
// --quantize nf4; `peft compress` / `peft info` / `peft decompress` round the adapter through int8.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { loadModel } from '../../src/models/load.js';
import { fixturePath } from '../helpers/fixtures.js';
import { writeSwapTask } from '../train/synthetic.js';
import { peft } from '../cli/peft.js';

const tmp = mkdtempSync(join(tmpdir(), 'peft-cli-qlora-'));
process.on('exit', () => rmSync(tmp, { recursive: true, force: true }));
const llama = fixturePath('models', 'llama');
const json = (p: string) => JSON.parse(readFileSync(p, 'utf8')) as Record<string, unknown>;

test('peft train --method qlora, then merge (dequantized and --quantize nf4), compress, info, decompress', async () => {
  const task = await writeSwapTask();
  const adapter = join(tmp, 'adapter');
  const t = await peft([
    'train',
    '--model',
    llama,
    '--data',
    task.train,
    '--out',
    adapter,
    '--method',
    'qlora',
    '--gradient-checkpointing',
    '--steps',
    '3',
    '--batch',
    '4',
    '--max-len',
    '32',
    '--lr',
    '1e-2',
    '--no-eval-at-start',
    '--threads',
    '2',
    '--target',
    'q_proj,v_proj',
  ]);
  assert.equal(t.code, 0, t.stderr);
  assert.match(t.stderr, /base held 4-bit \(nf4, double quantization\)/);

  const info = await peft(['info', adapter, '--model', llama, '--json']);
  assert.equal(info.code, 0, info.stderr);
  assert.deepEqual(JSON.parse(info.stdout).base_quantization, { bits: 4, type: 'nf4', double_quant: true, block_size: 64 });

  const full = join(tmp, 'merged');
  const m1 = await peft(['merge', '--model', llama, '--adapter', adapter, '--out', full]);
  assert.equal(m1.code, 0, m1.stderr);
  assert.match(m1.stderr, /dequantized and the adapter merged in float32/);
  assert.equal(json(join(full, 'config.json')).quantization_config, undefined);
  assert.equal((await loadModel(full)).weights.quantizedNames().length, 0);

  const four = join(tmp, 'merged-nf4');
  const m2 = await peft(['merge', '--model', llama, '--adapter', adapter, '--out', four, '--quantize', 'nf4']);
  assert.equal(m2.code, 0, m2.stderr);
  assert.match(m2.stderr, /re-quantized to nf4/);
  assert.equal((json(join(four, 'config.json')).quantization_config as Record<string, unknown>).bnb_4bit_quant_type, 'nf4');
  assert.ok((await loadModel(four)).weights.quantizedNames().length > 0);

  const packed = join(tmp, 'compressed');
  const c = await peft(['compress', '--adapter', adapter, '--out', packed, '--method', 'int8-block', '--model', llama]);
  assert.equal(c.code, 0, c.stderr);
  assert.match(c.stdout, /compressed 8 LoRA matrices .* with int8-block, blocks of 64: .*x\); output drift max \|logit diff\| /);
  const ci = await peft(['info', packed, '--model', llama]);
  assert.equal(ci.code, 0, ci.stderr);
  assert.match(ci.stdout, /compression +int8-block \(blocks of 64\): 8 LoRA matrices .* smaller/);
  assert.match(ci.stdout, /output drift +max \|logit diff\| /);
  assert.match(ci.stdout, /trained on +a 4-bit base \(nf4/);
  const plainInfo = JSON.parse((await peft(['info', adapter, '--model', llama, '--json'])).stdout) as { stored_parameters: number };
  assert.equal(
    JSON.parse((await peft(['info', packed, '--model', llama, '--json'])).stdout).stored_parameters,
    plainInfo.stored_parameters,
  );
  // a compressed adapter merges like the plain one
  const m3 = await peft(['merge', '--model', llama, '--adapter', packed, '--out', join(tmp, 'merged-from-compressed')]);
  assert.equal(m3.code, 0, m3.stderr);

  const std = join(tmp, 'decompressed');
  const d = await peft(['decompress', '--adapter', packed, '--out', std]);
  assert.equal(d.code, 0, d.stderr);
  assert.equal(json(join(std, 'adapter_config.json')).compression, undefined);
  const again = await peft(['decompress', '--adapter', std, '--out', join(tmp, 'x')]);
  assert.equal(again.code, 1);
  assert.match(again.stderr, /is not a compressed adapter/);
});

test('QLoRA flags are checked before anything is written', async () => {
  const full = await peft([
    'train',
    '--model',
    llama,
    '--data',
    'nope.jsonl',
    '--out',
    join(tmp, 'f'),
    '--method',
    'full',
    '--quantize',
    'nf4',
  ]);
  assert.equal(full.code, 1);
  assert.match(full.stderr, /--quantize freezes the base in 4 bits/);
  const m = await peft([
    'merge',
    '--model',
    fixturePath('models', 'gpt2'),
    '--adapter',
    fixturePath('adapters', 'gpt2', 'lora_attn'),
    '--out',
    join(tmp, 'm'),
    '--quantize',
    'nf4',
  ]);
  assert.equal(m.code, 1);
  assert.match(m.stderr, /was not trained on a 4-bit base/);
});
