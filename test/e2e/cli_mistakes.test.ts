// User mistakes and unlucky timing at the command line (issue 11, defects 5 and 7): each is a
// one-line error that says what to do (exit 1, never "internal error"), or simply works.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { cpSync, existsSync, readFileSync, rmSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { parseMetrics } from '../../src/train/metrics.js';
import { fixturePath } from '../helpers/fixtures.js';
import { tempDir, writeSwapTask } from '../train/synthetic.js';
import { peft } from '../cli/peft.js';

const gpt2 = fixturePath('models', 'gpt2');
const oneLine = (r: { code: number; stderr: string }, what: string): void => {
  assert.equal(r.code, 1, `${what}: ${r.stderr}`);
  assert.equal(
    r.stderr
      .trim()
      .split('\n')
      .filter((l) => l.startsWith('error:')).length,
    1,
    `${what}: ${r.stderr}`,
  );
  assert.doesNotMatch(r.stderr, /internal error|\n\s+at /, what);
};

test('--target all-linear trains every linear layer but the head; --target foo is one line naming the valid modules', async () => {
  const task = await writeSwapTask();
  const base = ['train', '--model', gpt2, '--data', task.train, '--steps', '1', '--threads', '1', '--no-eval-at-start'];
  const all = await peft([...base, '--target', 'all-linear', '--out', join(task.dir, 'all')]);
  assert.equal(all.code, 0, all.stderr);
  const cfg = JSON.parse(readFileSync(join(task.dir, 'all', 'adapter_config.json'), 'utf8'));
  assert.deepEqual([...cfg.target_modules].sort(), ['c_attn', 'c_fc', 'c_proj'], 'all-linear leaves lm_head out, as peft');
  const full = await peft([...base, '--method', 'full', '--target', 'all-linear', '--out', join(task.dir, 'full')]);
  assert.equal(full.code, 0, full.stderr);
  const foo = await peft([...base, '--target', 'foo', '--out', join(task.dir, 'foo')]);
  oneLine(foo, '--target foo');
  assert.match(foo.stderr, /\["foo"\] not found .*named: c_attn, c_proj, c_fc, lm_head/);
  const mixed = await peft([...base, '--target', 'all-linear,c_fc', '--out', join(task.dir, 'mixed')]);
  oneLine(mixed, '--target all-linear,c_fc');
  for (const d of ['foo', 'mixed']) assert.equal(existsSync(join(task.dir, d)), false, 'refused before --out was created');
});

test('a bottleneck adapter folder with only pytorch_adapter.bin is a one-line error', async () => {
  const dir = await tempDir('peft-bn-bin-');
  const bn = join(dir, 'bn');
  cpSync(fixturePath('adapters', 'gpt2', 'bn_seq'), bn, { recursive: true });
  rmSync(join(bn, 'adapter.safetensors'));
  const r = await peft(['generate', '--model', gpt2, '--adapter', bn, '--prompt', 'hi', '--max-new-tokens', '1']);
  oneLine(r, 'generate with a pickled bottleneck adapter');
  assert.match(r.stderr, /pytorch_adapter\.bin/);
});

test('after a failed --overwrite run the folder holds only that run (no stale adapter), and a new run starts a fresh log', async () => {
  const task = await writeSwapTask();
  const out = join(task.dir, 'run');
  const args = ['train', '--model', gpt2, '--data', task.train, '--threads', '1', '--no-eval-at-start', '--out', out];
  assert.equal((await peft([...args, '--steps', '2'])).code, 0);
  assert.ok(existsSync(join(out, 'adapter_model.safetensors')));
  // an lr of 1e30 makes the loss non-finite at step 2: the run fails
  const failed = await peft([...args, '--steps', '3', '--lr', '1e30', '--schedule', 'constant', '--max-grad-norm', '0', '--overwrite']);
  oneLine(failed, 'a diverging --overwrite run');
  assert.equal(
    existsSync(join(out, 'adapter_model.safetensors')),
    false,
    "the earlier run's adapter is not left beside the failed run's log",
  );
  const failedLog = parseMetrics(readFileSync(join(out, 'metrics.jsonl'), 'utf8'));
  assert.ok(
    failedLog.every((m) => m.kind === 'train' && m.learning_rate === 1e30),
    "metrics.jsonl is the failed run's alone",
  );
  // nothing to keep (no checkpoint, not finished): a plain run starts afresh without --overwrite
  const next = await peft([...args, '--steps', '2']);
  assert.equal(next.code, 0, next.stderr);
  const log = parseMetrics(readFileSync(join(out, 'metrics.jsonl'), 'utf8'));
  assert.deepEqual(
    log.map((m) => [m.kind, m.step]),
    [
      ['train', 1],
      ['train', 2],
    ],
  );
  assert.ok(log.every((m) => m.kind === 'train' && m.learning_rate !== 1e30));
  // a finished run is kept unless --overwrite
  const again = await peft([...args, '--steps', '2']);
  oneLine(again, 'a second run into a finished one');
  assert.match(again.stderr, /already holds a finished run; start over with --overwrite/);
});

test('Ctrl-C before step 1: starting again without --resume works (and --resume latest says so)', async () => {
  const task = await writeSwapTask();
  const out = join(task.dir, 'run');
  const args = ['train', '--model', gpt2, '--data', task.train, '--eval-data', task.eval, '--threads', '1', '--out', out, '--steps', '3'];
  const stopped = await new Promise<{ code: number | null; stderr: string }>((done) => {
    const child = spawn(process.execPath, [resolve('dist/src/cli/main.js'), ...args], { stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    let sent = false;
    child.stderr.on('data', (d) => {
      stderr += d;
      // the first line of the training loop: Ctrl-C handling is set up, the untrained model is being evaluated
      if (!sent && /training for 3 steps/.test(stderr)) {
        sent = true;
        child.kill('SIGINT');
      }
    });
    child.on('close', (code) => done({ code, stderr }));
  });
  assert.equal(stopped.code, 130, stopped.stderr);
  assert.match(stopped.stderr, /stopped before step 1/);
  const resume = await peft([...args, '--resume', 'latest']);
  oneLine(resume, '--resume latest with no checkpoint');
  assert.match(resume.stderr, /has no checkpoint .*start without --resume/);
  const fresh = await peft(args);
  assert.equal(fresh.code, 0, fresh.stderr);
  assert.ok(existsSync(join(out, 'adapter_model.safetensors')));
});
