// The engine end to end in one screen: build a 2-layer MLP in the IR, differentiate it, compile
// forward + backward into one ONNX Runtime session, and train it with AdamW on a toy regression
// (y = sin(3x0) + x1^2) until the loss falls. Prints the loss curve as it goes.

import { Graph } from '../src/graph/ir.js';
import * as o from '../src/graph/ops.js';
import { grad } from '../src/autodiff/grad.js';
import { mulberry32 } from '../src/nn/random.js';
import { RuntimeSession } from '../src/runtime/session.js';
import { AdamW } from '../src/train/adamw.js';
import type { TrainableTensor } from '../src/tuners/types.js';

async function main(): Promise<void> {
  const hidden = 64;
  const steps = Number(process.argv[2] ?? 300);
  const rand = mulberry32(0);
  const g = new Graph();
  const x = g.input('x', 'float32', ['batch', 2]);
  const y = g.input('y', 'float32', ['batch', 1]);
  const w1 = g.param('w1', 'float32', [2, hidden]);
  const b1 = g.param('b1', 'float32', [hidden]);
  const w2 = g.param('w2', 'float32', [hidden, 1]);
  const b2 = g.param('b2', 'float32', [1]);
  const pred = o.add(o.matmul(o.tanh(o.add(o.matmul(x, w1), b1)), w2), b2);
  const diff = o.sub(pred, y);
  const loss = o.mean(o.mul(diff, diff));
  const grads = grad(loss, [w1, b1, w2, b2]);
  const session = await RuntimeSession.fromGraph(g, { loss, ...Object.fromEntries(grads.map((gv, i) => [`grad_${i}`, gv!])) });

  const init = (n: number, scale: number) => Float32Array.from({ length: n }, () => (rand() * 2 - 1) * scale);
  const params = new Map<string, TrainableTensor>([
    ['w1', { shape: [2, hidden], data: init(2 * hidden, 1) }],
    ['b1', { shape: [hidden], data: new Float32Array(hidden) }],
    ['w2', { shape: [hidden, 1], data: init(hidden, 1 / Math.sqrt(hidden)) }],
    ['b2', { shape: [1], data: new Float32Array(1) }],
  ]);
  const names = [...params.keys()];
  const opt = new AdamW({ lr: 1e-2, weightDecay: 0 });
  const batch = 128;
  const curve: number[] = [];
  for (let step = 1; step <= steps; step++) {
    const xs = init(batch * 2, 1);
    const ys = Float32Array.from({ length: batch }, (_, i) => Math.sin(3 * xs[2 * i]!) + xs[2 * i + 1]! ** 2);
    const feeds: Record<string, { dtype: 'float32'; shape: number[]; data: Float32Array }> = {
      x: { dtype: 'float32', shape: [batch, 2], data: xs },
      y: { dtype: 'float32', shape: [batch, 1], data: ys },
    };
    for (const [k, p] of params) feeds[k] = { dtype: 'float32', shape: p.shape, data: p.data };
    const out = await session.run(feeds);
    const l = out.loss!.data[0] as number;
    curve.push(l);
    opt.step(params, new Map(names.map((k, i) => [k, out[`grad_${i}`]!.data as Float32Array])));
    if (step === 1 || step % Math.max(1, Math.floor(steps / 15)) === 0 || step === steps) {
      const bar = '#'.repeat(Math.max(1, Math.round(Math.min(1, l / curve[0]!) * 50)));
      console.log(`step ${String(step).padStart(4)}  loss ${l.toFixed(5)}  ${bar}`);
    }
  }
  await session.dispose();
  const first = curve.slice(0, 10).reduce((a, b) => a + b, 0) / 10;
  const last = curve.slice(-10).reduce((a, b) => a + b, 0) / 10;
  console.log(
    `mean loss of the first 10 steps ${first.toFixed(4)} -> last 10 steps ${last.toFixed(4)} (${((1 - last / first) * 100).toFixed(1)}% lower)`,
  );
  if (!(last < first)) process.exitCode = 1;
}

await main();
