// peft_type -> tuner: how each method creates a new adapter and loads a saved one. Adding a
// method is its folder plus one line in TUNERS.

import type { PretrainedModel } from '../models/types.js';
import type { AdaptedModel } from './types.js';
import { loraTuner } from './lora/index.js';
import { ia3Tuner } from './ia3/index.js';
import { promptTuningTuner } from './prompt_tuning/index.js';
import { prefixTuningTuner } from './prefix_tuning/index.js';
import { pTuningTuner } from './p_tuning/index.js';

export interface TunerOptions {
  /** name of the adapter (peft's adapter_name; default "default") */
  adapterName?: string;
  /** load for training (peft's is_trainable); loading defaults to inference */
  isTrainable?: boolean;
  /** seed of the generator that draws initial adapter weights */
  seed?: number;
}

export interface Tuner {
  /** A new adapter from config fields named as in adapter_config.json (peft's get_peft_model). */
  create(base: PretrainedModel, fields: Record<string, unknown>, opts?: TunerOptions): Promise<AdaptedModel>;
  /** The adapter saved in `dir` (peft's PeftModel.from_pretrained). */
  fromPretrained(base: PretrainedModel, dir: string, opts?: TunerOptions): Promise<AdaptedModel>;
}

export const TUNERS: Readonly<Record<string, Tuner>> = {
  LORA: loraTuner,
  IA3: ia3Tuner,
  PROMPT_TUNING: promptTuningTuner,
  PREFIX_TUNING: prefixTuningTuner,
  P_TUNING: pTuningTuner,
};
