// The files of a model folder besides config.json and the weights that travel with a model or an
// adapter: the tokenizer (as transformers' save_pretrained writes it, for every tokenizer kind) and
// generation_config.json. One list, used by every command that copies them (train, merge, quantize).

import { existsSync, join, resolve } from '../storage/index.js';
import { copyFileAtomic } from './atomic.js';

/** Tokenizer files transformers reads (fast and slow tokenizers, SentencePiece models, chat templates). */
export const TOKENIZER_FILES = [
  'tokenizer.json',
  'tokenizer_config.json',
  'special_tokens_map.json',
  'vocab.json',
  'vocab.txt',
  'merges.txt',
  'tokenizer.model',
  'spiece.model',
  'added_tokens.json',
  'chat_template.jinja',
  'chat_template.json',
] as const;

/** Generation defaults a model folder carries next to its tokenizer. */
export const GENERATION_CONFIG_FILE = 'generation_config.json';

/**
 * Copies the tokenizer files (and generation_config.json unless `generationConfig` is false) that
 * `from` has into `to`, each atomically; returns the names copied.
 */
export async function copyTokenizerFiles(from: string, to: string, opts: { generationConfig?: boolean } = {}): Promise<string[]> {
  const names = [...TOKENIZER_FILES, ...(opts.generationConfig === false ? [] : [GENERATION_CONFIG_FILE])];
  const copied: string[] = [];
  if (resolve(from) === resolve(to)) return copied;
  for (const name of names) {
    const src = join(from, name);
    if (!existsSync(src)) continue;
    await copyFileAtomic(src, join(to, name));
    copied.push(name);
  }
  return copied;
}
