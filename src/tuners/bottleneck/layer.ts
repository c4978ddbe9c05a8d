// The bottleneck adapter's math, written over graph values so the model hook and the float64
// gradient checks share it: A(z) = adapter_up(act(adapter_down.0(z))) * scaling, and where A sits
// relative to the sub-layer output h, its residual input x and the pretrained post-norm LN.

import type { Value } from '../../graph/ir.js';
import * as o from '../../graph/ops.js';
import { activation } from '../../models/activations.js';
import type { BnConfig } from './config.js';

export interface BottleneckWeights {
  /** [bottleneck, hidden] (torch nn.Linear layout) */
  downWeight: Value;
  downBias: Value;
  /** [hidden, bottleneck] */
  upWeight: Value;
  upBias: Value;
}

/** A(z) and the bottleneck activation act(adapter_down.0(z)). */
export function adapterFunction(z: Value, w: BottleneckWeights, nonLinearity: string, scaling: number): { out: Value; bottleneck: Value } {
  const bottleneck = activation(nonLinearity.toLowerCase(), o.linear(z, w.downWeight, w.downBias));
  const up = o.linear(bottleneck, w.upWeight, w.upBias);
  return { out: scaling === 1 ? up : o.mul(up, scaling), bottleneck };
}

export interface LocationArgs {
  /** h: the sub-layer output (after its output projection) */
  output: Value;
  /** x: the sub-layer's residual input */
  residual: Value;
  /** the pretrained post-sub-layer norm (BERT), none for pre-norm decoders */
  norm?: (x: Value) => Value;
}

/**
 * What the layer continues with, as adapters 0.2.2 computes it (Adapter / ParallelAdapter
 * pre_forward, forward, post_forward):
 *   sequential: z = original_ln_before ? LN(h + x) : h; a = A(z) + r with r = h
 *     (residual_before_ln true), h + x ("post_add") or z (false)
 *   parallel:   z = x; a = A(x) + h
 *   then out = original_ln_after ? LN(a + x) : a    (LN = identity where the model has none)
 */
export function bottleneckLocation(c: BnConfig, args: LocationArgs, adapter: (z: Value) => Value): { out: Value; adapterInput: Value } {
  const { output: h, residual: x, norm } = args;
  const ln = (t: Value): Value => (norm ? norm(t) : t);
  let a: Value;
  let z: Value;
  if (c.isParallel) {
    z = x;
    a = o.add(adapter(z), h);
  } else {
    let r = h;
    z = h;
    if (c.originalLnBefore) {
      const sum = o.add(h, x);
      if (c.residualBeforeLn === 'post_add') r = sum;
      z = ln(sum);
    }
    if (c.residualBeforeLn === false) r = z;
    a = o.add(adapter(z), r);
  }
  return { out: c.originalLnAfter ? ln(o.add(a, x)) : a, adapterInput: z };
}
