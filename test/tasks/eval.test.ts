// The eval metrics and intervals: matches under each metric, the Wilson interval against known
// values, the perplexity bootstrap's bounds, and rows read from each jsonl layout.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { isMatch, jsonEqual, labelWords, perplexityInterval, wilsonInterval, evalRows } from '../../src/tasks/eval.js';
import { Tokenizer } from '../../src/io/tokenizer.js';
import { parseJsonl } from '../../src/train/data.js';
import { DatasetError } from '../../src/train/errors.js';

test('isMatch: exact, contains, accuracy and json', () => {
  assert.ok(isMatch('exact', ' 42 \n', '42'));
  assert.ok(!isMatch('exact', '42 apples', '42'));
  assert.ok(isMatch('contains', 'the answer is 42.', ' 42'));
  assert.ok(!isMatch('contains', 'anything', '   '));
  assert.ok(isMatch('accuracy', ' Positive, clearly', ' positive', ['positive', 'negative']));
  assert.ok(!isMatch('accuracy', ' negative', ' positive', ['positive', 'negative']));
  assert.ok(!isMatch('accuracy', ' great', ' positive', ['positive', 'negative']));
  assert.ok(isMatch('json', '{"b": [1, 2], "a": "x"}', ' {"a":"x","b":[1,2]}'));
  assert.ok(!isMatch('json', '{"a": "x"', '{"a":"x"}'));
  assert.ok(!isMatch('json', '{"a": [2, 1]}', '{"a":[1,2]}'));
  assert.ok(jsonEqual({ a: { b: null } }, { a: { b: null } }));
  assert.ok(!jsonEqual([1], { 0: 1 }));
  assert.deepEqual(
    labelWords([
      { line: 1, prompt: '', reference: ' Positive' },
      { line: 2, prompt: '', reference: 'negative.' },
    ]),
    ['positive', 'negative'],
  );
});

test('wilsonInterval matches the closed form at known points', () => {
  const [lo0, hi0] = wilsonInterval(0, 40);
  assert.equal(lo0, 0);
  assert.ok(Math.abs(hi0 - 0.08762) < 1e-4, `upper ${hi0}`);
  const [lo, hi] = wilsonInterval(50, 100);
  assert.ok(Math.abs(lo - 0.40383) < 1e-4 && Math.abs(hi - 0.59617) < 1e-4, `${lo} ${hi}`);
  assert.deepEqual(wilsonInterval(0, 0), [0, 1]);
});

test('perplexityInterval brackets the point estimate and is seeded', () => {
  const nll = [3, 5, 2, 8, 4, 6, 1, 7];
  const tokens = [2, 3, 1, 4, 2, 3, 1, 3];
  const point = Math.exp(nll.reduce((a, b) => a + b) / tokens.reduce((a, b) => a + b));
  const [lo, hi] = perplexityInterval(nll, tokens, 7);
  assert.ok(lo <= point && point <= hi, `${lo} <= ${point} <= ${hi}`);
  assert.ok(hi > lo);
  assert.deepEqual(perplexityInterval(nll, tokens, 7), [lo, hi]);
  const same = perplexityInterval([2, 2, 2], [1, 1, 1], 3);
  assert.ok(Math.abs(same[0] - Math.exp(2)) < 1e-12 && Math.abs(same[1] - Math.exp(2)) < 1e-12);
});

test('evalRows reads prompt/completion (renamed keys), text rows for perplexity, and names bad rows', async () => {
  const tok = await Tokenizer.fromDir('models/tiny-llama');
  const rows = evalRows(
    parseJsonl('{"q":"2+2=","a":"4"}\n{"q":"1+1=","a":"2"}\n'),
    tok,
    'exact',
    { promptKey: 'q', completionKey: 'a' },
    'f.jsonl',
  );
  assert.deepEqual(rows, [
    { line: 1, prompt: '2+2=', reference: '4' },
    { line: 2, prompt: '1+1=', reference: '2' },
  ]);
  assert.deepEqual(evalRows(parseJsonl('{"text":"hello"}'), tok, 'perplexity'), [{ line: 1, prompt: '', reference: 'hello' }]);
  assert.throws(
    () => evalRows(parseJsonl('{"text":"hello"}'), tok, 'exact', {}, 'f.jsonl'),
    (e: unknown) => e instanceof DatasetError && /f\.jsonl:1: .*--prompt-key/.test((e as Error).message),
  );
  assert.throws(
    () => evalRows(parseJsonl('{"prompt":"a","completion":3}'), tok, 'exact', {}, 'f.jsonl'),
    /f\.jsonl:1: field "completion" must be a string/,
  );
});
