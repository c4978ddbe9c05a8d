// The loss-curve SVG: well-formed, both series drawn, axes ticked and labelled, a legend, and
// round tick values that cover the data.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { lossCurveSvg, niceTicks } from '../../src/train/plot.js';
import type { MetricRecord } from '../../src/train/metrics.js';

test('tick values are round and cover the range', () => {
  assert.deepEqual(niceTicks(0, 30, 7, true), [0, 5, 10, 15, 20, 25, 30]);
  assert.deepEqual(niceTicks(2.48, 6.35, 6), [2, 3, 4, 5, 6, 7]);
  assert.deepEqual(niceTicks(0, 3, 7, true), [0, 1, 2, 3]);
  const t = niceTicks(0.1234, 0.1288, 6);
  assert.ok(t[0]! <= 0.1234 && t[t.length - 1]! >= 0.1288 && t.length <= 8);
  assert.deepEqual(niceTicks(5, 5, 5, true), [4, 5, 6]);
});

test('the SVG has both curves, ticks, axis labels and a legend', () => {
  const records: MetricRecord[] = [{ kind: 'eval', step: 0, epoch: 0, eval_loss: 6, eval_perplexity: Math.exp(6), eval_tokens: 10 }];
  for (let s = 1; s <= 20; s++) {
    records.push({
      kind: 'train',
      step: s,
      epoch: s / 10,
      loss: 6 - s * 0.2,
      learning_rate: 1e-3,
      grad_norm: 1,
      tokens: 10,
      tokens_per_second: 100,
      elapsed_s: s,
    });
    if (s % 10 === 0) records.push({ kind: 'eval', step: s, epoch: s / 10, eval_loss: 6 - s * 0.18, eval_perplexity: 1, eval_tokens: 10 });
  }
  records.push({
    kind: 'train',
    step: 21,
    epoch: 2.1,
    loss: NaN,
    learning_rate: 1e-3,
    grad_norm: NaN,
    tokens: 10,
    tokens_per_second: 100,
    elapsed_s: 21,
  });
  const svg = lossCurveSvg(records, { title: 'LORA <test>' });
  assert.match(svg, /^<svg xmlns="http:\/\/www.w3.org\/2000\/svg"/);
  assert.match(svg, /<\/svg>\n$/);
  assert.match(svg, /LORA &lt;test&gt;/);
  assert.equal((svg.match(/<path /g) ?? []).length, 2, 'a train and an eval line');
  assert.equal((svg.match(/<circle /g) ?? []).length, 3 + 1, 'eval markers plus the legend marker');
  assert.match(svg, />step<\/text>/);
  assert.match(svg, />loss<\/text>/);
  assert.match(svg, />train loss<\/text>/);
  assert.match(svg, />eval loss<\/text>/);
  for (const tick of ['0', '5', '10', '15', '20']) assert.match(svg, new RegExp(`text-anchor="middle">${tick}</text>`));
  assert.doesNotMatch(svg, /NaN/);
  assert.match(lossCurveSvg([]), /no finite loss values/);
});
