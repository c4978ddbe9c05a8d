// Flexibility and the measured ratings on hand-made numbers: the LR grid against the method's own
// best rate, tasks against the best method, the eval-loss fallback, left-out tasks, thresholds.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { type FlexRun, type Quality, computeFlexibility, flexibilityDefinition, measuredRatings } from '../../src/compare/index.js';

const q = (task: string, value: number, lossQuality = 0.5): Quality => ({
  task,
  metric: 'accuracy',
  value,
  evalLoss: -Math.log(lossQuality),
  lossQuality,
});
const run = (task: string, scale: number, value: number, lossQuality?: number): FlexRun => ({
  task,
  scale,
  learningRate: 1e-3 * scale,
  quality: q(task, value, lossQuality),
});

test('flexibility: LR grid against the own best rate, tasks against the best method, failures gain nothing', () => {
  const base = new Map([
    ['a', q('a', 0.5)],
    ['b', q('b', 0.1)],
  ]);
  const flex = computeFlexibility(
    [
      // gains on a: 0.2, 0.4, (diverged) 0 -> ratios 0.5, 1, 0 -> 0.5; tasks: a 0.4/0.4 = 1, b 0.1/0.4 = 0.25 -> 0.625
      {
        method: 'lora',
        lrGrid: [
          run('a', 0.5, 0.7),
          run('a', 1, 0.9),
          { task: 'a', scale: 2, learningRate: 2e-3, failure: 'TrainError: NaN', diverged: true },
        ],
        tasks: [run('a', 1, 0.9), run('b', 1, 0.2)],
      },
      // tasks: a 0.2/0.4 = 0.5, b 0.4/0.4 = 1
      { method: 'ia3', lrGrid: [run('a', 0.5, 0.7), run('a', 1, 0.7), run('a', 2, 0.7)], tasks: [run('a', 1, 0.7), run('b', 1, 0.5)] },
    ],
    base,
  );
  const lora = flex.get('lora')!;
  assert.equal(lora.lrStability, 0.5);
  assert.equal(lora.taskRetention, 0.625);
  assert.equal(lora.value, (0.5 + 0.625) / 2);
  assert.equal(lora.lrGrid[2]!.failure, 'TrainError: NaN');
  const ia3 = flex.get('ia3')!;
  assert.equal(ia3.lrStability, 1);
  assert.equal(ia3.taskRetention, 0.75);
});

test('flexibility leaves out a run that failed for another reason than divergence', () => {
  const base = new Map([['a', q('a', 0.5)]]);
  const crash = { task: 'a', scale: 2, learningRate: 2e-3, failure: 'WorkerError: killed' };
  const flex = computeFlexibility(
    [{ method: 'lora', lrGrid: [run('a', 0.5, 0.7), run('a', 1, 0.9), crash], tasks: [run('a', 1, 0.9)] }],
    base,
  );
  const lora = flex.get('lora')!;
  assert.equal(lora.lrGrid[2]!.ratio, null);
  assert.equal(lora.lrStability, 0.75);
  assert.ok(lora.notes.some((n) => n.includes('failed and is left out')));
});

test('flexibility falls back to eval loss where no run improved the metric, and leaves out tasks nobody improved', () => {
  const base = new Map([
    ['a', q('a', 0.5, 0.2)],
    ['b', q('b', 0, 0.3)],
  ]);
  const flex = computeFlexibility(
    [
      { method: 'prompt', lrGrid: [run('a', 1, 0.5, 0.4)], tasks: [run('a', 1, 0.5, 0.4), run('b', 1, 0, 0.3)] },
      { method: 'full', lrGrid: [run('a', 1, 0.5, 0.3)], tasks: [run('a', 1, 0.5, 0.3), run('b', 1, 0, 0.25)] },
    ],
    base,
  );
  const p = flex.get('prompt')!;
  assert.equal(p.lrStability, undefined);
  assert.equal(p.tasks[0]!.basis, 'eval loss');
  assert.ok(Math.abs(p.tasks[0]!.ratio! - 1) < 1e-12);
  assert.equal(p.tasks[1]!.ratio, null);
  assert.equal(p.value, p.taskRetention);
  assert.ok(Math.abs(flex.get('full')!.value - 0.5) < 1e-12);
  assert.ok(p.notes.some((n) => n.includes('left out b')));
});

test('the definition names the grid and the tasks, and says when a part was skipped', () => {
  assert.match(flexibilityDefinition([0.5, 1, 2], 'sentiment', ['sentiment', 'json']), /\{×0\.5, ×1, ×2\}[\s\S]*sentiment, json/);
  assert.match(flexibilityDefinition([1], 'sentiment', ['sentiment']), /not measured[\s\S]*on sentiment only/);
});

test('measured ratings follow the stated thresholds', () => {
  const r = measuredRatings({
    trainableShare: 0.005,
    stepVsFull: 0.6,
    latencyVsBase: 1.6,
    storedVsFull: 0.05,
    peakVsFull: 1.2,
    relativeGain: 0.95,
    flexibility: 0.7,
  });
  assert.deepEqual(r, { parameter: 'High', compute: 'Medium', space: 'Low', performance: 'High', flexibility: 'Medium' });
  const full = measuredRatings({
    trainableShare: 1,
    stepVsFull: 1,
    latencyVsBase: 1,
    storedVsFull: 1,
    peakVsFull: 1,
    relativeGain: 1,
    flexibility: 1,
  });
  assert.deepEqual(full, { parameter: 'Low', compute: 'Low', space: 'Low', performance: 'High', flexibility: 'High' });
});

test('gains on a classification task start from always answering the most common label when that beats the base', () => {
  const base = new Map([['s', { ...q('s', 0), chance: 0.5 }]]);
  const flex = computeFlexibility(
    [
      { method: 'prompt', lrGrid: [run('s', 0.5, 0.5), run('s', 1, 0.55), run('s', 2, 0.45)], tasks: [run('s', 1, 0.55)] },
      { method: 'full', lrGrid: [run('s', 1, 0.95)], tasks: [run('s', 1, 0.95)] },
    ],
    base,
  );
  const p = flex.get('prompt')!;
  assert.ok(Math.abs(p.tasks[0]!.gain - 0.05) < 1e-12);
  assert.ok(Math.abs(p.taskRetention - 0.05 / 0.45) < 1e-12);
  assert.deepEqual(
    p.lrGrid.map((x) => x.ratio !== null && Math.round(100 * x.ratio)),
    [0, 100, 0],
  );
});

test('a metric gain within the noise of n scored examples (1/sqrt(n)) hands the decision to the eval loss', () => {
  const withTotal = (x: Quality): Quality => ({ ...x, correct: Math.round(100 * x.value), total: 100 });
  const base = new Map([['s', withTotal({ ...q('s', 0, 0.2), chance: 0.5 })]]);
  const r = (scale: number, value: number, lossQuality: number): FlexRun => ({
    ...run('s', scale, value, lossQuality),
    quality: withTotal(q('s', value, lossQuality)),
  });
  const flex = computeFlexibility(
    [{ method: 'prompt', lrGrid: [r(0.5, 0.5, 0.3), r(1, 0.55, 0.4), r(2, 0.45, 0.2)], tasks: [r(1, 0.55, 0.4)] }],
    base,
  );
  const p = flex.get('prompt')!;
  assert.equal(p.lrGrid[0]!.basis, 'eval loss');
  assert.deepEqual(
    p.lrGrid.map((x) => Math.round(100 * x.ratio!)),
    [50, 100, 0],
  );
  assert.equal(p.tasks[0]!.basis, 'eval loss');
});
