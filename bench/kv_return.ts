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

type Mode = 'caches' | 'scalar' | 'tail';
interface Bench {
  session: RuntimeSession;
  feeds: Record<string, HostTensor>;
  /** JS work after each run (tail mode: writing the new position into the capacity buffers) */
  after: (r: Record<string, HostTensor>) => void;
}

// caches: today's decode graph (past [1, H, L, D] in, grown cache out). scalar: the same graph
// returning nothing big. tail: the position-major cache of issue 16 item 4: past [L, 1, H, D] fed
// as a zero-copy view of a JS capacity buffer, Transposed to [1, H, L, D] in the graph, the new
// position Concatenated as today, and only that position [1, 1, H, D] returned and written into
// the capacity buffer by one .set per cache.
async function build(L: number, mode: Mode): Promise<Bench> {
  const g = new Graph();
  const feeds: Record<string, HostTensor> = {};
  const outs: Record<string, Value> = {};
  const buffers: Float32Array[] = [];
  let acc: Value | undefined;
  for (let i = 0; i < N; i++) {
    const tail = mode === 'tail';
    const input = g.input(`past${i}`, 'float32', tail ? ['past', 1, H, D] : [1, H, 'past', D]);
    const past = tail ? o.transpose(input, [1, 2, 0, 3]) : input;
    const step = g.input(`new${i}`, 'float32', [1, H, 1, D]);
    if (tail) {
      const buffer = new Float32Array(2 * L * H * D).fill(1);
      buffers.push(buffer);
      feeds[`past${i}`] = { dtype: 'float32', shape: [L, 1, H, D], data: buffer.subarray(0, L * H * D) };
    } else feeds[`past${i}`] = { dtype: 'float32', shape: [1, H, L, D], data: new Float32Array(H * L * D).fill(1) };
    feeds[`new${i}`] = { dtype: 'float32', shape: [1, H, 1, D], data: new Float32Array(H * D).fill(2) };
    const grown = o.concat([past, step], 2);
    const s = o.sum(o.slice(grown, 2, -1), [0, 1, 2, 3]);
    acc = acc ? o.add(acc, s) : s;
    if (mode === 'caches') outs[`present${i}`] = grown;
    if (tail) outs[`present${i}`] = o.transpose(o.slice(grown, 2, -1), [2, 0, 1, 3]);
  }
  outs.s = acc!;
  const after =
    mode === 'tail'
      ? (r: Record<string, HostTensor>) => {
          for (let i = 0; i < N; i++) buffers[i]!.set(r[`present${i}`]!.data as Float32Array, L * H * D);
        }
      : () => {};
  return { session: await RuntimeSession.fromGraph(g, outs, { threads: THREADS, spinning: false }), feeds, after };
}

async function main(): Promise<void> {
  console.log(
    `load average ${(await import('node:os'))
      .loadavg()
      .map((x) => x.toFixed(2))
      .join(' ')}`,
  );
  for (const L of LENGTHS) {
    const both = { caches: await build(L, 'caches'), scalar: await build(L, 'scalar'), tail: await build(L, 'tail') };
    const best = { caches: [Infinity, Infinity], scalar: [Infinity, Infinity], tail: [Infinity, Infinity] };
    for (let round = 0; round < 7; round++) {
      for (const k of ['caches', 'scalar', 'tail'] as const) {
        const { session, feeds, after } = both[k];
        for (let i = 0; i < 5; i++) after(await session.run(feeds));
        const c0 = process.cpuUsage();
        const t0 = performance.now();
        for (let i = 0; i < 50; i++) after(await session.run(feeds));
        const c = process.cpuUsage(c0);
        best[k] = [Math.min(best[k][0]!, ((performance.now() - t0) * 1000) / 50), Math.min(best[k][1]!, (c.user + c.system) / 50)];
      }
    }
    console.log(
      `L=${L}: caches returned ${best.caches[0]!.toFixed(0)} us wall, ${best.caches[1]!.toFixed(0)} us CPU per step; scalar only ${best.scalar[0]!.toFixed(0)} / ${best.scalar[1]!.toFixed(0)}; returning costs +${(best.caches[0]! - best.scalar[0]!).toFixed(0)} us wall; position-major tail ${best.tail[0]!.toFixed(0)} / ${best.tail[1]!.toFixed(0)} (+${(best.tail[0]! - best.scalar[0]!).toFixed(0)} us wall, +${(best.tail[1]! - best.scalar[1]!).toFixed(0)} us CPU over scalar)`,
    );
    await Promise.all([both.caches.session.dispose(), both.scalar.session.dispose(), both.tail.session.dispose()]);
  }
}

main().catch((e: unknown) => {
  console.error(e instanceof Error ? (e.stack ?? e.message) : e);
  process.exit(1);
});
