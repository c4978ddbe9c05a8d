// The tuner registry: the single list of fine-tuning methods. Each method's folder exports one
// `Tuner` (how to create a new adapter and load a saved one, its label, whether and why not it
// merges, which settings `peft info` shows, how many parameters it trains, and the presets the
// CLI's `--method` and `peft compare` offer); TUNER_LIST lists them, one line per method. The CLI
// (train, info, merge), compare/ and loadAdapter/createAdapter/getPeftModel read only this table.
// Adding a method is its folder plus one line in TUNER_LIST (or registerTuner() at run time).

import type { PretrainedModel } from '../models/types.js';
import type { AdaptedModel } from './types.js';
import { PeftConfigError } from './types.js';
import { loraTuner } from './lora/index.js';
import { ia3Tuner } from './ia3/index.js';
import { promptTuningTuner } from './prompt_tuning/index.js';
import { prefixTuningTuner } from './prefix_tuning/index.js';
import { pTuningTuner } from './p_tuning/index.js';
import { bottleneckTuner } from './bottleneck/index.js';
import { fullTuner } from './full/index.js';
import { lohaTuner } from './loha/index.js';
import { lokrTuner } from './lokr/index.js';
import { veraTuner } from './vera/index.js';
import { adaloraTuner } from './adalora/index.js';
import { oftTuner } from './oft/index.js';
import { boftTuner } from './boft/index.js';
import { lnTuningTuner } from './ln_tuning/index.js';

export interface TunerOptions {
  /** name of the adapter (peft's adapter_name; default "default") */
  adapterName?: string;
  /** load for training (peft's is_trainable); loading defaults to inference */
  isTrainable?: boolean;
  /** seed of the generator that draws initial adapter weights */
  seed?: number;
}

/** Method-specific `peft train` flags a preset may accept. */
export type TrainFlag = 'r' | 'alpha' | 'dropout' | 'target';

/** The five criteria `peft compare` rates each method on, and the ratings it uses. */
export type Criterion = 'parameter' | 'compute' | 'space' | 'performance' | 'flexibility';
export type Rating = 'High' | 'Medium' | 'Low';

/**
 * One name `peft train --method` and `peft compare --methods` accept (a tuner may offer several:
 * LoRA offers `lora` and `qlora`), with the defaults both use.
 */
export interface MethodPreset {
  /** the CLI name: lowercase, no spaces */
  name: string;
  /** how tables and logs name it */
  label: string;
  /** adapter_config.json-style fields the method is created with (peft_type included) */
  fields: Record<string, unknown>;
  /** the settings in words, for the comparison report */
  settings: string;
  /** peak learning rate of a comparison run (linear decay after 5% warmup) */
  learningRate: number;
  /** `peft train`'s default learning rate when it differs from the comparison's */
  trainLearningRate?: number;
  /** the base is held 4-bit (NF4, double quantization) while training */
  quantizedBase?: boolean;
  /** adapter_config.json-style fields `peft train` uses instead of `fields` (LoRA: peft's default targets, not all-linear) */
  trainFields?: Record<string, unknown>;
  /** `peft train` flags the method takes, each with the config field it sets (e.g. { r: 'r', alpha: 'lora_alpha' }) */
  flags?: Readonly<Partial<Record<TrainFlag, string>>>;
  /** a config field that takes the run's number of optimizer steps when the fields leave it unset (AdaLoRA's total_step) */
  stepsField?: string;
  /** false: `peft compare` runs it only when --methods names it (default true) */
  compareByDefault?: boolean;
  /** the usual claims of the PEFT literature about the method (the report prints them beside the measured ratings) */
  folklore: Readonly<Record<Criterion, Rating>>;
}

export interface Tuner {
  /** adapter_config.json's peft_type (FULL and BOTTLENECK for the two methods peft does not have) */
  readonly peftType: string;
  /** the method's name in prose ("LoRA", "prompt tuning") */
  readonly label: string;
  /**
   * true, or why the method's adapters cannot be folded into the base weights (and, optionally,
   * how that error names such a folder: default "a <label> (<peftType>)")
   */
  readonly mergeable: true | { readonly why: string; readonly folder?: string };
  /** what the saved folder holds, for `peft train`'s last line */
  readonly saves?: string;
  /** adapter_config.json fields `peft info` shows, in display order (default: every field) */
  readonly infoSettings?: readonly string[];
  /** extra lines for `peft info` computed from the config (LoRA's scaling) */
  infoExtras?(config: Record<string, unknown>): Record<string, unknown>;
  /**
   * Parameters the method trains, from the saved config and the number of stored parameters
   * (null when unknown); absent means every trained parameter is stored. Prompt encoders and
   * prefix projections are trained but not saved, so they count them here.
   */
  trainableParameters?(config: Record<string, unknown>, stored: number | null): number | null;
  /** saved tensors that are frozen buffers, not trained parameters (VeRA's shared projections) */
  readonly frozenTensors?: RegExp;
  /** presets offered as `peft train --method` / `peft compare --methods` names */
  readonly presets: readonly MethodPreset[];
  /** A new adapter from config fields named as in adapter_config.json (peft's get_peft_model). */
  create(base: PretrainedModel, fields: Record<string, unknown>, opts?: TunerOptions): Promise<AdaptedModel>;
  /** The adapter saved in `dir` (peft's PeftModel.from_pretrained); absent for methods that save a whole model. */
  fromPretrained?(base: PretrainedModel, dir: string, opts?: TunerOptions): Promise<AdaptedModel>;
  /** Claims a saved folder that has no peft adapter_config.json (AdapterHub's layout). */
  detectFolder?(dir: string): Promise<boolean>;
}

/** Every method, in the order tables list them (full fine-tuning, the reference, last). */
const TUNER_LIST: Tuner[] = [
  loraTuner,
  ia3Tuner,
  promptTuningTuner,
  prefixTuningTuner,
  pTuningTuner,
  bottleneckTuner,
  lohaTuner,
  lokrTuner,
  veraTuner,
  adaloraTuner,
  oftTuner,
  boftTuner,
  lnTuningTuner,
  fullTuner,
];

const byType = new Map<string, Tuner>();
const byPreset = new Map<string, { tuner: Tuner; preset: MethodPreset }>();

/** Adds a method to the registry (what the one line in TUNER_LIST does for the bundled ones). */
export function registerTuner(t: Tuner): void {
  if (byType.has(t.peftType)) throw new PeftConfigError(`a tuner for peft_type ${t.peftType} is already registered`);
  for (const p of t.presets) {
    if (!/^[a-z][a-z0-9_-]*$/.test(p.name)) throw new PeftConfigError(`method name "${p.name}" must be lowercase letters, digits, - or _`);
    if (byPreset.has(p.name))
      throw new PeftConfigError(`method name "${p.name}" is already registered (by ${byPreset.get(p.name)!.tuner.peftType})`);
  }
  byType.set(t.peftType, t);
  // The reference (full fine-tuning) stays last in every table.
  const full = byType.get('FULL');
  if (full && t !== full) {
    byType.delete('FULL');
    byType.set('FULL', full);
  }
  for (const p of t.presets) byPreset.set(p.name, { tuner: t, preset: p });
  const entries = [...byPreset.entries()];
  byPreset.clear();
  for (const tuner of byType.values()) for (const [n, e] of entries) if (e.tuner === tuner) byPreset.set(n, e);
}

for (const t of TUNER_LIST) registerTuner(t);

/** Every registered tuner, in table order. */
export function tuners(): Tuner[] {
  return [...byType.values()];
}

/** The tuner of a peft_type, or undefined. */
export function tunerOf(peftType: string): Tuner | undefined {
  return byType.get(peftType);
}

/** The registered peft_types. */
export function peftTypes(): string[] {
  return [...byType.keys()];
}

/** Every `--method` name, in table order (full fine-tuning last). */
export function methodNames(): string[] {
  return [...byPreset.keys()];
}

/** A `--method` name's preset and tuner, or undefined. */
export function methodPreset(name: string): { tuner: Tuner; preset: MethodPreset } | undefined {
  return byPreset.get(name);
}
