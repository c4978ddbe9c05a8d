// PromptTuningConfig: peft's fields and defaults (prompt_tuning_init RANDOM | TEXT, plus newer
// peft's SAMPLE_VOCAB) and this library's additive soft prompt, which is an option of the same
// family: prompt_tuning_combination "ADD" (written only then, so standard adapters stay byte-exact).

import type { PretrainedModel } from '../../models/types.js';
import { PeftConfigError } from '../types.js';
import { type FieldSpec, type PromptLearningConfig, promptConfigCodec, resolveCommon, validateCommon } from '../prompt_learning/config.js';
import type { PyJson } from '../../io/pyjson.js';

export type PromptTuningInit = 'RANDOM' | 'TEXT' | 'SAMPLE_VOCAB';
/** 'CONCAT': P learned virtual tokens in front of the input (peft); 'ADD': one learned vector added to every input embedding. */
export type PromptCombination = 'CONCAT' | 'ADD';

export interface PromptTuningConfig extends PromptLearningConfig {
  peftType: 'PROMPT_TUNING';
  promptTuningInit: PromptTuningInit;
  promptTuningInitText: string | null;
  tokenizerNameOrPath: string | null;
  tokenizerKwargs: Record<string, unknown> | null;
  promptCombination: PromptCombination;
}

/** What a user gives: num_virtual_tokens and any field to override; the rest comes from peft's defaults and the model. */
export type PromptTuningConfigInput = Partial<Omit<PromptTuningConfig, 'peftType'>>;

/** adapter_config.json key of the additive option; peft ignores keys it does not know. */
const COMBINATION_KEY = 'prompt_tuning_combination';

const PROMPT_TUNING_FIELDS: readonly FieldSpec<PromptTuningConfig>[] = [
  { key: 'prompt_tuning_init', prop: 'promptTuningInit', kind: 'string', values: ['RANDOM', 'TEXT', 'SAMPLE_VOCAB'] },
  { key: 'prompt_tuning_init_text', prop: 'promptTuningInitText', kind: 'string', nullable: true },
  { key: 'tokenizer_name_or_path', prop: 'tokenizerNameOrPath', kind: 'string', nullable: true },
  { key: 'tokenizer_kwargs', prop: 'tokenizerKwargs', kind: 'dict', nullable: true },
];
const COMBINATION_FIELD: FieldSpec<PromptTuningConfig> = {
  key: COMBINATION_KEY,
  prop: 'promptCombination',
  kind: 'string',
  values: ['CONCAT', 'ADD'],
};
/** peft's keys (what is written for CONCAT) */
const STANDARD = promptConfigCodec(PROMPT_TUNING_FIELDS);
/** what is read: peft's keys and the additive option's */
const READ = promptConfigCodec([...PROMPT_TUNING_FIELDS, COMBINATION_FIELD]);

/** The full config for a base model: peft's defaults, then the model's dimensions, then checks. */
export function resolvePromptTuningConfig(base: PretrainedModel, input: PromptTuningConfigInput): PromptTuningConfig {
  const combination = input.promptCombination ?? 'CONCAT';
  const common = resolveCommon(
    base,
    'PROMPT_TUNING',
    { ...input, numVirtualTokens: input.numVirtualTokens ?? (combination === 'ADD' ? 1 : undefined) },
    'prompt tuning',
  );
  const cfg: PromptTuningConfig = {
    ...common,
    peftType: 'PROMPT_TUNING',
    promptTuningInit: input.promptTuningInit ?? 'RANDOM',
    promptTuningInitText: input.promptTuningInitText ?? null,
    tokenizerNameOrPath: input.tokenizerNameOrPath ?? null,
    tokenizerKwargs: input.tokenizerKwargs ?? null,
    promptCombination: combination,
  };
  validatePromptTuningConfig(base, cfg);
  return cfg;
}

function validatePromptTuningConfig(base: PretrainedModel, cfg: PromptTuningConfig): void {
  validateCommon(base, cfg, 'prompt tuning');
  if (cfg.tokenDim !== base.hiddenSize) {
    throw new PeftConfigError(
      `prompt tuning: token_dim is ${cfg.tokenDim} but the model's embeddings are ${base.hiddenSize} wide; leave token_dim out to use the model's`,
    );
  }
  if (cfg.promptTuningInit === 'TEXT') {
    if (!cfg.tokenizerNameOrPath)
      throw new PeftConfigError(
        "prompt tuning: prompt_tuning_init='TEXT' needs tokenizer_name_or_path (the folder holding tokenizer.json)",
      );
    if (cfg.promptTuningInitText == null)
      throw new PeftConfigError("prompt tuning: prompt_tuning_init='TEXT' needs prompt_tuning_init_text");
  }
  if (cfg.tokenizerKwargs && cfg.promptTuningInit !== 'TEXT') {
    throw new PeftConfigError("prompt tuning: tokenizer_kwargs is only valid with prompt_tuning_init='TEXT'");
  }
  if (cfg.promptCombination === 'ADD') {
    if (cfg.numVirtualTokens !== 1) {
      throw new PeftConfigError(
        `prompt tuning: the additive soft prompt is one vector added to every token, so num_virtual_tokens must be 1 (got ${cfg.numVirtualTokens}); leave it out`,
      );
    }
    if (cfg.promptTuningInit !== 'RANDOM') {
      throw new PeftConfigError(
        `prompt tuning: the additive soft prompt starts at zero; prompt_tuning_init must be RANDOM (the default), got ${cfg.promptTuningInit}`,
      );
    }
  }
}

/** adapter_config.json keys and values, exactly peft's set for the standard (CONCAT) case. */
export function promptTuningConfigToDisk(cfg: PromptTuningConfig): Record<string, PyJson> {
  const out = STANDARD.toDisk(cfg);
  if (cfg.promptCombination === 'ADD') out[COMBINATION_KEY] = 'ADD';
  return out;
}

/** Parses adapter_config.json of a PROMPT_TUNING adapter into a config input. */
export const promptTuningConfigFromDisk = READ.fromDisk;
