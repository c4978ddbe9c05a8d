// Output folders (src/io/outdir.ts) and atomic writes (src/io/atomic.ts): which folders a command
// may write into, the lock (a live holder refuses, a dead one's lock is taken over), and temp files
// of interrupted writes removed on the next claim.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { mkdtemp } from 'node:fs/promises';
import { hostname, tmpdir } from 'node:os';
import { join } from 'node:path';
import { isTempName, removeTempFiles, tempPathFor, writeFileAtomic, WriteError } from '../../src/io/atomic.js';
import {
  FolderLockedError,
  LOCK_FILE,
  OUTPUT_MARKER,
  OutputFolderError,
  checkOutputDir,
  claimOutputDir,
  readOutputMarker,
  withOutputDir,
} from '../../src/io/outdir.js';
import { PeftError } from '../../src/errors.js';

const temp = () => mkdtemp(join(tmpdir(), 'peft-outdir-'));

/** The pid of a process that has exited (so a lock or temp file naming it is stale). */
function deadPid(): number {
  const r = spawnSync(process.execPath, ['-e', 'process.stdout.write(String(process.pid))'], { encoding: 'utf8' });
  return Number(r.stdout);
}

test('a command writes into a new, empty or its own folder, never into one holding what it did not write', async () => {
  const root = await temp();
  const o = { command: 'quantize' };
  assert.equal(checkOutputDir(join(root, 'new'), o), 'new');
  mkdirSync(join(root, 'empty'));
  assert.equal(checkOutputDir(join(root, 'empty'), o), 'empty');
  const model = join(root, 'model');
  mkdirSync(model);
  writeFileSync(join(model, 'config.json'), '{}');
  writeFileSync(join(model, 'model.safetensors'), 'x');
  for (const overwrite of [false, true]) {
    assert.throws(
      () => checkOutputDir(model, { ...o, overwrite }),
      (e: unknown) =>
        e instanceof OutputFolderError &&
        e instanceof PeftError &&
        /holds a model, which peft quantize did not write; choose a new or empty folder/.test(e.message),
    );
  }
  const adapter = join(root, 'adapter');
  mkdirSync(adapter);
  writeFileSync(join(adapter, 'adapter_config.json'), '{}');
  assert.throws(() => checkOutputDir(adapter, { ...o, overwrite: true }), /holds an adapter/);
  writeFileSync(join(root, 'file'), 'x');
  assert.throws(() => checkOutputDir(join(root, 'file'), o), /is a file/);
  assert.throws(() => checkOutputDir(model, { ...o, inputs: [{ path: model, what: 'model' }] }), /is the model folder/);
  assert.throws(() => checkOutputDir(root, { ...o, inputs: [{ path: model, what: 'model' }] }), /contains the model folder/);

  // its own earlier output: with --overwrite only (or when the command replaces its own, or continues it)
  const own = join(root, 'own');
  await withOutputDir(own, o, async (dir) => writeFileSync(join(dir, 'model.safetensors'), 'v1'));
  assert.equal(readOutputMarker(own)?.command, 'quantize');
  assert.equal(readOutputMarker(own)?.status, 'complete');
  assert.equal(existsSync(join(own, LOCK_FILE)), false);
  assert.throws(() => checkOutputDir(own, o), /holds an earlier peft quantize output; pass --overwrite to replace it/);
  assert.throws(() => checkOutputDir(own, { command: 'merge', overwrite: true }), /holds the output of peft quantize, not of peft merge/);
  assert.equal(checkOutputDir(own, { ...o, overwrite: true }), 'own');
  await withOutputDir(own, { ...o, overwrite: true }, async (dir) => writeFileSync(join(dir, 'other.safetensors'), 'v2'));
  assert.deepEqual(readdirSync(own).sort(), [OUTPUT_MARKER, 'other.safetensors'].sort(), 'replacing clears the earlier output');
});

test("the lock: a live holder refuses a second writer at once; a dead holder's lock is taken over", async () => {
  const root = await temp();
  const dir = join(root, 'run');
  const first = await claimOutputDir(dir, { command: 'train' });
  // another live process holds it (our parent stands in: alive, not us)
  await first.release();
  mkdirSync(dir, { recursive: true });
  const lock = (pid: number) => JSON.stringify({ pid, host: hostname(), boot: null, start: null, command: 'train', since: 'earlier' });
  writeFileSync(join(dir, LOCK_FILE), lock(process.ppid));
  assert.throws(
    () => checkOutputDir(dir, { command: 'train', continueOwn: true }),
    (e: unknown) =>
      e instanceof FolderLockedError && new RegExp(`being written by another peft train \\(pid ${process.ppid}`).test(e.message),
  );
  await assert.rejects(claimOutputDir(dir, { command: 'train', continueOwn: true }), FolderLockedError);
  // a lock whose process is gone (killed) is stale
  const dead = deadPid();
  writeFileSync(join(dir, LOCK_FILE), lock(dead));
  const taken = await claimOutputDir(dir, { command: 'train', continueOwn: true });
  assert.equal(JSON.parse(readFileSync(join(dir, LOCK_FILE), 'utf8')).pid, process.pid);
  await taken.release();
  assert.equal(existsSync(join(dir, LOCK_FILE)), false);
  // a garbled lock is stale too
  writeFileSync(join(dir, LOCK_FILE), '{"pi');
  await (await claimOutputDir(dir, { command: 'train', continueOwn: true })).release();
});

test('temp files of interrupted writes are removed on the next claim, never those of a live writer', async () => {
  const root = await temp();
  const dir = join(root, 'run');
  await (await claimOutputDir(dir, { command: 'train' })).release();
  const dead = deadPid();
  const staleFile = join(dir, `.adapter_model.safetensors.peft-tmp-${dead}-0a1b2c3d`);
  const staleCkpt = join(dir, 'checkpoints', `.checkpoint-4.peft-tmp-${dead}-deadbeef`);
  const live = join(dir, `.metrics.jsonl.peft-tmp-${process.ppid}-00112233`);
  mkdirSync(staleCkpt, { recursive: true });
  writeFileSync(join(staleCkpt, 'trainer_state.json'), '{');
  writeFileSync(staleFile, 'torn');
  writeFileSync(live, 'in progress');
  assert.ok(isTempName(staleFile) && isTempName(tempPathFor(staleFile)) && !isTempName('adapter_model.safetensors'));
  await (await claimOutputDir(dir, { command: 'train', continueOwn: true })).release();
  assert.equal(existsSync(staleFile), false);
  assert.equal(existsSync(staleCkpt), false);
  assert.equal(existsSync(live), true, "a live process's temp file is left alone");
  assert.deepEqual(await removeTempFiles(dir), []);
});

test('writeFileAtomic replaces whole files and fails as a typed error without leaving a temp file', async () => {
  const dir = await temp();
  const p = join(dir, 'a.json');
  await writeFileAtomic(p, 'one');
  await writeFileAtomic(p, new TextEncoder().encode('two'));
  await writeFileAtomic(p, async (fh) => void (await fh.writeFile('three')));
  assert.equal(readFileSync(p, 'utf8'), 'three');
  await assert.rejects(
    writeFileAtomic(join(dir, 'missing', 'b.json'), 'x'),
    (e: unknown) => e instanceof WriteError && /cannot write .*b\.json/.test((e as Error).message),
  );
  await assert.rejects(
    writeFileAtomic(p, async () => {
      throw new Error('disk on fire');
    }),
    /disk on fire/,
  );
  assert.equal(readFileSync(p, 'utf8'), 'three');
  assert.deepEqual(readdirSync(dir), ['a.json']);
});
