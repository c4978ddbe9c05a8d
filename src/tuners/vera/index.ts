// VeRA (Kopiczko et al. 2024) as peft 0.20 implements it: one pair of frozen random projections
// shared by every layer, vera_A [r, max in] and vera_B [max out, r], sliced per layer
// (A[:, :in], B[:out, :]), and two trained vectors per layer:
// y = W x + b + λ_b ⊙ (B_out (λ_d ⊙ (A_in x))). Saved tensors <module>.vera_lambda_b [out],
// <module>.vera_lambda_d [r], and with save_projection=true base_model.vera_A / base_model.vera_B
// (with false, the projections are regenerated from projection_prng_key as peft does, replaying
// torch's CPU generator).

import type { Value } from '../../graph/ir.js';
import * as o from '../../graph/ops.js';
import { TorchCpuGenerator } from '../../nn/torch_rng.js';
import { FieldReader, type LinearTunerConfig, commonFields, noBias } from '../linear_tuner/config.js';
import { type LinearMethod, linearTuner, type Tensors } from '../linear_tuner/model.js';
import { PeftConfigError } from '../types.js';

export interface VeraConfig extends LinearTunerConfig {
  r: number;
  projectionPrngKey: number;
  saveProjection: boolean;
  veraDropout: number;
  dInitial: number;
  initWeights: boolean;
  fanInFanOut: boolean;
  bias: string;
}

function veraConfig(fields: Record<string, unknown>, source = 'VeRA config'): VeraConfig {
  const r = new FieldReader(fields, source);
  const c: VeraConfig = {
    ...commonFields(r, 'VERA', 'VeRA'),
    r: r.int('r', 256, 1),
    projectionPrngKey: r.int('projection_prng_key', 0),
    saveProjection: r.bool('save_projection', true),
    veraDropout: r.num('vera_dropout', 0),
    dInitial: r.num('d_initial', 0.1),
    initWeights: r.bool('init_weights', true),
    fanInFanOut: r.bool('fan_in_fan_out', false),
    bias: noBias(r, 'VeRA'),
  };
  return c;
}

/** The module's slices of the shared projections: A[:, :in] and B[:out, :]. */
function sliced(shared: Tensors, inF: number, outF: number): { A: Value; B: Value } {
  return { A: o.slice(shared.vera_A!, 1, 0, inF), B: o.slice(shared.vera_B!, 0, 0, outF) };
}

export const VERA: LinearMethod<VeraConfig> = {
  peftType: 'VERA',
  label: 'VeRA',
  parseConfig: veraConfig,
  checkTrainable(c) {
    if (!c.initWeights) throw new PeftConfigError('VeRA init_weights=false is not implemented; use the default (λ_b = 0, λ_d = d_initial)');
  },
  moduleTensors(spec, c) {
    return [
      { kind: 'vera_lambda_b', shape: [spec.outFeatures] },
      { kind: 'vera_lambda_d', shape: [c.r] },
    ];
  },
  sharedTensors(specs, c) {
    const maxIn = Math.max(...specs.map((s) => s.inFeatures));
    const maxOut = Math.max(...specs.map((s) => s.outFeatures));
    return [
      { kind: 'vera_A', shape: [c.r, maxIn], trainable: false },
      { kind: 'vera_B', shape: [maxOut, c.r], trainable: false },
    ];
  },
  initShared(decls, c) {
    // peft's _init_vera_A_vera_B: torch.Generator().manual_seed(projection_prng_key), then
    // _kaiming_init of vera_A [r, max in] and vera_B [max out, r]: uniform_(-b, b) with
    // b = sqrt(3) · sqrt(2) / sqrt(fan_in), fan_in = the second dimension. Replayed exactly
    // (src/nn/torch_rng.ts), so a save_projection=false adapter gets the projections peft had.
    const gen = new TorchCpuGenerator(c.projectionPrngKey);
    return new Map(
      decls.map((d) => {
        const bound = Math.sqrt(3) * (Math.SQRT2 / Math.sqrt(d.shape[1]!));
        return [d.kind, gen.uniformTensor(d.shape[0]! * d.shape[1]!, -bound, bound)];
      }),
    );
  },
  savesShared: (c) => c.saveProjection,
  init(spec, c) {
    return new Map([
      ['vera_lambda_b', new Float32Array(spec.outFeatures)],
      ['vera_lambda_d', new Float32Array(c.r).fill(c.dInitial)],
    ]);
  },
  forward({ x, base, spec, t, shared, config, dropout }) {
    const { A, B } = sliced(shared, spec.inFeatures, spec.outFeatures);
    const h = o.mul(o.matmulT(dropout(x, config.veraDropout), A), t.vera_lambda_d!);
    return o.add(base(x), o.mul(o.matmulT(h, B), t.vera_lambda_b!));
  },
  mergedWeight(W, spec, t, shared) {
    const { A, B } = sliced(shared, spec.inFeatures, spec.outFeatures);
    const dA = o.mul(A, o.reshape(t.vera_lambda_d!, [-1, 1]));
    return o.add(W, o.mul(o.matmul(B, dA), o.reshape(t.vera_lambda_b!, [-1, 1])));
  },
};

/** The registry entry. */
export const veraTuner = linearTuner(VERA, {
  frozenTensors: /^base_model\.vera_[AB]$/,
  infoSettings: ['r', 'd_initial', 'vera_dropout', 'projection_prng_key', 'save_projection', 'target_modules', 'layers_to_transform'],
  presets: [
    {
      name: 'vera',
      label: 'VeRA',
      learningRate: 1e-2,
      trainLearningRate: 1e-2,
      compareByDefault: false,
      flags: { r: 'r', dropout: 'vera_dropout', target: 'target_modules' },
      fields: { peft_type: 'VERA', r: 64, target_modules: 'all-linear', task_type: 'CAUSAL_LM' },
      trainFields: { peft_type: 'VERA', r: 64, task_type: 'CAUSAL_LM' },
      settings: 'r=64 shared frozen projections, trained scaling vectors on every linear layer but the head',
      folklore: { parameter: 'High', compute: 'High', space: 'High', performance: 'Medium', flexibility: 'Medium' },
    },
  ],
});
