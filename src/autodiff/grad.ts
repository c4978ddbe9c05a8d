// Reverse-mode autodiff over the IR: emits backward nodes into the same graph. Only nodes on a
// path from a `wrt` value to the output are visited, so frozen weights get no gradient work at
// all, and fan-in is summed where a value is used more than once.

import type { Node, Value } from '../graph/ir.js';
import * as o from '../graph/ops.js';
import { VJP } from './vjp.js';
import { GraphShapeError, isFloat, shapeToString, shapesEqual } from '../graph/types.js';
import { PeftError } from '../errors.js';

class AutodiffError extends PeftError {
  constructor(message: string) {
    super(message);
    this.name = 'AutodiffError';
  }
}

/**
 * Gradients of `output` with respect to each of `wrt`. `seed` is the incoming gradient of the
 * output (default: ones, i.e. d sum(output)). Values that do not influence the output get zeros.
 */
export function grad(output: Value, wrt: readonly Value[], seed?: Value): Value[] {
  const g = output.graph;
  if (!isFloat(output.dtype)) throw new AutodiffError(`cannot differentiate ${output.name}: dtype ${output.dtype} is not float`);
  for (const w of wrt) {
    if (w.graph !== g) throw new AutodiffError(`${w.name} belongs to another graph`);
    if (!isFloat(w.dtype)) throw new AutodiffError(`cannot differentiate with respect to ${w.name}: dtype ${w.dtype}`);
  }
  if (seed && !shapesEqual(seed.shape, output.shape)) {
    throw new AutodiffError(`seed shape ${shapeToString(seed.shape)} differs from output shape ${shapeToString(output.shape)}`);
  }

  // Forward pass: which values depend on some wrt value.
  const depends = new Set<number>(wrt.map((w) => w.id));
  const lastNode = output.producer ? output.producer.id : -1;
  const nodes = g.nodes.slice(0, lastNode + 1);
  for (const n of nodes) {
    if (n.inputs.some((v) => depends.has(v.id)) && VJP[n.op] !== null) {
      for (const out of n.outputs) if (isFloat(out.dtype)) depends.add(out.id);
    }
  }
  // Backward pass: which of those reach the output.
  const reaches = new Set<number>([output.id]);
  const onPath: Node[] = [];
  for (let i = nodes.length - 1; i >= 0; i--) {
    const n = nodes[i]!;
    if (!n.outputs.some((v) => reaches.has(v.id))) continue;
    if (!n.outputs.some((v) => depends.has(v.id))) continue;
    onPath.push(n);
    for (const v of n.inputs) if (depends.has(v.id)) reaches.add(v.id);
  }

  const grads = new Map<number, Value>();
  const accumulate = (v: Value, gv: Value): void => {
    if (!shapesEqual(gv.shape, v.shape)) {
      throw new AutodiffError(
        `gradient of ${v.name} has shape ${shapeToString(gv.shape)}, expected ${shapeToString(v.shape)} (op ${v.producer?.op ?? v.kind})`,
      );
    }
    const prev = grads.get(v.id);
    grads.set(v.id, prev ? o.add(prev, gv) : gv);
  };
  const ones = seed ?? (output.rank === 0 ? g.scalar(1, output.dtype) : o.add(o.zerosLike(output), 1));
  grads.set(output.id, ones);

  g.scope('grad', () => {
    for (const n of onPath) {
      const gOut = n.outputs.map((v) => grads.get(v.id));
      if (gOut.every((x) => x === undefined)) continue;
      const need = n.inputs.map((v) => depends.has(v.id) && reaches.has(v.id));
      const rule = VJP[n.op];
      if (rule === null) continue;
      let gIn: (Value | undefined)[];
      try {
        gIn = g.scope(n.scope || n.op, () => rule(n as never, gOut, need));
      } catch (e) {
        if (e instanceof GraphShapeError) throw new AutodiffError(`gradient of ${n.op}${n.scope ? ` in ${n.scope}` : ''}: ${e.message}`);
        throw e;
      }
      n.inputs.forEach((v, i) => {
        const gv = gIn[i];
        if (need[i] && gv) accumulate(v, gv);
      });
    }
  });

  return wrt.map((w) => grads.get(w.id) ?? o.zerosLike(w));
}
