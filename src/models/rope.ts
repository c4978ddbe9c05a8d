// Rotary position embeddings as transformers computes them: inverse frequencies for the
// rope_scaling variants (default, linear, llama3, longrope), cos/sin tables from position ids,
// and the rotation of the first `rotaryDim` channels of each head (partial rotary for Phi-3).

import type { Value } from '../graph/ir.js';
import * as o from '../graph/ops.js';
import type { RopeScaling } from '../io/hfconfig.js';
import type { BuildContext } from '../nn/context.js';
import { ModelError } from './types.js';

export interface RopeSpec {
  /** the base (rope_theta, or Gemma 3's rope_local_base_freq on sliding layers) */
  theta: number;
  /** channels of each head that are rotated: head_dim, or head_dim * partial_rotary_factor */
  rotaryDim: number;
  scaling?: RopeScaling;
  /** max_position_embeddings (longrope's scaled context) */
  maxPositionEmbeddings: number;
  /** the config's top-level original_max_position_embeddings (Phi-3 keeps it there) */
  originalMaxPositionEmbeddings?: number;
}

/** transformers: 1 / base ** (arange(0, dim, 2).float() / dim), computed in float32. */
function baseInvFreq(theta: number, dim: number): Float32Array {
  const inv = new Float32Array(dim / 2);
  for (let i = 0; i < dim / 2; i++) inv[i] = 1 / Math.pow(theta, Math.fround((2 * i) / dim));
  return inv;
}

function factorList(sc: RopeScaling, key: string, half: number): Float32Array {
  const v = sc.raw[key];
  if (!Array.isArray(v) || v.length !== half || !v.every((x) => typeof x === 'number' && x > 0)) {
    throw new ModelError(
      `rope_scaling.${key} must list ${half} positive numbers (rotary dim / 2) for longrope, found ${JSON.stringify(v)}`,
    );
  }
  return Float32Array.from(v as number[]);
}

/**
 * What the rotary tables need: inverse frequencies (a second set used when the positions run past
 * original_max_position_embeddings, for longrope), a position scale (linear) and the factor cos and
 * sin are multiplied by (longrope's attention_factor).
 */
export interface RopeFrequencies {
  invFreq: Float32Array;
  /** longrope: the long_factor frequencies and the position count above which they apply */
  long?: { invFreq: Float32Array; above: number };
  positionScale: number;
  attentionScaling: number;
}

export function ropeFrequencies(spec: RopeSpec): RopeFrequencies {
  const dim = spec.rotaryDim;
  const half = dim / 2;
  const inv = baseInvFreq(spec.theta, dim);
  const sc = spec.scaling;
  const plain = { invFreq: inv, positionScale: 1, attentionScaling: 1 };
  if (!sc || sc.ropeType === 'default') return plain;
  switch (sc.ropeType) {
    case 'linear':
      return { ...plain, positionScale: 1 / (sc.factor ?? 1) };
    case 'llama3': {
      const factor = sc.factor ?? 8;
      const low = sc.lowFreqFactor ?? 1;
      const high = sc.highFreqFactor ?? 4;
      const oldCtx = sc.originalMaxPositionEmbeddings ?? 8192;
      const lowWavelen = oldCtx / low;
      const highWavelen = oldCtx / high;
      const out = new Float32Array(half);
      for (let i = 0; i < half; i++) {
        const f = inv[i]!;
        const wavelen = (2 * Math.PI) / f;
        if (wavelen < highWavelen) out[i] = f;
        else if (wavelen > lowWavelen) out[i] = f / factor;
        else {
          const smooth = (oldCtx / wavelen - low) / (high - low);
          out[i] = (1 - smooth) * (f / factor) + smooth * f;
        }
      }
      return { ...plain, invFreq: out };
    }
    case 'longrope': {
      // transformers' _compute_longrope_parameters: with a top-level original_max_position_embeddings
      // (Phi-3) the factor is max / original; otherwise rope_scaling.factor over max_position_embeddings.
      let original: number;
      let factor: number;
      if (spec.originalMaxPositionEmbeddings !== undefined) {
        original = spec.originalMaxPositionEmbeddings;
        factor = spec.maxPositionEmbeddings / original;
      } else {
        original = spec.maxPositionEmbeddings;
        factor = sc.factor ?? 1;
      }
      const given = sc.raw.attention_factor;
      const attentionScaling = typeof given === 'number' ? given : factor <= 1 ? 1 : Math.sqrt(1 + Math.log(factor) / Math.log(original));
      const scaled = (ext: Float32Array) => {
        const out = new Float32Array(half);
        // 1 / (ext * base ** (arange(0, dim, 2) / dim))
        for (let i = 0; i < half; i++) out[i] = 1 / (ext[i]! * Math.fround(Math.pow(spec.theta, Math.fround((2 * i) / dim))));
        return out;
      };
      return {
        invFreq: scaled(factorList(sc, 'short_factor', half)),
        long: { invFreq: scaled(factorList(sc, 'long_factor', half)), above: original },
        positionScale: 1,
        attentionScaling,
      };
    }
    default:
      throw new ModelError(`rope_scaling type "${sc.ropeType}" is not supported (supported: default, linear, llama3, longrope)`);
  }
}

/** cos and sin [batch, 1, seq, rotaryDim] for position ids [batch or 1, seq]. */
export function rotaryTables(ctx: BuildContext, positions: Value, spec: RopeSpec, name = 'rotary_emb'): { cos: Value; sin: Value } {
  return ctx.graph.scope(name, () => {
    const f = ropeFrequencies(spec);
    const half = spec.rotaryDim / 2;
    let pos = o.cast(positions, 'float32');
    if (f.positionScale !== 1) pos = o.mul(pos, f.positionScale);
    let inv: Value = ctx.graph.tensor(`${name}.inv_freq`, 'float32', [half], f.invFreq);
    if (f.long) {
      // As transformers' dynamic longrope update: the long factors once any position id + 1 exceeds
      // original_max_position_embeddings (checked per forward call, so also per decode step).
      const longInv = ctx.graph.tensor(`${name}.long_inv_freq`, 'float32', [half], f.long.invFreq);
      const beyond = o.greater(o.max(positions), o.cast(ctx.graph.scalar(f.long.above - 1, 'int64'), positions.dtype));
      inv = o.where(beyond, longInv, inv);
    }
    const freqs = o.mul(o.unsqueeze(pos, -1), inv);
    const emb = o.concat([freqs, freqs], -1);
    let cos = o.cos(emb);
    let sin = o.sin(emb);
    if (f.attentionScaling !== 1) {
      cos = o.mul(cos, f.attentionScaling);
      sin = o.mul(sin, f.attentionScaling);
    }
    return { cos: o.unsqueeze(cos, 1), sin: o.unsqueeze(sin, 1) };
  });
}

/**
 * x * cos + rotate_half(x) * sin on the first rotaryDim channels of [batch, heads, seq, headDim]; the
 * rest pass through. cos and sin as rotaryTables returns them (the two halves of their last axis
 * equal), so the rotation is one Rotary op over the half tables.
 */
export function applyRotary(x: Value, cos: Value, sin: Value, rotaryDim: number, headDim: number): Value {
  const half = rotaryDim / 2;
  const rotate = (t: Value): Value => o.rotary(t, o.slice(cos, -1, 0, half), o.slice(sin, -1, 0, half));
  if (rotaryDim === headDim) return rotate(x);
  const [rot, pass] = o.split(x, -1, [rotaryDim, headDim - rotaryDim]) as [Value, Value];
  return o.concat([rotate(rot), pass], -1);
}
