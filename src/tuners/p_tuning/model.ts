// P-tuning as an AdaptedModel: virtual-token embeddings passed through peft's PromptEncoder (MLP
// or bidirectional LSTM + MLP head) and concatenated in front of the input embeddings. A loaded
// adapter holds only the encoder's output, which it then uses (and trains) directly.

import type { Value } from '../../graph/ir.js';
import type { ForwardArgs, ForwardResult, PretrainedModel } from '../../models/types.js';
import type { BuildContext } from '../../nn/context.js';
import type { TrainableTensor } from '../types.js';
import { normals } from '../../nn/random.js';
import { promptRandom } from '../prompt_learning/init.js';
import { PromptLearningModel, type PromptLearningOptions } from '../prompt_learning/model.js';
import type { PyJson } from '../../io/pyjson.js';
import {
  type PromptEncoderConfig,
  type PromptEncoderConfigInput,
  promptEncoderConfigToDisk,
  resolvePromptEncoderConfig,
} from './config.js';
import { encode, initialEncoder } from './encoder.js';
import { savedPTuningTensors } from './save.js';

export class PTuningModel extends PromptLearningModel<PromptEncoderConfig> {
  readonly peftType = 'P_TUNING' as const;
  /** true while the encoder exists (a new adapter); a loaded adapter holds the encoder output itself */
  readonly encoded: boolean;

  private constructor(
    base: PretrainedModel,
    config: PromptEncoderConfig,
    tensors: Map<string, TrainableTensor>,
    encoded: boolean,
    adapterName?: string,
  ) {
    super(base, config, adapterName);
    this.encoded = encoded;
    for (const [k, t] of tensors) this.tensors.set(this.encoderName(k), t);
  }

  /** A new adapter (peft's get_peft_model): embeddings ~ N(0, 1), encoder with torch's default init, from `seed`. */
  static create(base: PretrainedModel, input: PromptEncoderConfigInput, opts: PromptLearningOptions = {}): PTuningModel {
    const cfg = resolvePromptEncoderConfig(base, input);
    const rng = promptRandom(opts.seed ?? 0);
    const P = cfg.numVirtualTokens;
    const tensors = new Map<string, TrainableTensor>([
      ['embedding.weight', { shape: [P, cfg.tokenDim], data: normals(rng, P * cfg.tokenDim) }],
    ]);
    for (const [k, t] of initialEncoder(cfg, rng)) tensors.set(k, t);
    return new PTuningModel(base, cfg, tensors, true, opts.adapterName);
  }

  /** An adapter from saved prompt embeddings (the encoder output; the loader's entry point). */
  static fromState(
    base: PretrainedModel,
    config: PromptEncoderConfig,
    prompt: TrainableTensor,
    opts: PromptLearningOptions = {},
  ): PTuningModel {
    return new PTuningModel(base, config, new Map([['embedding.weight', prompt]]), false, opts.adapterName);
  }

  promptGraph(ctx: BuildContext): Value {
    const emb = this.param(ctx, this.encoderName('embedding.weight'));
    if (!this.encoded) return emb;
    return ctx.graph.scope(`prompt_encoder.${this.adapterName}`, () =>
      encode(
        this.config,
        emb,
        (n) => this.param(ctx, this.encoderName(n)),
        (x, l) => ctx.dropout(x, this.config.encoderDropout, `dropout.${this.encoderName(`lstm_head.l${l}`)}`),
      ),
    );
  }

  forward(ctx: BuildContext, args: ForwardArgs): ForwardResult {
    return this.forwardWithVirtualTokens(ctx, args, () => this.promptGraph(ctx));
  }

  /** Causal LM: one -100 label per virtual token in front of the labels, as peft does. */
  override get prependedLabels(): number {
    return this.config.taskType === 'CAUSAL_LM' ? this.numVirtualTokens : 0;
  }

  configToDisk(): Record<string, PyJson> {
    return promptEncoderConfigToDisk(this.config);
  }

  protected savedPromptTensors(prompt: TrainableTensor): Map<string, TrainableTensor> {
    return savedPTuningTensors(prompt);
  }
}
