// What handing the KV cache back to JS costs per decode step (issue 16): a graph that grows 24
// caches of [1, 12, L, 64] by one position (GPT-2 small's 12 layers x keys/values) and returns the
// grown caches, as the decode session does, against the same graph returning only a scalar.
// onnxruntime-node 1.30 copies every returned output into a new JS ArrayBuffer; the difference
// is that copy (plus its allocation). Minimum over 7 rounds of 50 runs, wall and process CPU.
//
//   npx tsc -p . && node dist/bench/kv_return.js [--lengths 64,256,512] [--threads 2]

import { Graph, type Value } from '../src/graph/ir.js';
import * as o from '../src/graph/ops.js';
import { RuntimeSession, type HostTensor } from '../src/runtime/session.js';

const argOpt = (name: string): string | undefined => {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? process.argv[i + 1] : undefined;
};
const LENGTHS = (argOpt('lengths') ?? '64,256,512').split(',').map(Number);
const THREADS = Number(argOpt('threads') ?? '2');
const H = 12;
const D = 64;
const N = 24;

async function build(L: number, returnCaches: boolean): Promise<{ session: RuntimeSession; feeds: Record<string, HostTensor> }> {
  const g = new Graph();
  const feeds: Record<string, HostTensor> = {};
  const outs: Record<string, Value> = {};
  let acc: Value | undefined;
  for (let i = 0; i < N; i++) {
    const past = g.input(`past${i}`, 'float32', [1, H, 'past', D]);
    const step = g.input(`new${i}`, 'float32', [1, H, 1, D]);
    feeds[`past${i}`] = { dtype: 'float32', shape: [1, H, L, D], data: new Float32Array(H * L * D).fill(1) };
    feeds[`new${i}`] = { dtype: 'float32', shape: [1, H, 1, D], data: new Float32Array(H * D).fill(2) };
    const grown = o.concat([past, step], 2);
    const s = o.sum(o.slice(grown, 2, -1), [0, 1, 2, 3]);
    acc = acc ? o.add(acc, s) : s;
    if (returnCaches) outs[`present${i}`] = grown;
  }
  outs.s = acc!;
  return { session: await RuntimeSession.fromGraph(g, outs, { threads: THREADS, spinning: false }), feeds };
}

async function main(): Promise<void> {
  console.log(
    `load average ${(await import('node:os'))
      .loadavg()
      .map((x) => x.toFixed(2))
      .join(' ')}`,
  );
  for (const L of LENGTHS) {
    const both = { caches: await build(L, true), scalar: await build(L, false) };
    const best = { caches: [Infinity, Infinity], scalar: [Infinity, Infinity] };
    for (let round = 0; round < 7; round++) {
      for (const k of ['caches', 'scalar'] as const) {
        const { session, feeds } = both[k];
        for (let i = 0; i < 5; i++) await session.run(feeds);
        const c0 = process.cpuUsage();
        const t0 = performance.now();
        for (let i = 0; i < 50; i++) await session.run(feeds);
        const c = process.cpuUsage(c0);
        best[k] = [Math.min(best[k][0]!, ((performance.now() - t0) * 1000) / 50), Math.min(best[k][1]!, (c.user + c.system) / 50)];
      }
    }
    console.log(
      `L=${L}: caches returned ${best.caches[0]!.toFixed(0)} us wall, ${best.caches[1]!.toFixed(0)} us CPU per step; scalar only ${best.scalar[0]!.toFixed(0)} / ${best.scalar[1]!.toFixed(0)}; returning costs +${(best.caches[0]! - best.scalar[0]!).toFixed(0)} us wall`,
    );
    await Promise.all([both.caches.session.dispose(), both.scalar.session.dispose()]);
  }
}

main().catch((e: unknown) => {
  console.error(e instanceof Error ? (e.stack ?? e.message) : e);
  process.exit(1);
});
