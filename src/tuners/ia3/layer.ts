// The IA3 module wrapper as a linear hook: peft's IA3Linear forward. Attention-side targets scale
// (or, additive variant, shift) the module OUTPUT, bias included; feedforward targets scale the
// module INPUT, before the frozen weight.

import type { Value } from '../../graph/ir.js';
import * as o from '../../graph/ops.js';
import type { LinearHook, LinearSpec } from '../../nn/context.js';
import type { IA3Variant } from './config.js';

/** One targeted module and which side its vector acts on. */
export interface IA3Target {
  spec: LinearSpec;
  feedforward: boolean;
}

/** peft's stored shape: [1, in] for feedforward targets, [out, 1] otherwise. */
export function ia3VectorShape(t: IA3Target): [number, number] {
  return t.feedforward ? [1, t.spec.inFeatures] : [t.spec.outFeatures, 1];
}

/** The hook for one target; `vector` is the [out, 1] / [1, in] graph value. */
export function ia3Hook(vector: Value, target: IA3Target, variant: IA3Variant): LinearHook {
  const n = target.feedforward ? target.spec.inFeatures : target.spec.outFeatures;
  return (x, base, _spec, ctx) => {
    // peft flattens the vector and broadcasts it over the last axis.
    const v = o.reshape(vector, [n]);
    const combine = (a: Value): Value => (variant === 'scale' ? o.mul(a, v) : o.add(a, v));
    if (!target.feedforward) return combine(base(x));
    // The scale's gradient reads x (an MLP's activation, else not kept: its product is frozen), so
    // where x is cheap to rebuild the scaling joins its recomputation (BuildContext.recomputedWith).
    return base(variant === 'scale' ? ctx.recomputedWith(x, combine) : combine(x));
  };
}
