// High/Medium/Low per criterion, twice: derived from the measured numbers by the thresholds stated
// in RATING_RULES, and the folklore rating the PEFT literature usually gives each method, so the
// report can show where a measurement on this model agrees with the common claim and where not.

import type { Criterion, Rating } from '../tuners/registry.js';

export type { Criterion, Rating };
/** The criteria in report order; the literature's rating of each method lives on its preset (src/tuners/registry.ts). */
export const CRITERIA: readonly Criterion[] = ['parameter', 'compute', 'space', 'performance', 'flexibility'];

export const CRITERION_LABELS: Readonly<Record<Criterion, string>> = {
  parameter: 'parameter efficiency',
  compute: 'computational efficiency',
  space: 'space efficiency',
  performance: 'performance',
  flexibility: 'flexibility',
};

/** The thresholds, in words, as the report prints them. */
export const RATING_RULES: Readonly<Record<Criterion, string>> = {
  parameter: 'trainable share of the model: High < 1%, Medium < 10%, Low otherwise',
  compute:
    "training step time / full fine-tuning's: High <= 0.7, Medium <= 0.95, Low otherwise; one level lower when inference latency is above 1.5x the base model's",
  space:
    "stored bytes per task / full fine-tuning's: High <= 1%, Medium <= 10%, Low otherwise; one level lower when peak training memory is more than 5% above full fine-tuning's",
  performance:
    "gain / full fine-tuning's gain (the best method's where full fine-tuning gained nothing), gains measured from the untuned base model, or from always answering the most common label where that scores higher, on exp(-eval loss) when no method beat the metric's noise: High >= 0.9, Medium >= 0.6, Low otherwise",
  flexibility: 'the flexibility score: High >= 0.85, Medium >= 0.6, Low otherwise',
};

export interface RatingInputs {
  trainableShare: number;
  stepVsFull: number;
  latencyVsBase: number;
  storedVsFull: number;
  peakVsFull: number;
  /** gain over base / reference gain (may exceed 1 or be negative) */
  relativeGain: number;
  flexibility: number;
}

const LEVELS: Rating[] = ['High', 'Medium', 'Low'];
const lower = (r: Rating): Rating => LEVELS[Math.min(2, LEVELS.indexOf(r) + 1)]!;
const band = (x: number, high: (x: number) => boolean, medium: (x: number) => boolean): Rating =>
  high(x) ? 'High' : medium(x) ? 'Medium' : 'Low';

export function measuredRatings(m: RatingInputs): Record<Criterion, Rating> {
  let compute = band(
    m.stepVsFull,
    (x) => x <= 0.7,
    (x) => x <= 0.95,
  );
  if (m.latencyVsBase > 1.5) compute = lower(compute);
  let space = band(
    m.storedVsFull,
    (x) => x <= 0.01,
    (x) => x <= 0.1,
  );
  if (m.peakVsFull > 1.05) space = lower(space);
  return {
    parameter: band(
      m.trainableShare,
      (x) => x < 0.01,
      (x) => x < 0.1,
    ),
    compute,
    space,
    performance: band(
      m.relativeGain,
      (x) => x >= 0.9,
      (x) => x >= 0.6,
    ),
    flexibility: band(
      m.flexibility,
      (x) => x >= 0.85,
      (x) => x >= 0.6,
    ),
  };
}
