// `peft train --config`: a YAML run file with a peft section in peft's field names trains and saves
// those fields; flags override the file; the resolved run_config.json repeats the run; unknown or
// bad keys are one-line errors naming the file, the key and the nearest valid one, before any
// output exists.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { peft } from '../../peft.js';

const tmp = mkdtempSync(join(tmpdir(), 'peft-train-config-'));
process.on('exit', () => rmSync(tmp, { recursive: true, force: true }));

const RUN = (out: string) => `# a quickstart-like run
model: models/tiny-llama
data: data/tasks/sentiment/train.jsonl
eval_data: data/tasks/sentiment/eval.jsonl
out: ${out}
method: lora
steps: 50
lr: 2.0e-3
batch: 4
max-len: 64
eval-at-start: false
threads: 1
peft:
  r: 4
  lora_alpha: 8
  target_modules: [q_proj, v_proj]
  use_rslora: true
`;

test('peft train --config: file options, peft fields, flag overrides and run_config.json', async () => {
  const out = join(tmp, 'run');
  const file = join(tmp, 'run.yaml');
  writeFileSync(file, RUN(out));
  const r = await peft(['train', '--config', file, '--steps', '3']);
  assert.equal(r.code, 0, r.stderr);
  const cfg = JSON.parse(readFileSync(join(out, 'adapter_config.json'), 'utf8')) as Record<string, unknown>;
  assert.equal(cfg.r, 4);
  assert.equal(cfg.lora_alpha, 8);
  assert.equal(cfg.use_rslora, true);
  assert.deepEqual([...(cfg.target_modules as string[])].sort(), ['q_proj', 'v_proj']);
  const steps = readFileSync(join(out, 'metrics.jsonl'), 'utf8')
    .trim()
    .split('\n')
    .map((l) => JSON.parse(l) as { kind: string; step: number })
    .filter((x) => x.kind === 'train');
  assert.equal(steps.at(-1)!.step, 3, "the --steps flag overrides the file's steps: 50");
  const resolved = JSON.parse(readFileSync(join(out, 'run_config.json'), 'utf8')) as Record<string, unknown>;
  assert.equal(resolved.steps, 3);
  assert.equal(resolved.batch, 4);
  assert.equal(resolved.evalAtStart, false);
  assert.deepEqual(resolved.peft, { r: 4, lora_alpha: 8, target_modules: ['q_proj', 'v_proj'], use_rslora: true });
  // the resolved file repeats the run elsewhere
  const out2 = join(tmp, 'again');
  const again = await peft(['train', '--config', join(out, 'run_config.json'), '--out', out2]);
  assert.equal(again.code, 0, again.stderr);
  assert.deepEqual(readFileSync(join(out2, 'adapter_model.safetensors')), readFileSync(join(out, 'adapter_model.safetensors')));
});

test('peft train --config: unknown keys, bad values and wrong fields fail in one line before any output', async () => {
  const out = join(tmp, 'never');
  const cases: [string, RegExp][] = [
    [RUN(out).replace('steps: 50', 'stpes: 50'), /unknown key "stpes"; did you mean "steps"\?/],
    [
      RUN(out).replace('lora_alpha: 8', 'lora_alfa: 8'),
      /"peft\.lora_alfa" is not a field of lora's adapter_config\.json; did you mean "lora_alpha"\?/,
    ],
    [RUN(out).replace('steps: 50', 'steps: -1'), /"steps": --steps needs an integer >= 1/],
    [RUN(out).replace('method: lora', 'method: lorra'), /"method" must be one of .*lora/],
    [RUN(out).replace('eval-at-start: false', 'eval-at-start: maybe'), /"eval-at-start" must be true or false/],
    [RUN(out).replace('method: lora', 'method: full'), /full fine-tuning has no adapter_config\.json/],
    ['- just\n- a list\n', /the top level must be a mapping/],
    ['model: [unclosed\n', /not valid YAML/],
  ];
  for (const [i, [text, want]] of cases.entries()) {
    const file = join(tmp, `bad${i}.yaml`);
    writeFileSync(file, text);
    const r = await peft(['train', '--config', file]);
    assert.equal(r.code, 1, `case ${i}: ${r.stderr}`);
    assert.match(r.stderr, want, `case ${i}`);
    assert.ok(r.stderr.startsWith(`error: ${file}: `), `case ${i}: names the file: ${r.stderr}`);
    assert.equal(r.stderr.trim().split('\n').length, 1, `case ${i}: one line: ${r.stderr}`);
    assert.ok(!existsSync(out), `case ${i}: nothing written`);
  }
  const missing = await peft(['train', '--data', 'data/tasks/sentiment/train.jsonl', '--out', out]);
  assert.equal(missing.code, 1);
  assert.match(missing.stderr, /--model is required/);
});

test('peft train field flags set adapter_config.json fields and are refused where the method has no such field', async () => {
  const base = [
    'train',
    '--model',
    'models/tiny-llama',
    '--data',
    'data/tasks/sentiment/train.jsonl',
    '--steps',
    '2',
    '--batch',
    '4',
    '--max-len',
    '64',
    '--threads',
    '1',
    '--no-eval-at-start',
  ];
  const out = join(tmp, 'flags');
  const r = await peft([
    ...base,
    '--out',
    out,
    '--use-dora',
    '--use-rslora',
    '--layers',
    '0,1',
    '--init',
    'gaussian',
    '--modules-to-save',
    'model.norm',
  ]);
  assert.equal(r.code, 0, r.stderr);
  const cfg = JSON.parse(readFileSync(join(out, 'adapter_config.json'), 'utf8')) as Record<string, unknown>;
  assert.equal(cfg.use_dora, true);
  assert.equal(cfg.use_rslora, true);
  assert.deepEqual(cfg.layers_to_transform, [0, 1]);
  assert.equal(cfg.init_lora_weights, 'gaussian');
  assert.deepEqual(cfg.modules_to_save, ['model.norm']);
  const p = await peft([...base, '--out', join(tmp, 'prompt'), '--method', 'prompt', '--num-virtual-tokens', '7']);
  assert.equal(p.code, 0, p.stderr);
  assert.equal(JSON.parse(readFileSync(join(tmp, 'prompt', 'adapter_config.json'), 'utf8')).num_virtual_tokens, 7);
  const bad = await peft([...base, '--out', join(tmp, 'ia3'), '--method', 'ia3', '--use-dora']);
  assert.equal(bad.code, 1);
  assert.match(bad.stderr, /^error: --use-dora sets use_dora, which --method ia3 does not have/);
  assert.ok(!existsSync(join(tmp, 'ia3')));
});
