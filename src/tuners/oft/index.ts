// OFT (Qiu et al. 2023; peft 0.17+ format, "OFTv2") for linear layers: the input is rotated block
// by block before the frozen layer, x_blk -> x_blk R_i, with each R_i the Cayley-Neumann
// approximation I + 2Q + 2Q² + ... + 2Q^(n-2) + Q^(n-1) (n = num_cayley_neumann_terms) of the
// skew-symmetric Q = M - Mᵀ whose strict upper triangle M holds oft_R.weight[i] in
// torch.triu_indices order. Merging gives W' = W · blockdiag(R_i)ᵀ. Saved tensor
// <module>.oft_R.weight [in / oft_block_size (1 with block_share), b(b-1)/2].

import type { Value } from '../../graph/ir.js';
import * as o from '../../graph/ops.js';
import type { LinearSpec } from '../../nn/context.js';
import { FieldReader, type LinearTunerConfig, commonFields, noBias } from '../linear_tuner/config.js';
import { type LinearMethod, linearTuner } from '../linear_tuner/model.js';
import { PeftConfigError } from '../types.js';

export interface OftConfig extends LinearTunerConfig {
  r: number;
  oftBlockSize: number;
  moduleDropout: number;
  blockShare: boolean;
  useCayleyNeumann: boolean;
  numCayleyNeumannTerms: number;
  initWeights: boolean;
  raw: Record<string, unknown>;
}

function oftConfig(fields: Record<string, unknown>, source = 'OFT config'): OftConfig {
  const r = new FieldReader(fields, source);
  r.off('coft', 'constrained OFT (COFT) projection is not implemented');
  r.off('oft_cans', 'the CANS orthogonalization is not implemented');
  noBias(r, 'OFT');
  const c: OftConfig = {
    ...commonFields(r, 'OFT', 'OFT'),
    r: r.int('r', 0),
    oftBlockSize: r.int('oft_block_size', 32),
    moduleDropout: r.num('module_dropout', 0),
    blockShare: r.bool('block_share', false),
    useCayleyNeumann: r.bool('use_cayley_neumann', true),
    numCayleyNeumannTerms: r.int('num_cayley_neumann_terms', 5, 1),
    initWeights: r.bool('init_weights', true),
  };
  if ((c.r === 0) === (c.oftBlockSize === 0))
    throw new PeftConfigError(
      `${source}: set exactly one of r and oft_block_size (the other 0); got r=${c.r}, oft_block_size=${c.oftBlockSize}`,
    );
  if (!c.useCayleyNeumann) {
    throw new PeftConfigError(
      `${source}: use_cayley_neumann=false (the exact Cayley transform, a matrix inverse per block) is not implemented; use the Neumann approximation (the default)`,
    );
  }
  return c;
}

/** What OFT and BOFT implement for inference only: block dropout and init_weights=false (`init`: what the default starts from). */
export function checkRotationTrainable(method: string, dropoutKey: string, dropout: number, initWeights: boolean, init: string): void {
  if (dropout !== 0)
    throw new PeftConfigError(
      `${method} ${dropoutKey}=${dropout} (multiplicative block dropout) is not implemented for training; set it to 0`,
    );
  if (!initWeights) throw new PeftConfigError(`${method} init_weights=false is not implemented; use the default (${init})`);
}

/** A layer's input features as n blocks of b (OFT and BOFT); `setting` names the config that chose b. */
export function inputBlocks(spec: LinearSpec, b: number, method: string, setting: string): { n: number; b: number } {
  if (!Number.isInteger(b) || spec.inFeatures % b !== 0) {
    throw new PeftConfigError(
      `${method}: ${spec.name} has ${spec.inFeatures} input features, not divisible into blocks of ${setting}; choose a block size dividing it`,
    );
  }
  return { n: spec.inFeatures / b, b };
}

/** Blocks and block size of a layer. */
function oftBlocks(spec: LinearSpec, c: OftConfig): { n: number; b: number } {
  const setting = c.oftBlockSize ? `oft_block_size=${c.oftBlockSize}` : `in/r with r=${c.r}`;
  return inputBlocks(spec, c.oftBlockSize || spec.inFeatures / c.r, 'OFT', setting);
}

/** [1, b, b] identity, the rotation blocks' starting point. */
export function identityBlock(like: Value, name: string, b: number): Value {
  const dtype = like.dtype as 'float32' | 'float64';
  const eye = new (dtype === 'float64' ? Float64Array : Float32Array)(b * b);
  for (let i = 0; i < b; i++) eye[i * b + i] = 1;
  return like.graph.constant(`${name}_${b}_${dtype}`, dtype, [1, b, b], eye);
}

/** W · blockdiag(R_i)ᵀ: each input block of W [out, in] times R_iᵀ, for R [n, b, b]. */
export function rotateWeightBlocks(W: Value, R: Value, spec: LinearSpec, n: number, b: number): Value {
  const Wb = o.reshape(W, [spec.outFeatures, n, 1, b]);
  return o.reshape(o.matmul(Wb, o.transpose(R, [0, 2, 1])), [spec.outFeatures, spec.inFeatures]);
}

/** [k, b·b] one-hot: row k puts vec[k] at (rows[k], cols[k]) of torch.triu_indices(b, b, 1). */
function triuScatter(b: number, dtype: 'float32' | 'float64'): { data: Float32Array | Float64Array; k: number } {
  const k = (b * (b - 1)) / 2;
  const data = dtype === 'float64' ? new Float64Array(k * b * b) : new Float32Array(k * b * b);
  let i = 0;
  for (let r = 0; r < b; r++) for (let c = r + 1; c < b; c++) data[i++ * b * b + r * b + c] = 1;
  return { data, k };
}

/**
 * The rotation blocks [n, b, b] from oft_R [n, b(b-1)/2]: Q = M - Mᵀ, then
 * R = I + 2Q + 2Q² + ... + 2Q^(terms-2) + Q^(terms-1) (terms > 2; 2 terms: I + 2Q... as peft).
 */
function oftRotation(vec: Value, b: number, terms: number): Value {
  const dtype = vec.dtype as 'float32' | 'float64';
  const n = vec.shape[0] as number;
  const s = triuScatter(b, dtype);
  const S = vec.graph.constant(`oft_triu_${b}_${dtype}`, dtype, [s.k, b * b], s.data);
  const M = o.reshape(o.matmul(vec, S), [n, b, b]);
  const Q = o.sub(M, o.transpose(M, [0, 2, 1]));
  let R = identityBlock(vec, 'oft_eye', b);
  if (terms > 1) {
    R = o.add(R, o.mul(Q, 2));
    if (terms > 2) {
      let power = o.matmul(Q, Q);
      R = o.add(R, o.mul(power, 2));
      for (let i = 3; i < terms - 1; i++) {
        power = o.matmul(power, Q);
        R = o.add(R, o.mul(power, 2));
      }
      power = o.matmul(power, Q);
      R = o.add(R, power);
    }
  }
  return R;
}

export const OFT: LinearMethod<OftConfig> = {
  peftType: 'OFT',
  label: 'OFT',
  parseConfig: oftConfig,
  checkTrainable(c) {
    checkRotationTrainable('OFT', 'module_dropout', c.moduleDropout, c.initWeights, 'identity rotations');
  },
  moduleTensors(spec, c) {
    const { n, b } = oftBlocks(spec, c);
    return [{ kind: 'oft_R.weight', shape: [c.blockShare ? 1 : n, (b * (b - 1)) / 2] }];
  },
  init(_spec, _c, decls) {
    // init_weights=true: zero skew parameters, so every R_i is the identity.
    return new Map(decls.map((d) => [d.kind, new Float32Array(d.shape[0]! * d.shape[1]!)]));
  },
  forward({ x, base, spec, t, config }) {
    const { n, b } = oftBlocks(spec, config);
    const R = oftRotation(t['oft_R.weight']!, b, config.numCayleyNeumannTerms);
    const lead = new Array<number>(x.rank - 1).fill(0);
    const xb = o.reshape(x, [...lead, n, 1, b]);
    const rotated = o.reshape(o.matmul(xb, R), [...lead, spec.inFeatures]);
    return base(rotated);
  },
  mergedWeight(W, spec, t, _shared, config) {
    const { n, b } = oftBlocks(spec, config);
    return rotateWeightBlocks(W, oftRotation(t['oft_R.weight']!, b, config.numCayleyNeumannTerms), spec, n, b);
  },
};

/** The registry entry. */
export const oftTuner = linearTuner(OFT, {
  infoSettings: [
    'r',
    'oft_block_size',
    'block_share',
    'use_cayley_neumann',
    'num_cayley_neumann_terms',
    'module_dropout',
    'target_modules',
    'layers_to_transform',
  ],
  presets: [
    {
      name: 'oft',
      label: 'OFT',
      learningRate: 2e-3,
      trainLearningRate: 2e-4,
      compareByDefault: false,
      flags: { target: 'target_modules' },
      fields: { peft_type: 'OFT', r: 0, oft_block_size: 16, target_modules: 'all-linear', task_type: 'CAUSAL_LM' },
      trainFields: { peft_type: 'OFT', r: 0, oft_block_size: 16, task_type: 'CAUSAL_LM' },
      settings: 'block-diagonal orthogonal rotations of each linear layer input, blocks of 16 (Cayley-Neumann, 5 terms)',
      folklore: { parameter: 'High', compute: 'Medium', space: 'High', performance: 'High', flexibility: 'High' },
    },
  ],
});
