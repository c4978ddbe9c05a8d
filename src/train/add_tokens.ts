// New tokens for fine-tuning (`peft train --add-tokens`): the tokenizer files with the tokens added
// as transformers' tokenizer.add_tokens writes them, and the model's token embeddings (and an
// untied output head) grown to the new vocabulary, new rows mean-initialised as transformers'
// resize_token_embeddings does. The tokens' rows are then trained with peft's trainable tokens.

import { copyFile, existsSync, host, join, mkdtemp, readdir, readFile, rename, rm, writeFile } from '../storage/index.js';
import { PeftError } from '../errors.js';
import { writeFileAtomic } from '../io/atomic.js';
import { Tokenizer } from '../io/tokenizer.js';
import { resizeTokenEmbeddings } from '../models/load.js';
import type { PretrainedModel } from '../models/types.js';

class AddTokensError extends PeftError {
  constructor(message: string) {
    super(message);
    this.name = 'AddTokensError';
  }
}

/** The tokens of `--add-tokens "<a>,<b>"`: comma-separated, each non-empty and given once. */
export function parseAddTokens(text: string): string[] {
  const tokens = text.split(',').map((t) => t.trim());
  if (tokens.some((t) => t === ''))
    throw new AddTokensError(
      `--add-tokens ${JSON.stringify(text)} has an empty token; give tokens separated by single commas, e.g. "<tool_call>,</tool_call>"`,
    );
  const dup = tokens.find((t, i) => tokens.indexOf(t) !== i);
  if (dup !== undefined) throw new AddTokensError(`--add-tokens lists ${JSON.stringify(dup)} twice; give each token once`);
  return tokens;
}

type Json = Record<string, unknown>;

/** Files copied unchanged next to the rewritten tokenizer.json / tokenizer_config.json. */
const OTHER_TOKENIZER_FILES = ['special_tokens_map.json', 'vocab.json', 'merges.txt', 'tokenizer.model', 'chat_template.jinja'];

export interface AddedTokens {
  /** the tokenizer with the tokens, loaded from `dir` */
  tokenizer: Tokenizer;
  /** ids of the new tokens, in --add-tokens order */
  ids: number[];
  /** transformers' len(tokenizer) after adding them */
  length: number;
  /** the tokenizer files, by name, to save with the adapter (saveTokenizerFiles) */
  files: Map<string, Uint8Array>;
}

/**
 * The tokenizer of `srcDir` with `tokens` added, built in a temporary folder and held in memory:
 * tokenizer.json's added_tokens and tokenizer_config.json's added_tokens_decoder get one entry per
 * token with the next free id, as `tokenizer.add_tokens([AddedToken(t, normalized=False)])` saves
 * them (never split, matched on the raw text, kept when decoding with skip_special_tokens).
 * A token the vocabulary already has is refused: its row is not new, so there is nothing to add
 * (train an existing token's row with trainable_token_indices in --config's peft section instead).
 */
export async function addTokensToTokenizer(srcDir: string, tokens: readonly string[]): Promise<AddedTokens> {
  const base = await Tokenizer.fromDir(srcDir);
  for (const t of tokens) {
    const ids = base.encode(t, { addSpecialTokens: false });
    if (ids.length === 1 && base.decode(ids) === t) {
      throw new AddTokensError(
        `--add-tokens: ${JSON.stringify(t)} is already token ${ids[0]} of the tokenizer in ${srcDir}; remove it from --add-tokens (to train its row, list it in "trainable_token_indices" of --config's peft section)`,
      );
    }
  }
  const dir = await mkdtemp(join(host.tmpdir(), 'peft-add-tokens-'));
  try {
    return await writeTokenizer(srcDir, tokens, dir);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

async function writeTokenizer(srcDir: string, tokens: readonly string[], dir: string): Promise<AddedTokens> {
  const tokenizerFile = join(srcDir, 'tokenizer.json');
  const tj = JSON.parse(await readFile(tokenizerFile, 'utf8')) as Json;
  const added = Array.isArray(tj.added_tokens) ? (tj.added_tokens as Json[]) : [];
  const vocab = (tj.model as Json | undefined)?.vocab;
  const vocabIds: number[] = Array.isArray(vocab)
    ? [vocab.length - 1]
    : vocab && typeof vocab === 'object'
      ? Object.values(vocab as Record<string, number>)
      : [];
  let next = Math.max(-1, ...vocabIds, ...added.map((a) => a.id as number)) + 1;
  const ids: number[] = [];
  const entries = tokens.map((content) => {
    ids.push(next);
    return { id: next++, content, single_word: false, lstrip: false, rstrip: false, normalized: false, special: false };
  });
  tj.added_tokens = [...added, ...entries];
  await writeFileAtomic(join(dir, 'tokenizer.json'), JSON.stringify(tj, null, 2));

  const configFile = join(srcDir, 'tokenizer_config.json');
  const config = existsSync(configFile) ? (JSON.parse(await readFile(configFile, 'utf8')) as Json) : {};
  const decoder = { ...((config.added_tokens_decoder as Json | undefined) ?? {}) };
  for (const e of entries)
    decoder[String(e.id)] = { content: e.content, lstrip: false, normalized: false, rstrip: false, single_word: false, special: false };
  config.added_tokens_decoder = decoder;
  await writeFileAtomic(join(dir, 'tokenizer_config.json'), `${JSON.stringify(config, null, 2)}\n`);
  for (const name of OTHER_TOKENIZER_FILES) if (existsSync(join(srcDir, name))) await copyFile(join(srcDir, name), join(dir, name));

  const tokenizer = await Tokenizer.fromDir(dir);
  for (const [i, t] of tokens.entries()) {
    const got = tokenizer.encode(`a${t}b`, { addSpecialTokens: false });
    if (!got.includes(ids[i]!))
      throw new AddTokensError(
        `--add-tokens: the tokenizer in ${srcDir} does not keep ${JSON.stringify(t)} as one token once added (its normalizer changes it); choose another spelling`,
      );
  }
  const files = new Map<string, Uint8Array>();
  for (const name of await readdir(dir)) files.set(name, await readFile(join(dir, name)));
  return { tokenizer, ids, length: tokenizer.vocabSize, files };
}

/** Writes the files of addTokensToTokenizer into `dir`, each atomically. */
export async function saveTokenizerFiles(files: ReadonlyMap<string, Uint8Array>, dir: string): Promise<void> {
  for (const [name, bytes] of files) {
    const tmp = join(dir, `.${name}.${process.pid}.tmp`);
    await writeFile(tmp, bytes);
    await rename(tmp, join(dir, name));
  }
}

/**
 * The model grown to hold token ids below `length` (transformers' resize_token_embeddings(length));
 * unchanged when its embedding matrix already has the rows (a padded vocabulary).
 */
export function growModelFor(model: PretrainedModel, length: number): PretrainedModel {
  return length > model.vocabSize ? resizeTokenEmbeddings(model, length) : model;
}

/** transformers' len(tokenizer) of the tokenizer saved with an adapter, or undefined when it has none. */
async function adapterTokenizerLength(adapterDir: string): Promise<number | undefined> {
  if (!existsSync(join(adapterDir, 'tokenizer.json'))) return undefined;
  return (await Tokenizer.fromDir(adapterDir)).vocabSize;
}

/**
 * The base grown for an adapter trained with added tokens (`peft train --add-tokens`): its folder
 * holds the resized tokenizer, whose length is the vocabulary the adapter was trained on (as in
 * Python: base.resize_token_embeddings(len(AutoTokenizer.from_pretrained(adapter_dir)))). Other
 * adapters get the base unchanged. Returns whether the tokenizer files should come from the adapter.
 */
export async function baseForAdapter(base: PretrainedModel, adapterDir: string): Promise<{ model: PretrainedModel; addedTokens: boolean }> {
  const length = await adapterTokenizerLength(adapterDir);
  if (length === undefined || length <= base.vocabSize) return { model: base, addedTokens: false };
  return { model: resizeTokenEmbeddings(base, length), addedTokens: true };
}
