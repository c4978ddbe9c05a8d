// LoKr (LyCORIS) as peft 0.20 implements it for linear layers: ΔW = kron(w1, w2) · alpha / r with
// out = a·b and in = c·d factorized as near square roots (decompose_factor), w1 [a, c] (or w1_a @ w1_b
// with decompose_both), w2 [b, d] or w2_a [b, r] @ w2_b [r, d] when r < max(b, d) / 2;
// y = W x + ΔW x (+ b). Saved tensors <module>.lokr_w1 / lokr_w1_a / lokr_w1_b / lokr_w2 / lokr_w2_a / lokr_w2_b.

import type { Value } from '../../graph/ir.js';
import * as o from '../../graph/ops.js';
import type { LinearSpec } from '../../nn/context.js';
import { kaimingUniform } from '../lora/init.js';
import { FieldReader, commonFields } from '../linear_tuner/config.js';
import { type LycorisConfig, lycorisFields, lycorisInfoSettings, lycorisMethod, lycorisRank } from '../linear_tuner/lycoris.js';
import { type LinearMethod, linearTuner, type TensorDecl, type Tensors } from '../linear_tuner/model.js';
import { PeftConfigError } from '../types.js';

export interface LokrConfig extends LycorisConfig {
  rankDropoutScale: boolean;
  decomposeBoth: boolean;
  decomposeFactor: number;
  /** true: w1 (or w1_a) starts at zero; 'lycoris': w2 (or w2_b) does; false: all random */
  initWeights: boolean | 'lycoris';
}

function lokrConfig(fields: Record<string, unknown>, source = 'LoKr config'): LokrConfig {
  const r = new FieldReader(fields, source);
  const init = fields.init_weights ?? true;
  if (typeof init !== 'boolean' && init !== 'lycoris')
    throw new PeftConfigError(`${source}: init_weights must be true, false or "lycoris", got ${JSON.stringify(init)}`);
  const factor = r.num('decompose_factor', -1);
  if (!Number.isInteger(factor) || (factor < 1 && factor !== -1))
    throw new PeftConfigError(`${source}: decompose_factor must be -1 or a positive integer, got ${factor}`);
  return {
    ...commonFields(r, 'LOKR', 'LoKr'),
    ...lycorisFields(r),
    rankDropoutScale: r.bool('rank_dropout_scale', false),
    decomposeBoth: r.bool('decompose_both', false),
    decomposeFactor: factor,
    initWeights: init,
  };
}

/** LyCORIS' factorization: dimension = m · n with m <= n, as close to a square (or to `factor`) as the search finds. */
export function factorization(dimension: number, factor = -1): [number, number] {
  if (factor > 0 && dimension % factor === 0) return [factor, dimension / factor];
  if (factor === -1) factor = dimension;
  let m = 1;
  let n = dimension;
  const length = m + n;
  while (m < n) {
    let nm = m + 1;
    while (dimension % nm !== 0) nm++;
    const nn = dimension / nm;
    if (nm + nn > length || nm > factor) break;
    m = nm;
    n = nn;
  }
  return m > n ? [n, m] : [m, n];
}

interface LokrShape {
  a: number;
  b: number;
  c: number;
  d: number;
  r: number;
  useW1: boolean;
  useW2: boolean;
}

function lokrShape(spec: LinearSpec, cfg: LokrConfig, module: string): LokrShape {
  const { r } = lycorisRank(cfg, module);
  const [c, d] = factorization(spec.inFeatures, cfg.decomposeFactor);
  const [a, b] = factorization(spec.outFeatures, cfg.decomposeFactor);
  return { a, b, c, d, r, useW1: !(cfg.decomposeBoth && r < Math.max(a, c) / 2), useW2: !(r < Math.max(b, d) / 2) };
}

/** torch.kron of 2-D w1 [a, c] and w2 [b, d]: [a·b, c·d] with entry (i·b + k, j·d + l) = w1[i, j] · w2[k, l]. */
function kron(w1: Value, w2: Value): Value {
  const [a, c] = w1.shape as [number, number];
  const [b, d] = w2.shape as [number, number];
  const p = o.mul(o.reshape(w1, [a, 1, c, 1]), o.reshape(w2, [1, b, 1, d]));
  return o.reshape(p, [a * b, c * d]);
}

function lokrDelta(t: Tensors, scale: number): Value {
  const w1 = t.lokr_w1 ?? o.matmul(t.lokr_w1_a!, t.lokr_w1_b!);
  const w2 = t.lokr_w2 ?? o.matmul(t.lokr_w2_a!, t.lokr_w2_b!);
  return o.mul(kron(w1, w2), scale);
}

export const LOKR: LinearMethod<LokrConfig> = {
  peftType: 'LOKR',
  label: 'LoKr',
  parseConfig: lokrConfig,
  ...lycorisMethod('LoKr', lokrDelta),
  moduleTensors(spec, c, module) {
    const s = lokrShape(spec, c, module);
    const out: TensorDecl[] = [];
    if (s.useW1) out.push({ kind: 'lokr_w1', shape: [s.a, s.c] });
    else out.push({ kind: 'lokr_w1_a', shape: [s.a, s.r] }, { kind: 'lokr_w1_b', shape: [s.r, s.c] });
    if (s.useW2) out.push({ kind: 'lokr_w2', shape: [s.b, s.d] });
    else out.push({ kind: 'lokr_w2_a', shape: [s.b, s.r] }, { kind: 'lokr_w2_b', shape: [s.r, s.d] });
    return out;
  },
  init(_spec, c, decls, rng) {
    const zero = new Set(c.initWeights === true ? ['lokr_w1', 'lokr_w1_a'] : c.initWeights === 'lycoris' ? ['lokr_w2', 'lokr_w2_b'] : []);
    const out = new Map<string, Float32Array>();
    for (const d of decls)
      out.set(d.kind, zero.has(d.kind) ? new Float32Array(d.shape[0]! * d.shape[1]!) : kaimingUniform(rng, d.shape[0]!, d.shape[1]!));
    return out;
  },
};

/** The registry entry. */
export const lokrTuner = linearTuner(LOKR, {
  infoSettings: lycorisInfoSettings('decompose_both', 'decompose_factor'),
  presets: [
    {
      name: 'lokr',
      label: 'LoKr',
      learningRate: 2e-3,
      trainLearningRate: 2e-4,
      compareByDefault: false,
      flags: { r: 'r', alpha: 'alpha', target: 'target_modules' },
      fields: { peft_type: 'LOKR', r: 8, alpha: 8, target_modules: 'all-linear', task_type: 'CAUSAL_LM' },
      trainFields: { peft_type: 'LOKR', r: 8, alpha: 8, task_type: 'CAUSAL_LM' },
      settings: 'r=8, alpha=8, Kronecker product of near-square factors on every linear layer but the head',
      folklore: { parameter: 'High', compute: 'High', space: 'High', performance: 'Medium', flexibility: 'High' },
    },
  ],
});
