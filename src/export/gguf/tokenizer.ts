// The tokenizer as GGUF metadata, for byte-level BPE tokenizers (tokenizer.json model "BPE" with a
// ByteLevel pre-tokenizer): llama.cpp's "gpt2" tokenizer model with the vocabulary, merges, token
// types, special token ids and the pre-tokenizer llama.cpp must split with, plus the chat template.

import { existsSync, join, readFile } from '../../storage/index.js';
import { Tokenizer } from '../../io/tokenizer.js';
import { ExportError } from '../errors.js';
import { type MetaValue, bool, i32s, str, strings, u32 } from './writer.js';

/** llama.cpp token types */
const NORMAL = 1;
const CONTROL = 3;
const USER_DEFINED = 4;
const UNUSED = 5;

/** The regular expressions of the pre-tokenizers llama.cpp knows, by its name for them. */
const PRE_TOKENIZERS: [string, RegExp][] = [
  // Llama 3 (also SmolLM3): contractions case-insensitive, letters with one leading non-letter, 1-3 digits
  ['llama-bpe', /^\(\?i:'s\|'t\|'re\|'ve\|'m\|'ll\|'d\)\|\[\^\\r\\n\\p\{L\}\\p\{N\}\]\?\\p\{L\}\+\|\\p\{N\}\{1,3\}/],
  // Qwen2/Qwen3: like Llama 3 with single digits
  ['qwen2', /^\(\?i:'s\|'t\|'re\|'ve\|'m\|'ll\|'d\)\|\[\^\\r\\n\\p\{L\}\\p\{N\}\]\?\\p\{L\}\+\|\\p\{N\}\|/],
];

interface TokenizerJson {
  model?: { type?: string; vocab?: Record<string, number>; merges?: (string | [string, string])[] };
  pre_tokenizer?: Record<string, unknown> | null;
  added_tokens?: { id: number; content: string; special: boolean }[];
}

function preTokenizerName(pre: Record<string, unknown> | null | undefined, file: string): string {
  if (pre && pre.type === 'ByteLevel' && pre.use_regex !== false) return 'gpt-2';
  if (pre && pre.type === 'Sequence' && Array.isArray(pre.pretokenizers)) {
    const parts = pre.pretokenizers as Record<string, unknown>[];
    const split = parts.find((p) => p.type === 'Split');
    const regex = (split?.pattern as { Regex?: string } | undefined)?.Regex;
    if (regex) for (const [name, re] of PRE_TOKENIZERS) if (re.test(regex)) return name;
  }
  throw new ExportError(
    `${file}: its pre-tokenizer ${JSON.stringify(pre)?.slice(0, 120)} is not one llama.cpp knows by name (gpt-2, llama-bpe, qwen2); export with --format transformers.js instead`,
  );
}

/** Tokenizer metadata for the GGUF of the model in `dir` (vocabulary padded with unused tokens to `vocabSize` rows). */
export async function tokenizerMetadata(dir: string, vocabSize: number): Promise<Map<string, MetaValue>> {
  const file = join(dir, 'tokenizer.json');
  if (!existsSync(file)) throw new ExportError(`${dir} has no tokenizer.json; GGUF holds the tokenizer, so the model folder needs one`);
  const tj = JSON.parse(await readFile(file, 'utf8')) as TokenizerJson;
  if (tj.model?.type !== 'BPE' || !tj.model.vocab || !tj.model.merges) {
    throw new ExportError(
      `${file}: a ${tj.model?.type ?? 'unknown'} tokenizer; the GGUF export writes byte-level BPE tokenizers (GPT-2, Llama 3, Qwen style)`,
    );
  }
  const pre = preTokenizerName(tj.pre_tokenizer, file);
  const tokens: (string | undefined)[] = [];
  const types: number[] = [];
  for (const [t, id] of Object.entries(tj.model.vocab)) {
    tokens[id] = t;
    types[id] = NORMAL;
  }
  for (const a of tj.added_tokens ?? []) {
    tokens[a.id] = a.content;
    types[a.id] = a.special ? CONTROL : USER_DEFINED;
  }
  if (tokens.length > vocabSize)
    throw new ExportError(`${file} has ${tokens.length} tokens but the model's embedding has ${vocabSize} rows`);
  for (let i = 0; i < vocabSize; i++) {
    if (tokens[i] === undefined) {
      tokens[i] = `[PAD${i}]`;
      types[i] = UNUSED;
    }
  }
  const merges = tj.model.merges.map((m) => (Array.isArray(m) ? `${m[0]} ${m[1]}` : m));
  const tok = await Tokenizer.fromDir(dir);
  const m = new Map<string, MetaValue>();
  m.set('tokenizer.ggml.model', str('gpt2'));
  m.set('tokenizer.ggml.pre', str(pre));
  m.set('tokenizer.ggml.tokens', strings(tokens as string[]));
  m.set('tokenizer.ggml.token_type', i32s(types));
  m.set('tokenizer.ggml.merges', strings(merges));
  if (tok.bosTokenId !== undefined) m.set('tokenizer.ggml.bos_token_id', u32(tok.bosTokenId));
  if (tok.eosTokenId !== undefined) m.set('tokenizer.ggml.eos_token_id', u32(tok.eosTokenId));
  if (tok.unkTokenId !== undefined) m.set('tokenizer.ggml.unknown_token_id', u32(tok.unkTokenId));
  if (tok.padTokenId !== undefined) m.set('tokenizer.ggml.padding_token_id', u32(tok.padTokenId));
  const { prefix, suffix } = tok.specialTokenAffixes;
  m.set('tokenizer.ggml.add_bos_token', bool(tok.bosTokenId !== undefined && prefix.includes(tok.bosTokenId)));
  m.set('tokenizer.ggml.add_eos_token', bool(tok.eosTokenId !== undefined && suffix.includes(tok.eosTokenId)));
  if (typeof tok.chatTemplate === 'string') m.set('tokenizer.chat_template', str(tok.chatTemplate));
  else if (tok.chatTemplate && typeof tok.chatTemplate.default === 'string')
    m.set('tokenizer.chat_template', str(tok.chatTemplate.default));
  return m;
}
