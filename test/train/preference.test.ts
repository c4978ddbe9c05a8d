import assert from 'node:assert/strict';
import { test } from 'node:test';
import { grad } from '../../src/autodiff/grad.js';
import { Graph } from '../../src/graph/ir.js';
import { RuntimeSession, type HostTensor } from '../../src/runtime/session.js';
import { dpoLoss, logSigmoid, orpoLoss, sequenceLogps } from '../../src/train/preference.js';
import { gradCheck, randn, rng } from '../helpers/gradcheck.js';

const B = 4;
const S = 5;
const V = 6;
// rows 0 and 2 are chosen, 3 and 1 their rejected rows; -100 on the prompt (and padding of row 1)
const LABELS = [
  [-100, -100, 2, 4, 1],
  [-100, -100, 3, 0, -100],
  [-100, 5, 1, 1, 2],
  [-100, -100, -100, 2, 3],
];
const PAIRING = [
  [1, 0, 0, -1],
  [0, -1, 1, 0],
];
const labelsT: HostTensor = { dtype: 'int64', shape: [B, S], data: BigInt64Array.from(LABELS.flat().map(BigInt)) };
const pairingT: HostTensor = { dtype: 'float64', shape: [2, B], data: Float64Array.from(PAIRING.flat()) };
const REF = Float64Array.of(-7.5, -6.25, -9, -5.5);
const refT: HostTensor = { dtype: 'float64', shape: [B], data: REF };

/** Per row: sum and count of the shifted labelled tokens' log-probs, in plain JS. */
function jsLogps(logits: Float64Array): { sum: number[]; count: number[] } {
  const sum: number[] = [];
  const count: number[] = [];
  for (let b = 0; b < B; b++) {
    let s = 0;
    let n = 0;
    for (let i = 0; i + 1 < S; i++) {
      const label = LABELS[b]![i + 1]!;
      if (label === -100) continue;
      const row = Array.from(logits.subarray((b * S + i) * V, (b * S + i + 1) * V));
      const m = Math.max(...row);
      const lse = m + Math.log(row.reduce((a, x) => a + Math.exp(x - m), 0));
      s += row[label]! - lse;
      n++;
    }
    sum.push(s);
    count.push(n);
  }
  return { sum, count };
}
const ls = (x: number): number => -Math.log1p(Math.exp(-x));
const pairs = PAIRING.map((r) => [r.indexOf(1), r.indexOf(-1)] as const);

async function evaluate(
  kind: 'dpo' | 'orpo',
  logits: Float64Array,
  beta: number,
): Promise<{ loss: number; chosen: number[]; rejected: number[] }> {
  const g = new Graph();
  const lg = g.input('logits', 'float64', ['batch', 'seq', V]);
  const lb = g.input('labels', 'int64', ['batch', 'seq']);
  const pm = g.input('pairing', 'float64', ['pairs', 'batch']);
  const ref = g.input('ref', 'float64', ['batch']);
  const r = kind === 'dpo' ? dpoLoss(lg, lb, pm, ref, beta) : orpoLoss(lg, lb, pm, beta);
  const sess = await RuntimeSession.fromGraph(g, { loss: r.loss, chosen: r.rewardsChosen, rejected: r.rewardsRejected }, { threads: 1 });
  const feeds: Record<string, HostTensor> = {
    logits: { dtype: 'float64', shape: [B, S, V], data: logits },
    labels: labelsT,
    pairing: pairingT,
  };
  if (kind === 'dpo') feeds.ref = refT;
  const out = await sess.run(feeds, kind === 'dpo' ? undefined : ['loss', 'chosen', 'rejected']);
  await sess.dispose();
  return {
    loss: out.loss!.data[0] as number,
    chosen: Array.from(out.chosen!.data as Float64Array),
    rejected: Array.from(out.rejected!.data as Float64Array),
  };
}

test('DPO loss and rewards match TRL sigmoid loss computed in JS', async () => {
  const logits = randn(rng(3), B * S * V, 2);
  const beta = 0.3;
  const { sum } = jsLogps(logits);
  const chosen = pairs.map(([c]) => beta * (sum[c]! - REF[c]!));
  const rejected = pairs.map(([, r]) => beta * (sum[r]! - REF[r]!));
  const loss = -pairs.reduce((a, _, k) => a + ls(chosen[k]! - rejected[k]!), 0) / pairs.length;
  const got = await evaluate('dpo', logits, beta);
  assert.ok(Math.abs(got.loss - loss) < 1e-10, `loss ${got.loss} vs ${loss}`);
  got.chosen.forEach((x, k) => assert.ok(Math.abs(x - chosen[k]!) < 1e-10));
  got.rejected.forEach((x, k) => assert.ok(Math.abs(x - rejected[k]!) < 1e-10));
});

test('ORPO loss and rewards match TRL odds-ratio loss computed in JS', async () => {
  const logits = randn(rng(4), B * S * V, 2);
  const beta = 0.25;
  const { sum, count } = jsLogps(logits);
  const avg = sum.map((s, b) => s / count[b]!);
  const nll = -pairs.reduce((a, [c]) => a + sum[c]!, 0) / pairs.reduce((a, [c]) => a + count[c]!, 0);
  const l1me = (a: number): number => Math.log1p(-Math.exp(a));
  const ratio = pairs.map(([c, r]) => ls(avg[c]! - avg[r]! - (l1me(avg[c]!) - l1me(avg[r]!))));
  const loss = nll - (beta * ratio.reduce((a, x) => a + x, 0)) / pairs.length;
  const got = await evaluate('orpo', logits, beta);
  assert.ok(Math.abs(got.loss - loss) < 1e-10, `loss ${got.loss} vs ${loss}`);
  got.chosen.forEach((x, k) => assert.ok(Math.abs(x - beta * avg[pairs[k]![0]]!) < 1e-10));
  got.rejected.forEach((x, k) => assert.ok(Math.abs(x - beta * avg[pairs[k]![1]]!) < 1e-10));
});

test('DPO loss gradient matches finite differences (float64)', async () => {
  await gradCheck({ logits: { shape: [B, S, V] } }, ({ logits }, _g, i) => dpoLoss(logits!, i.labels!, i.pairing!, i.ref!, 0.7).loss, {
    inputs: { labels: { value: labelsT }, pairing: { value: pairingT }, ref: { value: refT } },
    rtol: 1e-5,
    atol: 1e-8,
  });
});

test('ORPO loss gradient matches finite differences (float64)', async () => {
  await gradCheck({ logits: { shape: [B, S, V] } }, ({ logits }, _g, i) => orpoLoss(logits!, i.labels!, i.pairing!, 0.5).loss, {
    inputs: { labels: { value: labelsT }, pairing: { value: pairingT } },
    rtol: 1e-5,
    atol: 1e-8,
  });
});

test('logSigmoid stays finite for large |x| and its gradient matches finite differences', async () => {
  const g = new Graph();
  const x = g.input('x', 'float32', [4]);
  const sess = await RuntimeSession.fromGraph(g, { y: logSigmoid(x) }, { threads: 1 });
  const y = (await sess.run({ x: { dtype: 'float32', shape: [4], data: Float32Array.of(-200, -3, 0, 200) } })).y!.data as Float32Array;
  await sess.dispose();
  assert.deepEqual(
    Array.from(y).map((v) => Number(v.toFixed(5))),
    [-200, Number(ls(-3).toFixed(5)), Number((-Math.LN2).toFixed(5)), 0],
  );
  await gradCheck({ x: { shape: [8], init: Float64Array.of(-30, -2.5, -0.3, 0, 0.2, 1.7, 4, 25) } }, ({ x }) => logSigmoid(x!));
});

// The policy equals the reference when training starts (LoRA's B is zero), so every margin is
// exactly 0: the gradient there must be TRL's -beta/2 * d(pi_c - pi_r)/P, not 0.
test('DPO gradient at zero margin (policy = reference) matches the hand-computed one', async () => {
  const logits = randn(rng(5), B * S * V, 2);
  const beta = 0.1;
  const { sum } = jsLogps(logits);
  const g = new Graph();
  const lg = g.param('logits', 'float64', [B, S, V]);
  const lb = g.input('labels', 'int64', [B, S]);
  const pm = g.input('pairing', 'float64', [2, B]);
  const ref = g.input('ref', 'float64', [B]);
  const r = dpoLoss(lg, lb, pm, ref, beta);
  const [dl] = grad(r.loss, [lg]);
  const sess = await RuntimeSession.fromGraph(g, { loss: r.loss, grad: dl!, pi: sequenceLogps(lg, lb).sum }, { threads: 1 });
  const feeds = (refs: Float64Array): Record<string, HostTensor> => ({
    logits: { dtype: 'float64', shape: [B, S, V], data: logits },
    labels: labelsT,
    pairing: pairingT,
    ref: { dtype: 'float64', shape: [B], data: refs },
  });
  // the reference log-probs are the policy's own, bit for bit (as a no-op adapter gives): every margin is exactly 0
  const pi = (await sess.run(feeds(Float64Array.from(sum)))).pi!.data as Float64Array;
  pi.forEach((x, b) => assert.ok(Math.abs(x - sum[b]!) < 1e-12));
  const out = await sess.run(feeds(pi));
  await sess.dispose();
  assert.equal(out.loss!.data[0] as number, Math.LN2);
  // d(-logsigmoid(m))/dm = -1/2 at m = 0; dm/d(logit) = beta * (onehot - softmax) on chosen tokens, minus on rejected ones
  const want = new Float64Array(B * S * V);
  const sign = new Map<number, number>(
    pairs.flatMap(
      ([c, rj]) =>
        [
          [c, 1],
          [rj, -1],
        ] as [number, number][],
    ),
  );
  for (let b = 0; b < B; b++) {
    for (let i = 0; i + 1 < S; i++) {
      const label = LABELS[b]![i + 1]!;
      if (label === -100) continue;
      const row = logits.subarray((b * S + i) * V, (b * S + i + 1) * V);
      const m = Math.max(...row);
      const z = row.reduce((a, x) => a + Math.exp(x - m), 0);
      for (let v = 0; v < V; v++)
        want[(b * S + i) * V + v] = (-0.5 * beta * sign.get(b)! * ((v === label ? 1 : 0) - Math.exp(row[v]! - m) / z)) / pairs.length;
    }
  }
  const got = out.grad!.data as Float64Array;
  let norm = 0;
  want.forEach((w, k) => {
    norm += w * w;
    assert.ok(Math.abs(got[k]! - w) < 1e-12, `grad[${k}] ${got[k]} vs ${w}`);
  });
  assert.ok(norm > 1e-4, 'the hand-computed gradient is not zero');
});
