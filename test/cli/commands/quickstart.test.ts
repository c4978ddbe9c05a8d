// The quickstart job end to end on a tiny budget: the bundled model and task, a couple of LoRA
// steps, the metric before and after, and an adapter folder in the peft format that loads back
// and reproduces the scored outputs; the CLI prints the report and refuses bad flags in one line.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { promisify } from 'node:util';
import { readSafetensors } from '../../../src/io/safetensors.js';
import { Tokenizer } from '../../../src/io/tokenizer.js';
import { loadModel } from '../../../src/models/load.js';
import { EVAL_RESULTS_FILE, bundledModelDir, evaluateTask, getTask, loadTaskData, runQuickstart } from '../../../src/tasks/index.js';
import { loadAdapter } from '../../../src/tuners/load.js';

const CLI = resolve('dist/src/cli/main.js');

test('runQuickstart trains LoRA, scores before and after, and saves a peft adapter that loads back', async () => {
  const out = await mkdtemp(join(tmpdir(), 'peft-quickstart-'));
  try {
    const lines: string[] = [];
    const r = await runQuickstart({
      task: 'sentiment',
      out,
      steps: 2,
      batchSize: 8,
      evalLimit: 4,
      samples: 2,
      threads: 2,
      log: (s) => lines.push(s),
    });
    assert.equal(r.interrupted, false);
    assert.equal(r.steps, 2);
    assert.equal(r.task, 'sentiment');
    assert.equal(r.before.total, 4);
    assert.equal(r.after!.total, 4);
    for (const e of [r.before, r.after!]) {
      assert.equal(e.metric, 'accuracy');
      assert.ok(e.score >= 0 && e.score <= 1);
      assert.equal(e.correct, e.predictions.filter((p) => p.correct).length);
    }
    assert.equal(r.samples.length, 2);
    assert.deepEqual(
      r.samples.map((s) => s.after),
      r.after!.predictions.slice(0, 2).map((p) => p.prediction),
    );
    assert.ok(r.trainableParameters > 0 && r.trainableParameters < r.totalParameters / 5);
    assert.ok(
      lines.some((l) => l.startsWith('before tuning: accuracy')) && lines.some((l) => l.startsWith('after tuning: accuracy')),
      lines.join('\n'),
    );

    const cfg = JSON.parse(await readFile(join(out, 'adapter_config.json'), 'utf8'));
    assert.equal(cfg.peft_type, 'LORA');
    assert.equal(cfg.task_type, 'CAUSAL_LM');
    assert.equal(cfg.r, 8);
    assert.equal(cfg.lora_alpha, 16);
    assert.deepEqual([...cfg.target_modules].sort(), ['down_proj', 'gate_proj', 'k_proj', 'o_proj', 'q_proj', 'up_proj', 'v_proj']);
    assert.equal(typeof cfg.base_model_name_or_path, 'string');
    const tensors = await readSafetensors(join(out, 'adapter_model.safetensors'));
    const base = await loadModel(bundledModelDir());
    assert.equal(tensors.size, base.numLayers * 7 * 2);
    const qA = tensors.get('base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight');
    const qB = tensors.get('base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight');
    assert.deepEqual(qA?.shape, [8, base.hiddenSize]);
    assert.deepEqual(qB?.shape, [base.hiddenSize, 8]);

    // The saved adapter is the trained one: loaded back, it gives the outputs that were scored.
    const adapter = await loadAdapter(base, out);
    assert.equal(adapter.peftType, 'LORA');
    const tokenizer = await Tokenizer.fromDir(bundledModelDir());
    const data = await loadTaskData('sentiment');
    const again = await evaluateTask(adapter, tokenizer, getTask('sentiment'), data.eval, { limit: 4, runtime: { threads: 2 } });
    assert.deepEqual(
      again.predictions.map((p) => p.prediction),
      r.after!.predictions.map((p) => p.prediction),
    );

    const results = JSON.parse(await readFile(join(out, EVAL_RESULTS_FILE), 'utf8'));
    assert.equal(results.task, 'sentiment');
    assert.equal(results.after.total, 4);
    assert.equal(results.samples.length, 2);
  } finally {
    await rm(out, { recursive: true, force: true });
  }
});

test('peft quickstart prints the before/after report; bad flags fail in one line', async () => {
  const out = await mkdtemp(join(tmpdir(), 'peft-quickstart-cli-'));
  try {
    const run = (args: string[]) =>
      promisify(execFile)(process.execPath, [CLI, 'quickstart', ...args], { encoding: 'utf8' }).then(
        (r) => ({ code: 0, ...r }),
        (e: { code?: number; stdout?: string; stderr?: string }) => ({
          code: e.code ?? -1,
          stdout: e.stdout ?? '',
          stderr: e.stderr ?? '',
        }),
      );
    // on the 4-bit base (QLoRA, as peft train --base-precision nf4): the default int8 runs in the test above
    const ok = await run([
      '--task',
      'arith',
      '--steps',
      '1',
      '--eval-limit',
      '2',
      '--samples',
      '1',
      '--out',
      out,
      '--threads',
      '2',
      '--base-precision',
      'nf4',
    ]);
    assert.equal(ok.code, 0, ok.stderr);
    assert.match(ok.stdout, /before LoRA: exact match \d+\.\d% \(\d\/2\)/);
    assert.match(ok.stdout, /after LoRA: {2}exact match \d+\.\d% \(\d\/2\)/);
    assert.match(ok.stdout, /\[1\] "Question: what is/);
    assert.match(ok.stdout, /saved the LoRA adapter to .*adapter_config\.json, adapter_model\.safetensors/);
    assert.match(ok.stderr, /training for 1 steps/);

    const bad = await run(['--task', 'summarize', '--out', out]);
    assert.equal(bad.code, 1);
    assert.match(bad.stderr, /argument 'summarize' is invalid\. Allowed choices are sentiment, json, arith/);
    const precision = await run(['--base-precision', 'bf16', '--out', out]);
    assert.equal(precision.code, 1);
    assert.match(precision.stderr, /argument 'bf16' is invalid\. Allowed choices are fp32, int8, nf4/);
    const missing = await run(['--model', join(out, 'nope'), '--out', out]);
    assert.equal(missing.code, 1);
    assert.match(missing.stderr, /^error: the base model folder .*nope does not exist/m);
  } finally {
    await rm(out, { recursive: true, force: true });
  }
});
