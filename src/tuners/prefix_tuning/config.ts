// PrefixTuningConfig: peft's fields and defaults (encoder_hidden_size defaults to token_dim,
// prefix_projection false) and the checks that the prefix fits the model's attention: token_dim
// and num_attention_heads describe the KEY/VALUE heads (peft's GQA rule), one prefix per layer.

import type { PretrainedModel } from '../../models/types.js';
import { PeftConfigError } from '../types.js';
import { type PromptLearningConfig, promptConfigCodec, resolveCommon, validateCommon } from '../prompt_learning/config.js';

export interface PrefixTuningConfig extends PromptLearningConfig {
  peftType: 'PREFIX_TUNING';
  /** hidden width of the reparameterization MLP (prefix_projection) */
  encoderHiddenSize: number;
  /** train the prefix through Embedding -> Linear -> Tanh -> Linear (P-tuning v2 / Li & Liang) */
  prefixProjection: boolean;
}

export type PrefixTuningConfigInput = Partial<Omit<PrefixTuningConfig, 'peftType'>>;

const CODEC = promptConfigCodec<PrefixTuningConfig>([
  { key: 'encoder_hidden_size', prop: 'encoderHiddenSize', kind: 'int', nullable: true },
  { key: 'prefix_projection', prop: 'prefixProjection', kind: 'bool' },
]);

/** The config as adapter_config.json holds it. */
export const prefixTuningConfigToDisk = CODEC.toDisk;
/** An adapter_config.json object of a PREFIX_TUNING adapter as a config input. */
export const prefixTuningConfigFromDisk = CODEC.fromDisk;

export function resolvePrefixTuningConfig(base: PretrainedModel, input: PrefixTuningConfigInput): PrefixTuningConfig {
  const common = resolveCommon(base, 'PREFIX_TUNING', input, 'prefix tuning');
  const cfg: PrefixTuningConfig = {
    ...common,
    peftType: 'PREFIX_TUNING',
    encoderHiddenSize: input.encoderHiddenSize ?? common.tokenDim,
    prefixProjection: input.prefixProjection ?? false,
  };
  validatePrefixTuningConfig(base, cfg);
  return cfg;
}

function validatePrefixTuningConfig(base: PretrainedModel, cfg: PrefixTuningConfig): void {
  validateCommon(base, cfg, 'prefix tuning');
  const kvHeads = base.numKVHeads;
  const want = kvHeads * base.headDim;
  if (cfg.numAttentionHeads !== kvHeads || cfg.tokenDim !== want) {
    throw new PeftConfigError(
      `prefix tuning: the prefix is concatenated with each layer's keys and values, which in the model in ${base.dir} have ` +
        `${kvHeads} heads of ${base.headDim} (token_dim ${want}); the config has num_attention_heads ${cfg.numAttentionHeads} and token_dim ${cfg.tokenDim}. ` +
        "Leave both out to use the model's (peft sets them to the key/value heads for grouped-query attention).",
    );
  }
  if (!Number.isInteger(cfg.encoderHiddenSize) || cfg.encoderHiddenSize < 1) {
    throw new PeftConfigError(`prefix tuning: encoder_hidden_size must be a positive integer, got ${cfg.encoderHiddenSize}`);
  }
}
