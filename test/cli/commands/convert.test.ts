// `peft convert` between mlx-lm and peft LoRA adapters: an mlx-lm folder written here from
// mlx-lm's layout (lora_a [in, r], lora_b [r, out], y = Wx + scale * x a b; adapter_config.json with
// fine_tune_type / num_layers / lora_parameters) converts to a peft adapter with the outputs of the
// same LoRA in peft form; peft -> mlx -> peft is exact; what mlx-lm cannot hold is refused in one line.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { cp, mkdir, readFile, writeFile } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { fromTypedArray, readSafetensors, toFloat32, writeSafetensors } from '../../../src/io/safetensors.js';
import { loadModel } from '../../../src/models/load.js';
import { PeftModel } from '../../../src/tuners/load.js';
import { fixtureBatch, fixturePath, inTempDir } from '../../helpers/fixtures.js';
import { assertClose, forwardOnce } from '../../tuners/lora_support.js';
import { peft } from '../peft.js';

function transpose(data: Float32Array, rows: number, cols: number): Float32Array {
  const out = new Float32Array(rows * cols);
  for (let i = 0; i < rows; i++) for (let j = 0; j < cols; j++) out[j * rows + i] = data[i * cols + j]!;
  return out;
}

const SRC = fixturePath('adapters', 'llama', 'lora_attn'); // r=8, lora_alpha=16: scaling 2

test('peft convert: mlx-lm -> peft gives the same LoRA; peft -> mlx -> peft is exact; refusals are one line', async () => {
  await inTempDir('peft-convert-', async (dir) => {
    const model = fixturePath('models', 'llama');
    const batch = await fixtureBatch('llama');
    const want = (await forwardOnce(await PeftModel.fromPretrained(await loadModel(model), SRC), batch)).logits;

    // An mlx-lm adapter holding the same LoRA, written from mlx-lm's conventions.
    const mlx = join(dir, 'mlx_in');
    await mkdir(mlx);
    const weights = new Map();
    for (const [k, t] of await readSafetensors(join(SRC, 'adapter_model.safetensors'))) {
      const m = /^base_model\.model\.(.*)\.lora_([AB])\.weight$/.exec(k)!;
      const [rows, cols] = t.shape as [number, number];
      weights.set(`${m[1]}.lora_${m[2]!.toLowerCase()}`, fromTypedArray(transpose(toFloat32(t), rows, cols), [cols, rows]));
    }
    await writeSafetensors(join(mlx, 'adapters.safetensors'), weights, { format: 'mlx' });
    await writeFile(
      join(mlx, 'adapter_config.json'),
      JSON.stringify({
        fine_tune_type: 'lora',
        model: 'models/llama',
        num_layers: -1,
        lora_parameters: { rank: 8, scale: 2.0, dropout: 0.05, keys: ['self_attn.q_proj', 'self_attn.v_proj'] },
        batch_size: 4,
        iters: 1000,
      }),
    );

    const fromMlx = join(dir, 'from_mlx');
    let r = await peft(['convert', '--from', 'mlx', '--to', 'peft', '--adapter', mlx, '--out', fromMlx]);
    assert.equal(r.code, 0, r.stderr);
    const cfg = JSON.parse(await readFile(join(fromMlx, 'adapter_config.json'), 'utf8'));
    assert.equal(cfg.r, 8);
    assert.equal(cfg.lora_alpha, 16);
    const got = (await forwardOnce(await PeftModel.fromPretrained(await loadModel(model), fromMlx), batch)).logits;
    assertClose(got, want, 0, 0, 'mlx-lm adapter converted to peft');

    // peft -> mlx: mlx-lm's layout and config; and back to peft, exactly.
    const toMlx = join(dir, 'to_mlx');
    r = await peft(['convert', '--from', 'peft', '--to', 'mlx', '--adapter', SRC, '--out', toMlx]);
    assert.equal(r.code, 0, r.stderr);
    const mcfg = JSON.parse(await readFile(join(toMlx, 'adapter_config.json'), 'utf8'));
    assert.deepEqual(mcfg.lora_parameters, { rank: 8, scale: 2, dropout: 0.05, keys: ['self_attn.q_proj', 'self_attn.v_proj'] });
    assert.equal(mcfg.fine_tune_type, 'lora');
    assert.equal(mcfg.num_layers, -1);
    const mw = await readSafetensors(join(toMlx, 'adapters.safetensors'));
    for (const [k, t] of weights) {
      assert.deepEqual(mw.get(k)!.shape, t.shape, k);
      assert.deepEqual(toFloat32(mw.get(k)!), toFloat32(t), k);
    }
    const back = join(dir, 'back');
    r = await peft(['convert', '--from', 'mlx', '--to', 'peft', '--adapter', toMlx, '--out', back]);
    assert.equal(r.code, 0, r.stderr);
    assertClose(
      (await forwardOnce(await PeftModel.fromPretrained(await loadModel(model), back), batch)).logits,
      want,
      0,
      0,
      'peft -> mlx -> peft',
    );

    // Refusals: DoRA has no mlx-lm LoRA form; --out must be new; a non-LoRA mlx folder.
    r = await peft([
      'convert',
      '--from',
      'peft',
      '--to',
      'mlx',
      '--adapter',
      fixturePath('adapters', 'llama', 'lora_dora'),
      '--out',
      join(dir, 'dora'),
    ]);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /^error: .*DoRA.*\n$/);
    assert.ok(!existsSync(join(dir, 'dora')));
    r = await peft(['convert', '--from', 'mlx', '--to', 'peft', '--adapter', mlx, '--out', fromMlx]);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /holds an earlier peft convert output; pass --overwrite/);
    const full = join(dir, 'full');
    await cp(mlx, full, { recursive: true });
    await writeFile(join(full, 'adapter_config.json'), JSON.stringify({ fine_tune_type: 'full', num_layers: 2 }));
    r = await peft(['convert', '--from', 'mlx', '--to', 'peft', '--adapter', full, '--out', join(dir, 'x')]);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /fine_tune_type "full"/);
  });
});
