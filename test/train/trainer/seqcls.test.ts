// Training a sequence classifier (the BERT fixture, BertForSequenceClassification): {"text","label"}
// rows tokenized as transformers does ([CLS] text [SEP], truncation keeping [SEP]) with labels
// checked against config.json's classes, [batch] class labels, an example-weighted eval loss with
// accuracy, and real fine-tunes of a separable synthetic task with LoRA, prompt tuning and prefix
// tuning. Also the causal-LM label count of methods that put -100 labels in front (prompt tuning,
// P-tuning).

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { copyFile, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { adaptForComparison } from '../../../src/compare/methods.js';
import { fromTypedArray, readSafetensors, toFloat32, writeSafetensors } from '../../../src/io/safetensors.js';
import { Tokenizer } from '../../../src/io/tokenizer.js';
import { BertModel } from '../../../src/models/bert.js';
import { loadModel } from '../../../src/models/load.js';
import { collate } from '../../../src/train/batches.js';
import {
  type ClassificationExample,
  type ClassLabels,
  type TokenizedExample,
  parseJsonl,
  tokenizeClassification,
} from '../../../src/train/data.js';
import { DatasetError, TrainError } from '../../../src/train/errors.js';
import { parseMetrics, type EvalRecord } from '../../../src/train/metrics.js';
import { EvalStep, TrainStep, countLossTokens } from '../../../src/train/step.js';
import { Trainer } from '../../../src/train/trainer.js';
import { getFullFineTuneModel } from '../../../src/tuners/full/index.js';
import { createAdapter, getPeftModel } from '../../../src/tuners/load.js';
import { fixturePath } from '../../helpers/fixtures.js';
import { classRecords, jsonl, tempDir } from '../synthetic.js';

const bertDir = fixturePath('models', 'bert');

/**
 * The BERT fixture with its linear weights times `scale`, in a temp folder. At the fixture's init
 * (N(0, 0.02)) attention is near uniform and the pooled [CLS] hardly depends on the input: even a
 * linear probe on it stays at chance, so methods that leave the weights alone (prompt, prefix
 * tuning) have nothing to steer. Scaled up, attention has the contrast a pretrained model has.
 */
async function scaledBert(scale: number): Promise<string> {
  const dir = await tempDir('peft-bert-x');
  for (const f of ['config.json', 'tokenizer.json', 'tokenizer_config.json', 'special_tokens_map.json', 'vocab.json', 'merges.txt'])
    await copyFile(join(bertDir, f), join(dir, f));
  const tensors = await readSafetensors(join(bertDir, 'model.safetensors'));
  for (const [name, t] of tensors) {
    if (/(query|key|value|dense)\.weight$/.test(name))
      tensors.set(
        name,
        fromTypedArray(
          toFloat32(t).map((v) => v * scale),
          t.shape,
        ),
      );
  }
  await writeSafetensors(join(dir, 'model.safetensors'), tensors, { format: 'pt' });
  return dir;
}

async function classTask(
  maxLength = 32,
): Promise<{ train: ClassificationExample[]; eval: ClassificationExample[]; padId: number; tok: Tokenizer }> {
  const tok = await Tokenizer.fromDir(bertDir);
  const labels = (await loadModel(bertDir)).config;
  const train = tokenizeClassification(parseJsonl(jsonl(classRecords(64))), tok, { labels, maxLength }).examples;
  const ev = tokenizeClassification(parseJsonl(jsonl(classRecords(32, 64))), tok, { labels, maxLength }).examples;
  return { train, eval: ev, padId: tok.padTokenId!, tok };
}

test('{"text","label"} rows: [CLS] text [SEP], labels by id or id2label name, truncation keeps [SEP], typed errors name the row and the classes', async () => {
  const tok = await Tokenizer.fromDir(bertDir);
  const cls = tok.tokenToId('[CLS]')!;
  const sep = tok.tokenToId('[SEP]')!;
  const generic: ClassLabels = (await loadModel(bertDir)).config; // no id2label: LABEL_0, LABEL_1
  const { examples, truncated } = tokenizeClassification(
    parseJsonl('{"text": "the model", "label": 1}\n{"text": "a robot", "label": "LABEL_0"}'),
    tok,
    { labels: generic, maxLength: 32 },
  );
  assert.equal(truncated, 0);
  assert.deepEqual(examples[0], { inputIds: [cls, ...tok.encode('the model', { addSpecialTokens: false }), sep], label: 1 });
  assert.deepEqual(examples[0]!.inputIds, tok.encode('the model'), 'as transformers tokenizer(text) adds them');
  assert.equal(examples[1]!.label, 0);

  const named: ClassLabels = { numLabels: 2, id2label: { 0: 'NEG', 1: 'POS' }, label2id: { NEG: 0, POS: 1 } };
  assert.equal(
    tokenizeClassification(parseJsonl('{"text": "x", "label": "POS"}'), tok, { labels: named, maxLength: 8 }).examples[0]!.label,
    1,
  );
  const long = tokenizeClassification(parseJsonl(JSON.stringify({ text: 'the model learns every weight of the base', label: 0 })), tok, {
    labels: named,
    maxLength: 6,
  });
  assert.equal(long.truncated, 1);
  const ids = long.examples[0]!.inputIds;
  assert.deepEqual(ids, [cls, ...tok.encode('the model learns every weight of the base', { addSpecialTokens: false }).slice(0, 4), sep]);

  const bad = (text: string, re: RegExp, line: number) =>
    assert.throws(
      () => tokenizeClassification(parseJsonl(text), tok, { labels: named, maxLength: 8, file: 'd.jsonl' }),
      (e: unknown) => e instanceof DatasetError && e.line === line && re.test(e.message),
    );
  bad(
    '{"text": "a", "label": 0}\n{"text": "b", "label": "MAYBE"}',
    /d\.jsonl:2: label "MAYBE" is not a class of this model; use a class id or name: 0 = "NEG", 1 = "POS"/,
    2,
  );
  bad('{"text": "a", "label": 2}', /label 2 is not a class/, 1);
  bad('{"text": "a", "label": 0.5}', /label 0\.5 is not a class/, 1);
  bad('{"text": "a"}', /has no "label".*0 = "NEG"/, 1);
  bad('{"prompt": "a", "completion": "b"}', /\{"text": \.\.\., "label": \.\.\.\} rows; this record has "prompt", "completion"/, 1);
  bad('{"text": "a", "text_pair": "b", "label": 0}', /sentence pairs are not supported; join the two texts into "text"/, 1);
  assert.throws(
    () => tokenizeClassification(parseJsonl('{"text": "a", "label": 0}'), tok, { labels: named, maxLength: 2 }),
    /raise --max-len/,
  );
  assert.throws(
    () =>
      tokenizeClassification(parseJsonl('{"text": "a", "label": 0}'), tok, {
        labels: { numLabels: 1, id2label: { 0: 'LABEL_0' }, label2id: { LABEL_0: 0 } },
        maxLength: 8,
      }),
    /regression head/,
  );

  // Class batches: ids right-padded with the pad id, mask 0 there, labels [batch].
  const b = collate(
    [
      { inputIds: [cls, 5, sep], label: 1 },
      { inputIds: [cls, sep], label: 0 },
    ],
    556,
  );
  assert.equal(b.labelKind, 'classes');
  assert.deepEqual([...b.labels], [1n, 0n]);
  assert.deepEqual([...b.inputIds], [BigInt(cls), 5n, BigInt(sep), BigInt(cls), BigInt(sep), 556n]);
  assert.deepEqual([...b.attentionMask], [1n, 1n, 1n, 1n, 1n, 0n]);
  assert.equal(countLossTokens(b), 2);
  assert.throws(
    () =>
      collate(
        [
          { inputIds: [1, 2], label: 0 },
          { inputIds: [1, 2], labels: [1, 2] },
        ],
        0,
      ),
    TrainError,
  );
});

test('classifier eval: loss weighted by examples (padding-invariant), accuracy from argmax; mismatched data and tasks are refused', async () => {
  const data = await classTask();
  const bert = await loadModel(bertDir);
  const model = getFullFineTuneModel(bert, { peftType: 'FULL', targetModules: ['classifier'] });
  const step = await EvalStep.compile(model, { threads: 1 });
  const params = model.parameters();
  const short = data.eval[0]!;
  const long = { ...data.eval[3]!, inputIds: [...data.eval[3]!.inputIds.slice(0, -1), ...data.train[5]!.inputIds.slice(1)] };
  assert.ok(long.inputIds.length > short.inputIds.length);
  const a = await step.run(collate([short], data.padId), params);
  const b = await step.run(collate([long], data.padId), params);
  const ab = await step.run(collate([short, long], data.padId), params);
  assert.deepEqual([a.tokens, b.tokens, ab.tokens], [1, 1, 2]);
  assert.ok(Math.abs(ab.loss - (a.loss + b.loss) / 2) < 1e-5, `batch ${ab.loss} vs rows ${a.loss}, ${b.loss}`);
  assert.equal(ab.correct, a.correct! + b.correct!);
  await step.dispose();

  const trainer = new Trainer(model, data.train, data.eval, {
    outputDir: await tempDir(),
    padTokenId: data.padId,
    batchSize: 5,
    runtime: { threads: 1 },
  });
  const e = await trainer.evaluate();
  assert.equal(e.tokens, 32);
  assert.equal(e.perplexity, undefined);
  assert.ok(e.accuracy !== undefined && Number.isInteger(e.accuracy * 32), `accuracy ${e.accuracy}`);

  const lm: TokenizedExample = { inputIds: [1, 2, 3], labels: [1, 2, 3] };
  assert.throws(
    () => new Trainer(model, [lm], undefined, { outputDir: 'x', padTokenId: 0 }),
    (err: unknown) => err instanceof TrainError && /sequence classifier; give it \{"text", "label"\} rows/.test(err.message),
  );
  assert.throws(
    () => new Trainer(model, [{ inputIds: [1, 2], label: 2 }], undefined, { outputDir: 'x', padTokenId: 0 }),
    /class 2, but the model has 2 classes/,
  );
  const gpt2 = getFullFineTuneModel(await loadModel(fixturePath('models', 'gpt2')), { peftType: 'FULL', targetModules: ['ln_f'] });
  assert.throws(
    () => new Trainer(gpt2, [data.train[0]!], undefined, { outputDir: 'x', padTokenId: 0 }),
    /causal language model; give it \{"text"\}/,
  );
  const headless = getFullFineTuneModel(new BertModel(bert.config, bert.weights, bert.dir, 'base'));
  await assert.rejects(
    TrainStep.compile(headless),
    (err: unknown) =>
      err instanceof TrainError && /causal language models and sequence classifiers.*BertForSequenceClassification/.test(err.message),
  );
});

test('LoRA (SEQ_CLS) fine-tunes the BERT classifier on a separable task: eval loss falls, accuracy rises', async () => {
  const t0 = performance.now();
  const data = await classTask();
  const model = await getPeftModel(
    await loadModel(bertDir),
    { r: 8, loraAlpha: 16, loraDropout: 0, targetModules: ['query', 'key', 'value', 'dense'], taskType: 'SEQ_CLS' },
    { seed: 1 },
  );
  assert.ok(
    model.parameters().has('classifier.weight') && model.trainableBaseWeights().has('classifier.weight'),
    'SEQ_CLS trains the classifier (modules_to_save)',
  );
  const out = await tempDir();
  const r = await new Trainer(model, data.train, data.eval, {
    outputDir: out,
    padTokenId: data.padId,
    learningRate: 2e-3,
    maxSteps: 100,
    batchSize: 8,
    evalEvery: 50,
    warmupSteps: 2,
    runtime: { threads: 2 },
  }).train();
  assert.ok(r.finalEvalLoss! < 0.3 * r.initialEvalLoss!, `eval loss ${r.initialEvalLoss} -> ${r.finalEvalLoss}`);
  assert.ok(
    r.finalEvalAccuracy! >= 0.9 && r.finalEvalAccuracy! > r.initialEvalAccuracy!,
    `eval accuracy ${r.initialEvalAccuracy} -> ${r.finalEvalAccuracy}`,
  );
  const evals = parseMetrics(await readFile(join(out, 'metrics.jsonl'), 'utf8')).filter((m): m is EvalRecord => m.kind === 'eval');
  assert.deepEqual(
    evals.map((e) => e.step),
    [0, 50, 100],
  );
  for (const e of evals) {
    assert.equal(e.eval_examples, 32);
    assert.equal(e.eval_perplexity, undefined);
    assert.equal(typeof e.eval_accuracy, 'number');
  }
  assert.equal(JSON.parse(await readFile(join(out, 'adapter_config.json'), 'utf8')).task_type, 'SEQ_CLS');
  console.log(
    `# LoRA seq-cls: eval loss ${r.initialEvalLoss!.toFixed(3)} -> ${r.finalEvalLoss!.toFixed(3)}, accuracy ${r.initialEvalAccuracy} -> ${r.finalEvalAccuracy}, ${((performance.now() - t0) / 1000).toFixed(1)} s`,
  );
});

test('prompt tuning and prefix tuning (SEQ_CLS) fine-tune a BERT classifier: eval loss falls, accuracy rises', async () => {
  const dir = await scaledBert(10);
  const data = await classTask();
  for (const [method, lr] of [
    ['prompt', 3e-2],
    ['prefix', 3e-2],
  ] as const) {
    const t0 = performance.now();
    const model = await adaptForComparison(await loadModel(dir), method, 1, dir);
    assert.equal(model.prependedLabels, 0, 'classification labels are one per row: nothing in front');
    const r = await new Trainer(model, data.train, data.eval, {
      outputDir: await tempDir(),
      padTokenId: data.padId,
      learningRate: lr,
      maxSteps: 100,
      batchSize: 8,
      warmupSteps: 2,
      runtime: { threads: 2 },
    }).train();
    assert.ok(r.finalEvalLoss! < 0.3 * r.initialEvalLoss!, `${method}: eval loss ${r.initialEvalLoss} -> ${r.finalEvalLoss}`);
    assert.ok(
      r.finalEvalAccuracy! >= 0.9 && r.finalEvalAccuracy! > r.initialEvalAccuracy!,
      `${method}: eval accuracy ${r.initialEvalAccuracy} -> ${r.finalEvalAccuracy}`,
    );
    console.log(
      `# ${method} seq-cls: eval loss ${r.initialEvalLoss!.toFixed(3)} -> ${r.finalEvalLoss!.toFixed(3)}, accuracy ${r.initialEvalAccuracy} -> ${r.finalEvalAccuracy}, ${((performance.now() - t0) / 1000).toFixed(1)} s`,
    );
  }
});

test('causal LM with virtual tokens: the eval count is labels[:, 0:] != -100, so batch-size splits give the same weighted loss', async () => {
  const tok = await Tokenizer.fromDir(fixturePath('models', 'gpt2'));
  const rows: TokenizedExample[] = ['the model learns every weight', 'a robot'].map((t) => {
    const ids = tok.encode(t);
    return { inputIds: ids, labels: [...ids] };
  });
  const both = collate(rows, 0);
  const real = rows[0]!.inputIds.length + rows[1]!.inputIds.length;
  assert.equal(countLossTokens(both), real - 2, 'plain causal LM: labels[:, 1:]');
  assert.equal(countLossTokens(both, 20), real, 'labels shifted onto prepended -100: every label counts');

  const gpt2 = await loadModel(fixturePath('models', 'gpt2'));
  for (const fields of [
    { peft_type: 'PROMPT_TUNING', num_virtual_tokens: 4 },
    { peft_type: 'P_TUNING', num_virtual_tokens: 4, encoder_hidden_size: 16 },
    { peft_type: 'PREFIX_TUNING', num_virtual_tokens: 4 },
    { peft_type: 'LORA', r: 2 },
  ]) {
    const model = await createAdapter(gpt2, { ...fields, task_type: 'CAUSAL_LM' }, { seed: 3 });
    const expectPrepended = fields.peft_type === 'PROMPT_TUNING' || fields.peft_type === 'P_TUNING' ? 4 : 0;
    assert.equal(model.prependedLabels ?? 0, expectPrepended, fields.peft_type);
    const step = await EvalStep.compile(model, { threads: 1 });
    const params = model.parameters();
    const a = await step.run(collate([rows[0]!], 0), params);
    const b = await step.run(collate([rows[1]!], 0), params);
    const ab = await step.run(both, params);
    assert.equal(ab.tokens, a.tokens + b.tokens);
    assert.equal(ab.tokens, expectPrepended ? real : real - 2, fields.peft_type);
    const weighted = (a.loss * a.tokens + b.loss * b.tokens) / (a.tokens + b.tokens);
    assert.ok(Math.abs(weighted - ab.loss) < 1e-5, `${fields.peft_type}: rows weighted ${weighted} vs batch ${ab.loss}`);
    await step.dispose();
  }
});

test('every other method trains the BERT classifier and saves its SEQ_CLS adapter (ia3, prefix, ptuning, adapter, full)', async () => {
  const data = await classTask();
  const bert = await loadModel(bertDir);
  for (const method of ['ia3', 'prefix', 'ptuning', 'adapter', 'full'] as const) {
    const model = await adaptForComparison(bert, method, 1, bertDir);
    const out = await tempDir();
    const r = await new Trainer(model, data.train.slice(0, 16), data.eval.slice(0, 8), {
      outputDir: out,
      padTokenId: data.padId,
      learningRate: 1e-3,
      maxSteps: 2,
      batchSize: 8,
      runtime: { threads: 2 },
    }).train();
    assert.ok(Number.isFinite(r.finalLoss) && r.finalEvalAccuracy !== undefined, method);
    if (method === 'adapter' || method === 'full') continue;
    assert.equal(JSON.parse(await readFile(join(out, 'adapter_config.json'), 'utf8')).task_type, 'SEQ_CLS', method);
  }
});
