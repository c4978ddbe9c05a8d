// Each fused element-wise op (graph/ops.ts: rmsNorm, rotary, geluTanh, silu) against its spelled-out
// composition, forward and forward + backward, at a SmolLM / GPT-2 training step's sizes (4 x 256
// tokens), in ONNX Runtime on the same inputs: does the fusion pay? Prints the fastest of N runs of
// each (the least disturbed on a shared machine) after 2 warm-up runs, the two interleaved.
//
//   node dist/bench/fused_ops.js [--runs 11] [--threads 2]

import * as os from 'node:os';
import { grad } from '../src/autodiff/grad.js';
import { Graph, type Value } from '../src/graph/ir.js';
import * as o from '../src/graph/ops.js';
import { type HostTensor, RuntimeSession } from '../src/runtime/session.js';

interface Case {
  shape: number[];
  fused: (x: Value, g: Graph) => Value;
  composed: (x: Value, g: Graph) => Value;
}

const T = 1024;
const weight = (g: Graph): Value =>
  g.tensor(
    'w',
    'float32',
    [576],
    Float32Array.from({ length: 576 }, (_, i) => 1 + 0.001 * i),
  );
// The rotary tables are computed from an input (as a model computes them from the positions), so
// ONNX Runtime cannot fold the backward pass, which is linear in x, into a constant.
const tables = (g: Graph): [Value, Value] => {
  const a = g.input('angles', 'float32', [4, 1, 256, 32]);
  return [o.cos(a), o.sin(a)];
};
const CASES: Record<string, Case> = {
  'rmsNorm [1024, 576]': {
    shape: [T, 576],
    fused: (x, g) => o.rmsNorm(x, weight(g), 1e-5),
    composed: (x, g) => o.rmsNormComposed(x, weight(g), 1e-5),
  },
  'rotary [4, 9, 256, 64]': {
    shape: [4, 9, 256, 64],
    fused: (x, g) => o.rotary(x, ...tables(g)),
    composed: (x, g) => o.rotaryComposed(x, ...tables(g)),
  },
  'geluTanh [1024, 3072]': { shape: [T, 3072], fused: (x) => o.geluTanh(x), composed: (x) => o.geluTanhComposed(x) },
  'silu [1024, 1536]': { shape: [T, 1536], fused: (x) => o.silu(x), composed: (x) => o.siluComposed(x) },
};

async function session(c: Case, which: 'fused' | 'composed', backward: boolean, threads: number): Promise<RuntimeSession> {
  const g = new Graph();
  const x = g.param('x', 'float32', c.shape);
  const y = c[which](x, g);
  return RuntimeSession.fromGraph(g, backward ? { dx: grad(o.sum(y), [x])[0]! } : { y }, { threads });
}

async function main(): Promise<void> {
  const argv = process.argv.slice(2);
  const opt = (name: string, dflt: number): number => {
    const i = argv.indexOf(name);
    return i >= 0 ? Number(argv[i + 1]) : dflt;
  };
  const runs = opt('--runs', 11);
  const threads = opt('--threads', 2);
  console.log(
    `load ${os
      .loadavg()
      .map((l) => l.toFixed(1))
      .join(' ')}; fastest of ${runs} runs, ${threads} threads`,
  );
  for (const [name, c] of Object.entries(CASES)) {
    const n = c.shape.reduce((a, b) => a * b, 1);
    const feeds: Record<string, HostTensor> = {
      x: { dtype: 'float32', shape: c.shape, data: Float32Array.from({ length: n }, (_, i) => Math.sin(i * 0.1)) },
      angles: { dtype: 'float32', shape: [4, 1, 256, 32], data: Float32Array.from({ length: 4 * 256 * 32 }, (_, i) => 0.01 * i) },
    };
    for (const backward of [false, true]) {
      const s = { fused: await session(c, 'fused', backward, threads), composed: await session(c, 'composed', backward, threads) };
      const inputs: Record<string, HostTensor> = name.startsWith('rotary') ? feeds : { x: feeds.x! };
      const best = { fused: Infinity, composed: Infinity };
      for (let r = 0; r < runs + 2; r++)
        for (const k of ['fused', 'composed'] as const) {
          const t0 = performance.now();
          await s[k].run(inputs);
          if (r >= 2) best[k] = Math.min(best[k], performance.now() - t0);
        }
      await s.fused.dispose();
      await s.composed.dispose();
      console.log(
        `${name.padEnd(24)} ${backward ? 'forward + backward' : 'forward           '}  fused ${best.fused.toFixed(2).padStart(7)} ms  composed ${best.composed.toFixed(2).padStart(7)} ms  fused/composed ${(best.fused / best.composed).toFixed(2)}`,
      );
    }
  }
  console.log(
    `load ${os
      .loadavg()
      .map((l) => l.toFixed(1))
      .join(' ')}`,
  );
}

main().catch((e: unknown) => {
  console.error(e instanceof Error ? (e.stack ?? e.message) : e);
  process.exit(1);
});
