// `peft forward` reproduces the 2026 decoder fixture folders end to end: the base model's logits,
// loss and (with --hidden-states) every hidden state, and with --adapter [--merged] the DoRA
// adapter's logits and merged logits, everything read from the folders' config.json.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { readSafetensors, toBigInt64, toFloat32 } from '../../../../src/io/safetensors.js';
import { DECODERS_2026, comparedPositions } from '../../../helpers/decoders.js';
import { fixture2026Path } from '../../../helpers/fixtures.js';
import { assertClose } from '../../../tuners/lora_support.js';
import { peft } from '../../peft.js';

const tmp = mkdtempSync(join(tmpdir(), 'peft-forward26-'));
process.on('exit', () => rmSync(tmp, { recursive: true, force: true }));

function close(got: Float32Array, want: Float32Array, keep: (i: number) => boolean, what: string): void {
  const idx = [...want.keys()].filter(keep);
  assertClose(
    Float32Array.from(idx, (i) => got[i]!),
    Float32Array.from(idx, (i) => want[i]!),
    1e-4,
    1e-4,
    what,
  );
}

for (const name of Object.keys(DECODERS_2026)) {
  test(`${name}: peft forward [--hidden-states] [--adapter] [--merged] reproduces the fixture folder`, async () => {
    const model = fixture2026Path('models', name);
    const batchFile = join(model, 'batch.safetensors');
    const mask = toBigInt64((await readSafetensors(batchFile)).get('attention_mask')!);
    const run = async (extra: string[], out: string) => {
      const r = await peft(['forward', '--model', model, '--batch', batchFile, '--out', out, '--threads', '1', ...extra]);
      assert.equal(r.code, 0, r.stderr);
      return readSafetensors(out);
    };
    const want = await readSafetensors(join(model, 'expected_outputs.safetensors'));
    const got = await run(['--hidden-states'], join(tmp, `${name}.safetensors`));
    for (const [key, t] of want) {
      if (key.startsWith('generate.')) continue;
      assert.ok(got.has(key), `${key} written`);
      assert.deepEqual(got.get(key)!.shape, t.shape, key);
      if (key === 'loss') {
        assert.ok(Math.abs(toFloat32(got.get(key)!)[0]! - toFloat32(t)[0]!) <= 1e-5 * toFloat32(t)[0]!, 'loss');
      } else close(toFloat32(got.get(key)!), toFloat32(t), comparedPositions(name, mask, t.shape[2]!), `${name} ${key}`);
    }
    const adapter = fixture2026Path('adapters', name, 'lora_dora');
    const wantA = await readSafetensors(join(adapter, 'expected_outputs.safetensors'));
    for (const [flags, key] of [
      [[], 'logits'],
      [['--merged'], 'merged_logits'],
    ] as const) {
      const out = await run(['--adapter', adapter, ...flags], join(tmp, `${name}-${key}.safetensors`));
      close(
        toFloat32(out.get('logits')!),
        toFloat32(wantA.get(key)!),
        comparedPositions(name, mask, wantA.get(key)!.shape[2]!),
        `${name}/lora_dora ${key}`,
      );
    }
  });
}
