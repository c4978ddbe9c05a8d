// Initial values of new bottleneck adapters, seeded: adapters' 'bert' init (N(0, 0.02) weights)
// and 'mam_adapter' init (Kaiming-uniform down-projection), zero biases, and a zero up-projection
// by default so a fresh adapter computes exactly the base model.

import { mulberry32 } from '../../nn/random.js';
import type { TrainableTensor } from '../types.js';

function normal(n: number, std: number, rand: () => number): Float32Array {
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) out[i] = Math.sqrt(-2 * Math.log(Math.max(rand(), 1e-12))) * Math.cos(2 * Math.PI * rand()) * std;
  return out;
}

export interface BnInitOptions {
  initWeights: string;
  /** true (default): adapter_up.weight starts at zero, so the adapter starts as the identity */
  zeroUp: boolean;
  seed: number;
}

/** The four tensors of one adapter: down [bottleneck, hidden], up [hidden, bottleneck]. */
export function initBottleneck(hidden: number, bottleneck: number, opts: BnInitOptions): Record<'down' | 'downBias' | 'up' | 'upBias', TrainableTensor> {
  const rand = mulberry32(opts.seed);
  let down: Float32Array;
  let up: Float32Array;
  if (opts.initWeights === 'mam_adapter') {
    // torch kaiming_uniform_(a=sqrt(5)): bound = sqrt(6 / ((1 + a^2) fan_in)) = 1 / sqrt(fan_in)
    const bound = 1 / Math.sqrt(hidden);
    down = Float32Array.from({ length: bottleneck * hidden }, () => (2 * rand() - 1) * bound);
    up = new Float32Array(hidden * bottleneck);
  } else {
    down = normal(bottleneck * hidden, 0.02, rand);
    up = opts.zeroUp ? new Float32Array(hidden * bottleneck) : normal(hidden * bottleneck, 0.02, rand);
  }
  return {
    down: { shape: [bottleneck, hidden], data: down },
    downBias: { shape: [bottleneck], data: new Float32Array(bottleneck) },
    up: { shape: [hidden, bottleneck], data: up },
    upBias: { shape: [hidden], data: new Float32Array(hidden) },
  };
}
