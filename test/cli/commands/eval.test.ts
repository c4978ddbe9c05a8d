// `peft eval` end to end on the bundled model: a reference set made from the model's own greedy
// outputs scores 100% exact (and one altered row exactly one miss), perplexity equals exp of the
// forward loss, --out rows agree with the printed score, and bad input fails in one line.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { loadModel } from '../../../src/models/load.js';
import { Tokenizer } from '../../../src/io/tokenizer.js';
import { ForwardSession, Generator } from '../../../src/generate/index.js';
import { tokenizeRecords } from '../../../src/train/data.js';
import { peft } from '../peft.js';

const MODEL = 'models/tiny-llama';
const tmp = mkdtempSync(join(tmpdir(), 'peft-eval-'));
process.on('exit', () => rmSync(tmp, { recursive: true, force: true }));

test("peft eval: exact on the model's own outputs is 100%, one changed row is one miss; --out rows; --json", async () => {
  const model = await loadModel(MODEL);
  const tokenizer = await Tokenizer.fromDir(MODEL);
  const prompts = [
    'Review: The room was quiet.\nSentiment:',
    'Question: what is two plus three?\nAnswer:',
    'Record: name: Ada; age: 36\nJSON:',
    'The food was',
  ];
  const gen = await Generator.create(model, { tokenizer });
  const out = await gen.generate(prompts, { maxNewTokens: 6, doSample: false });
  await gen.dispose();
  const refs = out.sequences.map((s) => s.text ?? '');
  const data = join(tmp, 'own.jsonl');
  writeFileSync(data, prompts.map((p, i) => JSON.stringify({ prompt: p, completion: refs[i] })).join('\n') + '\n');
  const rowsFile = join(tmp, 'rows.jsonl');
  const r = await peft([
    'eval',
    '--model',
    MODEL,
    '--data',
    data,
    '--metric',
    'exact',
    '--max-new-tokens',
    '6',
    '--out',
    rowsFile,
    '--json',
    '--threads',
    '1',
  ]);
  assert.equal(r.code, 0, r.stderr);
  const rep = JSON.parse(r.stdout) as { score: number; correct: number; rows: number; ci95: [number, number] };
  assert.equal(rep.rows, prompts.length);
  assert.equal(rep.correct, prompts.length, `predictions vs references in ${readFileSync(rowsFile, 'utf8')}`);
  assert.ok(rep.ci95[0] < 1 && rep.ci95[1] === 1);
  const rows = readFileSync(rowsFile, 'utf8')
    .trim()
    .split('\n')
    .map((l) => JSON.parse(l) as { correct: boolean; prediction: string; line: number });
  assert.deepEqual(
    rows.map((x) => x.line),
    [1, 2, 3, 4],
  );
  assert.ok(rows.every((x) => x.correct));

  writeFileSync(
    data,
    prompts.map((p, i) => JSON.stringify({ prompt: p, completion: i === 2 ? 'something else' : refs[i] })).join('\n') + '\n',
  );
  const again = await peft(['eval', '--model', MODEL, '--data', data, '--max-new-tokens', '6', '--out', rowsFile, '--threads', '1']);
  assert.equal(again.code, 1, 'existing --out without --overwrite must fail');
  assert.match(again.stderr, /^error: .*already exists; pass --overwrite/);
  const r2 = await peft([
    'eval',
    '--model',
    MODEL,
    '--data',
    data,
    '--max-new-tokens',
    '6',
    '--out',
    rowsFile,
    '--overwrite',
    '--threads',
    '1',
  ]);
  assert.equal(r2.code, 0, r2.stderr);
  assert.match(r2.stdout, /^exact 75\.0% \(3\/4, 95% CI /);
  const rows2 = readFileSync(rowsFile, 'utf8')
    .trim()
    .split('\n')
    .map((l) => JSON.parse(l) as { correct: boolean });
  assert.deepEqual(
    rows2.map((x) => x.correct),
    [true, true, false, true],
  );
});

test('peft eval --metric perplexity equals exp(forward loss) over the reference tokens', async () => {
  const model = await loadModel(MODEL);
  const tokenizer = await Tokenizer.fromDir(MODEL);
  const row = { prompt: 'Review: The staff was polite.\nSentiment:', completion: ' positive' };
  const data = join(tmp, 'ppl.jsonl');
  writeFileSync(data, JSON.stringify(row) + '\n');
  const r = await peft(['eval', '--model', MODEL, '--data', data, '--metric', 'perplexity', '--json', '--threads', '1']);
  assert.equal(r.code, 0, r.stderr);
  const rep = JSON.parse(r.stdout) as { score: number; tokens: number };
  const { examples } = tokenizeRecords([{ line: 1, value: row }], tokenizer);
  const ex = examples[0]!;
  const ids = (xs: number[]) => ({ dtype: 'int64' as const, shape: [1, xs.length], data: BigInt64Array.from(xs, (x) => BigInt(x)) });
  const s = await ForwardSession.create(model, { loss: true });
  const { loss } = await s.run({ inputIds: ids(ex.inputIds), attentionMask: ids(ex.inputIds.map(() => 1)), labels: ids(ex.labels) });
  await s.dispose();
  assert.ok(Math.abs(rep.score - Math.exp(loss!)) / Math.exp(loss!) < 1e-5, `${rep.score} vs exp(${loss})`);
  assert.ok(rep.tokens >= 2, 'completion + EOS are scored');
});

test('peft eval: bad input is a one-line error and writes nothing', async () => {
  const bad = join(tmp, 'bad.jsonl');
  writeFileSync(bad, '{"prompt":"x","completion":"y"}\n{"question":"x"}\n');
  const out = join(tmp, 'never.jsonl');
  const r = await peft(['eval', '--model', MODEL, '--data', bad, '--out', out]);
  assert.equal(r.code, 1);
  assert.match(r.stderr, /^error: .*bad\.jsonl:2: no "prompt"\/"completion" pair/);
  assert.equal(r.stderr.trim().split('\n').length, 1);
  assert.ok(!existsSync(out));
  const m = await peft(['eval', '--model', MODEL, '--data', bad, '--metric', 'bleu']);
  assert.equal(m.code, 1);
  assert.match(m.stderr, /--metric must be one of exact, contains, accuracy, json, perplexity/);
});
