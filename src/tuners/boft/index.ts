// BOFT (Liu et al. 2024, "Parameter-Efficient Orthogonal Finetuning via Butterfly Factorization")
// as peft 0.20 computes it without its CUDA extension, i.e. with boft_n_butterfly_factor = 1 (peft's
// CPU path forces that value): one block-diagonal rotation B = blockdiag(R_i) of the input features,
// each R_i = (I - S_i)(I + S_i)⁻¹ (the exact Cayley transform of S_i = (boft_R_i - boft_R_iᵀ) / 2),
// and a learned scale per output: y = (x B Wᵀ) ⊙ boft_s + b, merged W' = (W Bᵀ) ⊙ boft_s.
// Saved tensors <module>.boft_R [1, in / block, block, block] and <module>.boft_s [out, 1].

import type { Value } from '../../graph/ir.js';
import * as o from '../../graph/ops.js';
import type { LinearSpec } from '../../nn/context.js';
import { FieldReader, type LinearTunerConfig, commonFields, noBias } from '../linear_tuner/config.js';
import { type LinearMethod, linearTuner } from '../linear_tuner/model.js';
import { checkRotationTrainable, identityBlock, inputBlocks, rotateWeightBlocks } from '../oft/index.js';
import { PeftConfigError } from '../types.js';

export interface BoftConfig extends LinearTunerConfig {
  boftBlockSize: number;
  boftBlockNum: number;
  boftNButterflyFactor: number;
  boftDropout: number;
  initWeights: boolean;
}

function boftConfig(fields: Record<string, unknown>, source = 'BOFT config'): BoftConfig {
  const r = new FieldReader(fields, source);
  noBias(r, 'BOFT');
  const c: BoftConfig = {
    ...commonFields(r, 'BOFT', 'BOFT'),
    boftBlockSize: r.int('boft_block_size', 4),
    boftBlockNum: r.int('boft_block_num', 0),
    boftNButterflyFactor: r.int('boft_n_butterfly_factor', 1, 1),
    boftDropout: r.num('boft_dropout', 0),
    initWeights: r.bool('init_weights', true),
  };
  if ((c.boftBlockSize === 0) === (c.boftBlockNum === 0))
    throw new PeftConfigError(
      `${source}: set exactly one of boft_block_size and boft_block_num (the other 0); got ${c.boftBlockSize} and ${c.boftBlockNum}`,
    );
  if (c.boftNButterflyFactor !== 1) {
    throw new PeftConfigError(
      `${source}: boft_n_butterfly_factor=${c.boftNButterflyFactor} is not supported: only 1 (one block-diagonal factor, what peft computes without its CUDA extension) is implemented`,
    );
  }
  return c;
}

function blocks(spec: LinearSpec, c: BoftConfig): { n: number; b: number } {
  const setting = c.boftBlockSize ? `boft_block_size=${c.boftBlockSize}` : `in/${c.boftBlockNum}`;
  return inputBlocks(spec, c.boftBlockSize || spec.inFeatures / c.boftBlockNum, 'BOFT', setting);
}

/**
 * The inverse of each [b, b] matrix of A [n, b, b] by Gauss-Jordan elimination without pivoting,
 * unrolled in the graph (differentiable). Only for matrices whose leading principal minors are
 * nonzero: here I + S with S skew-symmetric, whose symmetric part is I, so every pivot is nonzero.
 */
export function batchedInverse(A: Value): Value {
  const [n, b] = A.shape as [number, number, number];
  const dtype = A.dtype as 'float32' | 'float64';
  const eye = new (dtype === 'float64' ? Float64Array : Float32Array)(n * b * b);
  for (let k = 0; k < n; k++) for (let i = 0; i < b; i++) eye[k * b * b + i * b + i] = 1;
  let M = o.concat([A, A.graph.constant('gj_eye', dtype, [n, b, b], eye)], 2);
  for (let k = 0; k < b; k++) {
    const row = o.slice(M, 1, k, k + 1);
    const pivotRow = o.div(row, o.slice(row, 2, k, k + 1));
    const eliminated = o.sub(M, o.mul(o.slice(M, 2, k, k + 1), pivotRow));
    const parts: Value[] = [];
    if (k > 0) parts.push(o.slice(eliminated, 1, 0, k));
    parts.push(pivotRow);
    if (k < b - 1) parts.push(o.slice(eliminated, 1, k + 1, b));
    M = parts.length > 1 ? o.concat(parts, 1) : parts[0]!;
  }
  return o.slice(M, 2, b, 2 * b);
}

/** The rotation blocks [n, b, b]: R = (I - S)(I + S)⁻¹ = 2 (I + S)⁻¹ - I with S = (R0 - R0ᵀ) / 2. */
function boftRotation(boftR: Value): Value {
  const [, n, b] = boftR.shape as [number, number, number, number];
  const R0 = o.reshape(boftR, [n, b, b]);
  const S = o.mul(o.sub(R0, o.transpose(R0, [0, 2, 1])), 0.5);
  const I = identityBlock(boftR, 'boft_eye', b);
  return o.sub(o.mul(batchedInverse(o.add(I, S)), 2), I);
}

export const BOFT: LinearMethod<BoftConfig> = {
  peftType: 'BOFT',
  label: 'BOFT',
  parseConfig: boftConfig,
  checkTrainable(c) {
    checkRotationTrainable('BOFT', 'boft_dropout', c.boftDropout, c.initWeights, 'identity rotations, unit scales');
  },
  moduleTensors(spec, c) {
    const { n, b } = blocks(spec, c);
    return [
      { kind: 'boft_R', shape: [1, n, b, b] },
      { kind: 'boft_s', shape: [spec.outFeatures, 1] },
    ];
  },
  init(spec, c) {
    const { n, b } = blocks(spec, c);
    return new Map([
      ['boft_R', new Float32Array(n * b * b)],
      ['boft_s', new Float32Array(spec.outFeatures).fill(1)],
    ]);
  },
  forward({ x, spec, t, config, weight, bias }) {
    const { n, b } = blocks(spec, config);
    const W = rotateWeightBlocks(weight(), boftRotation(t.boft_R!), spec, n, b);
    const y = o.mul(o.matmulT(x, W), o.reshape(t.boft_s!, [spec.outFeatures]));
    const bv = bias();
    return bv ? o.add(y, bv) : y;
  },
  mergedWeight(W, spec, t, _shared, config) {
    const { n, b } = blocks(spec, config);
    return o.mul(rotateWeightBlocks(W, boftRotation(t.boft_R!), spec, n, b), t.boft_s!);
  },
};

/** The registry entry. */
export const boftTuner = linearTuner(BOFT, {
  infoSettings: ['boft_block_size', 'boft_block_num', 'boft_n_butterfly_factor', 'boft_dropout', 'target_modules', 'layers_to_transform'],
  presets: [
    {
      name: 'boft',
      label: 'BOFT',
      learningRate: 2e-3,
      trainLearningRate: 2e-4,
      compareByDefault: false,
      flags: { target: 'target_modules' },
      fields: { peft_type: 'BOFT', boft_block_size: 8, boft_n_butterfly_factor: 1, target_modules: 'all-linear', task_type: 'CAUSAL_LM' },
      trainFields: { peft_type: 'BOFT', boft_block_size: 8, boft_n_butterfly_factor: 1, task_type: 'CAUSAL_LM' },
      settings:
        'block-diagonal orthogonal rotation (exact Cayley, blocks of 8, one butterfly factor) and output scales on every linear layer but the head',
      folklore: { parameter: 'High', compute: 'Medium', space: 'High', performance: 'High', flexibility: 'High' },
    },
  ],
});
