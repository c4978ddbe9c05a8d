// Micro A/B of LoraModel.sharedDownGroups: forward + backward of LoRA (r 8, scaling 2) on three
// modules that read one input x [tokens, 576] (SmolLM's q [576], k and v [192]), with one x @ A^T
// per module against one over the concatenated A's. Sessions alternate run by run, so a busy
// machine's load falls on both alike; prints the median and lowest time of each.
//   node dist/bench/lora_shared_down_micro.js [--runs 200] [--tokens 1024] [--threads 2]
import { grad } from '../src/autodiff/grad.js';
import { Graph, type Value } from '../src/graph/ir.js';
import * as o from '../src/graph/ops.js';
import { RuntimeSession, type HostTensor } from '../src/runtime/session.js';

const argv = process.argv.slice(2);
const opt = (k: string, d: number) => (argv.includes(`--${k}`) ? Number(argv[argv.indexOf(`--${k}`) + 1]) : d);
const runs = opt('runs', 200);
const T = opt('tokens', 1024);
const threads = opt('threads', 2);
const H = 576;
const r = 8;
const outs = [576, 192, 192];

async function build(shared: boolean): Promise<RuntimeSession> {
  const g = new Graph();
  const x = g.input('x', 'float32', [T, H]);
  const A = outs.map((_, i) => g.param(`A${i}`, 'float32', [r, H]));
  const B = outs.map((n, i) => g.param(`B${i}`, 'float32', [n, r]));
  const dys = outs.map((n, i) => g.input(`dy${i}`, 'float32', [T, n]));
  const xa: Value[] = shared
    ? o.split(
        o.matmulT(x, o.concat(A, 0)),
        -1,
        outs.map(() => r),
      )
    : A.map((a) => o.matmulT(x, a));
  const ys = xa.map((v, i) => o.mul(o.matmulT(v, B[i]!), 2));
  const loss = ys.map((y, i) => o.sum(o.mul(y, dys[i]!))).reduce((p, q) => o.add(p, q));
  const grads = grad(loss, [x, ...A, ...B]);
  const fetch: Record<string, Value> = {};
  grads.forEach((v, i) => (fetch[`g${i}`] = v!));
  ys.forEach((v, i) => (fetch[`y${i}`] = v));
  return RuntimeSession.fromGraph(g, fetch, { threads, spinning: false });
}

const rand = (n: number) => Float32Array.from({ length: n }, (_, i) => Math.sin(i * 0.37) * 0.1);
const feeds: Record<string, HostTensor> = { x: { dtype: 'float32', shape: [T, H], data: rand(T * H) } };
outs.forEach((n, i) => {
  feeds[`A${i}`] = { dtype: 'float32', shape: [r, H], data: rand(r * H) };
  feeds[`B${i}`] = { dtype: 'float32', shape: [n, r], data: rand(n * r) };
  feeds[`dy${i}`] = { dtype: 'float32', shape: [T, n], data: rand(T * n) };
});
const sessions = [await build(false), await build(true)];
const times: number[][] = [[], []];
const check = await Promise.all(sessions.map((s) => s.run(feeds)));
let maxDiff = 0;
for (const k of Object.keys(check[0]!)) {
  const a = check[0]![k]!.data as Float32Array;
  const b = check[1]![k]!.data as Float32Array;
  for (let i = 0; i < a.length; i++) maxDiff = Math.max(maxDiff, Math.abs(a[i]! - b[i]!));
}
for (let i = 0; i < runs; i++) {
  for (const j of i % 2 ? [1, 0] : [0, 1]) {
    const t0 = performance.now();
    await sessions[j]!.run(feeds);
    times[j]!.push(performance.now() - t0);
  }
}
const med = (a: number[]) => [...a].sort((p, q) => p - q)[a.length >> 1]!;
const low = (a: number[]) => Math.min(...a);
console.log(
  `tokens ${T}, threads ${threads}, ${runs} runs each (alternating), largest difference ${maxDiff.toExponential(2)}: per module ${med(times[0]!).toFixed(2)} ms median / ${low(times[0]!).toFixed(2)} lowest; shared ${med(times[1]!).toFixed(2)} / ${low(times[1]!).toFixed(2)}`,
);
await Promise.all(sessions.map((s) => s.dispose()));
