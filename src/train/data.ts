// Training data from jsonl files: {"text"}, {"prompt","completion"} (loss on the completion only)
// and {"messages"} conversations rendered with the tokenizer's chat template (loss on assistant
// turns only), tokenized the way TRL's SFTTrainer does, then truncated or packed to max-len; and,
// for sequence classifiers, {"text","label"} rows tokenized as transformers' tokenizer(text,
// truncation=True, max_length=N) does ([CLS] text [SEP] for BERT).

import { readFile } from '../storage/index.js';
import { regularFileSize } from '../io/files.js';
import type { ChatMessage, Tokenizer } from '../io/tokenizer.js';
import { DatasetError } from './errors.js';
import { Rng, permutation } from './rng.js';

/** Label of a position that takes no part in the loss (transformers' ignore_index). */
export const IGNORE_INDEX = -100;

export type DatasetFormat = 'text' | 'prompt-completion' | 'messages';

/** One tokenized training sequence; labels are input ids, or IGNORE_INDEX where no loss is taken. */
export interface TokenizedExample {
  inputIds: number[];
  labels: number[];
}

/** One tokenized sequence-classification example: ids with the special tokens, and the class id. */
export interface ClassificationExample {
  inputIds: number[];
  label: number;
}

/** What the trainer takes: language-modelling sequences or classification examples (one kind per run). */
export type Example = TokenizedExample | ClassificationExample;

export function isClassificationExample(ex: Example): ex is ClassificationExample {
  return 'label' in ex;
}

export interface JsonlRecord {
  /** 1-based line number in the file */
  line: number;
  value: Record<string, unknown>;
}

export interface TokenizeOptions {
  /** file name for error messages */
  file?: string;
  /** a Jinja chat template to use instead of the tokenizer's own (messages datasets) */
  chatTemplate?: string;
}

/** Field names of a dataset whose rows do not use "prompt", "completion", "messages" and "text". */
export interface FieldNames {
  prompt?: string;
  completion?: string;
  messages?: string;
  text?: string;
}

export interface LoadDatasetOptions extends Omit<TokenizeOptions, 'file'> {
  /** the dataset's own field names for prompt/completion/messages/text */
  keys?: FieldNames;
  /** use only the first n rows */
  maxExamples?: number;
}

/** Records with the dataset's own field names renamed to the standard ones (a missing renamed field is an error naming it). */
function renameFields(records: readonly JsonlRecord[], keys: FieldNames, file?: string): JsonlRecord[] {
  const pairs = (Object.entries(keys) as [keyof FieldNames, string | undefined][]).filter(([std, k]) => k !== undefined && k !== std) as [
    keyof FieldNames,
    string,
  ][];
  if (pairs.length === 0) return [...records];
  return records.map((r) => {
    const value: Record<string, unknown> = { ...r.value };
    for (const [std, k] of pairs) {
      if (std in r.value && !(k in r.value)) continue;
      if (k in value) {
        value[std] = value[k];
        delete value[k];
      }
    }
    if (!pairs.some(([std]) => std in value)) {
      throw new DatasetError(
        `none of the fields ${pairs.map(([, k]) => `"${k}"`).join(', ')} is in this row (fields: ${
          Object.keys(r.value)
            .map((k) => `"${k}"`)
            .join(', ') || 'none'
        })`,
        { file, line: r.line },
      );
    }
    return { line: r.line, value };
  });
}

export interface PrepareOptions {
  /** longest sequence (tokens); longer examples are cut on the right, packed blocks have this length */
  maxLength: number;
  /** concatenate every example and cut the stream into maxLength blocks instead of one example per row */
  packing?: boolean;
}

export interface PreparedExamples {
  examples: TokenizedExample[];
  /** examples (or packed blocks) left out because no position of theirs carries a label */
  dropped: number;
}

/**
 * Longest jsonl line accepted, in characters (1 MiB): far above any training example (a line is
 * cut to --max-len tokens anyway), low enough that one line cannot take minutes and gigabytes to
 * tokenize. Split longer documents into several lines.
 */
export const MAX_JSONL_LINE_CHARS = 1 << 20;

/**
 * Reads a jsonl file: one JSON object per non-blank line. The file must be a regular file (a FIFO
 * or device is refused before it is opened) in UTF-8; a leading byte-order mark is skipped, as
 * Python's utf-8-sig does, and bytes that are not UTF-8 (Latin-1, say) are an error naming the line.
 */
export async function readJsonl(file: string): Promise<JsonlRecord[]> {
  let bytes: Uint8Array;
  try {
    await regularFileSize(
      file,
      (reason) => new DatasetError(`cannot read the dataset: ${reason}; pass a .jsonl file with one JSON object per line`, { file }),
    );
    bytes = await readFile(file);
  } catch (e) {
    if (e instanceof DatasetError) throw e;
    const code = (e as NodeJS.ErrnoException).code;
    const why = code === 'ENOENT' ? 'the file does not exist' : code === 'EISDIR' ? 'it is a folder, not a file' : (e as Error).message;
    throw new DatasetError(`cannot read the dataset: ${why}; pass a .jsonl file with one JSON object per line`, { file });
  }
  return parseJsonl(decodeUtf8Lines(bytes, file), file);
}

/** The file as text, or a DatasetError naming the first line that is not valid UTF-8. */
function decodeUtf8Lines(bytes: Uint8Array, file: string): string {
  try {
    return new TextDecoder('utf-8', { fatal: true, ignoreBOM: true }).decode(bytes);
  } catch {
    // Find the line: decode line by line (only on this error path).
    const strict = new TextDecoder('utf-8', { fatal: true });
    let start = 0;
    for (let line = 1; start <= bytes.length; line++) {
      let end = bytes.indexOf(0x0a, start);
      if (end < 0) end = bytes.length;
      try {
        strict.decode(bytes.subarray(start, end));
      } catch {
        const bad = bytes.subarray(start, end).findIndex((b) => b >= 0x80);
        throw new DatasetError(
          `the line is not valid UTF-8 (byte 0x${(bytes[start + Math.max(bad, 0)] ?? 0).toString(16)} near column ${bad + 1}); save the file as UTF-8 (e.g. iconv -f latin1 -t utf-8)`,
          { file, line },
        );
      }
      start = end + 1;
    }
    throw new DatasetError('the file is not valid UTF-8; save it as UTF-8', { file });
  }
}

/** Parses jsonl text (the part of readJsonl that does not touch the disk); a leading BOM is skipped. */
export function parseJsonl(text: string, file?: string): JsonlRecord[] {
  const records: JsonlRecord[] = [];
  const lines = (text.charCodeAt(0) === 0xfeff ? text.slice(1) : text).split('\n');
  lines.forEach((raw, i) => {
    const line = raw.endsWith('\r') ? raw.slice(0, -1) : raw;
    if (line.length > MAX_JSONL_LINE_CHARS) {
      throw new DatasetError(
        `the line is ${line.length} characters long, above the limit of ${MAX_JSONL_LINE_CHARS}; split the document into several lines`,
        { file, line: i + 1 },
      );
    }
    if (line.trim() === '') return;
    let value: unknown;
    try {
      value = JSON.parse(line);
    } catch (e) {
      throw new DatasetError(`not valid JSON (${(e as Error).message}); each line must be one JSON object`, { file, line: i + 1 });
    }
    if (typeof value !== 'object' || value === null || Array.isArray(value)) {
      throw new DatasetError(`expected a JSON object, found ${Array.isArray(value) ? 'an array' : JSON.stringify(value)}`, {
        file,
        line: i + 1,
      });
    }
    records.push({ line: i + 1, value: value as Record<string, unknown> });
  });
  if (records.length === 0) throw new DatasetError('the dataset is empty: it has no JSON lines', { file });
  return records;
}

function formatOf(r: JsonlRecord, file?: string): DatasetFormat {
  const v = r.value;
  if ('messages' in v) return 'messages';
  if ('prompt' in v || 'completion' in v) {
    if (!('prompt' in v) || !('completion' in v)) {
      throw new DatasetError(`a prompt/completion record needs both fields, found only "${'prompt' in v ? 'prompt' : 'completion'}"`, {
        file,
        line: r.line,
      });
    }
    return 'prompt-completion';
  }
  if ('text' in v) return 'text';
  const keys = Object.keys(v);
  throw new DatasetError(
    `unrecognized record with fields ${keys.length ? keys.map((k) => `"${k}"`).join(', ') : '(none)'}; ` +
      'each line needs {"text": ...}, {"prompt": ..., "completion": ...} or {"messages": [{"role": ..., "content": ...}, ...]}',
    { file, line: r.line },
  );
}

function stringField(r: JsonlRecord, key: string, file?: string): string {
  const x = r.value[key];
  if (typeof x !== 'string')
    throw new DatasetError(`field "${key}" must be a string, found ${x === null ? 'null' : typeof x}`, { file, line: r.line });
  return x;
}

function messagesField(r: JsonlRecord, file?: string): ChatMessage[] {
  const m = r.value.messages;
  if (!Array.isArray(m) || m.length === 0)
    throw new DatasetError('field "messages" must be a non-empty array of {"role", "content"} objects', { file, line: r.line });
  m.forEach((msg, i) => {
    if (typeof msg !== 'object' || msg === null || Array.isArray(msg) || typeof (msg as ChatMessage).role !== 'string') {
      throw new DatasetError(`messages[${i}] must be an object with string "role" and "content"`, { file, line: r.line });
    }
    const calls = (msg as ChatMessage).tool_calls;
    if (calls !== undefined && calls !== null) toolCallsField(calls, `messages[${i}].tool_calls`, (msg as ChatMessage).role, r.line, file);
    const content = (msg as ChatMessage).content;
    const hasCalls = Array.isArray(calls) && calls.length > 0;
    if (typeof content !== 'string' && !(hasCalls && (content === null || content === undefined))) {
      throw new DatasetError(
        `messages[${i}].content must be a string${hasCalls ? ' or null' : ` (it may be null or absent only on an assistant message with "tool_calls")`}, found ${content === null ? 'null' : Array.isArray(content) ? 'an array' : typeof content}`,
        { file, line: r.line },
      );
    }
  });
  if (!m.some((msg: ChatMessage) => msg.role === 'assistant')) {
    throw new DatasetError('the conversation has no "assistant" message, so there is nothing to train on', { file, line: r.line });
  }
  return m as ChatMessage[];
}

/** Checks OpenAI/transformers tool calls: [{"type": "function", "function": {"name": str, "arguments": object | str}}]. */
function toolCallsField(calls: unknown, where: string, role: string, line: number, file?: string): void {
  const fail = (what: string): never => {
    throw new DatasetError(`${where}${what}; a tool call is {"type": "function", "function": {"name": "...", "arguments": {...}}}`, {
      file,
      line,
    });
  };
  if (role !== 'assistant') fail(` is only allowed on an "assistant" message, found on a "${role}" message`);
  if (!Array.isArray(calls) || calls.length === 0) fail(' must be a non-empty array');
  (calls as unknown[]).forEach((c, j) => {
    if (typeof c !== 'object' || c === null || Array.isArray(c)) fail(`[${j}] must be an object`);
    const call = c as Record<string, unknown>;
    if (call.type !== undefined && call.type !== 'function') fail(`[${j}].type must be "function", found ${JSON.stringify(call.type)}`);
    const fn = call.function;
    if (typeof fn !== 'object' || fn === null || Array.isArray(fn)) fail(`[${j}].function must be an object`);
    const f = fn as Record<string, unknown>;
    if (typeof f.name !== 'string' || f.name === '') fail(`[${j}].function.name must be a non-empty string`);
    const a = f.arguments;
    if (!(typeof a === 'string' || (typeof a === 'object' && a !== null && !Array.isArray(a))))
      fail(`[${j}].function.arguments must be an object (or a JSON string)`);
  });
}

/** The row's optional "tools" list (JSON schemas of functions, as transformers passes to the template). */
function toolsField(r: JsonlRecord, file?: string): unknown[] | undefined {
  const t = r.value.tools;
  if (t === undefined || t === null) return undefined;
  if (!Array.isArray(t) || t.some((x) => typeof x !== 'object' || x === null || Array.isArray(x))) {
    throw new DatasetError(
      'field "tools" must be an array of objects (function JSON schemas, e.g. {"type": "function", "function": {"name", "description", "parameters"}})',
      { file, line: r.line },
    );
  }
  return t;
}

function withEos(ids: number[], eos: number | undefined): number[] {
  return eos !== undefined && ids[ids.length - 1] !== eos ? [...ids, eos] : ids;
}

/**
 * Tokenizes records of one format (a file mixing formats is an error), as TRL's SFTTrainer does:
 * text and prompt/completion get the tokenizer's special tokens and an EOS at the end; a
 * conversation is its chat template's rendering, whose own end-of-turn tokens end it.
 */
export function tokenizeRecords(
  records: readonly JsonlRecord[],
  tokenizer: Tokenizer,
  opts: TokenizeOptions = {},
): { format: DatasetFormat; examples: TokenizedExample[] } {
  const file = opts.file;
  if (records.length === 0) throw new DatasetError('the dataset is empty', { file });
  const format = formatOf(records[0]!, file);
  const eos = tokenizer.eosTokenId;
  if (format === 'messages' && opts.chatTemplate === undefined && tokenizer.chatTemplate === undefined) {
    throw new DatasetError(
      `the dataset holds conversations ("messages") but the tokenizer in ${tokenizer.dir} has no chat template; ` +
        'use the tokenizer of a chat model or pass a template file with --chat-template',
      { file },
    );
  }
  const examples = records.map((r) => {
    const f = formatOf(r, file);
    if (f !== format)
      throw new DatasetError(`this record is ${f} but earlier ones are ${format}; use one format per file`, { file, line: r.line });
    switch (format) {
      case 'text': {
        const ids = withEos(tokenizer.encode(stringField(r, 'text', file)), eos);
        return { inputIds: ids, labels: [...ids] };
      }
      case 'prompt-completion': {
        const prompt = stringField(r, 'prompt', file);
        const completion = stringField(r, 'completion', file);
        const promptIds = tokenizer.encode(prompt);
        const ids = withEos(tokenizer.encode(prompt + completion), eos);
        const cut = Math.min(promptIds.length, ids.length);
        return { inputIds: ids, labels: ids.map((t, i) => (i < cut ? IGNORE_INDEX : t)) };
      }
      case 'messages':
        return tokenizeConversation(messagesField(r, file), tokenizer, opts.chatTemplate, r.line, file, toolsField(r, file));
    }
  });
  return { format, examples };
}

/**
 * Renders a conversation and labels its assistant turns. The span of assistant turn i is what
 * rendering messages[0..i] adds to rendering messages[0..i) with the generation prompt; the text is
 * tokenized span by span so every label boundary falls on a token boundary.
 */
function tokenizeConversation(
  messages: ChatMessage[],
  tokenizer: Tokenizer,
  chatTemplate: string | undefined,
  line: number,
  file?: string,
  tools?: unknown[],
): TokenizedExample {
  const render = (upTo: number, addGenerationPrompt: boolean): string => {
    try {
      return tokenizer.applyChatTemplate(messages.slice(0, upTo), {
        chatTemplate,
        addGenerationPrompt,
        ...(tools !== undefined ? { tools } : {}),
      });
    } catch (e) {
      throw new DatasetError(`the chat template cannot render this conversation: ${(e as Error).message}`, { file, line });
    }
  };
  const full = render(messages.length, false);
  const spans: [number, number][] = [];
  messages.forEach((m, i) => {
    if (m.role !== 'assistant') return;
    const before = render(i, true);
    const through = render(i + 1, false);
    if (!through.startsWith(before) || !full.startsWith(through)) {
      throw new DatasetError(
        `the chat template does not render conversations prefix by prefix (turn ${i} changes earlier text), so assistant turns cannot be located; ` +
          'use a template whose output for the first k messages is a prefix of its output for all of them',
        { file, line },
      );
    }
    if (through.length > before.length) spans.push([before.length, through.length]);
  });
  const inputIds: number[] = [];
  const labels: number[] = [];
  let pos = 0;
  const emit = (end: number, learn: boolean): void => {
    if (end <= pos) return;
    const ids = tokenizer.encode(full.slice(pos, end), { addSpecialTokens: false });
    inputIds.push(...ids);
    labels.push(...(learn ? ids : ids.map(() => IGNORE_INDEX)));
    pos = end;
  };
  for (const [start, end] of spans) {
    emit(Math.max(start, pos), false);
    emit(end, true);
  }
  emit(full.length, false);
  return { inputIds, labels };
}

/** True when some position after the first carries a label (causal LMs predict token t from t-1). */
export function hasLearnableLabel(ex: TokenizedExample): boolean {
  for (let i = 1; i < ex.labels.length; i++) if (ex.labels[i] !== IGNORE_INDEX) return true;
  return false;
}

/**
 * Cuts examples to maxLength (right side), or with packing concatenates them in order and splits
 * the stream into maxLength blocks (the last one shorter); drops rows with nothing to learn.
 */
export function prepareExamples(examples: readonly TokenizedExample[], opts: PrepareOptions & { file?: string }): PreparedExamples {
  const { maxLength } = opts;
  if (!Number.isInteger(maxLength) || maxLength < 2)
    throw new DatasetError(`max length must be an integer of at least 2, got ${maxLength}`, { file: opts.file });
  let rows: TokenizedExample[];
  if (opts.packing) {
    const ids: number[] = [];
    const labels: number[] = [];
    for (const ex of examples) {
      for (let i = 0; i < ex.inputIds.length; i++) {
        ids.push(ex.inputIds[i]!);
        labels.push(ex.labels[i]!);
      }
    }
    rows = [];
    for (let s = 0; s < ids.length; s += maxLength)
      rows.push({ inputIds: ids.slice(s, s + maxLength), labels: labels.slice(s, s + maxLength) });
  } else {
    rows = examples.map((ex) =>
      ex.inputIds.length > maxLength ? { inputIds: ex.inputIds.slice(0, maxLength), labels: ex.labels.slice(0, maxLength) } : ex,
    );
  }
  const kept = rows.filter(hasLearnableLabel);
  if (kept.length === 0) {
    throw new DatasetError(
      `no example has a token to learn from after ${opts.packing ? 'packing' : 'truncation'} to max length ${maxLength} ` +
        '(prompts fill the whole window, or examples are one token long); raise --max-len or shorten the prompts',
      { file: opts.file },
    );
  }
  return { examples: kept, dropped: rows.length - kept.length };
}

/** Splits off ceil(fraction * n) examples for evaluation, chosen by a seeded shuffle. */
export function splitForEval<T>(examples: readonly T[], fraction: number, seed: number): { train: T[]; eval: T[] } {
  if (!(fraction > 0 && fraction < 1))
    throw new DatasetError(`the eval split must be a fraction between 0 and 1 (exclusive), got ${fraction}`);
  const n = examples.length;
  const nEval = Math.ceil(n * fraction);
  if (n - nEval < 1)
    throw new DatasetError(
      `the dataset has ${n} example(s), too few to split off ${fraction * 100}% for evaluation; add examples or pass --eval-data`,
    );
  const order = permutation(n, Rng.fromSeed(seed, 0x5e1));
  const evalIdx = new Set(Array.from(order.subarray(0, nEval)));
  const train: T[] = [];
  const ev: T[] = [];
  examples.forEach((ex, i) => (evalIdx.has(i) ? ev : train).push(ex));
  return { train, eval: ev };
}

/** readJsonl + tokenizeRecords. */
export async function loadDataset(
  file: string,
  tokenizer: Tokenizer,
  opts: LoadDatasetOptions = {},
): Promise<{ format: DatasetFormat; examples: TokenizedExample[] }> {
  const { keys, maxExamples, ...tokenize } = opts;
  let records = await readJsonl(file);
  if (maxExamples !== undefined) records = records.slice(0, maxExamples);
  if (keys) records = renameFields(records, keys, file);
  return tokenizeRecords(records, tokenizer, { ...tokenize, file });
}

// ---- sequence classification ------------------------------------------------------------------

/** The classes of a sequence-classification head, as config.json's id2label/label2id give them. */
export interface ClassLabels {
  numLabels: number;
  id2label: Readonly<Record<number, string>>;
  label2id: Readonly<Record<string, number>>;
}

export interface ClassificationOptions {
  labels: ClassLabels;
  /** longest sequence in tokens, special tokens included; the text is cut on the right, as transformers' truncation=True */
  maxLength: number;
  /** file name for error messages */
  file?: string;
}

export interface ClassificationData {
  examples: ClassificationExample[];
  /** examples whose text was cut to fit maxLength */
  truncated: number;
}

/** How a class-id list reads in messages: 0 = "NEG", 1 = "POS" (or 0..N-1 for the generic LABEL_i names). */
function describeLabels(labels: ClassLabels): string {
  const ids = Array.from({ length: labels.numLabels }, (_, i) => i);
  const generic = ids.every((i) => labels.id2label[i] === `LABEL_${i}`);
  if (generic) return `a class id 0..${labels.numLabels - 1} (or its name LABEL_0..LABEL_${labels.numLabels - 1})`;
  return `a class id or name: ${ids.map((i) => `${i} = ${JSON.stringify(labels.id2label[i])}`).join(', ')}`;
}

function classOf(r: JsonlRecord, labels: ClassLabels, file?: string): number {
  if (!('label' in r.value)) {
    throw new DatasetError(
      `the record has no "label"; a sequence classifier trains on {"text": ..., "label": ...} rows, where the label is ${describeLabels(labels)}`,
      { file, line: r.line },
    );
  }
  const v = r.value.label;
  if (typeof v === 'number' && Number.isInteger(v) && v >= 0 && v < labels.numLabels) return v;
  if (typeof v === 'string' && Object.prototype.hasOwnProperty.call(labels.label2id, v)) return labels.label2id[v]!;
  throw new DatasetError(
    `label ${JSON.stringify(v)} is not a class of this model; use ${describeLabels(labels)} (config.json's id2label)`,
    { file, line: r.line },
  );
}

/**
 * Tokenizes {"text", "label"} rows for a sequence classifier: the tokenizer's special tokens
 * around the text ([CLS] text [SEP] for BERT) and the text cut so the whole fits maxLength, as
 * transformers' tokenizer(text, truncation=True, max_length=maxLength) does.
 */
export function tokenizeClassification(
  records: readonly JsonlRecord[],
  tokenizer: Tokenizer,
  opts: ClassificationOptions,
): ClassificationData {
  const { file, labels, maxLength } = opts;
  if (records.length === 0) throw new DatasetError('the dataset is empty', { file });
  if (labels.numLabels < 2) {
    throw new DatasetError(
      `the model has ${labels.numLabels} output (a regression head); the trainer fine-tunes classifiers with 2 or more classes (num_labels / id2label in config.json)`,
      { file },
    );
  }
  const { prefix, suffix } = tokenizer.specialTokenAffixes;
  const budget = maxLength - prefix.length - suffix.length;
  if (!Number.isInteger(maxLength) || budget < 1) {
    throw new DatasetError(
      `max length ${maxLength} leaves no room for text beside the ${prefix.length + suffix.length} special tokens; raise --max-len`,
      { file },
    );
  }
  let truncated = 0;
  const examples = records.map((r) => {
    const v = r.value;
    for (const pair of ['text_pair', 'text_b']) {
      if (pair in v)
        throw new DatasetError(`field "${pair}": sentence pairs are not supported; join the two texts into "text"`, { file, line: r.line });
    }
    if (!('text' in v)) {
      const keys = Object.keys(v);
      throw new DatasetError(
        `a sequence classifier trains on {"text": ..., "label": ...} rows; this record has ${keys.length ? keys.map((k) => `"${k}"`).join(', ') : 'no fields'}`,
        { file, line: r.line },
      );
    }
    const text = stringField(r, 'text', file);
    const label = classOf(r, labels, file);
    let content = tokenizer.encode(text, { addSpecialTokens: false });
    if (content.length > budget) {
      content = content.slice(0, budget);
      truncated++;
    }
    return { inputIds: [...prefix, ...content, ...suffix], label };
  });
  return { examples, truncated };
}

/** readJsonl + tokenizeClassification. */
export async function loadClassificationDataset(
  file: string,
  tokenizer: Tokenizer,
  opts: Omit<ClassificationOptions, 'file'>,
): Promise<ClassificationData> {
  return tokenizeClassification(await readJsonl(file), tokenizer, { ...opts, file });
}
