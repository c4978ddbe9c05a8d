// Generation settings: the defaults a model folder ships (generation_config.json, else config.json,
// as transformers' GenerationConfig.from_model_config), the options a caller passes, and their
// resolution into one checked plan. Bad values are GenerationErrors that say what to change.

import { readFile, join } from '../storage/index.js';
import type { ModelConfig } from '../io/hfconfig.js';
import type { SamplingParams } from './sampling.js';
import { PeftError } from '../errors.js';

export class GenerationError extends PeftError {
  constructor(message: string) {
    super(message);
    this.name = 'GenerationError';
  }
}

/** What generation_config.json (or config.json) says, in our names. */
export interface GenerationDefaults {
  eosTokenIds: number[];
  padTokenId?: number;
  bosTokenId?: number;
  doSample: boolean;
  temperature: number;
  topK: number;
  topP: number;
  maxNewTokens?: number;
}

/** A streamed piece of one row's output. */
export interface TokenEvent {
  /** which prompt (index into the prompts given) */
  row: number;
  tokenId: number;
  /** text that became final with this token ('' while a multi-byte character or a possible stop string is incomplete) */
  text: string;
  /** index of this token among the row's new tokens */
  step: number;
}

export interface GenerateOptions {
  /** how many tokens to generate at most per prompt; default generation_config's max_new_tokens, else 20 */
  maxNewTokens?: number;
  /** sample instead of taking the argmax; default: true when temperature, topK or topP is given, else generation_config's do_sample */
  doSample?: boolean;
  /** > 0; 0 means greedy */
  temperature?: number;
  /** keep the k most likely tokens (0: off); default generation_config's top_k, else 50 as transformers */
  topK?: number;
  /** nucleus sampling: keep the most likely tokens up to probability p (1: off) */
  topP?: number;
  /** seed of the sampling generator; the same seed gives the same tokens; default 0 */
  seed?: number;
  /** tokens that end a row (kept in its output); default the eos ids of generation_config.json / config.json; [] never stops on a token */
  stopTokenIds?: number[];
  /** strings that end a row once its generated text contains one; the returned text stops before it */
  stopStrings?: string[];
  /** what finished rows emit while others go on; default generation_config's pad, else the first eos id */
  padTokenId?: number;
  /** add the tokenizer's special tokens (e.g. BOS) when encoding text prompts; default true */
  addSpecialTokens?: boolean;
  /** a mixed-adapter model (MultiAdapterModel): one adapter name per prompt, "__base__" for none (peft's adapter_names) */
  adapters?: readonly string[];
  /** called for every new token of every unfinished row, in row order, as soon as it is chosen */
  onToken?: (event: TokenEvent) => void;
}

export interface GenerationPlan {
  maxNewTokens: number;
  doSample: boolean;
  sampling: SamplingParams;
  seed: number;
  stopTokenIds: Set<number>;
  stopStrings: string[];
  padTokenId: number;
}

function asIds(v: unknown): number[] {
  if (typeof v === 'number' && Number.isInteger(v)) return [v];
  if (Array.isArray(v)) return v.filter((x): x is number => typeof x === 'number' && Number.isInteger(x));
  return [];
}
function num(v: unknown): number | undefined {
  return typeof v === 'number' && Number.isFinite(v) ? v : undefined;
}

/** Reads `<dir>/generation_config.json` when present, falling back to config.json's token ids. */
export async function loadGenerationDefaults(dir: string, config: ModelConfig): Promise<GenerationDefaults> {
  const file = join(dir, 'generation_config.json');
  let raw: Record<string, unknown> = {};
  let text: string | undefined;
  try {
    text = await readFile(file, 'utf8');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw new GenerationError(`cannot read ${file}: ${(e as Error).message}`);
  }
  if (text !== undefined) {
    try {
      const parsed: unknown = JSON.parse(text);
      if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) throw new Error('not a JSON object');
      raw = parsed as Record<string, unknown>;
    } catch (e) {
      throw new GenerationError(
        `${file} is not a valid JSON object (${(e as Error).message}); fix or delete the file to use config.json's token ids`,
      );
    }
  }
  return defaultsFrom(raw, config);
}

export function defaultsFrom(raw: Record<string, unknown>, config: ModelConfig): GenerationDefaults {
  const eos = 'eos_token_id' in raw ? asIds(raw.eos_token_id) : asIds(config.eosTokenId);
  const pad = 'pad_token_id' in raw ? num(raw.pad_token_id) : config.padTokenId;
  const bos = 'bos_token_id' in raw ? num(raw.bos_token_id) : asIds(config.bosTokenId)[0];
  return {
    eosTokenIds: eos,
    padTokenId: pad,
    bosTokenId: bos,
    doSample: raw.do_sample === true,
    temperature: num(raw.temperature) ?? 1,
    topK: num(raw.top_k) ?? 50,
    topP: num(raw.top_p) ?? 1,
    maxNewTokens: num(raw.max_new_tokens),
  };
}

/** Merges caller options over the model's defaults and checks every value. */
export function resolvePlan(opts: GenerateOptions, d: GenerationDefaults, vocabSize: number): GenerationPlan {
  const maxNewTokens = opts.maxNewTokens ?? d.maxNewTokens ?? 20;
  if (!Number.isInteger(maxNewTokens) || maxNewTokens < 1)
    throw new GenerationError(`maxNewTokens must be a positive integer, got ${maxNewTokens}`);
  const explicitSampling = opts.temperature !== undefined || opts.topK !== undefined || opts.topP !== undefined;
  let doSample = opts.doSample ?? (explicitSampling ? true : d.doSample);
  // As transformers: what the caller leaves out comes from generation_config.json, whose own
  // defaults are temperature 1, top_k 50, top_p 1.
  const temperature = opts.temperature ?? d.temperature;
  const topK = opts.topK ?? d.topK;
  const topP = opts.topP ?? d.topP;
  if (!(temperature >= 0) || !Number.isFinite(temperature))
    throw new GenerationError(`temperature must be a number >= 0, got ${temperature}`);
  if (!Number.isInteger(topK) || topK < 0) throw new GenerationError(`topK must be an integer >= 0 (0 turns it off), got ${topK}`);
  if (!(topP > 0 && topP <= 1)) throw new GenerationError(`topP must be in (0, 1], got ${topP}`);
  if (temperature === 0) doSample = false;
  const seed = opts.seed ?? 0;
  if (!Number.isInteger(seed)) throw new GenerationError(`seed must be an integer, got ${seed}`);
  const stopTokenIds = opts.stopTokenIds ?? d.eosTokenIds;
  for (const id of stopTokenIds) {
    if (!Number.isInteger(id) || id < 0 || id >= vocabSize)
      throw new GenerationError(`stop token id ${id} is outside the vocabulary [0, ${vocabSize})`);
  }
  const stopStrings = opts.stopStrings ?? [];
  if (stopStrings.some((s) => typeof s !== 'string' || s.length === 0)) throw new GenerationError('stop strings must be non-empty strings');
  const padTokenId = opts.padTokenId ?? d.padTokenId ?? stopTokenIds[0] ?? d.eosTokenIds[0] ?? 0;
  if (!Number.isInteger(padTokenId) || padTokenId < 0 || padTokenId >= vocabSize) {
    throw new GenerationError(`pad token id ${padTokenId} is outside the vocabulary [0, ${vocabSize}); pass padTokenId`);
  }
  return {
    maxNewTokens,
    doSample,
    sampling: { temperature: doSample ? temperature : 1, topK, topP },
    seed,
    stopTokenIds: new Set(stopTokenIds),
    stopStrings,
    padTokenId,
  };
}
