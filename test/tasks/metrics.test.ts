// The task metrics: exact match strips surrounding whitespace only; a classification output counts
// when its first word is the reference's label word, whatever follows it.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { TASKS, TaskError, getTask, isCorrect, labelOf, normalizeAnswer } from '../../src/tasks/index.js';

test('normalizeAnswer strips surrounding whitespace and nothing else', () => {
  assert.equal(normalizeAnswer('  68 \n'), '68');
  assert.equal(normalizeAnswer(' {"a": 1}'), '{"a": 1}');
  assert.equal(normalizeAnswer('a  b'), 'a  b');
});

test('exact match compares whole answers after stripping whitespace', () => {
  const arith = getTask('arith');
  assert.ok(isCorrect(arith, ' 68', ' 68'));
  assert.ok(isCorrect(arith, '68  ', ' 68'));
  assert.ok(!isCorrect(arith, ' 68.', ' 68'));
  assert.ok(!isCorrect(arith, ' 6', ' 68'));
  assert.ok(!isCorrect(arith, '', ' 68'));
  const json = getTask('json');
  assert.ok(isCorrect(json, ' {"name": "Alice", "age": 34}', ' {"name": "Alice", "age": 34}'));
  assert.ok(!isCorrect(json, ' {"name":"Alice","age":34}', ' {"name": "Alice", "age": 34}'), 'spacing inside the answer counts');
  assert.ok(!isCorrect(json, ' {"name": "Alice", "age": "34"}', ' {"name": "Alice", "age": 34}'));
});

test('accuracy reads the label word at the start of the output', () => {
  const s = getTask('sentiment');
  assert.deepEqual(s.labels, ['positive', 'negative']);
  assert.equal(labelOf(' positive', s.labels!), 'positive');
  assert.equal(labelOf('Negative.', s.labels!), 'negative');
  assert.equal(labelOf(' positive review', s.labels!), 'positive');
  assert.equal(labelOf(' mostly positive', s.labels!), undefined);
  assert.equal(labelOf(' positively', s.labels!), undefined);
  assert.equal(labelOf('', s.labels!), undefined);
  assert.ok(isCorrect(s, ' positive', ' positive'));
  assert.ok(isCorrect(s, ' POSITIVE!', ' positive'));
  assert.ok(!isCorrect(s, ' negative', ' positive'));
  assert.ok(!isCorrect(s, ' The food', ' negative'));
  // A reference that is no label can never be matched.
  assert.ok(!isCorrect(s, ' neutral', ' neutral'));
});

test('every bundled task has a metric and room for its answers; unknown tasks are typed errors', () => {
  for (const spec of Object.values(TASKS)) {
    assert.ok(['accuracy', 'exact_match'].includes(spec.metric), spec.name);
    assert.ok(spec.maxNewTokens >= 1, spec.name);
    if (spec.metric === 'accuracy') assert.ok((spec.labels ?? []).length >= 2, spec.name);
  }
  assert.throws(
    () => getTask('summarize'),
    (e: unknown) => e instanceof TaskError && /unknown task "summarize".*sentiment, json, arith/.test(e.message),
  );
});
