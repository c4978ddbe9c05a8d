// A byte-level BPE trainer (GPT-2's scheme): text is cut with GPT-2's pre-tokenizer regex, each
// piece's UTF-8 bytes are mapped to printable characters with GPT-2's byte->unicode table, and the
// most frequent adjacent pair is merged greedily until the vocabulary is full. Writes tokenizer.json
// in the Hugging Face tokenizers format (ByteLevel pre-tokenizer and decoder, BPE model).

/** GPT-2's pre-tokenizer pattern, as the tokenizers library's ByteLevel(use_regex=True) applies it. */
export const GPT2_PATTERN = /'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+/gu;

/** GPT-2's bytes_to_unicode: printable bytes map to themselves, the rest to U+0100 onwards. */
export function bytesToUnicode(): string[] {
  const bs: number[] = [];
  for (let b = 0x21; b <= 0x7e; b++) bs.push(b);
  for (let b = 0xa1; b <= 0xac; b++) bs.push(b);
  for (let b = 0xae; b <= 0xff; b++) bs.push(b);
  const table = new Array<string>(256);
  for (const b of bs) table[b] = String.fromCharCode(b);
  let extra = 0;
  for (let b = 0; b < 256; b++) {
    if (table[b] === undefined) table[b] = String.fromCharCode(256 + extra++);
  }
  return table;
}

export interface BpeTrainOptions {
  /** total vocabulary: special tokens + 256 byte symbols + merges */
  vocabSize: number;
  /** tokens placed first (ids 0, 1, ...), e.g. pad, bos, eos */
  specialTokens: readonly string[];
  /** a pair must occur at least this often to be merged (default 2) */
  minFrequency?: number;
  /**
   * Never merge a symbol holding a digit, so numbers stay one token per digit (as Llama's
   * tokenizer splits digits): the model then sees the digit structure arithmetic needs.
   */
  splitDigits?: boolean;
}

export interface BpeModel {
  /** token -> id, special tokens included */
  vocab: Map<string, number>;
  /** merges in rank order */
  merges: [string, string][];
  specialTokens: string[];
}

export class BpeTrainError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'BpeTrainError';
  }
}

/** Counts pre-tokenized pieces (in byte-level characters) over every text. */
export function countWords(texts: Iterable<string>): Map<string, number> {
  const table = bytesToUnicode();
  const enc = new TextEncoder();
  const counts = new Map<string, number>();
  const memo = new Map<string, string>();
  for (const text of texts) {
    for (const piece of text.match(GPT2_PATTERN) ?? []) {
      let mapped = memo.get(piece);
      if (mapped === undefined) {
        mapped = Array.from(enc.encode(piece), (b) => table[b]!).join('');
        memo.set(piece, mapped);
      }
      counts.set(mapped, (counts.get(mapped) ?? 0) + 1);
    }
  }
  return counts;
}

const DIGIT = /[0-9]/;

/** Greedy BPE merges over word counts: each round merges the most frequent pair everywhere. */
export function trainBpe(wordCounts: Map<string, number>, opts: BpeTrainOptions): BpeModel {
  const minFrequency = opts.minFrequency ?? 2;
  const base = opts.specialTokens.length + 256;
  if (!Number.isInteger(opts.vocabSize) || opts.vocabSize < base) {
    throw new BpeTrainError(
      `vocabSize must be an integer of at least ${base} (the special tokens and 256 byte symbols), got ${opts.vocabSize}`,
    );
  }
  const vocab = new Map<string, number>();
  for (const t of opts.specialTokens) {
    if (vocab.has(t)) throw new BpeTrainError(`special token ${JSON.stringify(t)} is listed twice`);
    vocab.set(t, vocab.size);
  }
  for (const ch of bytesToUnicode()) vocab.set(ch, vocab.size);

  const words = [...wordCounts].map(([w, n]) => ({ symbols: Array.from(w), count: n }));
  const merges: [string, string][] = [];
  const allowed = (a: string, b: string) => !(opts.splitDigits && (DIGIT.test(a) || DIGIT.test(b)));
  while (vocab.size < opts.vocabSize) {
    // The vocabulary here is small (thousands of distinct words), so a full recount per merge is
    // cheap and keeps the trainer obviously correct.
    const pairs = new Map<string, number>();
    for (const { symbols, count } of words) {
      for (let i = 0; i + 1 < symbols.length; i++) {
        if (!allowed(symbols[i]!, symbols[i + 1]!)) continue;
        const key = `${symbols[i]}\u0000${symbols[i + 1]}`;
        pairs.set(key, (pairs.get(key) ?? 0) + count);
      }
    }
    let best: string | undefined;
    let bestCount = 0;
    for (const [key, n] of pairs) {
      // Ties go to the lexicographically smaller pair, so the result does not depend on Map order.
      if (n > bestCount || (n === bestCount && best !== undefined && key < best)) {
        best = key;
        bestCount = n;
      }
    }
    if (best === undefined || bestCount < minFrequency) break;
    const [a, b] = best.split('\u0000') as [string, string];
    const merged = a + b;
    merges.push([a, b]);
    if (!vocab.has(merged)) vocab.set(merged, vocab.size);
    for (const w of words) {
      const s = w.symbols;
      for (let i = 0; i + 1 < s.length; i++) {
        if (s[i] === a && s[i + 1] === b) s.splice(i, 2, merged);
      }
    }
  }
  return { vocab, merges, specialTokens: [...opts.specialTokens] };
}

/**
 * tokenizer.json for the model: ByteLevel pre-tokenizer (GPT-2 regex, no prefix space) and
 * decoder, the BPE model, the special tokens as added tokens, and a post-processor that puts
 * `bos` before every sequence (as Llama's tokenizer does).
 */
export function tokenizerJson(model: BpeModel, bos: string): Record<string, unknown> {
  const bosId = model.vocab.get(bos);
  if (bosId === undefined) throw new BpeTrainError(`the BOS token ${JSON.stringify(bos)} is not one of the special tokens`);
  const byteLevel = { type: 'ByteLevel', add_prefix_space: false, trim_offsets: true, use_regex: true };
  return {
    version: '1.0',
    truncation: null,
    padding: null,
    added_tokens: model.specialTokens.map((t) => ({
      id: model.vocab.get(t)!,
      content: t,
      single_word: false,
      lstrip: false,
      rstrip: false,
      normalized: false,
      special: true,
    })),
    normalizer: null,
    pre_tokenizer: byteLevel,
    post_processor: {
      type: 'TemplateProcessing',
      single: [{ SpecialToken: { id: bos, type_id: 0 } }, { Sequence: { id: 'A', type_id: 0 } }],
      pair: [
        { SpecialToken: { id: bos, type_id: 0 } },
        { Sequence: { id: 'A', type_id: 0 } },
        { SpecialToken: { id: bos, type_id: 1 } },
        { Sequence: { id: 'B', type_id: 1 } },
      ],
      special_tokens: { [bos]: { id: bos, ids: [bosId], tokens: [bos] } },
    },
    decoder: byteLevel,
    model: {
      type: 'BPE',
      dropout: null,
      unk_token: null,
      continuing_subword_prefix: null,
      end_of_word_suffix: null,
      fuse_unk: false,
      byte_fallback: false,
      ignore_merges: false,
      vocab: Object.fromEntries(model.vocab),
      merges: model.merges.map(([a, b]) => `${a} ${b}`),
    },
  };
}
