// tokenizer.json is untrusted input (it comes with a model from the Hub). Before tokenizers.js
// builds anything from it, the ids must be plausible (an added token with id 1e9 makes it build a
// billion-entry table), and every regular expression it will run on user text must be one a
// backtracking engine runs in linear time: JavaScript regexes cannot be interrupted, so a
// catastrophic pattern such as "(a+)+$" would hang the process on the first unlucky input.

import { TokenizerLoadError } from './tokenizer.js';

/** Largest token id (and vocabulary) accepted: 64 times the largest published vocabulary (262k); ids may also exceed twice the number of tokens by at most 65536. */
const MAX_TOKEN_ID = (1 << 24) - 1;
/** Longest regular expression accepted in tokenizer.json. */
const MAX_REGEX_CHARS = 10_000;

type Json = Record<string, unknown>;
const isObject = (v: unknown): v is Json => typeof v === 'object' && v !== null && !Array.isArray(v);

/** Throws a TokenizerLoadError naming the first implausible id or unsafe regex in tokenizer.json. */
export function checkTokenizerJson(json: Json, file: string): void {
  const fail = (msg: string): never => {
    throw new TokenizerLoadError(file, `${file}: ${msg}; the file is corrupt or hostile, re-download it.`);
  };
  // tokenizers.js builds tables indexed by id, so loading costs time in the largest id, not in the
  // number of tokens (measured: an added token with id 2^24 - 1 takes 9 s to load on a loaded
  // 2-core machine). Real vocabularies are dense; ids may exceed the token count only by a margin.
  const entries =
    (isObject(json.model) &&
      (isObject(json.model.vocab)
        ? Object.keys(json.model.vocab).length
        : Array.isArray(json.model.vocab)
          ? json.model.vocab.length
          : 0)) ||
    0;
  const addedCount = Array.isArray(json.added_tokens) ? json.added_tokens.length : 0;
  const maxId = Math.min(MAX_TOKEN_ID, 2 * (entries + addedCount) + 65_536);
  const isTokenId = (v: unknown): v is number => typeof v === 'number' && Number.isInteger(v) && v >= 0 && v <= maxId;
  const model = json.model;
  if (isObject(model)) {
    const vocab = model.vocab;
    if (isObject(vocab)) {
      for (const [token, id] of Object.entries(vocab)) {
        if (!isTokenId(id))
          fail(`model.vocab gives token ${JSON.stringify(token.slice(0, 50))} the id ${JSON.stringify(id)}, not an integer in 0..${maxId}`);
      }
    } else if (Array.isArray(vocab) && vocab.length > MAX_TOKEN_ID + 1) {
      fail(`model.vocab holds ${vocab.length} entries, more than ${MAX_TOKEN_ID + 1}`);
    }
    for (const key of ['unk_id', 'unk_token_id']) {
      if (model[key] !== undefined && model[key] !== null && !isTokenId(model[key]))
        fail(`model.${key} is ${JSON.stringify(model[key])}, not an id in 0..${maxId}`);
    }
  }
  const added = json.added_tokens;
  if (added !== undefined && added !== null) {
    if (!Array.isArray(added)) fail('added_tokens must be a list');
    for (const t of added as unknown[]) {
      const id = isObject(t) ? t.id : undefined;
      if (!isTokenId(id))
        fail(
          `added token ${JSON.stringify(isObject(t) ? t.content : t)?.slice(0, 60)} has id ${JSON.stringify(id)}, not an integer in 0..${maxId}`,
        );
    }
  }
  const walk = (v: unknown, where: string, depth: number): void => {
    if (depth > 64) fail(`${where} is nested more than 64 levels deep`);
    if (Array.isArray(v)) v.forEach((x, i) => walk(x, `${where}[${i}]`, depth + 1));
    else if (isObject(v)) {
      for (const [k, x] of Object.entries(v)) {
        if (k === 'Regex' && typeof x === 'string') {
          const problem = regexProblem(x);
          if (problem) fail(`${where}.Regex ${JSON.stringify(x.slice(0, 80))} ${problem}`);
        } else walk(x, `${where}.${k}`, depth + 1);
      }
    }
  };
  for (const key of ['normalizer', 'pre_tokenizer', 'post_processor', 'decoder']) walk(json[key], key, 0);
}

/**
 * Why a pattern could take exponential (or worse than linear) time in a backtracking engine, or
 * undefined when it cannot. The rule is structural and conservative: a group repeated without bound
 * ("+", "*", "{n,}") must not itself contain an unbounded repetition or an alternation, since both
 * let the engine split the same text between iterations in exponentially many ways ("(a+)+",
 * "(a|a)*"); backreferences are refused too. Every pre-tokenizer pattern of the published models
 * (GPT-2, Llama 3, Qwen, DeepSeek, Mistral) passes: none repeats a group.
 */
export function regexProblem(pattern: string): string | undefined {
  if (pattern.length > MAX_REGEX_CHARS) return `is ${pattern.length} characters long, above the limit of ${MAX_REGEX_CHARS}`;
  interface Frame {
    unbounded: boolean;
    alternation: boolean;
  }
  const stack: Frame[] = [{ unbounded: false, alternation: false }];
  let i = 0;
  /** Reads a quantifier at i; returns whether it is unbounded, or undefined if there is none. */
  const quantifier = (): boolean | undefined => {
    const c = pattern[i];
    let unbounded: boolean | undefined;
    if (c === '*' || c === '+') {
      unbounded = true;
      i++;
    } else if (c === '?') {
      unbounded = false;
      i++;
    } else if (c === '{') {
      const m = /^\{(\d+)(,(\d*))?\}/.exec(pattern.slice(i));
      if (!m) return undefined;
      unbounded = m[2] !== undefined && (m[3] === '' || Number(m[3]) > 1000);
      i += m[0].length;
    } else return undefined;
    if (pattern[i] === '?' || pattern[i] === '+') i++; // lazy / possessive
    return unbounded;
  };
  while (i < pattern.length) {
    const c = pattern[i]!;
    const top = stack[stack.length - 1]!;
    if (c === '\\') {
      const n = pattern[i + 1];
      if (n !== undefined && /[1-9k]/.test(n)) return 'uses a backreference, which can take exponential time';
      i += 2;
      if ((n === 'p' || n === 'P' || n === 'u' || n === 'x') && pattern[i] === '{') {
        const end = pattern.indexOf('}', i);
        i = end < 0 ? pattern.length : end + 1;
      }
    } else if (c === '[') {
      i++;
      if (pattern[i] === '^') i++;
      if (pattern[i] === ']') i++;
      while (i < pattern.length && pattern[i] !== ']') i += pattern[i] === '\\' ? 2 : 1;
      i++;
    } else if (c === '(') {
      stack.push({ unbounded: false, alternation: false });
      i++;
      if (pattern[i] === '?') {
        // (?:, (?=, (?!, (?<=, (?<!, (?<name>, (?i:
        i++;
        if (pattern[i] === ':' || pattern[i] === '=' || pattern[i] === '!') i++;
        else if (pattern[i] === '<' && (pattern[i + 1] === '=' || pattern[i + 1] === '!')) i += 2;
        else if (pattern[i] === '<') {
          const end = pattern.indexOf('>', i);
          i = end < 0 ? pattern.length : end + 1;
        } else {
          // inline flags: (?i:...), (?i-m:...)
          while (i < pattern.length && /[a-zA-Z-]/.test(pattern[i]!)) i++;
          if (pattern[i] === ':') i++;
        }
      }
      continue;
    } else if (c === ')') {
      if (stack.length === 1) return 'has an unbalanced ")"';
      const group = stack.pop()!;
      i++;
      const q = quantifier();
      const parent = stack[stack.length - 1]!;
      if (q === true && (group.unbounded || group.alternation)) {
        return `repeats a group that itself ${group.unbounded ? 'repeats without bound' : 'has alternatives'} (like "(a+)+" or "(a|b)*"), which can take exponential time on some inputs`;
      }
      parent.unbounded ||= group.unbounded || q === true;
      parent.alternation ||= group.alternation;
      continue;
    } else if (c === '|') {
      top.alternation = true;
      i++;
      continue;
    } else {
      i++;
    }
    const q = quantifier();
    if (q === true) stack[stack.length - 1]!.unbounded = true;
  }
  if (stack.length !== 1) return 'has an unbalanced "("';
  return undefined;
}
