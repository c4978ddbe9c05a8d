// AdaLoRA (Zhang et al. 2023) as peft 0.20 implements it: an SVD-shaped update per layer,
// y = W x + b + (x (A ⊙ E)ᵀ Bᵀ) · lora_alpha / (ranknum + 1e-5), with A [r_i, in], E [r_i, 1],
// B [out, r_i] and ranknum = init_r (also after pruning and reloading). The rank allocator prunes
// E entries during training; peft then records the kept entries in rank_pattern
// ('<module>.lora_E': [bool] * init_r) and saves only the kept rows/columns, so a reloaded layer has
// rank r_i = the number of kept entries (0 leaves the layer unchanged).

import type { Value } from '../../graph/ir.js';
import * as o from '../../graph/ops.js';
import { normals } from '../../nn/random.js';
import { FieldReader, type LinearTunerConfig, commonFields, configJson, noBias } from '../linear_tuner/config.js';
import { type LinearMethod, linearTuner, type Tensors } from '../linear_tuner/model.js';
import { PeftConfigError } from '../types.js';
import { type AllocatorLayer, RankAllocator } from './allocator.js';

export interface AdaloraConfig extends LinearTunerConfig {
  initR: number;
  targetR: number;
  loraAlpha: number;
  loraDropout: number;
  tinit: number;
  tfinal: number;
  deltaT: number;
  beta1: number;
  beta2: number;
  orthRegWeight: number;
  totalStep: number | null;
  /** '<module>.lora_E' -> kept entries of E, as peft writes it after allocation (null before) */
  rankPattern: Record<string, boolean[]> | null;
  initLoraWeights: boolean;
}

function adaloraConfig(fields: Record<string, unknown>, source = 'AdaLoRA config'): AdaloraConfig {
  const r = new FieldReader(fields, source);
  r.off('use_dora', 'DoRA with AdaLoRA is not supported (peft refuses it too)');
  r.off('use_rslora', 'rsLoRA scaling with AdaLoRA is not implemented');
  r.off('lora_bias', 'lora_bias with AdaLoRA is not implemented');
  r.off('alpha_pattern', 'alpha_pattern with AdaLoRA is not implemented');
  r.off('trainable_token_indices', 'trainable tokens with AdaLoRA are not implemented');
  r.off('layers_pattern', 'layers_pattern with AdaLoRA is not implemented');
  const init = fields.init_lora_weights ?? true;
  if (typeof init !== 'boolean')
    throw new PeftConfigError(`${source}: init_lora_weights=${JSON.stringify(init)} is not supported for AdaLoRA; use true`);
  noBias(r, 'AdaLoRA');
  const rp = fields.rank_pattern ?? null;
  if (
    rp !== null &&
    (typeof rp !== 'object' ||
      Array.isArray(rp) ||
      Object.values(rp).some((v) => !Array.isArray(v) || v.some((b) => typeof b !== 'boolean')))
  ) {
    throw new PeftConfigError(`${source}: rank_pattern must map '<module>.lora_E' to lists of true/false`);
  }
  const total = fields.total_step ?? null;
  if (total !== null && (!Number.isInteger(total) || (total as number) <= 0))
    throw new PeftConfigError(`${source}: total_step must be a positive integer`);
  return {
    ...commonFields(r, 'ADALORA', 'AdaLoRA'),
    initR: r.int('init_r', 12, 1),
    targetR: r.int('target_r', 8, 0),
    loraAlpha: r.num('lora_alpha', 8),
    loraDropout: r.num('lora_dropout', 0),
    tinit: r.int('tinit', 0),
    tfinal: r.int('tfinal', 0),
    deltaT: r.int('deltaT', 1, 1),
    beta1: r.num('beta1', 0.85),
    beta2: r.num('beta2', 0.85),
    orthRegWeight: r.num('orth_reg_weight', 0.5),
    totalStep: total as number | null,
    rankPattern: rp as Record<string, boolean[]> | null,
    initLoraWeights: init,
  };
}

/** A module's rank: init_r, or the kept entries of its rank_pattern. */
function adaloraRank(c: AdaloraConfig, module: string): number {
  const kept = c.rankPattern?.[`${module}.lora_E`];
  if (!kept) return c.initR;
  if (kept.length !== c.initR)
    throw new PeftConfigError(`rank_pattern for ${module}.lora_E has ${kept.length} entries, init_r is ${c.initR}`);
  return kept.filter(Boolean).length;
}

/** (x (A ⊙ E)ᵀ Bᵀ) · alpha / (init_r + 1e-5). */
function scaleOf(c: AdaloraConfig): number {
  return c.loraAlpha / (c.initR + 1e-5);
}

function adaloraDelta(t: Tensors, c: AdaloraConfig): Value {
  return o.mul(o.matmul(t.lora_B!, o.mul(t.lora_A!, t.lora_E!)), scaleOf(c));
}

/**
 * peft's AdaLoRA loss term: orth_reg_weight times the mean over every lora_A and lora_B of
 * ||A Aᵀ - I||_F (||Bᵀ B - I||_F for B), which keeps P and Q of the SVD form near orthogonal.
 */
function orthogonalRegularizer(modules: readonly Tensors[], weight: number): Value | undefined {
  if (weight <= 0) return undefined;
  const terms: Value[] = [];
  for (const t of modules) {
    const r = t.lora_A!.shape[0] as number;
    if (r === 0) continue;
    const eye = new (t.lora_A!.dtype === 'float64' ? Float64Array : Float32Array)(r * r);
    for (let i = 0; i < r; i++) eye[i * r + i] = 1;
    const I = t.lora_A!.graph.constant(`adalora_eye_${r}`, t.lora_A!.dtype, [r, r], eye);
    const fro = (m: Value): Value => o.sqrt(o.sum(o.mul(o.sub(m, I), o.sub(m, I))));
    terms.push(fro(o.matmulT(t.lora_A!, t.lora_A!)));
    terms.push(fro(o.matmul(o.transpose(t.lora_B!, [1, 0]), t.lora_B!)));
  }
  if (!terms.length) return undefined;
  return o.mul(
    terms.reduce((a, b) => o.add(a, b)),
    weight / terms.length,
  );
}

export const ADALORA: LinearMethod<AdaloraConfig> = {
  peftType: 'ADALORA',
  label: 'AdaLoRA',
  parseConfig: adaloraConfig,
  moduleTensors(spec, c, module) {
    const r = adaloraRank(c, module);
    return [
      { kind: 'lora_A', shape: [r, spec.inFeatures] },
      { kind: 'lora_B', shape: [spec.outFeatures, r] },
      { kind: 'lora_E', shape: [r, 1] },
    ];
  },
  isEmpty: (decls) => decls[0]!.shape[0] === 0,
  init(spec, c, _decls, rng, module) {
    // peft: E = 0 (init_lora_weights) so ΔW = 0; A, B ~ N(0, 0.02).
    const r = adaloraRank(c, module);
    return new Map([
      ['lora_A', normals(rng, r * spec.inFeatures, 0.02)],
      ['lora_B', normals(rng, spec.outFeatures * r, 0.02)],
      ['lora_E', c.initLoraWeights ? new Float32Array(r) : normals(rng, r, 0.02)],
    ]);
  },
  forward({ x, base, t, config, dropout }) {
    const h = o.matmulT(dropout(x, config.loraDropout), o.mul(t.lora_A!, t.lora_E!));
    return o.add(base(x), o.mul(o.matmulT(h, t.lora_B!), scaleOf(config)));
  },
  mergedWeight(W, _spec, t, _shared, config) {
    return o.add(W, adaloraDelta(t, config));
  },
  trainingHook(model) {
    const c = model.config;
    if (c.totalStep === null) return undefined;
    if (c.rankPattern !== null) {
      throw new PeftConfigError(
        'AdaLoRA: this adapter was already pruned (rank_pattern is set); continuing the rank allocation from a pruned adapter is not implemented. Train it with total_step unset (no allocation), or start from a new adapter',
      );
    }
    const layers: AllocatorLayer[] = [...model.modules].map(([module, m]) => ({
      module,
      A: m.tensors.get('lora_A')!,
      B: m.tensors.get('lora_B')!,
      E: m.tensors.get('lora_E')!,
      names: { A: model.paramName(module, 'lora_A'), B: model.paramName(module, 'lora_B'), E: model.paramName(module, 'lora_E') },
    }));
    const allocator = new RankAllocator(
      {
        initR: c.initR,
        targetR: c.targetR,
        tinit: c.tinit,
        tfinal: c.tfinal,
        deltaT: c.deltaT,
        beta1: c.beta1,
        beta2: c.beta2,
        totalStep: c.totalStep,
      },
      layers,
    );
    let fixed: Record<string, boolean[]> | null = null;
    return (step, grads) => {
      const pattern = allocator.step(step, grads, fixed);
      if (pattern) {
        c.rankPattern = pattern;
        if (step === c.totalStep! - c.tfinal) fixed = pattern;
      }
    };
  },
  savedTensor(kind, t, module, config) {
    // peft's resize_state_dict_by_rank_pattern: keep the rows of A and E and the columns of B the pattern kept.
    const keep = config.rankPattern?.[`${module}.lora_E`];
    const r = kind === 'lora_B' ? t.shape[1]! : t.shape[0]!;
    if (!keep || keep.length !== r) return t;
    const idx = keep.flatMap((k, i) => (k ? [i] : []));
    if (kind === 'lora_B') {
      const out = t.shape[0]!;
      const data = new Float32Array(out * idx.length);
      for (let o = 0; o < out; o++) idx.forEach((j, c) => (data[o * idx.length + c] = t.data[o * r + j]!));
      return { shape: [out, idx.length], data };
    }
    const cols = t.shape[1]!;
    const data = new Float32Array(idx.length * cols);
    idx.forEach((j, row) => data.set(t.data.subarray(j * cols, (j + 1) * cols), row * cols));
    return { shape: [idx.length, cols], data };
  },
  regularizer(modules, config) {
    return orthogonalRegularizer(modules, config.orthRegWeight);
  },
  configToJson: (c) => configJson(c, { deltaT: 'deltaT' }),
};

/** The registry entry. */
export const adaloraTuner = linearTuner(ADALORA, {
  infoSettings: [
    'init_r',
    'target_r',
    'lora_alpha',
    'lora_dropout',
    'tinit',
    'tfinal',
    'deltaT',
    'beta1',
    'beta2',
    'orth_reg_weight',
    'total_step',
    'target_modules',
  ],
  infoExtras: (c: Record<string, unknown>) => {
    const rp = c.rank_pattern;
    if (typeof rp !== 'object' || rp === null)
      return { ranks: `every module keeps init_r=${String(c.init_r)} (the allocator has not run)` };
    const kept = Object.entries(rp as Record<string, unknown>).map(
      ([k, v]) => `${k.replace(/\.lora_E$/, '')} ${Array.isArray(v) ? v.filter(Boolean).length : '?'}`,
    );
    return { ranks: `after allocation: ${kept.join(', ')}` };
  },
  presets: [
    {
      name: 'adalora',
      label: 'AdaLoRA',
      learningRate: 2e-3,
      trainLearningRate: 2e-4,
      compareByDefault: false,
      flags: { dropout: 'lora_dropout', target: 'target_modules' },
      stepsField: 'total_step',
      fields: { peft_type: 'ADALORA', init_r: 12, target_r: 8, lora_alpha: 16, target_modules: 'all-linear', task_type: 'CAUSAL_LM' },
      trainFields: { peft_type: 'ADALORA', init_r: 12, target_r: 8, lora_alpha: 16, task_type: 'CAUSAL_LM' },
      settings:
        'init_r=12 singular-value triplets per layer, lora_alpha=16, every linear layer but the head; the rank allocator prunes to target_r=8 over the run (tinit 0, tfinal 0)',
      folklore: { parameter: 'High', compute: 'Medium', space: 'High', performance: 'High', flexibility: 'High' },
    },
  ],
});
