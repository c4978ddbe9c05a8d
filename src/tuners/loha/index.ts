// LoHa (Hyeon-Woo et al. 2022, "FedPara"; LyCORIS) as peft 0.20 implements it for linear layers:
// ΔW = ((w1_a @ w1_b) ⊙ (w2_a @ w2_b)) · alpha / r, and y = W x + ΔW x (+ b). Saved tensors
// <module>.hada_w1_a [out, r], hada_w1_b [r, in], hada_w2_a [out, r], hada_w2_b [r, in].

import type { Value } from '../../graph/ir.js';
import * as o from '../../graph/ops.js';
import type { LinearSpec } from '../../nn/context.js';
import { kaimingUniform } from '../lora/init.js';
import { FieldReader, commonFields } from '../linear_tuner/config.js';
import { type LycorisConfig, lycorisFields, lycorisInfoSettings, lycorisMethod, lycorisRank } from '../linear_tuner/lycoris.js';
import { type LinearMethod, linearTuner, type Tensors } from '../linear_tuner/model.js';
import { PeftConfigError } from '../types.js';

export interface LohaConfig extends LycorisConfig {
  /** true: w2_b starts at zero (ΔW = 0); false: every factor kaiming-uniform */
  initWeights: boolean;
}

function lohaConfig(fields: Record<string, unknown>, source = 'LoHa config'): LohaConfig {
  const r = new FieldReader(fields, source);
  const init = fields.init_weights ?? true;
  if (typeof init !== 'boolean')
    throw new PeftConfigError(
      `${source}: init_weights=${JSON.stringify(init)} is not supported (ABBA initialisation is not implemented); use true or false`,
    );
  r.off(
    'use_khatri_rao',
    'the Khatri-Rao (ABBA) product is not implemented',
    (v) => v === undefined || v === null || v === false || v === 'auto',
  );
  if (r.has('r2') && fields.r2 !== fields.r)
    throw new PeftConfigError(`${source}: r2=${JSON.stringify(fields.r2)} differing from r is not supported (ABBA ranks); leave it unset`);
  const c: LohaConfig = {
    ...commonFields(r, 'LOHA', 'LoHa'),
    ...lycorisFields(r),
    initWeights: init,
  };
  return c;
}

/** ΔW [out, in] = (w1_a @ w1_b) ⊙ (w2_a @ w2_b) · scale. */
function lohaDelta(t: Tensors, scale: number): Value {
  const w1 = o.matmul(t.hada_w1_a!, t.hada_w1_b!);
  const w2 = o.matmul(t.hada_w2_a!, t.hada_w2_b!);
  return o.mul(o.mul(w1, w2), scale);
}

export const LOHA: LinearMethod<LohaConfig> = {
  peftType: 'LOHA',
  label: 'LoHa',
  parseConfig: lohaConfig,
  ...lycorisMethod('LoHa', lohaDelta),
  moduleTensors(spec: LinearSpec, c, module) {
    const { r } = lycorisRank(c, module);
    return [
      { kind: 'hada_w1_a', shape: [spec.outFeatures, r] },
      { kind: 'hada_w1_b', shape: [r, spec.inFeatures] },
      { kind: 'hada_w2_a', shape: [spec.outFeatures, r] },
      { kind: 'hada_w2_b', shape: [r, spec.inFeatures] },
    ];
  },
  init(spec, c, _decls, rng, module) {
    const { r } = lycorisRank(c, module);
    // torch's kaiming_uniform_(a=sqrt(5)) on a [rows, cols] tensor: U(±1/sqrt(cols)).
    return new Map([
      ['hada_w1_a', kaimingUniform(rng, spec.outFeatures, r)],
      ['hada_w1_b', kaimingUniform(rng, r, spec.inFeatures)],
      ['hada_w2_a', kaimingUniform(rng, spec.outFeatures, r)],
      ['hada_w2_b', c.initWeights ? new Float32Array(r * spec.inFeatures) : kaimingUniform(rng, r, spec.inFeatures)],
    ]);
  },
};

const LYCORIS_FLAGS = { r: 'r', alpha: 'alpha', target: 'target_modules' } as const;

/** The registry entry. */
export const lohaTuner = linearTuner(LOHA, {
  infoSettings: lycorisInfoSettings(),
  presets: [
    {
      name: 'loha',
      label: 'LoHa',
      learningRate: 2e-3,
      trainLearningRate: 2e-4,
      compareByDefault: false,
      flags: LYCORIS_FLAGS,
      fields: { peft_type: 'LOHA', r: 8, alpha: 8, target_modules: 'all-linear', task_type: 'CAUSAL_LM' },
      trainFields: { peft_type: 'LOHA', r: 8, alpha: 8, task_type: 'CAUSAL_LM' },
      settings: 'r=8, alpha=8, Hadamard product of two rank-8 factorizations on every linear layer but the head',
      folklore: { parameter: 'High', compute: 'High', space: 'High', performance: 'High', flexibility: 'High' },
    },
  ],
});
