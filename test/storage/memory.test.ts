// The in-memory storage (the browser build's file system), checked in Node: its fs semantics, and
// a whole fine-tuning run (load model, tokenizer and data, train, save the adapter) through it
// gives the same numbers and the same adapter bytes as the run over node:fs.

import { strict as assert } from 'node:assert';
import { mkdtempSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { finetune } from '../../src/browser/finetune.js';
import { writeFileAtomic } from '../../src/io/atomic.js';
import { setStorage, storage } from '../../src/storage/index.js';
import { MemoryStorage } from '../../src/storage/memory.js';

const ROOT = fileURLToPath(new URL('../../../', import.meta.url));
const MODEL = join(ROOT, 'models/tiny-llama');
const DATA = join(ROOT, 'data/tasks/sentiment/train.jsonl');

const code = async (p: Promise<unknown>): Promise<string | undefined> =>
  p.then(
    () => undefined,
    (e: { code?: string }) => e.code,
  );

test('MemoryStorage behaves as node:fs for the calls the library makes', async () => {
  const m = new MemoryStorage();
  assert.equal(await code(m.readFile('/a/b.txt', 'utf8')), 'ENOENT');
  assert.equal(await code(m.writeFile('/a/b.txt', 'x')), 'ENOENT'); // no parent folder
  await m.mkdir('/a/c', { recursive: true });
  await m.writeFile('/a/b.txt', 'hello');
  assert.equal(await m.readFile('/a/b.txt', 'utf8'), 'hello');
  assert.deepEqual(await m.readdir('/a'), ['b.txt', 'c']);
  assert.equal((await m.stat('/a/c')).isDirectory(), true);
  assert.equal(await code(m.mkdir('/a/c')), 'EEXIST');
  assert.equal(await code(m.link('/a/b.txt', '/a/b.txt')), 'EEXIST');
  await m.rename('/a', '/z');
  assert.equal(m.existsSync('/a/b.txt'), false);
  assert.equal(m.readFileSync('/z/b.txt', 'utf8'), 'hello');
  const fh = await m.open('/z/d.bin', 'wx');
  await fh.write(Uint8Array.of(1, 2, 3));
  await fh.write(Uint8Array.of(9), 0, 1, 5);
  await fh.close();
  assert.deepEqual([...(await m.readFile('/z/d.bin'))], [1, 2, 3, 0, 0, 9]);
  const rh = await m.open('/z/d.bin', 'r');
  const got = new Uint8Array(2);
  assert.equal((await rh.read(got, 0, 2, 4)).bytesRead, 2);
  assert.deepEqual([...got], [0, 9]);
  m.addFile('/blob/f.txt', new Blob(['from a blob']));
  assert.equal(await m.readFile('/blob/f.txt', 'utf8'), 'from a blob');
  await m.rm('/z', { recursive: true });
  assert.deepEqual(m.listFiles('/'), ['/blob/f.txt']);
  assert.equal(m.path.join('/x/', '../y', 'z.json'), '/y/z.json');
  assert.equal(m.path.relative('/a/b', '/a/c/d'), '../c/d');
});

test('atomic writes go through the current storage', async () => {
  const m = new MemoryStorage();
  const previous = setStorage(m);
  try {
    await m.mkdir('/out');
    await writeFileAtomic('/out/x.json', '{"a":1}');
    assert.deepEqual(m.listFiles('/'), ['/out/x.json']);
  } finally {
    setStorage(previous);
  }
  assert.equal(storage().kind, 'node');
});

test('fine-tuning through the in-memory storage matches the run over node:fs, byte for byte', async () => {
  const settings = {
    method: 'lora' as const,
    steps: 3,
    learningRate: 5e-3,
    batchSize: 4,
    seed: 7,
    r: 4,
    maxExamples: 24,
    prompts: ['The food was'],
    maxNewTokens: 4,
  };
  const dir = mkdtempSync(join(tmpdir(), 'peft-mem-'));
  try {
    const onDisk = await finetune({ ...settings, modelDir: MODEL, trainFile: DATA, outputDir: join(dir, 'out') });
    const m = new MemoryStorage();
    for (const f of readdirSync(MODEL)) m.addFile(`/models/tiny-llama/${f}`, readFileSync(join(MODEL, f)));
    m.addFile('/data/train.jsonl', readFileSync(DATA));
    const previous = setStorage(m);
    let inMemory;
    try {
      inMemory = await finetune({ ...settings, modelDir: '/models/tiny-llama', trainFile: '/data/train.jsonl', outputDir: '/out' });
    } finally {
      setStorage(previous);
    }
    assert.equal(onDisk.records.length, 3);
    assert.deepEqual(
      inMemory.records.map((r) => [r.loss, r.grad_norm]),
      onDisk.records.map((r) => [r.loss, r.grad_norm]),
    );
    assert.deepEqual(inMemory.probeLogits, onDisk.probeLogits);
    assert.deepEqual(inMemory.after, onDisk.after);
    const st = await m.readFile('/out/adapter_model.safetensors');
    assert.deepEqual(Buffer.from(st), readFileSync(join(dir, 'out/adapter_model.safetensors')));
    assert.ok(m.existsSync('/out/adapter_config.json') && m.existsSync('/out/tokenizer.json'));
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
