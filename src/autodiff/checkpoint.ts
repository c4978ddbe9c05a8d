// Activation checkpointing: a region of the forward graph (a decoder layer) whose intermediates are
// not kept for the backward pass. The region's output goes through a Checkpoint node whose gradient
// rule replays the region's nodes on its inputs, ordered after the incoming gradient, and
// differentiates that copy; only the region's inputs live from the forward to the backward pass.

import type { Node, Value } from '../graph/ir.js';
import * as o from '../graph/ops.js';
import { isFloat } from '../graph/types.js';
import { grad } from './grad.js';

/**
 * fn(inputs) computed normally in the forward pass; for autodiff, recomputed from `inputs` when the
 * backward pass reaches it (torch.utils.checkpoint). fn may read any other value (weights, params,
 * masks, graph inputs): those are shared by the replay, not recomputed. Dropout masks are graph
 * inputs, so the replay sees the same mask.
 */
export function checkpoint(inputs: readonly Value[], fn: (inputs: Value[]) => Value): Value {
  if (inputs.length === 0) return fn([]);
  const g = inputs[0]!.graph;
  const start = g.nodes.length;
  const out = fn([...inputs]);
  if (!out.producer || out.producer.id < start) return out;
  // The region: nodes fn made that `out` depends on, in creation (topological) order.
  const live = new Set<number>();
  const stack: Value[] = [out];
  while (stack.length) {
    const v = stack.pop()!;
    const n = v.producer;
    if (!n || n.id < start || live.has(n.id)) continue;
    live.add(n.id);
    stack.push(...n.inputs);
  }
  const region: Node[] = g.nodes.slice(start).filter((n) => live.has(n.id));
  const produced = new Set(region.flatMap((n) => n.outputs.map((v) => v.id)));
  const externals: Value[] = [];
  const seen = new Set<number>();
  for (const n of region) {
    for (const v of n.inputs) {
      if (produced.has(v.id) || seen.has(v.id) || !isFloat(v.dtype)) continue;
      seen.add(v.id);
      externals.push(v);
    }
  }
  const replayed = new Set(inputs.map((v) => v.id));

  const vjp = (gOut: Value, need: readonly boolean[]): (Value | undefined)[] => {
    const result: (Value | undefined)[] = [undefined, ...externals.map(() => undefined)];
    if (!externals.some((_, i) => need[i + 1])) return result;
    // Multiplying by a 1 derived from the gradient's size orders the replay after the gradient
    // exists (ONNX Runtime would otherwise run it, and hold its values, during the forward pass);
    // stopGradient makes the replayed input a leaf of the local differentiation.
    const one = o.add(o.mul(o.sizeOf(gOut), 0), 1);
    const map = new Map<number, Value>();
    for (const v of inputs) if (replayed.has(v.id) && isFloat(v.dtype)) map.set(v.id, o.mul(o.stopGradient(v), o.cast(one, v.dtype)));
    for (const n of region) {
      const outs = g.op(
        n.op,
        n.inputs.map((v) => map.get(v.id) ?? v),
        n.attrs as never,
      );
      n.outputs.forEach((v, i) => map.set(v.id, outs[i]!));
    }
    const wrt: Value[] = [];
    const at: number[] = [];
    externals.forEach((v, i) => {
      if (!need[i + 1]) return;
      wrt.push(map.get(v.id) ?? v);
      at.push(i + 1);
    });
    const grads = grad(map.get(out.id)!, wrt, gOut);
    at.forEach((i, k) => (result[i] = grads[k]));
    return result;
  };
  return g.op('Checkpoint', [out, ...externals], { vjp })[0]!;
}
