// `peft merge` end to end: the merged folder of the gpt2 LoRA fixture holds peft's merged weights
// (fixture merged/ within 1e-5) and tokenizer files, and `peft forward` on it gives the recorded
// merged_logits (IA3 too); methods that cannot merge and occupied --out folders fail before any write.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { readSafetensors, toFloat32 } from '../../../src/io/safetensors.js';
import { fixturePath, maxAbsDiff, readTensors } from '../../helpers/fixtures.js';
import { peft } from '../peft.js';

const tmp = mkdtempSync(join(tmpdir(), 'peft-merge-'));
process.on('exit', () => rmSync(tmp, { recursive: true, force: true }));

async function forwardLogits(modelDir: string, batchOf: string): Promise<{ logits: Float32Array; loss: number }> {
  const out = join(tmp, `fwd-${Math.random().toString(36).slice(2)}.safetensors`);
  const r = await peft([
    'forward',
    '--model',
    modelDir,
    '--batch',
    fixturePath('models', batchOf, 'batch.safetensors'),
    '--out',
    out,
    '--threads',
    '1',
  ]);
  assert.equal(r.code, 0, r.stderr);
  const t = await readSafetensors(out);
  return { logits: toFloat32(t.get('logits')!), loss: toFloat32(t.get('loss')!)[0]! };
}

test("gpt2 + lora_attn: peft merge writes peft's merged weights, and peft forward on them gives merged_logits", async () => {
  const out = join(tmp, 'gpt2-lora-merged');
  const r = await peft([
    'merge',
    '--model',
    fixturePath('models', 'gpt2'),
    '--adapter',
    fixturePath('adapters', 'gpt2', 'lora_attn'),
    '--out',
    out,
  ]);
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stderr, /merged the LORA adapter/);
  for (const f of [
    'config.json',
    'generation_config.json',
    'model.safetensors',
    'tokenizer.json',
    'tokenizer_config.json',
    'vocab.json',
    'merges.txt',
  ])
    assert.ok(existsSync(join(out, f)), f);
  // Nothing is left beside --out: the folder was written under a temp name and renamed.
  assert.deepEqual(
    readdirSync(tmp).filter((f) => f.startsWith('.')),
    [],
  );

  const got = await readSafetensors(join(out, 'model.safetensors'));
  const want = await readTensors('adapters', 'gpt2', 'lora_attn', 'merged', 'model.safetensors');
  assert.deepEqual([...got.keys()].sort(), [...want.keys()].sort());
  for (const [name, w] of want) {
    const g = got.get(name)!;
    assert.deepEqual(g.shape, w.shape, name);
    const d = maxAbsDiff(toFloat32(g), toFloat32(w));
    assert.ok(d <= 1e-5, `${name}: max abs diff ${d}`);
  }
  const merged = JSON.parse(readFileSync(join(out, 'config.json'), 'utf8')) as Record<string, unknown>;
  assert.equal(merged.model_type, 'gpt2');

  const expected = await readTensors('adapters', 'gpt2', 'lora_attn', 'expected_outputs.safetensors');
  const { logits, loss } = await forwardLogits(out, 'gpt2');
  const d = maxAbsDiff(logits, toFloat32(expected.get('merged_logits')!));
  assert.ok(d < 1e-4, `merged_logits: max abs diff ${d}`);
  const wantLoss = toFloat32(expected.get('loss')!)[0]!;
  assert.ok(Math.abs(loss - wantLoss) / wantLoss < 1e-5, `loss ${loss} vs ${wantLoss}`);
});

test('llama + ia3: the merged folder reproduces merged_logits', async () => {
  const out = join(tmp, 'llama-ia3-merged');
  const r = await peft([
    'merge',
    '--model',
    fixturePath('models', 'llama'),
    '--adapter',
    fixturePath('adapters', 'llama', 'ia3'),
    '--out',
    out,
  ]);
  assert.equal(r.code, 0, r.stderr);
  const expected = await readTensors('adapters', 'llama', 'ia3', 'expected_outputs.safetensors');
  const { logits } = await forwardLogits(out, 'llama');
  const d = maxAbsDiff(logits, toFloat32(expected.get('merged_logits')!));
  assert.ok(d < 1e-4, `merged_logits: max abs diff ${d}`);
});

test('--max-shard-size writes a sharded folder that peft info and peft forward read', async () => {
  const out = join(tmp, 'llama-lora-sharded');
  const adapter = fixturePath('adapters', 'llama', 'lora_all_linear_rslora');
  const r = await peft([
    'merge',
    '--model',
    fixturePath('models', 'llama'),
    '--adapter',
    adapter,
    '--out',
    out,
    '--max-shard-size',
    '200KB',
  ]);
  assert.equal(r.code, 0, r.stderr);
  const shards = readdirSync(out).filter((f) => /^model-\d+-of-\d+\.safetensors$/.test(f));
  assert.ok(shards.length > 1, `shards: ${readdirSync(out).join(', ')}`);
  assert.ok(existsSync(join(out, 'model.safetensors.index.json')));
  const info = await peft(['info', out, '--json']);
  assert.equal(info.code, 0, info.stderr);
  const parsed = JSON.parse(info.stdout) as { weights: { parameters: number; files: string[] } };
  assert.equal(parsed.weights.parameters, 145_728);
  assert.equal(parsed.weights.files.length, shards.length);
  const expected = await readTensors('adapters', 'llama', 'lora_all_linear_rslora', 'expected_outputs.safetensors');
  const { logits } = await forwardLogits(out, 'llama');
  const d = maxAbsDiff(logits, toFloat32(expected.get('merged_logits')!));
  assert.ok(d < 1e-4, `merged_logits: max abs diff ${d}`);
});

test('peft merge: methods that cannot merge and occupied or wrong --out folders are one-line errors before any write', async () => {
  const gpt2 = fixturePath('models', 'gpt2');
  const lora = fixturePath('adapters', 'gpt2', 'lora_attn');
  const never = join(tmp, 'never');
  const busy = join(tmp, 'busy');
  mkdirSync(busy);
  writeFileSync(join(busy, 'keep.txt'), 'mine');
  const cases: [string[], RegExp][] = [
    [
      ['--adapter', fixturePath('adapters', 'gpt2', 'prefix_tuning'), '--out', never],
      /prefix tuning \(PREFIX_TUNING\) adapter: .*nothing to merge.*--adapter DIR/,
    ],
    [
      ['--adapter', fixturePath('adapters', 'gpt2', 'prompt_tuning_random'), '--out', never],
      /prompt tuning \(PROMPT_TUNING\) adapter: .*nothing to merge/,
    ],
    [['--adapter', fixturePath('adapters', 'gpt2', 'p_tuning_mlp'), '--out', never], /P-tuning \(P_TUNING\) adapter/],
    [['--adapter', fixturePath('adapters', 'gpt2', 'bn_seq'), '--out', never], /AdapterHub bottleneck adapter: .*non-linear block/],
    [
      ['--adapter', lora, '--out', busy],
      /--out .*busy holds other files \(keep\.txt\), which peft merge did not write; choose a new or empty folder/,
    ],
    [['--adapter', lora, '--out', busy, '--overwrite'], /--out .*busy holds other files \(keep\.txt\)/],
    [['--adapter', lora, '--out', fixturePath('adapters', 'gpt2', 'ia3')], /holds an adapter, which peft merge did not write/],
    [['--adapter', lora, '--out', fixturePath('models', 'llama')], /holds a model, which peft merge did not write/],
    [['--adapter', lora, '--out', gpt2], /is the base model folder/],
    [['--adapter', gpt2, '--out', never], /not an adapter folder/],
    [['--adapter', join(tmp, 'absent'), '--out', never], /is not a folder/],
  ];
  const results = await Promise.all(cases.map(([args]) => peft(['merge', '--model', gpt2, ...args])));
  results.forEach((r, i) => {
    assert.equal(r.code, 1, `${cases[i]![0].join(' ')}: ${r.stderr}`);
    assert.match(r.stderr, cases[i]![1]);
    assert.doesNotMatch(r.stderr, /internal error/);
  });
  const mismatch = await peft(['merge', '--model', fixturePath('models', 'llama'), '--adapter', lora, '--out', never]);
  assert.equal(mismatch.code, 1, mismatch.stderr);
  assert.match(mismatch.stderr, /does not fit/);
  assert.equal(existsSync(never), false);
  assert.deepEqual(readdirSync(busy), ['keep.txt']);

  // --overwrite replaces only an earlier merge's output
  const merged = join(tmp, 'merged');
  const first = await peft(['merge', '--model', gpt2, '--adapter', lora, '--out', merged]);
  assert.equal(first.code, 0, first.stderr);
  assert.ok(existsSync(join(merged, 'model.safetensors')));
  const again = await peft(['merge', '--model', gpt2, '--adapter', lora, '--out', merged]);
  assert.equal(again.code, 1, again.stderr);
  assert.match(again.stderr, /holds an earlier peft merge output; pass --overwrite to replace it/);
  const over = await peft(['merge', '--model', gpt2, '--adapter', lora, '--out', merged, '--overwrite']);
  assert.equal(over.code, 0, over.stderr);
  assert.ok(existsSync(join(merged, 'model.safetensors')));
  assert.deepEqual(
    readdirSync(tmp).filter((f) => f.startsWith('.')),
    [],
  );
});
