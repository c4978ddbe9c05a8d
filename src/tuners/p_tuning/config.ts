// PromptEncoderConfig (peft P_TUNING): the prompt-learning fields plus the prompt encoder's
// encoder_reparameterization_type MLP | LSTM, encoder_hidden_size (default token_dim),
// encoder_num_layers (2; the LSTM's depth, ignored by the MLP as in peft) and encoder_dropout.

import type { PretrainedModel } from '../../models/types.js';
import { PeftConfigError } from '../types.js';
import { type PromptLearningConfig, promptConfigCodec, resolveCommon, validateCommon } from '../prompt_learning/config.js';

export type EncoderReparameterizationType = 'MLP' | 'LSTM';

export interface PromptEncoderConfig extends PromptLearningConfig {
  peftType: 'P_TUNING';
  encoderReparameterizationType: EncoderReparameterizationType;
  encoderHiddenSize: number;
  encoderNumLayers: number;
  /** dropout between LSTM layers while training (ctx.dropout; the MLP has none, as in peft) */
  encoderDropout: number;
}

export type PromptEncoderConfigInput = Partial<Omit<PromptEncoderConfig, 'peftType'>>;

const CODEC = promptConfigCodec<PromptEncoderConfig>([
  { key: 'encoder_dropout', prop: 'encoderDropout', kind: 'float' },
  { key: 'encoder_hidden_size', prop: 'encoderHiddenSize', kind: 'int', nullable: true },
  { key: 'encoder_num_layers', prop: 'encoderNumLayers', kind: 'int' },
  { key: 'encoder_reparameterization_type', prop: 'encoderReparameterizationType', kind: 'string', values: ['MLP', 'LSTM'] },
]);

/** The config as adapter_config.json holds it. */
export const promptEncoderConfigToDisk = CODEC.toDisk;
/** An adapter_config.json object of a P_TUNING adapter as a config input. */
export const promptEncoderConfigFromDisk = CODEC.fromDisk;

export function resolvePromptEncoderConfig(base: PretrainedModel, input: PromptEncoderConfigInput): PromptEncoderConfig {
  const common = resolveCommon(base, 'P_TUNING', input, 'P-tuning');
  const cfg: PromptEncoderConfig = {
    ...common,
    peftType: 'P_TUNING',
    encoderReparameterizationType: input.encoderReparameterizationType ?? 'MLP',
    encoderHiddenSize: input.encoderHiddenSize ?? common.tokenDim,
    encoderNumLayers: input.encoderNumLayers ?? 2,
    encoderDropout: input.encoderDropout ?? 0,
  };
  validatePromptEncoderConfig(base, cfg);
  return cfg;
}

function validatePromptEncoderConfig(base: PretrainedModel, cfg: PromptEncoderConfig): void {
  validateCommon(base, cfg, 'P-tuning');
  if (cfg.tokenDim !== base.hiddenSize) {
    throw new PeftConfigError(
      `P-tuning: token_dim is ${cfg.tokenDim} but the model's embeddings are ${base.hiddenSize} wide; leave token_dim out to use the model's`,
    );
  }
  if (!['MLP', 'LSTM'].includes(cfg.encoderReparameterizationType)) {
    throw new PeftConfigError(
      `P-tuning: encoder_reparameterization_type must be MLP or LSTM, got ${JSON.stringify(cfg.encoderReparameterizationType)}`,
    );
  }
  if (!Number.isInteger(cfg.encoderHiddenSize) || cfg.encoderHiddenSize < 1) {
    throw new PeftConfigError(`P-tuning: encoder_hidden_size must be a positive integer, got ${cfg.encoderHiddenSize}`);
  }
  if (!Number.isInteger(cfg.encoderNumLayers) || cfg.encoderNumLayers < 1) {
    throw new PeftConfigError(`P-tuning: encoder_num_layers must be a positive integer, got ${cfg.encoderNumLayers}`);
  }
  if (!(cfg.encoderDropout >= 0 && cfg.encoderDropout < 1)) {
    throw new PeftConfigError(`P-tuning: encoder_dropout must be in [0, 1), got ${cfg.encoderDropout}`);
  }
}
