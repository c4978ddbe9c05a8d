// Issue #19: one product for the frozen matrices that read the same input? A Llama layer multiplies
// its normed input by q_proj, k_proj and v_proj (and by gate_proj and up_proj) one at a time; with
// the int8 base each Int8MatMul (DynamicQuantizeMatMul) quantizes x again, and the backward pass
// sums the input gradients (dq Wq + dk Wk + dv Wv: 3 products, 2 Adds). This times, at a SmolLM-135M
// training step's sizes (4 x 256 = 1024 rows), the separate products against one product over the
// concatenated matrix (+ Split; in the backward Concat of the gradients + one product), for the
// int8 base (the project's Int8MatMul with its codes and scales from src/quant/int8_base.ts) and for
// float32 (MatMulT forward, MatMul backward, as a float32 base lowers). Prints the fastest of N runs
// of each (the least disturbed on a shared machine) after 2 warm-up runs, interleaved in rotating order, and
// the largest difference between the two results; for the forward pass also the fused product
// alone, without its Split (the Split's copy is part of the fused case's cost).
//
//   nice -n 10 node dist/bench/fused_products.js [--runs 11] [--threads 2] [--tokens 1024]

import * as os from 'node:os';
import { forEachFlag, helpOrUnknown, intArg } from './args.js';
import { Graph, type Value } from '../src/graph/ir.js';
import * as o from '../src/graph/ops.js';
import { int8Base, int8Operands } from '../src/quant/int8_base.js';
import { type HostTensor, RuntimeSession } from '../src/runtime/session.js';

const HELP = 'usage: node dist/bench/fused_products.js [--runs 11] [--threads 2] [--tokens 1024]';
let runs = 11;
let threads = 2;
let T = 1024;
forEachFlag(process.argv.slice(2), (flag, value) => {
  if (flag === '--runs') runs = intArg(flag, value(), 1);
  else if (flag === '--threads') threads = intArg(flag, value(), 1);
  else if (flag === '--tokens') T = intArg(flag, value(), 1);
  else helpOrUnknown(flag, HELP);
});
const H = 576;

const rand = (n: number, seed: number): Float32Array => Float32Array.from({ length: n }, (_, i) => Math.sin(i * 0.37 + seed) * 0.05);

/** nn.Linear weights [out, in] of the modules that read one input, and their concatenation along out. */
function weights(outs: readonly number[]): { parts: Float32Array[]; fused: Float32Array } {
  const parts = outs.map((n, i) => rand(n * H, i + 1));
  const fused = new Float32Array(outs.reduce((a, b) => a + b, 0) * H);
  let at = 0;
  for (const p of parts) {
    fused.set(p, at);
    at += p.length;
  }
  return { parts, fused };
}

type Precision = 'int8' | 'float32';
type Pass = 'forward' | 'backward';
// 'product' = the fused forward product without its Split (what the Split costs on top of it)
type Variant = 'separate' | 'fused' | 'product';

/** The graph of one case: forward y_i = x W_i^T, or backward dx = sum_i dy_i W_i. */
function build(outs: readonly number[], precision: Precision, pass: Pass, variant: Variant): { g: Graph; out: Record<string, Value> } {
  const fused = variant !== 'separate';
  const g = new Graph();
  const w = weights(outs);
  const total = outs.reduce((a, b) => a + b, 0);
  // x @ M (forward, M = W^T [H, out]) or g @ M^T (backward) of one frozen matrix W [out, H]
  const product = (x: Value, data: Float32Array, n: number, name: string): Value => {
    if (precision === 'int8') {
      const [b, bs, bt, bts] = int8Operands(g, name, int8Base(data, [n, H], 'linear', name));
      return pass === 'forward' ? o.int8Matmul(x, [b, bs, bt, bts]) : o.int8Matmul(x, [bt, bts, b, bs]);
    }
    const c = g.constant(name, 'float32', [n, H], { kind: 'array', data });
    return pass === 'forward' ? o.matmulT(x, c) : o.matmul(x, c);
  };
  if (pass === 'forward') {
    const x = g.input('x', 'float32', [T, H]);
    if (variant === 'product') return { g, out: { y: product(x, w.fused, total, 'w_fused') } };
    const ys = fused ? o.split(product(x, w.fused, total, 'w_fused'), -1, outs) : outs.map((n, i) => product(x, w.parts[i]!, n, `w${i}`));
    return { g, out: Object.fromEntries(ys.map((y, i) => [`y${i}`, y])) };
  }
  const dys = outs.map((n, i) => g.input(`dy${i}`, 'float32', [T, n]));
  const dx = fused
    ? product(o.concat(dys, -1), w.fused, total, 'w_fused')
    : dys.map((dy, i) => product(dy, w.parts[i]!, outs[i]!, `w${i}`)).reduce((a, b) => o.add(a, b));
  return { g, out: { dx } };
}

const CASES: [string, number[]][] = [
  ['q/k/v   576 -> 576+192+192', [576, 192, 192]],
  ['gate/up 576 -> 1536+1536', [1536, 1536]],
];

async function main(): Promise<void> {
  const load = (): string =>
    os
      .loadavg()
      .map((l) => l.toFixed(2))
      .join(' ');
  console.log(`load ${load()}; ${T} rows, fastest of ${runs} runs after 2 warm-up, ${threads} threads, interleaved`);
  for (const precision of ['int8', 'float32'] as const)
    for (const [name, outs] of CASES)
      for (const pass of ['forward', 'backward'] as const) {
        const feeds: Record<string, HostTensor> =
          pass === 'forward'
            ? { x: { dtype: 'float32', shape: [T, H], data: rand(T * H, 7) } }
            : Object.fromEntries(outs.map((n, i) => [`dy${i}`, { dtype: 'float32', shape: [T, n], data: rand(T * n, 11 + i) }]));
        const variants: Variant[] = pass === 'forward' ? ['separate', 'fused', 'product'] : ['separate', 'fused'];
        const s: Partial<Record<Variant, RuntimeSession>> = {};
        for (const v of variants) {
          const { g, out } = build(outs, precision, pass, v);
          s[v] = await RuntimeSession.fromGraph(g, out, { threads, spinning: false });
        }
        const best: Record<Variant, number> = { separate: Infinity, fused: Infinity, product: Infinity };
        let maxDiff = 0;
        for (let r = 0; r < runs + 2; r++) {
          const res: Partial<Record<Variant, Record<string, HostTensor>>> = {};
          // rotate the order run by run, so that no variant always runs first
          for (let j = 0; j < variants.length; j++) {
            const k = variants[(r + j) % variants.length]!;
            const t0 = performance.now();
            res[k] = await s[k]!.run(feeds);
            if (r >= 2) best[k] = Math.min(best[k], performance.now() - t0);
          }
          if (r === 0)
            for (const key of Object.keys(res.separate!)) {
              const a = res.separate![key]!.data as Float32Array;
              const b = res.fused![key]!.data as Float32Array;
              for (let i = 0; i < a.length; i++) maxDiff = Math.max(maxDiff, Math.abs(a[i]! - b[i]!));
            }
        }
        for (const v of variants) await s[v]!.dispose();
        const product = pass === 'forward' ? `  (product alone ${best.product.toFixed(2)} ms)` : '';
        console.log(
          `${precision.padEnd(7)} ${name.padEnd(27)} ${pass.padEnd(8)}  separate ${best.separate.toFixed(2).padStart(7)} ms  fused ${best.fused.toFixed(2).padStart(7)} ms  fused/separate ${(best.fused / best.separate).toFixed(2)}  saves ${(best.separate - best.fused).toFixed(2).padStart(6)} ms  max diff ${maxDiff.toExponential(1)}${product}`,
        );
      }
  console.log(`load ${load()}`);
}

main().catch((e: unknown) => {
  console.error(e instanceof Error ? (e.stack ?? e.message) : e);
  process.exit(1);
});
