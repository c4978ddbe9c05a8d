// What LoHa and LoKr share as LyCORIS methods (peft's lycoris_utils.py): rank and alpha with
// per-module rank_pattern / alpha_pattern, rank and module dropout (read, refused for training), and
// a weight delta ΔW · alpha / r added to the frozen layer: y = W x + ΔW x (+ b), merged W' = W + ΔW.

import type { Value } from '../../graph/ir.js';
import * as o from '../../graph/ops.js';
import { type FieldReader, type LinearTunerConfig, patternValue } from './config.js';
import type { LinearMethod, Tensors } from './model.js';
import { PeftConfigError } from '../types.js';

export interface LycorisConfig extends LinearTunerConfig {
  r: number;
  alpha: number;
  rankDropout: number;
  moduleDropout: number;
  rankPattern: Record<string, number>;
  alphaPattern: Record<string, number>;
}

/** The LyCORIS fields of adapter_config.json, with peft's defaults (r = alpha = 8, no dropout). */
export function lycorisFields(r: FieldReader): Omit<LycorisConfig, keyof LinearTunerConfig> {
  return {
    r: r.int('r', 8, 1),
    alpha: r.num('alpha', 8),
    rankDropout: r.num('rank_dropout', 0),
    moduleDropout: r.num('module_dropout', 0),
    rankPattern: r.pattern('rank_pattern'),
    alphaPattern: r.pattern('alpha_pattern'),
  };
}

/** The rank and alpha of one module (rank_pattern / alpha_pattern over r / alpha). */
export function lycorisRank(c: LycorisConfig, module: string): { r: number; alpha: number } {
  return { r: patternValue(c.rankPattern, module, c.r), alpha: patternValue(c.alphaPattern, module, c.alpha) };
}

/**
 * The `LinearMethod` members a LyCORIS method shares: the dropout check, and forward and merge from
 * its ΔW [out, in] (`delta`, already multiplied by the module's scale alpha / r).
 */
export function lycorisMethod<C extends LycorisConfig>(
  label: string,
  delta: (t: Tensors, scale: number) => Value,
): Pick<LinearMethod<C>, 'checkTrainable' | 'forward' | 'mergedWeight'> {
  const scaled = (t: Tensors, c: C, module: string): Value => {
    const { r, alpha } = lycorisRank(c, module);
    return delta(t, alpha / r);
  };
  return {
    checkTrainable(c) {
      if (c.rankDropout !== 0 || c.moduleDropout !== 0)
        throw new PeftConfigError(
          `${label} rank_dropout/module_dropout (${c.rankDropout}/${c.moduleDropout}) are not implemented for training; set them to 0`,
        );
    },
    forward({ x, base, spec, t, config }) {
      return o.add(base(x), o.matmulT(x, scaled(t, config, spec.name)));
    },
    mergedWeight(W, spec, t, _shared, config) {
      return o.add(W, scaled(t, config, spec.name));
    },
  };
}

/** The settings `peft info` shows for a LyCORIS method: r and alpha, the method's `own`, then dropout, init, targets, patterns. */
export function lycorisInfoSettings(...own: string[]): string[] {
  return [
    'r',
    'alpha',
    ...own,
    'rank_dropout',
    'module_dropout',
    'init_weights',
    'target_modules',
    'rank_pattern',
    'alpha_pattern',
    'layers_to_transform',
  ];
}
