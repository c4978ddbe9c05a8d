// Initial values of new bottleneck adapters, seeded: adapters' 'bert' init (N(0, 0.02) weights)
// and 'mam_adapter' init (Kaiming-uniform down-projection), zero biases, and a zero up-projection
// by default so a fresh adapter computes exactly the base model.

import { SeededRandom, normals, uniforms } from '../../nn/random.js';
import type { TrainableTensor } from '../types.js';

export interface BnInitOptions {
  initWeights: string;
  /** true (default): adapter_up.weight starts at zero, so the adapter starts as the identity */
  zeroUp: boolean;
  seed: number;
}

/** The four tensors of one adapter: down [bottleneck, hidden], up [hidden, bottleneck]. */
export function initBottleneck(
  hidden: number,
  bottleneck: number,
  opts: BnInitOptions,
): Record<'down' | 'downBias' | 'up' | 'upBias', TrainableTensor> {
  const rng = new SeededRandom(opts.seed);
  let down: Float32Array;
  let up: Float32Array;
  if (opts.initWeights === 'mam_adapter') {
    // torch kaiming_uniform_(a=sqrt(5)): bound = sqrt(6 / ((1 + a^2) fan_in)) = 1 / sqrt(fan_in)
    const bound = 1 / Math.sqrt(hidden);
    down = uniforms(rng, bottleneck * hidden, bound);
    up = new Float32Array(hidden * bottleneck);
  } else {
    down = normals(rng, bottleneck * hidden, 0.02);
    up = opts.zeroUp ? new Float32Array(hidden * bottleneck) : normals(rng, hidden * bottleneck, 0.02);
  }
  return {
    down: { shape: [bottleneck, hidden], data: down },
    downBias: { shape: [bottleneck], data: new Float32Array(bottleneck) },
    up: { shape: [hidden, bottleneck], data: up },
    upBias: { shape: [hidden], data: new Float32Array(hidden) },
  };
}
