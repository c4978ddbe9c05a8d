// `peft train` end to end in a child process: LoRA on the gpt2 fixture writes the peft adapter,
// metrics.jsonl and loss.svg with a falling loss; bad data fails in one line before --out exists;
// Ctrl-C stops with a checkpoint that --resume latest finishes from.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { readFile, readdir, writeFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { parseMetrics, type EvalRecord, type TrainRecord } from '../../../src/train/metrics.js';
import { fixturePath } from '../../helpers/fixtures.js';
import { writeSwapTask } from '../../train/synthetic.js';

const CLI = resolve('dist/src/cli/main.js');

interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
}

function peft(args: string[], opts: { onStderr?: (text: string, child: ReturnType<typeof spawn>) => void } = {}): Promise<Run> {
  return new Promise((done, fail) => {
    const child = spawn(process.execPath, [CLI, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => (stdout += d));
    child.stderr.on('data', (d) => {
      stderr += d;
      opts.onStderr?.(stderr, child);
    });
    child.on('error', fail);
    child.on('close', (code) => done({ code, stdout, stderr }));
  });
}

const gpt2 = fixturePath('models', 'gpt2');
const loraArgs = ['--model', gpt2, '--target', 'c_attn,c_proj,c_fc,lm_head', '--lr', '1e-2', '--threads', '2', '--log-every', '1'];

test('peft train --method lora writes the adapter, metrics and plot, and the loss falls', async () => {
  const task = await writeSwapTask();
  const out = join(task.dir, 'out');
  const r = await peft([
    'train',
    ...loraArgs,
    '--data',
    task.train,
    '--eval-data',
    task.eval,
    '--out',
    out,
    '--steps',
    '30',
    '--eval-every',
    '10',
    '--save-every',
    '20',
    '--r',
    '8',
    '--alpha',
    '16',
    '--dropout',
    '0.05',
  ]);
  assert.equal(r.code, 0, r.stderr);
  for (const f of ['adapter_config.json', 'adapter_model.safetensors', 'metrics.jsonl', 'loss.svg', 'tokenizer.json'])
    assert.ok(existsSync(join(out, f)), f);
  assert.deepEqual(await readdir(join(out, 'checkpoints')), ['checkpoint-20']);
  const cfg = JSON.parse(await readFile(join(out, 'adapter_config.json'), 'utf8'));
  assert.equal(cfg.r, 8);
  assert.equal(cfg.lora_alpha, 16);
  assert.equal(cfg.lora_dropout, 0.05);
  const metrics = parseMetrics(await readFile(join(out, 'metrics.jsonl'), 'utf8'));
  const trainLoss = metrics.filter((m): m is TrainRecord => m.kind === 'train');
  const evalLoss = metrics.filter((m): m is EvalRecord => m.kind === 'eval');
  assert.equal(trainLoss.length, 30);
  assert.deepEqual(
    evalLoss.map((e) => e.step),
    [0, 10, 20, 30],
  );
  assert.ok(evalLoss[3]!.eval_loss < 0.7 * evalLoss[0]!.eval_loss, `eval loss ${evalLoss[0]!.eval_loss} -> ${evalLoss[3]!.eval_loss}`);
  assert.ok(trainLoss[29]!.loss < trainLoss[0]!.loss);
  const svg = await readFile(join(out, 'loss.svg'), 'utf8');
  assert.match(svg, /<svg[^>]*>[\s\S]*train loss[\s\S]*eval loss[\s\S]*<\/svg>/);
  assert.match(r.stderr, /LORA: [\d,]+ trainable parameters/);
  assert.match(r.stderr, /step 30\/30 \| loss/);
  assert.match(r.stderr, /eval loss 6\.\d+ -> [0-4]\.\d+/);
});

test('bad input fails with one line and exit 1 before --out is created', async () => {
  const task = await writeSwapTask();
  const bad = join(task.dir, 'bad.jsonl');
  await writeFile(bad, '{"prompt": "a", "completion": "b"}\n{"prompt": "c"}\n');
  const out = join(task.dir, 'never');
  const r = await peft(['train', ...loraArgs, '--data', bad, '--out', out, '--steps', '2']);
  assert.equal(r.code, 1);
  assert.equal(
    r.stderr
      .trim()
      .split('\n')
      .filter((l) => l.startsWith('error:')).length,
    1,
  );
  assert.match(
    r.stderr,
    new RegExp(`error: ${bad.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}:2: a prompt/completion record needs both fields`),
  );
  assert.equal(existsSync(out), false);
  const mixed = await peft(['train', '--model', gpt2, '--method', 'full', '--r', '4', '--data', task.train, '--out', out]);
  assert.equal(mixed.code, 1);
  assert.match(mixed.stderr, /error: --r is for --method lora/);
  assert.equal(existsSync(out), false);
});

test('Ctrl-C stops after a step with a checkpoint, and --resume latest finishes the run', async () => {
  const task = await writeSwapTask();
  const out = join(task.dir, 'out');
  const args = (steps: number) => [
    'train',
    '--model',
    gpt2,
    '--method',
    'full',
    '--lr',
    '1e-3',
    '--threads',
    '2',
    '--log-every',
    '1',
    '--data',
    task.train,
    '--out',
    out,
    '--steps',
    String(steps),
    '--batch',
    '4',
    '--no-eval-at-start',
  ];
  let sent = false;
  const first = await peft(args(80), {
    onStderr: (text, child) => {
      if (!sent && /step 3\/80/.test(text)) {
        sent = true;
        child.kill('SIGINT');
      }
    },
  });
  assert.equal(first.code, 130, first.stderr);
  assert.match(first.stderr, /stopping after the current step/);
  const stoppedAt = Number(/stopped at step (\d+)\/80/.exec(first.stderr)?.[1]);
  assert.ok(stoppedAt >= 3 && stoppedAt < 80, first.stderr);
  assert.deepEqual(await readdir(join(out, 'checkpoints')), [`checkpoint-${stoppedAt}`]);
  assert.equal(existsSync(join(out, 'model.safetensors')), false, 'no final model for an unfinished run');
  const changed = await peft([...args(90), '--resume', 'latest']);
  assert.equal(changed.code, 1, 'the run length is part of what must match');
  assert.match(changed.stderr, /error: cannot resume exactly .*max_steps: checkpoint 80, now 90/);
  const rest = await peft([...args(80), '--resume', 'latest']);
  assert.equal(rest.code, 0, rest.stderr);
  assert.match(rest.stderr, new RegExp(`resuming at step ${stoppedAt}/80`));
  const metrics = parseMetrics(await readFile(join(out, 'metrics.jsonl'), 'utf8'));
  assert.deepEqual(
    metrics.filter((m) => m.kind === 'train').map((m) => m.step),
    Array.from({ length: 80 }, (_, i) => i + 1),
  );
  for (const f of ['config.json', 'model.safetensors', 'loss.svg', 'tokenizer.json']) assert.ok(existsSync(join(out, f)), f);
});
