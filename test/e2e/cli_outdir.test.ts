// Output folders at the command line (issue 11, defect 2 and 6): no command writes into a folder
// holding a model or adapter it did not write, even with --overwrite (the user's files are
// byte-identical afterwards), and two `peft train` runs into one --out cannot both write: the
// second fails at once; the lock of a killed run is taken over by the next.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { cpSync, existsSync, mkdirSync, readFileSync, readdirSync, statSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { fixturePath } from '../helpers/fixtures.js';
import { tempDir, writeSwapTask } from '../train/synthetic.js';
import { peft } from '../cli/peft.js';
import { LOCK_FILE } from '../../src/io/outdir.js';

/** Every file under `dir` with its sha256, so "untouched" means byte-identical. */
function snapshot(dir: string): Record<string, string> {
  const out: Record<string, string> = {};
  const walk = (d: string, prefix: string): void => {
    for (const name of readdirSync(d).sort()) {
      const p = join(d, name);
      if (statSync(p).isDirectory()) walk(p, `${prefix}${name}/`);
      else out[`${prefix}${name}`] = createHash('sha256').update(readFileSync(p)).digest('hex');
    }
  };
  walk(dir, '');
  return out;
}

test('no command writes into a model, adapter or other folder it did not write (even with --overwrite); the files stay byte-identical', async () => {
  const tmp = await tempDir('peft-outdir-cli-');
  const task = await writeSwapTask();
  const gpt2 = fixturePath('models', 'gpt2');
  const model = join(tmp, 'model');
  cpSync(gpt2, model, { recursive: true });
  const adapter = join(tmp, 'adapter');
  cpSync(fixturePath('adapters', 'gpt2', 'ia3'), adapter, { recursive: true });
  const lora = fixturePath('adapters', 'gpt2', 'lora_attn');
  const compared = join(tmp, 'results');
  mkdirSync(join(compared, 'runs', 'mine'), { recursive: true });
  writeFileSync(join(compared, 'runs', 'mine', 'notes.txt'), 'keep me');
  const before = { model: snapshot(model), adapter: snapshot(adapter), compared: snapshot(compared) };
  const train = ['train', '--data', task.train, '--steps', '1', '--threads', '1'];
  const cases: [string[], RegExp][] = [
    [[...train, '--model', gpt2, '--method', 'full', '--out', model], /--out .*model holds a model, which peft train did not write/],
    [[...train, '--model', gpt2, '--method', 'full', '--out', model, '--overwrite'], /holds a model, which peft train did not write/],
    [[...train, '--model', model, '--method', 'full', '--out', model, '--overwrite'], /--out .*model is the base model folder/],
    [[...train, '--model', gpt2, '--out', model], /holds a model, which peft train did not write/],
    [[...train, '--model', gpt2, '--out', adapter, '--overwrite'], /holds an adapter, which peft train did not write/],
    [['quantize', '--model', gpt2, '--out', model], /holds a model, which peft quantize did not write/],
    [['quantize', '--model', gpt2, '--out', model, '--overwrite'], /holds a model, which peft quantize did not write/],
    [['quantize', '--model', model, '--out', model], /is the model folder/],
    [['compress', '--adapter', lora, '--model', gpt2, '--out', adapter], /holds an adapter, which peft compress did not write/],
    [
      ['compress', '--adapter', lora, '--model', gpt2, '--out', adapter, '--overwrite'],
      /holds an adapter, which peft compress did not write/,
    ],
    [['decompress', '--adapter', lora, '--out', adapter, '--overwrite'], /holds an adapter, which peft decompress did not write/],
    [['merge', '--model', gpt2, '--adapter', lora, '--out', model, '--overwrite'], /holds a model, which peft merge did not write/],
    [['compare', '--model', gpt2, '--out', compared], /holds other files \(runs\), which peft compare did not write/],
    [['quickstart', '--model', gpt2, '--out', model], /holds a model, which peft train did not write/],
  ];
  const results = await Promise.all(cases.map(([args]) => peft(args)));
  results.forEach((r, i) => {
    const what = cases[i]![0].join(' ');
    assert.equal(r.code, 1, `${what}: ${r.stderr}`);
    assert.match(r.stderr, cases[i]![1], what);
    assert.equal(
      r.stderr
        .trim()
        .split('\n')
        .filter((l) => l.startsWith('error:')).length,
      1,
      what,
    );
    assert.doesNotMatch(r.stderr, /internal error/, what);
  });
  assert.deepEqual(snapshot(model), before.model);
  assert.deepEqual(snapshot(adapter), before.adapter);
  assert.deepEqual(snapshot(compared), before.compared);

  // its own earlier output: refused without --overwrite, replaced with it
  const q = join(tmp, 'quantized');
  assert.equal((await peft(['quantize', '--model', gpt2, '--out', q])).code, 0);
  const again = await peft(['quantize', '--model', gpt2, '--out', q]);
  assert.equal(again.code, 1);
  assert.match(again.stderr, /holds an earlier peft quantize output; pass --overwrite to replace it/);
  const over = await peft(['quantize', '--model', gpt2, '--out', q, '--overwrite', '--type', 'fp4']);
  assert.equal(over.code, 0, over.stderr);
  assert.equal(JSON.parse(readFileSync(join(q, 'config.json'), 'utf8')).quantization_config.bnb_4bit_quant_type, 'fp4');
});

interface Child {
  code: Promise<number | null>;
  stderr: () => string;
  kill: (s: NodeJS.Signals) => void;
  pid: number;
}

function start(args: string[]): Child {
  const child = spawn(process.execPath, [resolve('dist/src/cli/main.js'), ...args], { stdio: ['ignore', 'ignore', 'pipe'] });
  let err = '';
  child.stderr.on('data', (d) => (err += d));
  return { code: new Promise((done) => child.on('close', (c) => done(c))), stderr: () => err, kill: (s) => child.kill(s), pid: child.pid! };
}

async function until(cond: () => boolean, what: string, ms = 60_000): Promise<void> {
  const t0 = Date.now();
  while (!cond()) {
    if (Date.now() - t0 > ms) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

test("two peft train runs into one --out: the second fails at once; a killed run's lock is taken over", async () => {
  const task = await writeSwapTask();
  const out = join(task.dir, 'run');
  const args = [
    'train',
    '--model',
    fixturePath('models', 'gpt2'),
    '--data',
    task.train,
    '--out',
    out,
    '--threads',
    '1',
    '--log-every',
    '1',
    '--save-every',
    '0',
    '--no-eval-at-start',
  ];
  const first = start([...args, '--steps', '100000']);
  await until(() => /step 1\//.test(first.stderr()) || existsSync(join(out, 'metrics.jsonl')), 'the first run to start training');
  assert.ok(existsSync(join(out, LOCK_FILE)));
  const t0 = Date.now();
  const second = await peft([...args, '--steps', '2']);
  const seconds = (Date.now() - t0) / 1000;
  assert.equal(second.code, 1, second.stderr);
  assert.match(
    second.stderr,
    new RegExp(
      `error: --out .*run is being written by another peft train \\(pid ${first.pid}.*wait for it to finish or choose another folder`,
    ),
  );
  assert.doesNotMatch(second.stderr, /trainable parameters/, 'refused before loading the model');
  assert.ok(seconds < 30, `refused after ${seconds} s`);
  // also with --overwrite or --resume: the folder is busy
  for (const extra of [['--overwrite'], ['--resume', 'latest']]) {
    const r = await peft([...args, '--steps', '2', ...extra]);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /being written by another peft train/);
  }
  first.kill('SIGKILL');
  await first.code;
  assert.ok(existsSync(join(out, LOCK_FILE)), 'a killed run leaves its lock');
  // the killed run wrote no checkpoint: the next run takes the stale lock over and starts afresh
  const third = await peft([...args, '--steps', '2']);
  assert.equal(third.code, 0, third.stderr);
  assert.ok(existsSync(join(out, 'adapter_model.safetensors')));
  assert.equal(existsSync(join(out, LOCK_FILE)), false);
});

test('export, convert and merge-adapters refuse a model or adapter folder as --out (even with --overwrite); the files stay byte-identical', async () => {
  const tmp = await tempDir('peft-outdir-cli2-');
  const llama = fixturePath('models', 'llama');
  const lora = fixturePath('adapters', 'llama', 'lora_attn');
  const model = join(tmp, 'model');
  cpSync(llama, model, { recursive: true });
  const adapter = join(tmp, 'adapter');
  cpSync(fixturePath('adapters', 'llama', 'ia3'), adapter, { recursive: true });
  const mine = join(tmp, 'mine');
  cpSync(lora, mine, { recursive: true });
  const before = { model: snapshot(model), adapter: snapshot(adapter), mine: snapshot(mine) };
  const tjs = ['export', '--format', 'transformers.js', '--model', llama];
  const conv = ['convert', '--from', 'peft', '--to', 'mlx', '--adapter', lora];
  const wmerge = ['merge-adapters', '--model', llama, '--adapter', `a=${lora}`, '--weights', '1', '--type', 'linear'];
  const cases: [string[], RegExp][] = [
    [[...tjs, '--out', model], /--out .*model holds a model, which peft export did not write/],
    [[...tjs, '--out', model, '--overwrite'], /holds a model, which peft export did not write/],
    [[...tjs, '--adapter', lora, '--out', adapter, '--overwrite'], /holds an adapter, which peft export did not write/],
    [['export', '--format', 'transformers.js', '--model', model, '--out', model, '--overwrite'], /--out .*model is the model folder/],
    [
      ['export', '--format', 'gguf', '--model', llama, '--out', join(model, 'model.safetensors')],
      /--out .*model\.safetensors already exists; export never replaces a file/,
    ],
    [
      ['export', '--format', 'gguf', '--model', llama, '--out', join(model, 'x.gguf'), '--overwrite'],
      /--overwrite is for --format transformers\.js/,
    ],
    [['export', '--format', 'gguf', '--model', llama, '--out', model], /--out .*model already exists; export never replaces a file/],
    [[...conv, '--out', model], /holds a model, which peft convert did not write/],
    [[...conv, '--out', adapter, '--overwrite'], /holds an adapter, which peft convert did not write/],
    [['convert', '--from', 'peft', '--to', 'mlx', '--adapter', mine, '--out', mine, '--overwrite'], /is the source adapter folder/],
    [[...wmerge, '--out', model, '--overwrite'], /holds a model, which peft merge-adapters did not write/],
    [[...wmerge, '--out', adapter], /holds an adapter, which peft merge-adapters did not write/],
    [
      ['merge-adapters', '--model', llama, '--adapter', `a=${mine}`, '--weights', '1', '--type', 'linear', '--out', mine, '--overwrite'],
      /is the source adapter a folder/,
    ],
  ];
  const results = await Promise.all(cases.map(([args]) => peft(args)));
  results.forEach((r, i) => {
    const what = cases[i]![0].join(' ');
    assert.equal(r.code, 1, `${what}: ${r.stderr}`);
    assert.match(r.stderr, cases[i]![1], what);
    assert.equal(
      r.stderr
        .trim()
        .split('\n')
        .filter((l) => l.startsWith('error:')).length,
      1,
      what,
    );
    assert.doesNotMatch(r.stderr, /internal error/, what);
  });
  assert.deepEqual(snapshot(model), before.model);
  assert.deepEqual(snapshot(adapter), before.adapter);
  assert.deepEqual(snapshot(mine), before.mine);

  // its own earlier output: refused without --overwrite, replaced with it (marker written, no temp or lock left)
  const c = join(tmp, 'converted');
  assert.equal((await peft([...conv, '--out', c])).code, 0);
  const again = await peft([...conv, '--out', c]);
  assert.equal(again.code, 1);
  assert.match(again.stderr, /holds an earlier peft convert output; pass --overwrite to replace it/);
  const over = await peft([...conv, '--out', c, '--overwrite']);
  assert.equal(over.code, 0, over.stderr);
  assert.deepEqual(readdirSync(c).sort(), ['.peft-output.json', 'adapter_config.json', 'adapters.safetensors']);
  assert.equal(JSON.parse(readFileSync(join(c, '.peft-output.json'), 'utf8')).command, 'convert');
  // another command's output is not convert's to replace
  const m = join(tmp, 'merged');
  assert.equal((await peft([...wmerge, '--out', m])).code, 0);
  const cross = await peft([...conv, '--out', m, '--overwrite']);
  assert.equal(cross.code, 1);
  assert.match(cross.stderr, /holds the output of peft merge-adapters, not of peft convert/);
});
