// Loads a Hugging Face tokenizer from a local model folder (tokenizer.json, tokenizer_config.json,
// special_tokens_map.json) and reproduces what transformers' fast tokenizer returns: token ids,
// decoding, padded batches and chat-template rendering. Tokenization itself is @huggingface/tokenizers.

import { stat, path } from '../storage/index.js';
import { Tokenizer as HfTokenizer } from '@huggingface/tokenizers';
import type { Template } from '@huggingface/jinja';
import { PeftError } from '../errors.js';
import {
  CHAT_TEMPLATE_LIMITS,
  type ChatTemplateLimits,
  TemplateLimitExceeded,
  compileChatTemplate,
  renderChatTemplate,
} from './chat_template.js';
import { readSmallTextFile, regularFileSize } from './files.js';
import { checkTokenizerJson } from './tokenizer_limits.js';

export class TokenizerError extends PeftError {
  constructor(message: string) {
    super(message);
    this.name = 'TokenizerError';
  }
}

/** The folder or one of its files cannot be turned into a tokenizer. */
export class TokenizerLoadError extends TokenizerError {
  readonly file: string;
  constructor(file: string, message: string) {
    super(message);
    this.name = 'TokenizerLoadError';
    this.file = file;
  }
}

/** A chat template failed to compile or render (including the template's own raise_exception). */
export class ChatTemplateError extends TokenizerError {
  constructor(message: string) {
    super(message);
    this.name = 'ChatTemplateError';
  }
}

/** The tokenizer folder has no chat template (typical for base, non-instruct models). */
export class MissingChatTemplateError extends ChatTemplateError {
  readonly dir: string;
  constructor(dir: string, detail?: string) {
    super(
      `no chat template found for the tokenizer in ${dir} (looked at chat_template.jinja and the "chat_template" ` +
        `field of tokenizer_config.json)${detail ? `: ${detail}` : ''}. Base models usually ship none: use the ` +
        `tokenizer of an instruct/chat variant, or pass a Jinja template string as { chatTemplate } to applyChatTemplate.`,
    );
    this.name = 'MissingChatTemplateError';
    this.dir = dir;
  }
}

export interface ChatMessage {
  role: string;
  content: unknown;
  [key: string]: unknown;
}

export interface EncodeOptions {
  /** Add the tokens of the model's post-processor (e.g. BOS for Llama, [CLS]/[SEP] for BERT). Default true, as in transformers. */
  addSpecialTokens?: boolean;
}

export interface DecodeOptions {
  skipSpecialTokens?: boolean;
  /** Overrides tokenizer_config.json's clean_up_tokenization_spaces (transformers 4.40 defaults it to true). */
  cleanUpTokenizationSpaces?: boolean;
}

export interface EncodeBatchOptions extends EncodeOptions {
  /** Which side receives the pad tokens; decoder-only generation wants 'left', training usually 'right'. */
  padding: 'left' | 'right';
  maxLength?: number;
  /** Cut sequences longer than maxLength (keeping the special tokens, cutting text on the right). Without it an over-long sequence is an error. */
  truncation?: boolean;
  /** Pad every row to maxLength instead of to the longest row (fixed shapes for a static graph). */
  padToMaxLength?: boolean;
}

export interface BatchEncoding {
  inputIds: number[][];
  attentionMask: number[][];
}

export interface ChatTemplateOptions {
  /** Append the assistant turn header so the model continues as the assistant. */
  addGenerationPrompt?: boolean;
  /** Use this template instead of the folder's one. */
  chatTemplate?: string;
  /** Pick a named template when tokenizer_config.json holds a list of {name, template}. */
  templateName?: string;
  tools?: unknown[];
  documents?: unknown[];
  /** More template variables, passed like transformers' **kwargs of apply_chat_template. */
  extra?: Record<string, unknown>;
  /** Tighter or looser sandbox limits than CHAT_TEMPLATE_LIMITS (range size, time, string/list sizes). */
  limits?: Partial<ChatTemplateLimits>;
}

const SPECIAL_TOKEN_KEYS = ['bos_token', 'eos_token', 'unk_token', 'sep_token', 'pad_token', 'cls_token', 'mask_token'] as const;
type SpecialTokenKey = (typeof SPECIAL_TOKEN_KEYS)[number];

// transformers' LlamaTokenizerFast/GemmaTokenizerFast rebuild tokenizer.json's post-processor from
// add_bos_token/add_eos_token when they load, so these flags win over whatever tokenizer.json says.
const POST_PROCESSOR_FROM_FLAGS = new Set(['LlamaTokenizer', 'CodeLlamaTokenizer', 'GemmaTokenizer']);

type Json = Record<string, unknown>;

interface SpecialAffixes {
  prefix: number[];
  suffix: number[];
}

function isObject(v: unknown): v is Json {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** tokenizer_config.json stores special tokens either as strings or as serialized AddedToken objects. */
function tokenContent(v: unknown): string | undefined {
  if (typeof v === 'string') return v;
  if (isObject(v) && typeof v.content === 'string') return v.content;
  return undefined;
}

/** tokenizer.json of the largest vocabularies is ~30 MB; config files are a few KB. */
const MAX_TOKENIZER_FILE_BYTES = 512 * 1024 * 1024;

async function readJson(file: string, required: boolean): Promise<Json | undefined> {
  let text: string;
  try {
    // A FIFO, device or folder under a tokenizer file name is refused before it is opened.
    if (
      (await regularFileSize(
        file,
        (reason) => new TokenizerLoadError(file, `${reason}; the tokenizer files must be regular files.`),
        true,
      )) === undefined
    ) {
      throw Object.assign(new Error('missing'), { code: 'ENOENT' });
    }
    text = await readSmallTextFile(file, MAX_TOKENIZER_FILE_BYTES, (reason) => new TokenizerLoadError(file, `${reason}.`));
  } catch (err) {
    if (err instanceof TokenizerLoadError) throw err;
    if ((err as NodeJS.ErrnoException).code === 'ENOENT' && !required) return undefined;
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') {
      throw new TokenizerLoadError(
        file,
        `missing ${file}: the tokenizer loader needs the fast-tokenizer file tokenizer.json. If the folder only has ` +
          `vocab/merges files, run AutoTokenizer.from_pretrained(dir).save_pretrained(dir) with Python transformers once to write it.`,
      );
    }
    throw new TokenizerLoadError(file, `cannot read ${file}: ${(err as Error).message}`);
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch (err) {
    throw new TokenizerLoadError(
      file,
      `${file} is not valid JSON (${(err as Error).message}); re-download or re-save the tokenizer files.`,
    );
  }
  if (!isObject(parsed)) {
    throw new TokenizerLoadError(file, `${file} must hold a JSON object, found ${Array.isArray(parsed) ? 'an array' : typeof parsed}.`);
  }
  return parsed;
}

export class Tokenizer {
  readonly dir: string;
  readonly bosToken?: string;
  readonly eosToken?: string;
  readonly unkToken?: string;
  readonly padToken?: string;
  readonly sepToken?: string;
  readonly clsToken?: string;
  readonly maskToken?: string;
  readonly bosTokenId?: number;
  readonly eosTokenId?: number;
  readonly padTokenId?: number;
  readonly unkTokenId?: number;
  /** Number of distinct tokens including added/special ones: transformers' len(tokenizer). */
  readonly vocabSize: number;
  /** Size of the model vocabulary without added tokens: transformers' tokenizer.vocab_size. */
  readonly baseVocabSize: number;
  /** The template found in the folder, if any (a string, or named templates). */
  readonly chatTemplate?: string | Record<string, string>;
  readonly modelMaxLength?: number;

  private readonly hf: HfTokenizer;
  private readonly affixes: SpecialAffixes;
  private readonly specialTokenStrings: Record<string, string | string[]>;
  private readonly templateCache = new Map<string, Template>();

  private constructor(args: {
    dir: string;
    hf: HfTokenizer;
    affixes: SpecialAffixes;
    special: Partial<Record<SpecialTokenKey, string>>;
    additionalSpecialTokens: string[];
    chatTemplate?: string | Record<string, string>;
    modelMaxLength?: number;
  }) {
    this.dir = args.dir;
    this.hf = args.hf;
    this.affixes = args.affixes;
    const s = args.special;
    this.bosToken = s.bos_token;
    this.eosToken = s.eos_token;
    this.unkToken = s.unk_token;
    this.padToken = s.pad_token;
    this.sepToken = s.sep_token;
    this.clsToken = s.cls_token;
    this.maskToken = s.mask_token;
    const idOf = (t: string | undefined) => (t === undefined ? undefined : this.hf.token_to_id(t));
    this.bosTokenId = idOf(s.bos_token);
    this.eosTokenId = idOf(s.eos_token);
    this.padTokenId = idOf(s.pad_token);
    this.unkTokenId = idOf(s.unk_token);
    this.vocabSize = this.hf.get_vocab(true).size;
    this.baseVocabSize = this.hf.get_vocab(false).size;
    this.chatTemplate = args.chatTemplate;
    this.modelMaxLength = args.modelMaxLength;
    const strings: Record<string, string | string[]> = {};
    for (const key of SPECIAL_TOKEN_KEYS) {
      const v = s[key];
      if (v !== undefined) strings[key] = v;
    }
    if (args.additionalSpecialTokens.length > 0) strings.additional_special_tokens = args.additionalSpecialTokens;
    this.specialTokenStrings = strings;
  }

  static async fromDir(dir: string): Promise<Tokenizer> {
    const info = await stat(dir).catch(() => undefined);
    if (!info?.isDirectory()) {
      throw new TokenizerLoadError(
        dir,
        `tokenizer folder ${dir} does not exist or is not a directory; pass the model folder holding tokenizer.json ` +
          `(for a Hub repo id, get the folder from resolveModelDir first).`,
      );
    }
    const tokenizerFile = path.join(dir, 'tokenizer.json');
    const configFile = path.join(dir, 'tokenizer_config.json');
    const tokenizerJson = (await readJson(tokenizerFile, true)) as Json;
    const config = (await readJson(configFile, false)) ?? {};
    const specialMap = (await readJson(path.join(dir, 'special_tokens_map.json'), false)) ?? {};

    // transformers applies special_tokens_map.json over tokenizer_config.json.
    const special: Partial<Record<SpecialTokenKey, string>> = {};
    for (const key of SPECIAL_TOKEN_KEYS) {
      const v = tokenContent(specialMap[key]) ?? tokenContent(config[key]);
      if (v !== undefined) special[key] = v;
    }
    const additionalRaw = specialMap.additional_special_tokens ?? config.additional_special_tokens;
    const additionalSpecialTokens = Array.isArray(additionalRaw)
      ? additionalRaw.map(tokenContent).filter((t): t is string => t !== undefined)
      : [];

    // tokenizers.js reads plain-string special tokens from the config; AddedToken objects would confuse it.
    const hfConfig: Json = { ...config, ...special, additional_special_tokens: additionalSpecialTokens };
    delete hfConfig.chat_template;
    const tokenizerClass = typeof config.tokenizer_class === 'string' ? config.tokenizer_class.replace(/Fast$/, '') : undefined;
    if (tokenizerClass !== undefined && POST_PROCESSOR_FROM_FLAGS.has(tokenizerClass)) {
      tokenizerJson.post_processor = llamaPostProcessor(tokenizerJson, config, special, configFile);
      // These classes default clean_up_tokenization_spaces to false, unlike the transformers base class.
      hfConfig.clean_up_tokenization_spaces ??= false;
    }
    // Ids, vocabulary size and regular expressions are checked before tokenizers.js builds anything from them.
    checkTokenizerJson(tokenizerJson, tokenizerFile);
    let hf: HfTokenizer;
    try {
      hf = new HfTokenizer(tokenizerJson, hfConfig);
    } catch (err) {
      throw new TokenizerLoadError(
        tokenizerFile,
        `cannot build a tokenizer from ${tokenizerFile}: ${(err as Error).message}. The file may use a component ` +
          `@huggingface/tokenizers does not implement; re-save it with a recent transformers version.`,
      );
    }
    const affixes = specialAffixes(tokenizerJson.post_processor, tokenizerFile);

    let chatTemplate: string | Record<string, string> | undefined;
    const jinjaFile = path.join(dir, 'chat_template.jinja');
    const jinja =
      (await regularFileSize(
        jinjaFile,
        (reason) => new TokenizerLoadError(jinjaFile, `${reason}; a chat template must be a regular file.`),
        true,
      )) === undefined
        ? undefined
        : await readSmallTextFile(
            jinjaFile,
            CHAT_TEMPLATE_LIMITS.maxSourceChars * 4,
            (reason) => new TokenizerLoadError(jinjaFile, `${reason}.`),
          );
    if (jinja !== undefined) {
      // Newer transformers save the template there instead of inside tokenizer_config.json.
      chatTemplate = jinja;
    } else if (typeof config.chat_template === 'string') {
      chatTemplate = config.chat_template;
    } else if (Array.isArray(config.chat_template)) {
      const named: Record<string, string> = {};
      for (const entry of config.chat_template) {
        if (isObject(entry) && typeof entry.name === 'string' && typeof entry.template === 'string') {
          named[entry.name] = entry.template;
        } else {
          throw new TokenizerLoadError(
            configFile,
            `${configFile}: chat_template is a list, so every entry must be {"name": string, "template": string}.`,
          );
        }
      }
      chatTemplate = named;
    }

    const maxLen = config.model_max_length;
    // Python writes int(1e30) ("VERY_LARGE_INTEGER") when a tokenizer has no real limit.
    const modelMaxLength = typeof maxLen === 'number' && maxLen < 1e15 ? maxLen : undefined;

    return new Tokenizer({
      dir,
      hf,
      affixes,
      special,
      additionalSpecialTokens,
      chatTemplate,
      modelMaxLength,
    });
  }

  encode(text: string, options: EncodeOptions = {}): number[] {
    const content = this.encodeContent(text);
    if (options.addSpecialTokens === false) return content;
    return [...this.affixes.prefix, ...content, ...this.affixes.suffix];
  }

  /** Token strings for the text (no special tokens added), e.g. for inspecting a tokenization. */
  tokenize(text: string): string[] {
    return this.encodeContent(text).map((id) => this.hf.id_to_token(id) as string);
  }

  decode(ids: ArrayLike<number | bigint>, options: DecodeOptions = {}): string {
    const known: number[] = [];
    for (let i = 0; i < ids.length; i++) {
      const raw = ids[i];
      const id = typeof raw === 'bigint' ? Number(raw) : raw;
      if (!Number.isInteger(id)) {
        throw new TokenizerError(`decode: token id at position ${i} is ${String(raw)}, expected an integer.`);
      }
      // Like the Rust tokenizer, ids outside the vocabulary (e.g. from a padded embedding matrix) decode to nothing.
      if (this.hf.id_to_token(id) !== undefined) known.push(id);
    }
    if (known.length === 0) return '';
    const cleanUp = options.cleanUpTokenizationSpaces;
    return this.hf.decode(known, {
      skip_special_tokens: options.skipSpecialTokens ?? false,
      ...(cleanUp === undefined ? {} : { clean_up_tokenization_spaces: cleanUp }),
    });
  }

  tokenToId(token: string): number | undefined {
    return this.hf.token_to_id(token);
  }

  idToToken(id: number): string | undefined {
    return this.hf.id_to_token(id);
  }

  /** Ids of the special tokens wrapped around one sequence by encode(text) (e.g. [bos] / [] for Llama). */
  get specialTokenAffixes(): { prefix: readonly number[]; suffix: readonly number[] } {
    return { prefix: this.affixes.prefix, suffix: this.affixes.suffix };
  }

  encodeBatch(texts: readonly string[], options: EncodeBatchOptions): BatchEncoding {
    const { padding, maxLength, truncation = false, padToMaxLength = false } = options;
    if (padding !== 'left' && padding !== 'right') {
      throw new TokenizerError(`encodeBatch: padding must be 'left' or 'right', got ${JSON.stringify(padding)}.`);
    }
    if (maxLength !== undefined && (!Number.isInteger(maxLength) || maxLength <= 0)) {
      throw new TokenizerError(`encodeBatch: maxLength must be a positive integer, got ${maxLength}.`);
    }
    if ((truncation || padToMaxLength) && maxLength === undefined) {
      throw new TokenizerError('encodeBatch: truncation and padToMaxLength need maxLength.');
    }
    const addSpecial = options.addSpecialTokens !== false;
    const prefix = addSpecial ? this.affixes.prefix : [];
    const suffix = addSpecial ? this.affixes.suffix : [];
    const rows = texts.map((text, i) => {
      let content = this.encodeContent(text);
      const total = prefix.length + content.length + suffix.length;
      if (maxLength !== undefined && total > maxLength) {
        if (!truncation) {
          throw new TokenizerError(
            `encodeBatch: text ${i} is ${total} tokens, longer than maxLength ${maxLength}; pass truncation: true ` +
              `to cut it or raise maxLength.`,
          );
        }
        const budget = maxLength - prefix.length - suffix.length;
        if (budget < 0) {
          throw new TokenizerError(
            `encodeBatch: maxLength ${maxLength} cannot even hold the ${prefix.length + suffix.length} special tokens.`,
          );
        }
        content = content.slice(0, budget);
      }
      return [...prefix, ...content, ...suffix];
    });
    const longest = rows.reduce((m, r) => Math.max(m, r.length), 0);
    const width = padToMaxLength ? (maxLength as number) : longest;
    const needsPad = rows.some((r) => r.length < width);
    // GPT-2/Llama checkpoints often ship no pad token; padding with EOS is the usual workaround and harmless
    // because the attention mask hides those positions.
    const padId = this.padTokenId ?? this.eosTokenId;
    if (needsPad && padId === undefined) {
      throw new TokenizerError(
        `encodeBatch: the tokenizer in ${this.dir} has neither a pad nor an eos token, so rows of different length ` +
          `cannot be padded; set "pad_token" in tokenizer_config.json or encode texts one by one.`,
      );
    }
    const inputIds: number[][] = [];
    const attentionMask: number[][] = [];
    for (const row of rows) {
      const pad = width - row.length;
      const padIds = pad > 0 ? new Array<number>(pad).fill(padId as number) : [];
      const ones = new Array<number>(row.length).fill(1);
      const zeros = new Array<number>(pad).fill(0);
      if (padding === 'left') {
        inputIds.push([...padIds, ...row]);
        attentionMask.push([...zeros, ...ones]);
      } else {
        inputIds.push([...row, ...padIds]);
        attentionMask.push([...ones, ...zeros]);
      }
    }
    return { inputIds, attentionMask };
  }

  /** Render a conversation with the folder's Jinja chat template, with the variables transformers passes. */
  applyChatTemplate(messages: readonly ChatMessage[], options: ChatTemplateOptions = {}): string {
    const source = this.selectTemplate(options);
    let template = this.templateCache.get(source);
    if (template === undefined) {
      try {
        template = compileChatTemplate(source, { ...CHAT_TEMPLATE_LIMITS, ...options.limits });
      } catch (err) {
        if (err instanceof TemplateLimitExceeded) throw new ChatTemplateError(`chat template of ${this.dir} refused: ${err.message}.`);
        throw new ChatTemplateError(`chat template of ${this.dir} does not parse: ${(err as Error).message}`);
      }
      this.templateCache.set(source, template);
    }
    const context: Record<string, unknown> = {
      ...this.specialTokenStrings,
      ...(options.extra ?? {}),
      messages,
      add_generation_prompt: options.addGenerationPrompt ?? false,
    };
    if (options.tools !== undefined) context.tools = options.tools;
    if (options.documents !== undefined) context.documents = options.documents;
    try {
      // Sandboxed as transformers does: bounded range(), time, string and list sizes (chat_template.ts).
      return renderChatTemplate(template, context, { ...CHAT_TEMPLATE_LIMITS, ...options.limits });
    } catch (err) {
      if (err instanceof TemplateLimitExceeded) {
        throw new ChatTemplateError(
          `the chat template of ${this.dir} was stopped: ${err.message}; the template is broken or hostile, use another one ({ chatTemplate }).`,
        );
      }
      throw new ChatTemplateError(`rendering the chat template of ${this.dir} failed: ${(err as Error).message}`);
    }
  }

  private selectTemplate(options: ChatTemplateOptions): string {
    if (options.chatTemplate !== undefined) return options.chatTemplate;
    const t = this.chatTemplate;
    if (t === undefined) throw new MissingChatTemplateError(this.dir);
    if (typeof t === 'string') return t;
    // Same choice as transformers: explicit name, else "tool_use" when tools are given, else "default".
    const name = options.templateName ?? (options.tools !== undefined && t.tool_use !== undefined ? 'tool_use' : 'default');
    const chosen = t[name];
    if (chosen === undefined) {
      throw new MissingChatTemplateError(
        this.dir,
        `no template named "${name}" (available: ${Object.keys(t).join(', ')}); pass templateName`,
      );
    }
    return chosen;
  }

  private encodeContent(text: string): number[] {
    if (typeof text !== 'string') {
      throw new TokenizerError(`encode expects a string, got ${text === null ? 'null' : typeof text}.`);
    }
    // Tokens missing from the vocabulary of a model without unk token map to undefined here; the Rust
    // tokenizer drops such pieces, so do the same instead of emitting invalid ids.
    const ids: Array<number | undefined | null> = this.hf.encode(text, { add_special_tokens: false }).ids;
    return ids.filter((id): id is number => typeof id === 'number');
  }
}

/**
 * The special-token ids a post-processor puts before and after a single sequence, computed from
 * tokenizer.json the way the Rust tokenizer does. tokenizers.js looks template tokens up by their
 * name instead of using the `ids` stored in the template, which breaks when the two disagree, so ids
 * are taken from here.
 */
function specialAffixes(processor: unknown, file: string): SpecialAffixes {
  if (processor === null || processor === undefined) return { prefix: [], suffix: [] };
  if (!isObject(processor) || typeof processor.type !== 'string') {
    throw new TokenizerLoadError(file, `${file}: post_processor must be null or an object with a "type".`);
  }
  switch (processor.type) {
    case 'ByteLevel':
      return { prefix: [], suffix: [] };
    case 'BertProcessing':
    case 'RobertaProcessing': {
      const cls = processor.cls;
      const sep = processor.sep;
      if (!Array.isArray(cls) || !Array.isArray(sep) || typeof cls[1] !== 'number' || typeof sep[1] !== 'number') {
        throw new TokenizerLoadError(file, `${file}: ${processor.type} needs "cls" and "sep" as [token, id] pairs.`);
      }
      return { prefix: [cls[1]], suffix: [sep[1]] };
    }
    case 'TemplateProcessing': {
      const single = processor.single;
      const specials = isObject(processor.special_tokens) ? processor.special_tokens : {};
      if (!Array.isArray(single)) {
        throw new TokenizerLoadError(file, `${file}: TemplateProcessing needs a "single" template list.`);
      }
      const prefix: number[] = [];
      const suffix: number[] = [];
      let seenSequence = false;
      for (const piece of single) {
        if (isObject(piece) && isObject(piece.Sequence)) {
          seenSequence = true;
          continue;
        }
        const name = isObject(piece) && isObject(piece.SpecialToken) ? piece.SpecialToken.id : undefined;
        const entry = typeof name === 'string' ? specials[name] : undefined;
        if (!isObject(entry) || !Array.isArray(entry.ids) || !entry.ids.every((x) => typeof x === 'number')) {
          throw new TokenizerLoadError(
            file,
            `${file}: TemplateProcessing refers to special token ${JSON.stringify(name)} that has no ids in "special_tokens".`,
          );
        }
        (seenSequence ? suffix : prefix).push(...(entry.ids as number[]));
      }
      return { prefix, suffix };
    }
    case 'Sequence': {
      const processors = processor.processors;
      if (!Array.isArray(processors)) {
        throw new TokenizerLoadError(file, `${file}: Sequence post-processor needs a "processors" list.`);
      }
      // Each processor wraps the output of the previous one.
      let prefix: number[] = [];
      let suffix: number[] = [];
      for (const p of processors) {
        const a = specialAffixes(p, file);
        prefix = [...a.prefix, ...prefix];
        suffix = [...suffix, ...a.suffix];
      }
      return { prefix, suffix };
    }
    default:
      throw new TokenizerLoadError(
        file,
        `${file}: post_processor type "${processor.type}" is not supported (supported: ByteLevel, BertProcessing, ` +
          `RobertaProcessing, TemplateProcessing, Sequence).`,
      );
  }
}

/** The TemplateProcessing that transformers' LlamaTokenizerFast.update_post_processor builds. */
function llamaPostProcessor(
  tokenizerJson: Json,
  config: Json,
  special: Partial<Record<SpecialTokenKey, string>>,
  configFile: string,
): Json {
  const addBos = config.add_bos_token === undefined ? true : config.add_bos_token === true;
  const addEos = config.add_eos_token === true;
  const idFor = (token: string | undefined, enabled: boolean, flag: string): [string, number] | undefined => {
    if (!enabled) return undefined;
    if (token === undefined) {
      throw new TokenizerLoadError(configFile, `${configFile}: ${flag} is true but the matching special token is not set.`);
    }
    const id = lookupTokenId(tokenizerJson, token);
    if (id === undefined) {
      throw new TokenizerLoadError(
        configFile,
        `${configFile}: ${flag} is true but token ${JSON.stringify(token)} is not in tokenizer.json.`,
      );
    }
    return [token, id];
  };
  const bos = idFor(special.bos_token, addBos, 'add_bos_token');
  const eos = idFor(special.eos_token, addEos, 'add_eos_token');
  const tok = (t: [string, number], typeId: number) => ({ SpecialToken: { id: t[0], type_id: typeId } });
  const seq = (id: string, typeId: number) => ({ Sequence: { id, type_id: typeId } });
  const part = (id: string, typeId: number) => [...(bos ? [tok(bos, typeId)] : []), seq(id, typeId), ...(eos ? [tok(eos, typeId)] : [])];
  const specialTokens: Json = {};
  for (const t of [bos, eos]) if (t) specialTokens[t[0]] = { id: t[0], ids: [t[1]], tokens: [t[0]] };
  return { type: 'TemplateProcessing', single: part('A', 0), pair: [...part('A', 0), ...part('B', 1)], special_tokens: specialTokens };
}

function lookupTokenId(tokenizerJson: Json, token: string): number | undefined {
  if (Array.isArray(tokenizerJson.added_tokens)) {
    for (const t of tokenizerJson.added_tokens) {
      if (isObject(t) && t.content === token && typeof t.id === 'number') return t.id;
    }
  }
  const model = tokenizerJson.model;
  if (isObject(model) && isObject(model.vocab)) {
    const id = model.vocab[token];
    if (typeof id === 'number') return id;
  }
  if (isObject(model) && Array.isArray(model.vocab)) {
    // Unigram vocabularies are [token, score] pairs indexed by id.
    const idx = model.vocab.findIndex((e) => Array.isArray(e) && e[0] === token);
    if (idx >= 0) return idx;
  }
  return undefined;
}
