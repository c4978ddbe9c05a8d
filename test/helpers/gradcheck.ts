// One helper for every gradient test: builds f over float64 params, compiles loss + autodiff
// gradients into one ORT session, and compares them with central finite differences.

import assert from 'node:assert/strict';
import { Graph, type Value } from '../../src/graph/ir.js';
import * as o from '../../src/graph/ops.js';
import type { Shape } from '../../src/graph/types.js';
import { grad } from '../../src/autodiff/grad.js';
import { boxMuller, mulberry32 } from '../../src/nn/random.js';
import { RuntimeSession, type HostTensor } from '../../src/runtime/session.js';

/** Deterministic PRNG (mulberry32) so failures reproduce. */
export const rng = mulberry32;

export function randn(rand: () => number, n: number, scale = 1): Float64Array {
  const out = new Float64Array(n);
  for (let i = 0; i < n; i++) out[i] = boxMuller(rand) * scale;
  return out;
}

export interface ParamSpec {
  shape: number[];
  /** initial values; random normal by default */
  init?: Float64Array;
}

export interface GradCheckOptions {
  eps?: number;
  rtol?: number;
  atol?: number;
  seed?: number;
  /** extra non-differentiated inputs fed at run time */
  inputs?: Record<string, { value: HostTensor; shape?: Shape }>;
}

/**
 * Checks d/dp sum(w * f(p)) computed by autodiff against central differences, for every param.
 * w is a fixed random weighting so that every output element matters with a different weight.
 */
export async function gradCheck(
  params: Record<string, ParamSpec>,
  f: (p: Record<string, Value>, g: Graph, inputs: Record<string, Value>) => Value,
  opts: GradCheckOptions = {},
): Promise<void> {
  const rand = rng(opts.seed ?? 7);
  const g = new Graph();
  const pv: Record<string, Value> = {};
  for (const [k, s] of Object.entries(params)) pv[k] = g.param(k, 'float64', s.shape);
  const iv: Record<string, Value> = {};
  for (const [k, s] of Object.entries(opts.inputs ?? {})) iv[k] = g.input(k, s.value.dtype, s.shape ?? s.value.shape);
  const y = f(pv, g, iv);
  assert.equal(y.dtype, 'float64', 'gradCheck needs a float64 output');
  // A scalar output is the loss itself (symbolic-shape graphs); otherwise weight every element.
  let loss = y;
  if (y.rank > 0) {
    const yShape = y.shape.map((d) => {
      if (typeof d !== 'number') throw new Error('gradCheck: a non-scalar output must have a static shape');
      return d;
    });
    const w = g.tensor(
      'weights',
      'float64',
      yShape,
      randn(
        rand,
        yShape.reduce((a, b) => a * b, 1),
      ),
    );
    loss = o.sum(o.mul(y, w));
  }
  const keys = Object.keys(params);
  const grads = grad(
    loss,
    keys.map((k) => pv[k]!),
  );
  const outputs: Record<string, Value> = { loss };
  keys.forEach((k, i) => (outputs[`grad_${k}`] = grads[i]!));
  const sess = await RuntimeSession.fromGraph(g, outputs, { threads: 1 });

  const values: Record<string, Float64Array> = {};
  for (const [k, s] of Object.entries(params))
    values[k] =
      s.init ??
      randn(
        rand,
        s.shape.reduce((a, b) => a * b, 1),
      );
  const feeds = (): Record<string, HostTensor> => {
    const f: Record<string, HostTensor> = {};
    for (const [k, s] of Object.entries(params)) f[k] = { dtype: 'float64', shape: s.shape, data: values[k]! };
    for (const [k, s] of Object.entries(opts.inputs ?? {})) f[k] = s.value;
    return f;
  };
  const base = await sess.run(feeds());
  const eps = opts.eps ?? 1e-6;
  const rtol = opts.rtol ?? 1e-6;
  const atol = opts.atol ?? 1e-8;
  for (const k of keys) {
    const analytic = base[`grad_${k}`]!.data as Float64Array;
    const x = values[k]!;
    for (let i = 0; i < x.length; i++) {
      const orig = x[i]!;
      x[i] = orig + eps;
      const up = (await sess.run(feeds(), ['loss'])).loss!.data[0] as number;
      x[i] = orig - eps;
      const down = (await sess.run(feeds(), ['loss'])).loss!.data[0] as number;
      x[i] = orig;
      const numeric = (up - down) / (2 * eps);
      const a = analytic[i]!;
      const tol = atol + rtol * Math.max(Math.abs(a), Math.abs(numeric));
      assert.ok(
        Math.abs(a - numeric) <= tol,
        `d/d${k}[${i}]: autodiff ${a} vs finite difference ${numeric} (|diff| ${Math.abs(a - numeric)} > ${tol})`,
      );
    }
  }
  await sess.dispose();
}

/**
 * Checks a fused float32 op (its ONNX Runtime kernel) against the same function spelled out in
 * element-wise ops: the values of sum(w * f(p)) and the gradients of every param, for float32
 * params drawn from one seed, agree within rtol of each tensor's largest magnitude.
 */
export async function fusedMatchesComposed(
  params: Record<string, ParamSpec>,
  fused: (p: Record<string, Value>) => Value,
  composed: (p: Record<string, Value>) => Value,
  opts: { rtol?: number; seed?: number } = {},
): Promise<void> {
  const rand = rng(opts.seed ?? 11);
  const g = new Graph();
  const keys = Object.keys(params);
  const pv: Record<string, Value> = {};
  for (const k of keys) pv[k] = g.param(k, 'float32', params[k]!.shape);
  const outputs: Record<string, Value> = {};
  for (const [tag, f] of [
    ['fused', fused],
    ['composed', composed],
  ] as const) {
    const y = f(pv);
    outputs[`${tag}_y`] = y;
    const size = (y.shape as number[]).reduce((a, b) => a * b, 1);
    const w = g.tensor(`${tag}_w`, 'float32', y.shape as number[], Float32Array.from(randn(rng(5), size)));
    const grads = grad(
      o.sum(o.mul(y, w)),
      keys.map((k) => pv[k]!),
    );
    keys.forEach((k, i) => (outputs[`${tag}_grad_${k}`] = grads[i]!));
  }
  const feeds: Record<string, HostTensor> = {};
  for (const k of keys) {
    const s = params[k]!;
    const data =
      s.init ??
      randn(
        rand,
        s.shape.reduce((a, b) => a * b, 1),
      );
    feeds[k] = { dtype: 'float32', shape: s.shape, data: Float32Array.from(data) };
  }
  const sess = await RuntimeSession.fromGraph(g, outputs, { threads: 1 });
  const r = await sess.run(feeds);
  await sess.dispose();
  const rtol = opts.rtol ?? 1e-5;
  for (const name of ['y', ...keys.map((k) => `grad_${k}`)]) {
    const a = r[`fused_${name}`]!.data as Float32Array;
    const b = r[`composed_${name}`]!.data as Float32Array;
    assert.equal(a.length, b.length, `${name}: sizes differ`);
    const scale = Math.max(...b.map(Math.abs));
    assert.ok(scale > 0, `${name}: the composed result is all zeros`);
    for (let i = 0; i < a.length; i++)
      assert.ok(Math.abs(a[i]! - b[i]!) <= rtol * scale, `${name}[${i}]: fused ${a[i]} vs composed ${b[i]} (scale ${scale})`);
  }
}
