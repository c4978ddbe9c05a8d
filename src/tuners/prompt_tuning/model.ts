// Prompt tuning as an AdaptedModel: P learned virtual-token embeddings concatenated in front of
// the input embeddings (peft's PromptEmbedding), or, with promptCombination 'ADD', one learned
// vector added to every input embedding (the seed document's additive soft prompt).

import type { Value } from '../../graph/ir.js';
import * as o from '../../graph/ops.js';
import { Tokenizer } from '../../io/tokenizer.js';
import { type ForwardArgs, type ForwardResult, ModelError, type PretrainedModel } from '../../models/types.js';
import type { BuildContext } from '../../nn/context.js';
import { PeftConfigError, type TrainableTensor } from '../types.js';
import { normals } from '../../nn/random.js';
import { promptRandom } from '../prompt_learning/init.js';
import { PromptLearningModel, type PromptLearningOptions } from '../prompt_learning/model.js';
import type { PyJson } from '../../io/pyjson.js';
import { type PromptTuningConfig, type PromptTuningConfigInput, promptTuningConfigToDisk, resolvePromptTuningConfig } from './config.js';
import { savedPromptTuningTensors } from './save.js';

export class PromptTuningModel extends PromptLearningModel<PromptTuningConfig> {
  readonly peftType = 'PROMPT_TUNING' as const;

  private constructor(base: PretrainedModel, config: PromptTuningConfig, prompt: TrainableTensor, adapterName?: string) {
    super(base, config, adapterName);
    this.tensors.set(this.embeddingName, prompt);
  }

  /** In-memory name of the prompt (peft: prompt_encoder.<adapter>.embedding.weight). */
  get embeddingName(): string {
    return this.encoderName('embedding.weight');
  }

  /** A new adapter (peft's get_peft_model): initial prompt by prompt_tuning_init. */
  static async create(base: PretrainedModel, input: PromptTuningConfigInput, opts: PromptLearningOptions = {}): Promise<PromptTuningModel> {
    const config = resolvePromptTuningConfig(base, input);
    const prompt = await initialPrompt(base, config, opts.seed ?? 0);
    return new PromptTuningModel(base, config, prompt, opts.adapterName);
  }

  /** An adapter from saved values (the loader's entry point). */
  static fromState(
    base: PretrainedModel,
    config: PromptTuningConfig,
    prompt: TrainableTensor,
    opts: PromptLearningOptions = {},
  ): PromptTuningModel {
    return new PromptTuningModel(base, config, prompt, opts.adapterName);
  }

  override get numVirtualTokens(): number {
    return this.config.promptCombination === 'ADD' ? 0 : this.config.numVirtualTokens;
  }

  promptGraph(ctx: BuildContext): Value {
    return this.param(ctx, this.embeddingName);
  }

  /** CONCAT: the prompt in front of the input (see forwardWithVirtualTokens); ADD: p + x_i at every position, prefill and decode alike. */
  forward(ctx: BuildContext, args: ForwardArgs): ForwardResult {
    if (this.config.promptCombination === 'CONCAT') return this.forwardWithVirtualTokens(ctx, args, () => this.promptGraph(ctx));
    this.installClassifier(ctx);
    const words = args.inputsEmbeds ?? this.base.embedTokens(ctx, args.inputIds ?? fail('inputIds or inputsEmbeds is required'));
    return this.base.forward(ctx, { ...args, inputIds: undefined, inputsEmbeds: o.add(words, this.promptGraph(ctx)) });
  }

  /** Causal LM: one -100 label per virtual token in front of the labels, as peft does (the additive prompt inserts none). */
  override get prependedLabels(): number {
    return this.config.taskType === 'CAUSAL_LM' ? this.numVirtualTokens : 0;
  }

  configToDisk(): Record<string, PyJson> {
    return promptTuningConfigToDisk(this.config);
  }

  protected savedPromptTensors(prompt: TrainableTensor): Map<string, TrainableTensor> {
    return savedPromptTuningTensors(this.config, prompt);
  }
}

/** peft's PromptEmbedding init: N(0, 1) rows, the init text's token embeddings, or sampled vocabulary rows. */
async function initialPrompt(base: PretrainedModel, cfg: PromptTuningConfig, seed: number): Promise<TrainableTensor> {
  const P = cfg.numVirtualTokens;
  const D = cfg.tokenDim;
  if (cfg.promptCombination === 'ADD') return { shape: [1, D], data: new Float32Array(D) };
  const rng = promptRandom(seed);
  if (cfg.promptTuningInit === 'RANDOM') return { shape: [P, D], data: normals(rng, P * D) };
  let ids: number[];
  if (cfg.promptTuningInit === 'TEXT') {
    if (cfg.tokenizerKwargs && Object.keys(cfg.tokenizerKwargs).length) {
      throw new PeftConfigError(
        `prompt tuning: tokenizer_kwargs ${JSON.stringify(cfg.tokenizerKwargs)} cannot be applied: the tokenizer is read as saved in ${cfg.tokenizerNameOrPath}; remove tokenizer_kwargs`,
      );
    }
    const tok = await Tokenizer.fromDir(cfg.tokenizerNameOrPath!);
    ids = tok.encode(cfg.promptTuningInitText!);
    if (ids.length === 0) throw new PeftConfigError('prompt tuning: prompt_tuning_init_text tokenizes to nothing; give a non-empty text');
    // peft: truncate to P, or repeat ceil(P / n) times and truncate.
    ids = Array.from({ length: Math.ceil(P / ids.length) }, () => ids)
      .flat()
      .slice(0, P);
  } else {
    ids = Array.from({ length: P }, () => rng.int(base.vocabSize));
  }
  const table = base.weights.get(`${base.embeddingName}.weight`);
  const out = new Float32Array(P * D);
  ids.forEach((id, i) => {
    if (id < 0 || id >= table.shape[0]!)
      throw new PeftConfigError(
        `prompt tuning: init token id ${id} is outside the model's ${table.shape[0]} embeddings; the tokenizer does not belong to this model`,
      );
    out.set(table.data.subarray(id * D, (id + 1) * D), i * D);
  });
  return { shape: [P, D], data: out };
}

function fail(msg: string): never {
  throw new ModelError(msg);
}
