// `peft forward` end to end: logits (and the loss, given labels) written for the fixtures' batch
// files match transformers within the fixture tolerances, for every fixture model; bad batch files
// and output paths are one-line errors and nothing is written.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fromTypedArray, readSafetensors, toFloat32, writeSafetensors } from '../../../src/io/safetensors.js';
import { fixturePath, maxAbsDiff, readTensors } from '../../helpers/fixtures.js';
import { peft } from '../peft.js';

const tmp = mkdtempSync(join(tmpdir(), 'peft-forward-'));
process.on('exit', () => rmSync(tmp, { recursive: true, force: true }));

for (const name of ['gpt2', 'llama', 'bert']) {
  test(`${name}: peft forward writes transformers' logits and loss for the fixture batch`, async () => {
    const out = join(tmp, `${name}.safetensors`);
    const r = await peft([
      'forward',
      '--model',
      fixturePath('models', name),
      '--batch',
      fixturePath('models', name, 'batch.safetensors'),
      '--out',
      out,
      '--threads',
      '1',
    ]);
    assert.equal(r.code, 0, r.stderr);
    const got = await readSafetensors(out);
    const want = await readTensors('models', name, 'expected_outputs.safetensors');
    assert.deepEqual(got.get('logits')!.shape, want.get('logits')!.shape);
    const d = maxAbsDiff(toFloat32(got.get('logits')!), toFloat32(want.get('logits')!));
    assert.ok(d < 1e-4, `logits max abs diff ${d}`);
    const loss = toFloat32(got.get('loss')!)[0]!;
    const wantLoss = toFloat32(want.get('loss')!)[0]!;
    assert.ok(Math.abs(loss - wantLoss) / wantLoss < 1e-5, `loss ${loss} vs ${wantLoss}`);
  });
}

for (const [name, adapter] of [
  ['gpt2', 'lora_attn'],
  ['llama', 'ia3'],
] as const) {
  test(`${name} + ${adapter}: peft forward --adapter gives peft's logits, and --merged its merged_logits`, async () => {
    const want = await readTensors('adapters', name, adapter, 'expected_outputs.safetensors');
    for (const [flags, key] of [
      [[], 'logits'],
      [['--merged'], 'merged_logits'],
    ] as const) {
      const out = join(tmp, `${name}-${adapter}-${key}.safetensors`);
      const r = await peft([
        'forward',
        '--model',
        fixturePath('models', name),
        '--adapter',
        fixturePath('adapters', name, adapter),
        ...flags,
        '--batch',
        fixturePath('models', name, 'batch.safetensors'),
        '--out',
        out,
        '--threads',
        '1',
      ]);
      assert.equal(r.code, 0, r.stderr);
      const got = await readSafetensors(out);
      const d = maxAbsDiff(toFloat32(got.get('logits')!), toFloat32(want.get(key)!));
      assert.ok(d < 1e-4, `${key}: max abs diff ${d}`);
      const loss = toFloat32(got.get('loss')!)[0]!;
      const wantLoss = toFloat32(want.get('loss')!)[0]!;
      assert.ok(Math.abs(loss - wantLoss) / wantLoss < 1e-5, `loss ${loss} vs ${wantLoss}`);
    }
  });
}

test('peft forward: without labels only logits; bad batches and paths are errors before any write', async () => {
  const model = fixturePath('models', 'gpt2');
  const batch = await readTensors('models', 'gpt2', 'batch.safetensors');
  const noLabels = join(tmp, 'nolabels.safetensors');
  await writeSafetensors(noLabels, { input_ids: batch.get('input_ids')!, attention_mask: batch.get('attention_mask')! });
  const out = join(tmp, 'nolabels-out.safetensors');
  const ok = await peft(['forward', '--model', model, '--batch', noLabels, '--out', out, '--threads', '1']);
  assert.equal(ok.code, 0, ok.stderr);
  assert.deepEqual([...(await readSafetensors(out)).keys()], ['logits']);

  const floatIds = join(tmp, 'float-ids.safetensors');
  await writeSafetensors(floatIds, { input_ids: fromTypedArray(new Float32Array(6), [2, 3]) });
  const badMask = join(tmp, 'bad-mask.safetensors');
  await writeSafetensors(badMask, { input_ids: batch.get('input_ids')!, attention_mask: fromTypedArray(new BigInt64Array(4), [2, 2]) });
  const noIds = join(tmp, 'no-ids.safetensors');
  await writeSafetensors(noIds, { attention_mask: batch.get('attention_mask')! });
  const bigIds = join(tmp, 'big-ids.safetensors');
  await writeSafetensors(bigIds, { input_ids: fromTypedArray(BigInt64Array.of(1n, 100000n), [1, 2]) });
  const never = join(tmp, 'never.safetensors');
  const cases: [string[], RegExp][] = [
    [['--batch', floatIds], /must hold integers/],
    [['--batch', badMask], /attention_mask has shape \[2,2\] but input_ids has \[3,12\]/],
    [['--batch', noIds], /no input_ids tensor/],
    [['--batch', bigIds], /outside the model's vocabulary/],
    [['--batch', join(tmp, 'absent.safetensors')], /does not exist/],
    [['--batch', noLabels, '--out', tmp], /is a folder/],
    [['--batch', noLabels, '--out', join(tmp, 'no', 'such', 'dir.safetensors')], /does not exist/],
    [['--batch', noLabels, '--merged'], /--merged needs at least one --adapter/],
    [['--batch', noLabels, '--adapter', fixturePath('models', 'gpt2')], /not an adapter folder/],
  ];
  const results = await Promise.all(cases.map(([args]) => peft(['forward', '--model', model, '--out', never, ...args])));
  results.forEach((r, i) => {
    assert.equal(r.code, 1, `${cases[i]![0].join(' ')}: ${r.stderr}`);
    assert.match(r.stderr, cases[i]![1]);
  });
  assert.equal(existsSync(never), false);
});
