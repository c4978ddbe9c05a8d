// `peft forward --adapter NAME=DIR ... --row-adapters a,__base__,b`: one forward over a
// mixed-adapter batch; each row equals peft's logits for that row's adapter alone (the fixtures'
// expected outputs), and bad row lists are one-line errors with nothing written.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { readSafetensors, toFloat32 } from '../../../../src/io/safetensors.js';
import { readFileSync } from 'node:fs';
import { fixture2026Path, fixturePath, maxAbsDiff, readTensors } from '../../../helpers/fixtures.js';
import { peft } from '../../peft.js';

const tmp = mkdtempSync(join(tmpdir(), 'peft-forward-mixed-'));
process.on('exit', () => rmSync(tmp, { recursive: true, force: true }));
const model = fixturePath('models', 'llama');
const batch = fixturePath('models', 'llama', 'batch.safetensors');

test('llama: peft forward --row-adapters gives each row the logits of its own adapter (peft reference)', async () => {
  const out = join(tmp, 'mixed.safetensors');
  const r = await peft([
    'forward',
    '--model',
    model,
    '--adapter',
    `attn=${fixturePath('adapters', 'llama', 'lora_attn')}`,
    '--adapter',
    `ia3=${fixturePath('adapters', 'llama', 'ia3')}`,
    '--row-adapters',
    'attn,__base__,ia3',
    '--batch',
    batch,
    '--out',
    out,
    '--threads',
    '1',
  ]);
  assert.equal(r.code, 0, r.stderr);
  const got = toFloat32((await readSafetensors(out)).get('logits')!);
  const per = got.length / 3;
  const refs = [
    toFloat32((await readTensors('adapters', 'llama', 'lora_attn', 'expected_outputs.safetensors')).get('logits')!),
    toFloat32((await readTensors('models', 'llama', 'expected_outputs.safetensors')).get('logits')!),
    toFloat32((await readTensors('adapters', 'llama', 'ia3', 'expected_outputs.safetensors')).get('logits')!),
  ];
  refs.forEach((ref, row) => {
    const d = maxAbsDiff(got.subarray(row * per, (row + 1) * per), ref.subarray(row * per, (row + 1) * per));
    assert.ok(d < 1e-4, `row ${row}: max abs diff ${d}`);
  });
});

test('peft forward --row-adapters: unknown names and wrong row counts are one-line errors, nothing written', async () => {
  const out = join(tmp, 'bad.safetensors');
  const attn = `attn=${fixturePath('adapters', 'llama', 'lora_attn')}`;
  for (const rows of ['attn,nope,attn', 'attn,__base__', 'attn,,attn']) {
    const r = await peft(['forward', '--model', model, '--adapter', attn, '--row-adapters', rows, '--batch', batch, '--out', out]);
    assert.equal(r.code, 1, r.stderr);
    assert.match(r.stderr, /^error: .*--row-adapters/m);
    assert.equal(r.stderr.trim().split('\n').length, 1, r.stderr);
    assert.ok(!existsSync(out));
  }
  const dora = await peft([
    'forward',
    '--model',
    model,
    '--adapter',
    `d=${fixturePath('adapters', 'llama', 'lora_dora')}`,
    '--row-adapters',
    'd,d,d',
    '--batch',
    batch,
    '--out',
    out,
  ]);
  assert.equal(dora.code, 1);
  assert.match(dora.stderr, /^error: .*DoRA/m);
});

test('qwen3/mixed_batch: peft forward --adapter NAME=DIR --row-adapters reproduces peft adapter_names (logits and loss)', async () => {
  const dir = fixture2026Path('adapters', 'qwen3', 'mixed_batch');
  const spec = JSON.parse(readFileSync(join(dir, 'mixed_batch.json'), 'utf8')) as {
    adapters: Record<string, string>;
    adapter_names: string[];
  };
  const out = join(tmp, 'qwen3-mixed.safetensors');
  const r = await peft([
    'forward',
    '--model',
    fixture2026Path('models', 'qwen3'),
    ...Object.entries(spec.adapters).flatMap(([n, d]) => ['--adapter', `${n}=${join(dir, d)}`]),
    '--row-adapters',
    spec.adapter_names.join(','),
    '--batch',
    fixture2026Path('models', 'qwen3', 'batch.safetensors'),
    '--out',
    out,
    '--threads',
    '1',
  ]);
  assert.equal(r.code, 0, r.stderr);
  const got = await readSafetensors(out);
  const want = await readSafetensors(join(dir, 'expected_outputs.safetensors'));
  const g = toFloat32(got.get('logits')!);
  const w = toFloat32(want.get('logits')!);
  let worst = 0;
  for (let i = 0; i < w.length; i++) worst = Math.max(worst, Math.abs(g[i]! - w[i]!) - 1e-4 * Math.abs(w[i]!));
  assert.ok(worst <= 1e-4, `logits beyond atol+rtol 1e-4 by ${worst}`);
  const loss = toFloat32(got.get('loss')!)[0]!;
  const wantLoss = toFloat32(want.get('loss')!)[0]!;
  assert.ok(Math.abs(loss - wantLoss) / wantLoss < 1e-5, `loss ${loss} vs ${wantLoss}`);
});
