// `peft train` on a sequence classifier (the BERT fixture) end to end: the task is read from the
// model, {"text","label"} data trains a SEQ_CLS LoRA adapter, metrics.jsonl and the terminal report
// eval accuracy (no perplexity); a label the model does not have fails in one line before --out exists.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { readFile, writeFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { loadModel } from '../../../../src/models/load.js';
import { type EvalRecord, parseMetrics } from '../../../../src/train/metrics.js';
import { loadAdapter } from '../../../../src/tuners/load.js';
import { fixturePath } from '../../../helpers/fixtures.js';
import { writeClassTask } from '../../../train/synthetic.js';

const CLI = resolve('dist/src/cli/main.js');
const bert = fixturePath('models', 'bert');

test('peft train --method lora on a BERT classifier saves a SEQ_CLS adapter and logs eval accuracy', async () => {
  const task = await writeClassTask();
  const out = join(task.dir, 'out');
  const r = spawnSync(
    process.execPath,
    [
      CLI,
      'train',
      '--model',
      bert,
      '--method',
      'lora',
      '--target',
      'query,key,value,dense',
      '--dropout',
      '0',
      '--lr',
      '2e-3',
      '--data',
      task.train,
      '--eval-data',
      task.eval,
      '--out',
      out,
      '--steps',
      '100',
      '--eval-every',
      '50',
      '--threads',
      '2',
      '--log-every',
      '10',
    ],
    { encoding: 'utf8' },
  );
  assert.equal(r.status, 0, r.stderr);
  assert.match(r.stderr, /data: 64 training examples \(\{"text","label"\}, 2 classes\), 32 for evaluation/);
  assert.match(r.stderr, /eval @ step 50 \| eval_loss \d\.\d{4} \| accuracy \d+\.\d%/);
  assert.match(r.stderr, /eval accuracy \d+\.\d% -> \d+\.\d%/);
  const cfg = JSON.parse(await readFile(join(out, 'adapter_config.json'), 'utf8'));
  assert.equal(cfg.task_type, 'SEQ_CLS');
  assert.deepEqual(cfg.modules_to_save, ['classifier', 'score']);
  const evals = parseMetrics(await readFile(join(out, 'metrics.jsonl'), 'utf8')).filter((m): m is EvalRecord => m.kind === 'eval');
  assert.deepEqual(
    evals.map((e) => e.step),
    [0, 50, 100],
  );
  for (const e of evals) {
    assert.equal(typeof e.eval_accuracy, 'number');
    assert.equal(e.eval_perplexity, undefined);
    assert.equal(e.eval_examples, 32);
  }
  const [first, last] = [evals[0]!, evals[2]!];
  assert.ok(last.eval_loss < 0.3 * first.eval_loss, `eval loss ${first.eval_loss} -> ${last.eval_loss}`);
  assert.ok(last.eval_accuracy! >= 0.9, `eval accuracy ${first.eval_accuracy} -> ${last.eval_accuracy}`);
  const adapted = await loadAdapter(await loadModel(bert), out);
  assert.ok(adapted.parameters().size > 0);
});

test('peft train on a classifier: an unknown label fails in one line naming the row and the classes, before --out exists', async () => {
  const task = await writeClassTask();
  const bad = join(task.dir, 'bad.jsonl');
  await writeFile(bad, '{"text": "a robot", "label": 0}\n{"text": "a book", "label": "positive"}\n');
  const out = join(task.dir, 'never');
  const r = spawnSync(process.execPath, [CLI, 'train', '--model', bert, '--data', bad, '--out', out, '--steps', '1'], { encoding: 'utf8' });
  assert.equal(r.status, 1, r.stderr);
  const errors = r.stderr.split('\n').filter((l) => l.startsWith('error:'));
  assert.equal(errors.length, 1, r.stderr);
  assert.match(
    errors[0]!,
    /bad\.jsonl:2: label "positive" is not a class of this model; use a class id 0\.\.1 \(or its name LABEL_0\.\.LABEL_1\)/,
  );
  assert.equal(existsSync(out), false);
  const packed = spawnSync(process.execPath, [CLI, 'train', '--model', bert, '--data', task.train, '--out', out, '--packing'], {
    encoding: 'utf8',
  });
  assert.equal(packed.status, 1);
  assert.match(packed.stderr, /error: --packing .* drop --packing/);
  assert.equal(existsSync(out), false);
});
