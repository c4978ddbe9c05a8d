// Text generation and plain inference: the public surface of the generate layer. `generate` is
// the one-call form; a Generator compiles its sessions once and serves many calls.

import type { Tokenizer } from '../io/tokenizer.js';
import type { RuntimeOptions } from '../runtime/session.js';
import type { GenerateOptions } from './config.js';
import { type Generation, Generator, type Prompt } from './generator.js';
import type { InferenceModel } from './model.js';

export { GenerationError, loadGenerationDefaults, type GenerateOptions, type GenerationDefaults, type TokenEvent } from './config.js';
export {
  Generator,
  type Generation,
  type GenerationResult,
  type GenerationStats,
  type GeneratorOptions,
  type Prompt,
} from './generator.js';
export { ForwardSession, type ForwardBatch, type ForwardOutput, type ForwardSessionOptions } from './forward.js';
export { type InferenceModel } from './model.js';
export { DecoderSessions, type ParamFeeds, type StepInputs, type StepOutput } from './sessions.js';
export { KVCache } from './kvcache.js';
export { argmax, sampleToken, samplingProbabilities, type SamplingParams, type UniformSource } from './sampling.js';

/** Generates continuations of one or several prompts (batched with left padding), then frees the sessions. */
export async function generate(
  model: InferenceModel,
  tokenizer: Tokenizer,
  prompts: Prompt | readonly Prompt[],
  options: GenerateOptions & { runtime?: RuntimeOptions } = {},
): Promise<Generation> {
  const generator = await Generator.create(model, { tokenizer, runtime: options.runtime });
  try {
    return await generator.generate(prompts, options);
  } finally {
    await generator.dispose();
  }
}
