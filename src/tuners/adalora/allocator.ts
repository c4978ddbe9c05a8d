// AdaLoRA's rank allocator as peft 0.20 runs it after each optimizer step (update_and_allocate):
// sensitivity |p · ∂L/∂p| of every lora_A/lora_B/lora_E entry, smoothed (EMA with beta1) and its
// uncertainty (EMA with beta2 of |sensitivity - smoothed|); a triplet's score is its E entry's
// score plus the mean score of its row of A and its column of B; a cubic budget schedule from
// init_r per layer down to target_r per layer between tinit and total_step - tfinal; every deltaT
// steps the lowest-scoring triplets beyond the budget have their E entry set to zero and the kept
// entries are recorded as rank_pattern; at total_step - tfinal the final pattern is fixed and
// applied at every later step.

import { PeftConfigError } from '../types.js';
import type { TrainableTensor } from '../types.js';

/** One AdaLoRA layer as the allocator sees it: its tensors (updated in place) and their gradient names. */
export interface AllocatorLayer {
  /** module path, e.g. model.layers.0.self_attn.q_proj */
  module: string;
  A: TrainableTensor;
  B: TrainableTensor;
  E: TrainableTensor;
  /** graph param names of A, B, E (keys of the gradient map) */
  names: { A: string; B: string; E: string };
}

export interface AllocatorSchedule {
  initR: number;
  targetR: number;
  tinit: number;
  tfinal: number;
  deltaT: number;
  beta1: number;
  beta2: number;
  totalStep: number;
}

export class RankAllocator {
  readonly initBudget: number;
  readonly targetBudget: number;
  private expIpt = new Map<string, Float32Array>();
  private expUnc = new Map<string, Float32Array>();

  constructor(
    readonly schedule: AllocatorSchedule,
    readonly layers: readonly AllocatorLayer[],
  ) {
    if (schedule.tinit >= schedule.totalStep - schedule.tfinal) {
      throw new PeftConfigError(
        `AdaLoRA: tinit (${schedule.tinit}) must be below total_step - tfinal (${schedule.totalStep - schedule.tfinal}); the budget schedule needs room to prune`,
      );
    }
    this.initBudget = layers.reduce((n, l) => n + l.A.shape[0]!, 0);
    this.targetBudget = schedule.targetR * layers.length;
  }

  /** peft's budget_schedule: the budget at `step` and whether this step masks. */
  budgetAt(step: number): { budget: number; mask: boolean } {
    const { tinit, tfinal, totalStep, deltaT } = this.schedule;
    if (step <= tinit) return { budget: this.initBudget, mask: false };
    if (step > totalStep - tfinal) return { budget: this.targetBudget, mask: true };
    const mul = 1 - (step - tinit) / (totalStep - tfinal - tinit);
    return { budget: Math.trunc((this.initBudget - this.targetBudget) * mul ** 3 + this.targetBudget), mask: step % deltaT === 0 };
  }

  private updateIpt(grads: ReadonlyMap<string, Float32Array>): void {
    const { beta1, beta2 } = this.schedule;
    for (const l of this.layers) {
      for (const k of ['A', 'B', 'E'] as const) {
        const name = l.names[k];
        const p = l[k].data;
        const g = grads.get(name);
        if (!g) throw new Error(`AdaLoRA allocator: no gradient for ${name}`);
        let avg = this.expIpt.get(name);
        let unc = this.expUnc.get(name);
        if (!avg || !unc) {
          avg = new Float32Array(p.length);
          unc = new Float32Array(p.length);
          this.expIpt.set(name, avg);
          this.expUnc.set(name, unc);
        }
        for (let i = 0; i < p.length; i++) {
          const ipt = Math.abs(p[i]! * g[i]!);
          avg[i] = beta1 * avg[i]! + (1 - beta1) * ipt;
          unc[i] = beta2 * unc[i]! + (1 - beta2) * Math.abs(ipt - avg[i]!);
        }
      }
    }
  }

  /** Triplet scores of one layer [r]: E's score + mean over A's row + mean over B's column. */
  private tripletScores(l: AllocatorLayer): Float64Array {
    const score = (name: string, i: number): number => this.expIpt.get(name)![i]! * this.expUnc.get(name)![i]!;
    const r = l.A.shape[0]!;
    const inF = l.A.shape[1]!;
    const outF = l.B.shape[0]!;
    const s = new Float64Array(r);
    for (let j = 0; j < r; j++) {
      let a = 0;
      for (let c = 0; c < inF; c++) a += score(l.names.A, j * inF + c);
      let b = 0;
      for (let o = 0; o < outF; o++) b += score(l.names.B, o * r + j);
      s[j] = score(l.names.E, j) + a / inF + b / outF;
    }
    return s;
  }

  /** peft's mask_to_budget: zeroes E below the budget's threshold; returns the kept entries per layer. */
  private maskToBudget(budget: number): Record<string, boolean[]> {
    const scores = this.layers.map((l) => this.tripletScores(l));
    const all = Float64Array.from(scores.flatMap((s) => [...s])).sort();
    const k = this.initBudget - budget;
    // torch.kthvalue(k): the k-th smallest (1-based); entries at or below it are pruned.
    const threshold = k >= 1 ? all[k - 1]! : -Infinity;
    const pattern: Record<string, boolean[]> = {};
    this.layers.forEach((l, i) => {
      const keep = [...scores[i]!].map((v) => !(v <= threshold));
      keep.forEach((kept, j) => {
        if (!kept) l.E.data[j] = 0;
      });
      pattern[`${l.module}.lora_E`] = keep;
    });
    return pattern;
  }

  /** peft's mask_using_rank_pattern. */
  private applyPattern(pattern: Readonly<Record<string, boolean[]>>): void {
    for (const l of this.layers) {
      const keep = pattern[`${l.module}.lora_E`];
      if (keep) keep.forEach((kept, j) => !kept && (l.E.data[j] = 0));
    }
  }

  /**
   * peft's AdaLoraModel.update_and_allocate(global_step), after the optimizer step: returns the
   * rank pattern when this step (re)allocated, else undefined. `current` is the pattern fixed so far.
   */
  step(
    step: number,
    grads: ReadonlyMap<string, Float32Array>,
    current: Readonly<Record<string, boolean[]>> | null,
  ): Record<string, boolean[]> | undefined {
    const end = this.schedule.totalStep - this.schedule.tfinal;
    if (step < end) {
      this.updateIpt(grads);
      const { budget, mask } = this.budgetAt(step);
      return mask ? this.maskToBudget(budget) : undefined;
    }
    if (step === end) {
      const pattern = this.maskToBudget(this.budgetAt(step).budget);
      this.expIpt = new Map();
      this.expUnc = new Map();
      return pattern;
    }
    if (current) this.applyPattern(current);
    return undefined;
  }
}
