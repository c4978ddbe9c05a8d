// `peft eval`'s library half: score a model (base or adapted) on the user's own jsonl rows with a
// task metric and a 95% confidence interval. Generation metrics (exact, contains, accuracy, json)
// decode greedily in batches with the KV cache (Generator) and compare each output with the row's
// reference; perplexity runs one forward pass per row with the loss over the reference tokens;
// preference scores {"prompt","chosen","rejected"} rows: the share of rows whose chosen completion
// has the higher summed log-likelihood (one forward pass per side).

import { Generator, ForwardSession, type InferenceModel } from '../generate/index.js';
import type { ChatMessage, Tokenizer } from '../io/tokenizer.js';
import type { RuntimeOptions, HostTensor } from '../runtime/session.js';
import type { JsonlRecord, TokenizedExample } from '../train/data.js';
import { IGNORE_INDEX, tokenizeRecords } from '../train/data.js';
import { DatasetError } from '../train/errors.js';
import { labelOf, normalizeAnswer } from './metrics.js';
import { TaskError } from './tasks.js';
import { mulberry32 } from '../nn/random.js';

export const EVAL_METRICS = ['exact', 'contains', 'accuracy', 'json', 'perplexity', 'preference'] as const;
export type EvalMetric = (typeof EVAL_METRICS)[number];
/** The metrics decided by greedy generation. */
export type GenerationMetric = Exclude<EvalMetric, 'perplexity' | 'preference'>;
export const GENERATION_METRICS = EVAL_METRICS.filter((m): m is GenerationMetric => m !== 'perplexity' && m !== 'preference');

/** One row to score: what the model is given and what it should produce. */
export interface EvalRow {
  /** 1-based line in the jsonl file */
  line: number;
  prompt: string;
  /** the expected output (preference: the chosen completion) */
  reference: string;
  /** preference: the rejected completion */
  rejected?: string;
}

export interface EvalKeys {
  promptKey?: string;
  completionKey?: string;
  messagesKey?: string;
}

export interface EvalOptions {
  metric: EvalMetric;
  /** rows per generation batch (default 16) */
  batchSize?: number;
  /** new tokens per row (default: the longest reference's token count + 4, at most 512) */
  maxNewTokens?: number;
  /** strings that end a generation (default: none; the EOS token always ends it) */
  stopStrings?: string[];
  runtime?: RuntimeOptions;
  /** seed of the bootstrap resampling behind the perplexity interval (default 0) */
  seed?: number;
  onProgress?: (done: number, total: number) => void;
}

export interface EvalRowResult {
  line: number;
  prompt: string;
  reference: string;
  /** generation metrics: the decoded output */
  prediction?: string;
  /** generation metrics: whether the output counts as correct */
  correct?: boolean;
  /** perplexity: summed negative log-likelihood of the reference tokens (nats) */
  nll?: number;
  /** perplexity: how many reference tokens were scored */
  tokens?: number;
  /** preference: the rejected completion, and the summed log-likelihood of each side given the prompt */
  rejected?: string;
  logp_chosen?: number;
  logp_rejected?: number;
}

export interface EvalReport {
  metric: EvalMetric;
  rows: number;
  /** generation metrics: share correct in [0, 1]; perplexity: exp(total nll / total tokens) */
  score: number;
  /** 95% interval of `score`: Wilson score interval (proportions) or a seeded bootstrap over rows (perplexity) */
  ci95: [number, number];
  /** generation metrics: rows counted correct */
  correct?: number;
  /** perplexity: reference tokens scored */
  tokens?: number;
  results: EvalRowResult[];
  seconds: number;
}

/**
 * The rows of a jsonl file for a metric: {"prompt","completion"} rows (field names overridable),
 * {"messages"} conversations (the last assistant turn is the reference, everything before it the
 * prompt, rendered with the chat template and its generation prompt), or, for perplexity only,
 * {"text"} rows (the whole text is scored).
 */
export function evalRows(
  records: readonly JsonlRecord[],
  tokenizer: Tokenizer,
  metric: EvalMetric,
  keys: EvalKeys = {},
  file?: string,
): EvalRow[] {
  const pk = keys.promptKey ?? 'prompt';
  const ck = keys.completionKey ?? 'completion';
  const mk = keys.messagesKey ?? 'messages';
  if (records.length === 0) throw new DatasetError('the dataset is empty', { file });
  if (metric === 'preference') {
    return records.map((r) => {
      for (const k of [pk, 'chosen', 'rejected']) {
        const x = r.value[k];
        if (typeof x !== 'string')
          throw new DatasetError(
            `field "${k}" must be a string, found ${x === undefined ? 'nothing' : x === null ? 'null' : typeof x}; --metric preference scores {"${pk}","chosen","rejected"} rows`,
            { file, line: r.line },
          );
      }
      return { line: r.line, prompt: r.value[pk] as string, reference: r.value.chosen as string, rejected: r.value.rejected as string };
    });
  }
  return records.map((r) => {
    const v = r.value;
    if (mk in v) return conversationRow(r, v[mk], tokenizer, mk, file);
    if (pk in v || ck in v) {
      for (const k of [pk, ck]) {
        if (typeof v[k] !== 'string') {
          throw new DatasetError(
            `field "${k}" must be a string, found ${v[k] === undefined ? 'nothing' : v[k] === null ? 'null' : typeof v[k]}`,
            { file, line: r.line },
          );
        }
      }
      return { line: r.line, prompt: v[pk] as string, reference: v[ck] as string };
    }
    if (metric === 'perplexity' && typeof v.text === 'string') return { line: r.line, prompt: '', reference: v.text };
    const keysFound =
      Object.keys(v)
        .map((k) => `"${k}"`)
        .join(', ') || '(none)';
    throw new DatasetError(
      `no "${pk}"/"${ck}" pair or "${mk}" list in this row (fields: ${keysFound}); ` +
        `name the fields with --prompt-key/--completion-key/--messages-key${metric === 'perplexity' ? ' or give {"text": ...} rows' : ''}`,
      { file, line: r.line },
    );
  });
}

function conversationRow(r: JsonlRecord, raw: unknown, tokenizer: Tokenizer, key: string, file?: string): EvalRow {
  if (!Array.isArray(raw) || raw.length === 0)
    throw new DatasetError(`field "${key}" must be a non-empty array of {"role", "content"} objects`, { file, line: r.line });
  const messages = raw as ChatMessage[];
  messages.forEach((m, i) => {
    if (typeof m !== 'object' || m === null || typeof m.role !== 'string' || typeof m.content !== 'string') {
      throw new DatasetError(`${key}[${i}] must be an object with string "role" and "content"`, { file, line: r.line });
    }
  });
  const last = messages.length - 1;
  if (messages[last]!.role !== 'assistant')
    throw new DatasetError(`the last message must be the assistant's answer to score, found role "${messages[last]!.role}"`, {
      file,
      line: r.line,
    });
  if (tokenizer.chatTemplate === undefined)
    throw new DatasetError(`conversations need a chat template, and the tokenizer in ${tokenizer.dir} has none`, { file, line: r.line });
  let prompt: string;
  try {
    prompt = tokenizer.applyChatTemplate(messages.slice(0, last), { addGenerationPrompt: true });
  } catch (e) {
    throw new DatasetError(`the chat template cannot render this conversation: ${(e as Error).message}`, { file, line: r.line });
  }
  return { line: r.line, prompt, reference: String(messages[last]!.content) };
}

/** Whether a generated output counts as the reference under a generation metric. */
export function isMatch(metric: GenerationMetric, prediction: string, reference: string, labels: readonly string[] = []): boolean {
  switch (metric) {
    case 'exact':
      return normalizeAnswer(prediction) === normalizeAnswer(reference);
    case 'contains': {
      const want = normalizeAnswer(reference);
      return want.length > 0 && prediction.includes(want);
    }
    case 'accuracy': {
      const want = labelOf(reference, labels);
      return want !== undefined && labelOf(prediction, labels) === want;
    }
    case 'json': {
      const p = parseJson(normalizeAnswer(prediction));
      const r = parseJson(normalizeAnswer(reference));
      return p.ok && r.ok && jsonEqual(p.value, r.value);
    }
  }
}

function parseJson(s: string): { ok: true; value: unknown } | { ok: false } {
  try {
    return { ok: true, value: JSON.parse(s) };
  } catch {
    return { ok: false };
  }
}

/** Deep equality of parsed JSON values; object key order does not matter. */
export function jsonEqual(a: unknown, b: unknown): boolean {
  if (a === b) return true;
  if (typeof a !== 'object' || typeof b !== 'object' || a === null || b === null) return false;
  if (Array.isArray(a) !== Array.isArray(b)) return false;
  if (Array.isArray(a)) {
    const bb = b as unknown[];
    return a.length === bb.length && a.every((x, i) => jsonEqual(x, bb[i]));
  }
  const ka = Object.keys(a).sort();
  const kb = Object.keys(b).sort();
  return (
    ka.length === kb.length &&
    ka.every((k, i) => k === kb[i] && jsonEqual((a as Record<string, unknown>)[k], (b as Record<string, unknown>)[k]))
  );
}

/** The label words of a classification set: the distinct first words of the references. */
export function labelWords(rows: readonly EvalRow[]): string[] {
  const words = new Set<string>();
  for (const r of rows) {
    const m = /^\s*([\p{L}\p{N}_-]+)/u.exec(r.reference);
    if (m) words.add(m[1]!.toLowerCase());
  }
  return [...words];
}

/** Wilson score interval for k successes in n trials (z = 1.96: 95%). */
export function wilsonInterval(k: number, n: number, z = 1.96): [number, number] {
  if (n === 0) return [0, 1];
  const p = k / n;
  const z2 = z * z;
  const centre = (p + z2 / (2 * n)) / (1 + z2 / n);
  const half = (z * Math.sqrt((p * (1 - p)) / n + z2 / (4 * n * n))) / (1 + z2 / n);
  return [Math.max(0, centre - half), Math.min(1, centre + half)];
}

/** Percentile bootstrap (rows resampled with replacement, seeded) of exp(sum nll / sum tokens). */
export function perplexityInterval(nll: readonly number[], tokens: readonly number[], seed = 0, resamples = 1000): [number, number] {
  const n = nll.length;
  if (n === 0) return [Number.NaN, Number.NaN];
  const next = mulberry32(seed);
  const stats = new Float64Array(resamples);
  for (let b = 0; b < resamples; b++) {
    let sn = 0;
    let st = 0;
    for (let i = 0; i < n; i++) {
      const j = Math.floor(next() * n);
      sn += nll[j]!;
      st += tokens[j]!;
    }
    stats[b] = st > 0 ? Math.exp(sn / st) : Number.NaN;
  }
  stats.sort();
  return [stats[Math.floor(0.025 * (resamples - 1))]!, stats[Math.ceil(0.975 * (resamples - 1))]!];
}

export async function evaluateRows(
  model: InferenceModel,
  tokenizer: Tokenizer,
  rows: readonly EvalRow[],
  opts: EvalOptions,
): Promise<EvalReport> {
  if (rows.length === 0) throw new TaskError('no rows to evaluate');
  const t0 = performance.now();
  if (opts.metric === 'perplexity')
    return { ...(await scorePerplexity(model, tokenizer, rows, opts)), seconds: (performance.now() - t0) / 1000 };
  if (opts.metric === 'preference')
    return { ...(await scorePreference(model, tokenizer, rows, opts)), seconds: (performance.now() - t0) / 1000 };
  const metric = opts.metric;
  const batchSize = opts.batchSize ?? 16;
  if (!Number.isInteger(batchSize) || batchSize < 1) throw new TaskError(`batch size must be a positive integer, got ${batchSize}`);
  const longest = Math.max(...rows.map((r) => tokenizer.encode(r.reference, { addSpecialTokens: false }).length));
  const maxNewTokens = opts.maxNewTokens ?? Math.min(512, longest + 4);
  const labels = metric === 'accuracy' ? labelWords(rows) : [];
  const results: EvalRowResult[] = [];
  const generator = await Generator.create(model, { tokenizer, runtime: opts.runtime });
  try {
    for (let s = 0; s < rows.length; s += batchSize) {
      const batch = rows.slice(s, s + batchSize);
      const out = await generator.generate(
        batch.map((r) => r.prompt),
        { maxNewTokens, doSample: false, stopStrings: opts.stopStrings ?? [] },
      );
      batch.forEach((r, i) => {
        const prediction = out.sequences[i]!.text ?? '';
        results.push({
          line: r.line,
          prompt: r.prompt,
          reference: r.reference,
          prediction,
          correct: isMatch(metric, prediction, r.reference, labels),
        });
      });
      opts.onProgress?.(results.length, rows.length);
    }
  } finally {
    await generator.dispose();
  }
  const correct = results.filter((r) => r.correct).length;
  return {
    metric,
    rows: results.length,
    score: correct / results.length,
    ci95: wilsonInterval(correct, results.length),
    correct,
    results,
    seconds: (performance.now() - t0) / 1000,
  };
}

async function scorePerplexity(
  model: InferenceModel,
  tokenizer: Tokenizer,
  rows: readonly EvalRow[],
  opts: EvalOptions,
): Promise<Omit<EvalReport, 'seconds'>> {
  // prompt/completion records tokenized as training sees them: labels on the reference (and EOS) only
  const records: JsonlRecord[] = rows.map((r) => ({
    line: r.line,
    value: r.prompt === '' ? { text: r.reference } : { prompt: r.prompt, completion: r.reference },
  }));
  const hasText = rows.some((r) => r.prompt === '');
  const hasPrompt = rows.some((r) => r.prompt !== '');
  if (hasText && hasPrompt) throw new DatasetError('mix of {"text"} and prompt/completion rows; use one kind per file for perplexity');
  const { examples } = tokenizeRecords(records, tokenizer);
  const session = await ForwardSession.create(model, { loss: true, runtime: opts.runtime });
  const results: EvalRowResult[] = [];
  try {
    for (const [i, ex] of examples.entries()) {
      const row = rows[i]!;
      const { nll, tokens } = await referenceNll(session, ex, row.line);
      results.push({ line: row.line, prompt: row.prompt, reference: row.reference, nll, tokens });
      opts.onProgress?.(results.length, rows.length);
    }
  } finally {
    await session.dispose();
  }
  const nll = results.map((r) => r.nll!);
  const tokens = results.map((r) => r.tokens!);
  const total = tokens.reduce((a, b) => a + b, 0);
  return {
    metric: 'perplexity',
    rows: results.length,
    score: Math.exp(nll.reduce((a, b) => a + b, 0) / total),
    ci95: perplexityInterval(nll, tokens, opts.seed ?? 0),
    tokens: total,
    results,
  };
}

/** The summed negative log-likelihood of an example's labelled tokens (a causal LM predicts token t from t-1), and how many there are. */
async function referenceNll(session: ForwardSession, ex: TokenizedExample, line: number): Promise<{ nll: number; tokens: number }> {
  const T = ex.inputIds.length;
  let tokens = 0;
  for (let t = 1; t < T; t++) if (ex.labels[t] !== IGNORE_INDEX) tokens++;
  if (tokens === 0) throw new DatasetError('nothing to score in this row: its reference is empty', { line });
  const ids = (xs: number[]): HostTensor => ({ dtype: 'int64', shape: [1, T], data: BigInt64Array.from(xs, (x) => BigInt(x)) });
  const out = await session.run({ inputIds: ids(ex.inputIds), attentionMask: ids(ex.inputIds.map(() => 1)), labels: ids(ex.labels) });
  return { nll: out.loss! * tokens, tokens };
}

/**
 * Preference accuracy: a row is correct when its chosen completion is more likely than its
 * rejected one given the prompt (summed log-probs of each side's tokens and EOS, tokenized as
 * training tokenizes them; a tie is wrong), as the trainer's eval_accuracy for DPO/ORPO.
 */
async function scorePreference(
  model: InferenceModel,
  tokenizer: Tokenizer,
  rows: readonly EvalRow[],
  opts: EvalOptions,
): Promise<Omit<EvalReport, 'seconds'>> {
  const side = (k: 'reference' | 'rejected') =>
    tokenizeRecords(
      rows.map((r) => ({ line: r.line, value: { prompt: r.prompt, completion: r[k] ?? '' } })),
      tokenizer,
    ).examples;
  const chosen = side('reference');
  const rejected = side('rejected');
  const session = await ForwardSession.create(model, { loss: true, runtime: opts.runtime });
  const results: EvalRowResult[] = [];
  try {
    for (const [i, row] of rows.entries()) {
      const c = await referenceNll(session, chosen[i]!, row.line);
      const r = await referenceNll(session, rejected[i]!, row.line);
      results.push({
        line: row.line,
        prompt: row.prompt,
        reference: row.reference,
        rejected: row.rejected,
        logp_chosen: -c.nll,
        logp_rejected: -r.nll,
        correct: -c.nll > -r.nll,
      });
      opts.onProgress?.(results.length, rows.length);
    }
  } finally {
    await session.dispose();
  }
  const correct = results.filter((r) => r.correct).length;
  return {
    metric: 'preference',
    rows: results.length,
    score: correct / results.length,
    ci95: wilsonInterval(correct, results.length),
    correct,
    results,
  };
}

/** "exact 62.0% (31/50, 95% CI 48.2-74.1%)" or "perplexity 12.31 (1480 tokens, 95% CI 11.02-13.90)" */
export function formatReport(r: Pick<EvalReport, 'metric' | 'score' | 'ci95' | 'correct' | 'rows' | 'tokens'>): string {
  if (r.metric === 'perplexity')
    return `perplexity ${r.score.toFixed(2)} (${r.tokens} tokens in ${r.rows} rows, 95% CI ${r.ci95[0].toFixed(2)}-${r.ci95[1].toFixed(2)})`;
  const pct = (x: number): string => (100 * x).toFixed(1);
  return `${r.metric} ${pct(r.score)}% (${r.correct}/${r.rows}, 95% CI ${pct(r.ci95[0])}-${pct(r.ci95[1])}%)`;
}
