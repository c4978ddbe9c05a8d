// AdamW with torch.optim.AdamW's defaults and update order (decoupled weight decay first, then
// bias-corrected moments). Runs on the host over the trainable tensors only: for adapters these
// are small, and one fused pass per tensor costs far less than a session run.

import type { TrainableTensor } from '../tuners/types.js';

export interface AdamWOptions {
  lr?: number;
  betas?: [number, number];
  eps?: number;
  weightDecay?: number;
}

export interface AdamWState {
  step: number;
  expAvg: Map<string, Float32Array>;
  expAvgSq: Map<string, Float32Array>;
}

export class AdamW {
  readonly lr: number;
  readonly beta1: number;
  readonly beta2: number;
  readonly eps: number;
  readonly weightDecay: number;
  state: AdamWState = { step: 0, expAvg: new Map(), expAvgSq: new Map() };

  constructor(opts: AdamWOptions = {}) {
    this.lr = opts.lr ?? 1e-3;
    [this.beta1, this.beta2] = opts.betas ?? [0.9, 0.999];
    this.eps = opts.eps ?? 1e-8;
    this.weightDecay = opts.weightDecay ?? 1e-2;
  }

  /**
   * One update of every param that has a gradient. `decay` names the params weight decay applies
   * to (transformers excludes biases and norm weights); `lr` overrides the base rate (schedules).
   */
  step(params: Map<string, TrainableTensor>, grads: Map<string, Float32Array>, opts: { lr?: number; decay?: Set<string> } = {}): void {
    const lr = opts.lr ?? this.lr;
    this.state.step += 1;
    const t = this.state.step;
    const bc1 = 1 - Math.pow(this.beta1, t);
    const bc2Sqrt = Math.sqrt(1 - Math.pow(this.beta2, t));
    const stepSize = lr / bc1;
    const b1 = this.beta1;
    const b2 = this.beta2;
    for (const [name, p] of params) {
      const g = grads.get(name);
      if (!g) continue;
      if (g.length !== p.data.length) throw new Error(`gradient of ${name} has ${g.length} elements, param has ${p.data.length}`);
      let m = this.state.expAvg.get(name);
      let v = this.state.expAvgSq.get(name);
      if (!m || !v) {
        m = new Float32Array(p.data.length);
        v = new Float32Array(p.data.length);
        this.state.expAvg.set(name, m);
        this.state.expAvgSq.set(name, v);
      }
      const wd = !opts.decay || opts.decay.has(name) ? this.weightDecay : 0;
      const keep = 1 - lr * wd;
      const x = p.data;
      for (let i = 0; i < x.length; i++) {
        const gi = g[i]!;
        const mi = (m[i] = b1 * m[i]! + (1 - b1) * gi);
        const vi = (v[i] = b2 * v[i]! + (1 - b2) * gi * gi);
        x[i] = x[i]! * keep - (stepSize * mi) / (Math.sqrt(vi) / bc2Sqrt + this.eps);
      }
    }
  }
}

/** Scales gradients in place so their global L2 norm is at most maxNorm (torch clip_grad_norm_); returns the norm before clipping. */
export function clipGradNorm(grads: Map<string, Float32Array>, maxNorm: number): number {
  let sq = 0;
  for (const g of grads.values()) for (let i = 0; i < g.length; i++) sq += g[i]! * g[i]!;
  const norm = Math.sqrt(sq);
  const coef = maxNorm / (norm + 1e-6);
  if (coef < 1) for (const g of grads.values()) for (let i = 0; i < g.length; i++) g[i]! *= coef;
  return norm;
}
