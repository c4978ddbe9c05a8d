// The one list of architectures. Each entry is the descriptor its src/models/<family>.ts file owns;
// adding an architecture is that file plus one line here (and its fixture test).

import { BERT } from './bert.js';
import { GEMMA3 } from './gemma3.js';
import { GPT2 } from './gpt2.js';
import { LLAMA } from './llama.js';
import { MODERNBERT } from './modernbert.js';
import { PHI3 } from './phi3.js';
import type { ArchitectureDescriptor, ModelBuilder, PretrainedModel } from './types.js';

export const ARCHITECTURES: readonly ArchitectureDescriptor[] = [GPT2, LLAMA, GEMMA3, PHI3, BERT, MODERNBERT];

const BY_MODEL_TYPE = new Map<string, ArchitectureDescriptor>(ARCHITECTURES.flatMap((d) => d.modelTypes.map((t) => [t, d] as const)));

/** The descriptor serving a config.json model_type, if any. */
export function descriptorFor(modelType: string): ArchitectureDescriptor | undefined {
  return BY_MODEL_TYPE.get(modelType);
}

/** The descriptor of a loaded model (by its config's model_type, else its family). */
export function descriptorOf(model: Pick<PretrainedModel, 'config' | 'family'>): ArchitectureDescriptor {
  const d = BY_MODEL_TYPE.get(model.config.modelType) ?? ARCHITECTURES.find((a) => a.family === model.family);
  if (!d) throw new Error(`no architecture descriptor for model_type ${model.config.modelType}`);
  return d;
}

/** Every transformers class name the library builds, with its builder. */
export const MODEL_CLASSES: Readonly<Record<string, ModelBuilder>> = Object.assign({}, ...ARCHITECTURES.map((d) => d.classes));

/** model_type -> the class built when config.json lists no known class. */
export const DEFAULT_CLASS: Readonly<Record<string, string>> = Object.assign({}, ...ARCHITECTURES.map((d) => d.defaultClass));

/** peft's default LoRA target_modules per model_type. */
export const LORA_DEFAULT_TARGETS: Readonly<Record<string, readonly string[]>> = Object.assign(
  {},
  ...ARCHITECTURES.map((d) => d.loraTargets),
);
