// LoHa (Hyeon-Woo et al. 2022, "FedPara"; LyCORIS) as peft 0.20 implements it for linear layers:
// ΔW = ((w1_a @ w1_b) ⊙ (w2_a @ w2_b)) · alpha / r, and y = W x + ΔW x (+ b). Saved tensors
// <module>.hada_w1_a [out, r], hada_w1_b [r, in], hada_w2_a [out, r], hada_w2_b [r, in].

import type { Value } from '../../graph/ir.js';
import * as o from '../../graph/ops.js';
import type { PyJson } from '../../io/pyjson.js';
import type { LinearSpec } from '../../nn/context.js';
import { kaimingUniform } from '../lora/init.js';
import { FieldReader, type LinearTunerConfig, commonFields, commonJson, patternValue } from '../linear_tuner/config.js';
import { type LinearMethod, linearTuner, type Tensors } from '../linear_tuner/model.js';
import { PeftConfigError } from '../types.js';

export interface LohaConfig extends LinearTunerConfig {
  r: number;
  alpha: number;
  rankDropout: number;
  moduleDropout: number;
  /** true: w2_b starts at zero (ΔW = 0); false: every factor kaiming-uniform */
  initWeights: boolean;
  rankPattern: Record<string, number>;
  alphaPattern: Record<string, number>;
}

export function lohaConfig(fields: Record<string, unknown>, source = 'LoHa config'): LohaConfig {
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
    r: r.int('r', 8, 1),
    alpha: r.num('alpha', 8),
    rankDropout: r.num('rank_dropout', 0),
    moduleDropout: r.num('module_dropout', 0),
    initWeights: init,
    rankPattern: r.pattern('rank_pattern'),
    alphaPattern: r.pattern('alpha_pattern'),
  };
  return c;
}

function rankAlpha(c: LohaConfig, module: string): { r: number; alpha: number } {
  return { r: patternValue(c.rankPattern, module, c.r), alpha: patternValue(c.alphaPattern, module, c.alpha) };
}

/** ΔW [out, in] = (w1_a @ w1_b) ⊙ (w2_a @ w2_b) · scale. */
export function lohaDelta(t: Tensors, scale: number): Value {
  const w1 = o.matmul(t.hada_w1_a!, t.hada_w1_b!);
  const w2 = o.matmul(t.hada_w2_a!, t.hada_w2_b!);
  return o.mul(o.mul(w1, w2), scale);
}

export const LOHA: LinearMethod<LohaConfig> = {
  peftType: 'LOHA',
  label: 'LoHa',
  parseConfig: lohaConfig,
  checkTrainable(c) {
    if (c.rankDropout !== 0 || c.moduleDropout !== 0)
      throw new PeftConfigError(
        `LoHa rank_dropout/module_dropout (${c.rankDropout}/${c.moduleDropout}) are not implemented for training; set them to 0`,
      );
  },
  moduleTensors(spec: LinearSpec, c, module) {
    const { r } = rankAlpha(c, module);
    return [
      { kind: 'hada_w1_a', shape: [spec.outFeatures, r] },
      { kind: 'hada_w1_b', shape: [r, spec.inFeatures] },
      { kind: 'hada_w2_a', shape: [spec.outFeatures, r] },
      { kind: 'hada_w2_b', shape: [r, spec.inFeatures] },
    ];
  },
  init(spec, c, _decls, rng, module) {
    const { r } = rankAlpha(c, module);
    // torch's kaiming_uniform_(a=sqrt(5)) on a [rows, cols] tensor: U(±1/sqrt(cols)).
    return new Map([
      ['hada_w1_a', kaimingUniform(rng, spec.outFeatures, r)],
      ['hada_w1_b', kaimingUniform(rng, r, spec.inFeatures)],
      ['hada_w2_a', kaimingUniform(rng, spec.outFeatures, r)],
      ['hada_w2_b', c.initWeights ? new Float32Array(r * spec.inFeatures) : kaimingUniform(rng, r, spec.inFeatures)],
    ]);
  },
  forward({ x, base, spec, t, config }) {
    const { r, alpha } = rankAlpha(config, spec.name);
    return o.add(base(x), o.matmulT(x, lohaDelta(t, alpha / r)));
  },
  mergedWeight(W, spec, t, _shared, config) {
    const { r, alpha } = rankAlpha(config, spec.name);
    return o.add(W, lohaDelta(t, alpha / r));
  },
  configToJson(c): Record<string, PyJson> {
    return {
      ...commonJson(c),
      r: c.r,
      alpha: c.alpha,
      rank_dropout: c.rankDropout,
      module_dropout: c.moduleDropout,
      init_weights: c.initWeights,
      rank_pattern: c.rankPattern,
      alpha_pattern: c.alphaPattern,
    };
  },
};

const LYCORIS_FLAGS = { r: 'r', alpha: 'alpha', target: 'target_modules' } as const;

/** The registry entry. */
export const lohaTuner = linearTuner(LOHA, {
  infoSettings: [
    'r',
    'alpha',
    'rank_dropout',
    'module_dropout',
    'init_weights',
    'target_modules',
    'rank_pattern',
    'alpha_pattern',
    'layers_to_transform',
  ],
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
