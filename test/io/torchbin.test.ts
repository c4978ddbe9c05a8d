// adapter_model.bin: torch.save zip archives written here from the pickle protocol (no Python at
// test time) are read back exactly (dtypes, strided views, nn.Parameter, OrderedDict or dict);
// pickles that reference anything but tensors and plain containers are refused with TorchBinError
// naming what they reference, without running it; damaged archives (seeded fuzz) raise
// TorchBinError or load consistently, quickly; an adapter folder holding adapter_model.bin, or a
// sharded index (safetensors or .bin), loads with the same outputs as adapter_model.safetensors.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { copyFile, mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { readSafetensors, writeSafetensors, toFloat32 } from '../../src/io/safetensors.js';
import { TorchBinError, parseTorchBin } from '../../src/io/torchbin.js';
import { loadModel } from '../../src/models/load.js';
import { mulberry32 } from '../../src/nn/random.js';
import { PeftModel } from '../../src/tuners/load.js';
import { fixtureBatch, fixturePath, inTempDir } from '../helpers/fixtures.js';
import { type BinTensor, Pickle, torchSaveBytes } from '../helpers/torchbin_writer.js';
import { assertClose, forwardOnce } from '../tuners/lora_support.js';

const f32 = (xs: number[]) => new Uint8Array(new Float32Array(xs).buffer);

function sample(): Record<string, BinTensor> {
  const f16 = new Uint8Array(new Uint16Array([0x3c00, 0xc000, 0x3800]).buffer); // 1, -2, 0.5
  const bf16 = new Uint8Array(new Uint16Array([0x3f80, 0x4040]).buffer); // 1, 3
  return {
    'base_model.model.a.lora_A.weight': { dtype: 'F32', shape: [2, 3], data: f32([1, 2, 3, 4, 5, 6]) },
    h: { dtype: 'F16', shape: [3], data: f16 },
    b: { dtype: 'BF16', shape: [2], data: bf16 },
    ids: { dtype: 'I64', shape: [2], data: new Uint8Array(new BigInt64Array([7n, -1n]).buffer) },
    // the transpose of the first tensor: same storage "0", stride (1, 3)
    t: { dtype: 'F32', shape: [3, 2], data: new Uint8Array(0), view: { storageKey: '0', stride: [1, 3], offset: 0 } },
  };
}

test('torch.save archives are read back exactly: dtypes, strided views, Parameter, OrderedDict or dict', () => {
  for (const opts of [{}, { ordered: false }, { parameter: true }]) {
    const got = parseTorchBin(Buffer.from(torchSaveBytes(sample(), opts)), 'x.bin');
    assert.deepEqual([...got.keys()], Object.keys(sample()));
    assert.deepEqual([...toFloat32(got.get('base_model.model.a.lora_A.weight')!)], [1, 2, 3, 4, 5, 6]);
    assert.deepEqual(got.get('base_model.model.a.lora_A.weight')!.shape, [2, 3]);
    assert.deepEqual([...toFloat32(got.get('h')!)], [1, -2, 0.5]);
    assert.deepEqual([...toFloat32(got.get('b')!)], [1, 3]);
    assert.equal(got.get('ids')!.dtype, 'I64');
    assert.deepEqual([...new BigInt64Array(got.get('ids')!.data.slice().buffer)], [7n, -1n]);
    assert.deepEqual([...toFloat32(got.get('t')!)], [1, 4, 2, 5, 3, 6]);
  }
});

/** A pickle that calls `module.name(arg)` (what a malicious checkpoint does). */
function callingPickle(module: string, name: string): Uint8Array {
  return new Pickle().op(0x80, 2).global(module, name).str('echo pwned').op(0x85, 0x52, 0x2e).bytes();
}

test('pickles referencing anything but tensors and containers are refused by name, never run', () => {
  for (const [m, n] of [
    ['os', 'system'],
    ['builtins', 'eval'],
    ['posix', 'system'],
    ['torch', 'load'],
    ['collections', 'namedtuple'],
  ]) {
    assert.throws(
      () => parseTorchBin(Buffer.from(torchSaveBytes({}, { raw: callingPickle(m, n) })), 'evil.bin'),
      (e: unknown) => e instanceof TorchBinError && e.message.includes(`${m}.${n}`) && /refusing/.test(e.message),
    );
  }
  // STACK_GLOBAL spelling of the same, INST/OBJ opcodes, and BUILD on a non-dict.
  const stackGlobal = new Pickle().op(0x80, 4).str('os').str('system').op(0x93, 0x2e).bytes();
  assert.throws(() => parseTorchBin(Buffer.from(torchSaveBytes({}, { raw: stackGlobal })), 'evil.bin'), /os\.system/);
  const inst = new Pickle()
    .op(0x80, 2, 0x28)
    .op(0x69, ...Buffer.from('os\nsystem\n'))
    .op(0x2e)
    .bytes();
  assert.throws(
    () => parseTorchBin(Buffer.from(torchSaveBytes({}, { raw: inst })), 'evil.bin'),
    (e: unknown) => e instanceof TorchBinError && /opcode 0x69/.test((e as Error).message),
  );
  const build = new Pickle().op(0x80, 2, 0x5d, 0x7d, 0x62, 0x2e).bytes();
  assert.throws(() => parseTorchBin(Buffer.from(torchSaveBytes({}, { raw: build })), 'evil.bin'), /BUILD/);
  // A top level that is not a dict of tensors.
  const list = new Pickle().op(0x80, 2, 0x5d, 0x2e).bytes();
  assert.throws(() => parseTorchBin(Buffer.from(torchSaveBytes({}, { raw: list })), 'x.bin'), /expected a dict of tensors/);
});

test('storages, offsets and strides are checked against the zip entries before anything is copied', () => {
  const big = { w: { dtype: 'F32', shape: [1000, 1000], data: f32([1, 2]), view: undefined } } as Record<string, BinTensor>;
  // the pickle says 1e6 elements, the entry holds 2
  assert.throws(
    () => parseTorchBin(Buffer.from(torchSaveBytes(big)), 'x.bin'),
    (e: unknown) => e instanceof TorchBinError && /holds 8 bytes/.test((e as Error).message),
  );
  const outOfRange: Record<string, BinTensor> = {
    a: { dtype: 'F32', shape: [2], data: f32([1, 2]) },
    v: { dtype: 'F32', shape: [2], data: new Uint8Array(0), view: { storageKey: '0', stride: [1], offset: 1 } },
  };
  assert.throws(() => parseTorchBin(Buffer.from(torchSaveBytes(outOfRange)), 'x.bin'), /reads element 2 of a storage of 2/);
  const broadcast: Record<string, BinTensor> = {
    a: { dtype: 'F32', shape: [1], data: f32([1]) },
    v: { dtype: 'F32', shape: [1_000_000_000], data: new Uint8Array(0), view: { storageKey: '0', stride: [0], offset: 0 } },
  };
  assert.throws(() => parseTorchBin(Buffer.from(torchSaveBytes(broadcast)), 'x.bin'), /broadcast views are not read/);
  assert.throws(() => parseTorchBin(Buffer.from('not a zip at all, just text padding it out'), 'x.bin'), /not a zip archive/);
});

test('fuzz: damaged archives raise TorchBinError or load consistently, quickly', () => {
  const base = torchSaveBytes(sample(), { parameter: true });
  const rand = mulberry32(0xb1b);
  const int = (n: number) => Math.floor(rand() * n);
  const started = Date.now();
  let loaded = 0;
  let variants = 0;
  const check = (bytes: Uint8Array, what: string) => {
    variants++;
    try {
      const got = parseTorchBin(Buffer.from(bytes), 'fuzz.bin');
      loaded++;
      for (const [k, t] of got)
        assert.equal(
          t.data.byteLength,
          t.shape.reduce((a, b) => a * b, 1) * { F32: 4, F16: 2, BF16: 2, F64: 8, I64: 8, I32: 4, I8: 1, U8: 1, BOOL: 1 }[t.dtype],
          `${what}: ${k}`,
        );
    } catch (e) {
      assert.ok(e instanceof TorchBinError, `${what}: threw ${String(e)}`);
    }
  };
  for (let i = 0; i < 150; i++) check(base.slice(0, int(base.length)), 'truncated');
  for (let i = 0; i < 600; i++) {
    const b = base.slice();
    const k = 1 + int(3);
    for (let j = 0; j < k; j++) b[int(b.length)] = int(256);
    check(b, `bytes changed (${i})`);
  }
  assert.ok(variants >= 700);
  assert.ok(loaded > 0, 'some variants (storage bytes) still load');
  assert.ok(Date.now() - started < 20_000, `fuzz took ${Date.now() - started} ms`);
});

test('adapter folders with adapter_model.bin or a sharded index load like adapter_model.safetensors', async () => {
  await inTempDir('peft-bin-', async (dir) => {
    const src = fixturePath('adapters', 'llama', 'lora_attn');
    const raw = await readSafetensors(join(src, 'adapter_model.safetensors'));
    const tensors: Record<string, BinTensor> = {};
    for (const [k, t] of raw) tensors[k] = { dtype: t.dtype as BinTensor['dtype'], shape: t.shape, data: t.data };
    const keys = Object.keys(tensors);
    const half = (i: number) => Object.fromEntries(keys.filter((_, j) => j % 2 === i).map((k) => [k, tensors[k]!]));
    const folders = { bin: join(dir, 'bin'), stIndex: join(dir, 'st_index'), binIndex: join(dir, 'bin_index') };
    for (const f of Object.values(folders)) {
      await mkdir(f);
      await copyFile(join(src, 'adapter_config.json'), join(f, 'adapter_config.json'));
    }
    await writeFile(join(folders.bin, 'adapter_model.bin'), torchSaveBytes(tensors));
    const weightMap = (ext: string) => Object.fromEntries(keys.map((k, j) => [k, `adapter_model-0000${(j % 2) + 1}-of-00002.${ext}`]));
    for (const i of [0, 1]) {
      await writeFile(join(folders.binIndex, `adapter_model-0000${i + 1}-of-00002.bin`), torchSaveBytes(half(i)));
      await writeSafetensors(
        join(folders.stIndex, `adapter_model-0000${i + 1}-of-00002.safetensors`),
        new Map(Object.entries(half(i)).map(([k, t]) => [k, { dtype: t.dtype, shape: t.shape, data: t.data }])),
        { format: 'pt' },
      );
    }
    await writeFile(join(folders.binIndex, 'adapter_model.bin.index.json'), JSON.stringify({ metadata: {}, weight_map: weightMap('bin') }));
    await writeFile(
      join(folders.stIndex, 'adapter_model.safetensors.index.json'),
      JSON.stringify({ metadata: {}, weight_map: weightMap('safetensors') }),
    );
    const batch = await fixtureBatch('llama');
    const want = (await forwardOnce(await PeftModel.fromPretrained(await loadModel(fixturePath('models', 'llama')), src), batch)).logits;
    for (const [label, f] of Object.entries(folders)) {
      const got = (await forwardOnce(await PeftModel.fromPretrained(await loadModel(fixturePath('models', 'llama')), f), batch)).logits;
      assertClose(got, want, 0, 0, `${label} logits`);
    }
    // A hostile .bin in an adapter folder is a typed error from loadAdapter too.
    await writeFile(join(folders.bin, 'adapter_model.bin'), torchSaveBytes({}, { raw: callingPickle('os', 'system') }));
    await assert.rejects(PeftModel.fromPretrained(await loadModel(fixturePath('models', 'llama')), folders.bin), TorchBinError);
  });
});
