// `peft serve`: an OpenAI-compatible HTTP API over a ServeEngine, with fastify. Routes:
// POST /v1/completions, POST /v1/chat/completions (both with stream: true as server-sent events),
// GET /v1/models (the base and every adapter; a request's `model` picks one), POST /v1/adapters
// and DELETE /v1/adapters/:name (load, replace, unload while serving). Errors are OpenAI-shaped:
// { error: { message, type, param, code } } with 400 for bad requests, 404 for an unknown model,
// 409 for an adapter that does not fit the compiled sessions, 413 for a too large body, 503 when
// the queue is full, 504 on timeout.

import Fastify, { type FastifyInstance, type FastifyReply, type FastifyRequest } from 'fastify';
import type { ChatMessage } from '../io/tokenizer.js';
import { MixedBatchError } from '../tuners/multi/model.js';
import { BASE_ADAPTER, type EngineRequest, type EngineResult, QueueFullError, type ServeEngine } from './engine.js';
import { PeftError } from '../errors.js';

export interface ServerOptions {
  /** the id the base model is listed under (default: "base") */
  modelId?: string;
  /** largest max_tokens a request may ask for (default 1024) */
  maxTokensLimit?: number;
  /** max_tokens when a request gives none (default 16, as OpenAI's completions) */
  defaultMaxTokens?: number;
  /** request body bytes at most (default 1 MiB) */
  bodyLimit?: number;
  /** ms a request may take from arrival to its last token (default 300 000) */
  requestTimeoutMs?: number;
  /** a Jinja chat template instead of the tokenizer's */
  chatTemplate?: string;
  /** may POST /v1/adapters read adapter folders from disk (default true) */
  allowAdapterLoading?: boolean;
  logger?: boolean;
}

type ErrorType = 'invalid_request_error' | 'not_found_error' | 'server_error' | 'rate_limit_error' | 'timeout_error';

class HttpError extends Error {
  constructor(
    readonly status: number,
    message: string,
    readonly type: ErrorType = 'invalid_request_error',
    readonly param: string | null = null,
    readonly code: string | null = null,
  ) {
    super(message);
  }
}

const bad = (message: string, param: string | null = null): HttpError => new HttpError(400, message, 'invalid_request_error', param);

function errorBody(e: HttpError): Record<string, unknown> {
  return { error: { message: e.message, type: e.type, param: e.param, code: e.code } };
}

interface Sampling {
  maxTokens: number;
  temperature: number;
  topP: number;
  seed?: number;
  stop: string[];
}

function num(body: Record<string, unknown>, key: string, lo: number, hi: number): number | undefined {
  const v = body[key];
  if (v === undefined || v === null) return undefined;
  if (typeof v !== 'number' || !Number.isFinite(v) || v < lo || v > hi)
    throw bad(`${key} must be a number in [${lo}, ${hi}], got ${JSON.stringify(v)}`, key);
  return v;
}

export class OpenAIServer {
  readonly app: FastifyInstance;
  private readonly created = Math.floor(Date.now() / 1000);
  private readonly modelId: string;
  private readonly maxTokensLimit: number;
  private readonly defaultMaxTokens: number;
  private readonly timeoutMs: number;

  constructor(
    readonly engine: ServeEngine,
    readonly opts: ServerOptions = {},
  ) {
    this.modelId = opts.modelId ?? 'base';
    this.maxTokensLimit = opts.maxTokensLimit ?? 1024;
    this.defaultMaxTokens = opts.defaultMaxTokens ?? 16;
    this.timeoutMs = opts.requestTimeoutMs ?? 300_000;
    this.app = Fastify({ logger: opts.logger ?? false, bodyLimit: opts.bodyLimit ?? 1024 * 1024 });
    this.app.setErrorHandler((err: Error & { statusCode?: number; code?: string }, _req, reply) => {
      if (err instanceof HttpError) return reply.status(err.status).send(errorBody(err));
      if (err.code === 'FST_ERR_CTP_BODY_TOO_LARGE')
        return reply
          .status(413)
          .send(errorBody(new HttpError(413, `the request body is larger than ${opts.bodyLimit ?? 1024 * 1024} bytes`)));
      if (err.statusCode && err.statusCode >= 400 && err.statusCode < 500)
        return reply.status(err.statusCode === 415 ? 415 : 400).send(errorBody(bad(err.message)));
      return reply.status(500).send(errorBody(new HttpError(500, err.message, 'server_error')));
    });
    this.app.setNotFoundHandler((req, reply) =>
      reply.status(404).send(errorBody(new HttpError(404, `no route ${req.method} ${req.url}`, 'not_found_error'))),
    );
    this.routes();
  }

  async listen(port: number, host = '127.0.0.1'): Promise<string> {
    return this.app.listen({ port, host });
  }

  async close(): Promise<void> {
    await this.app.close();
  }

  private routes(): void {
    const app = this.app;
    app.get('/v1/models', async () => ({
      object: 'list',
      data: [this.modelId, ...this.engine.model.adapterNames].map((id) => ({
        id,
        object: 'model',
        created: this.created,
        owned_by: 'peft-ts',
        ...(id === this.modelId ? {} : { parent: this.modelId }),
      })),
    }));
    app.get('/health', async () => ({ status: 'ok', ...this.engine.stats() }));
    app.post('/v1/completions', (req, reply) => this.completion(req, reply, 'text'));
    app.post('/v1/chat/completions', (req, reply) => this.completion(req, reply, 'chat'));
    app.post('/v1/adapters', async (req, reply) => {
      if (this.opts.allowAdapterLoading === false)
        throw new HttpError(403, 'this server does not load adapters at run time (started with --no-adapter-loading)');
      const body = this.body(req);
      const name = body.name;
      const path = body.path ?? body.adapter_path;
      if (typeof name !== 'string' || !name) throw bad('name must be a non-empty string', 'name');
      if (typeof path !== 'string' || !path) throw bad('path must be the adapter folder on the server', 'path');
      if (name === this.modelId) throw bad(`"${name}" is the base model's id; pick another adapter name`, 'name');
      const replace = body.replace === true;
      if (this.engine.model.hasAdapter(name) && !replace)
        throw new HttpError(409, `an adapter named "${name}" is loaded; send "replace": true to swap it`, 'invalid_request_error', 'name');
      try {
        await this.engine.model.loadAdapter(name, path, { replace });
      } catch (e) {
        if (e instanceof MixedBatchError && /compiled sessions/.test(e.message))
          throw new HttpError(409, e.message, 'invalid_request_error', 'path');
        if (e instanceof PeftError) throw bad(e.message, 'path');
        throw e;
      }
      return reply
        .status(replace ? 200 : 201)
        .send({ id: name, object: 'model', created: Math.floor(Date.now() / 1000), owned_by: 'peft-ts', parent: this.modelId });
    });
    app.delete('/v1/adapters/:name', async (req) => {
      const name = (req.params as { name: string }).name;
      if (!this.engine.model.hasAdapter(name)) throw new HttpError(404, `no adapter named "${name}" is loaded`, 'not_found_error', 'name');
      this.engine.model.unloadAdapter(name);
      return { id: name, object: 'model', deleted: true };
    });
  }

  private body(req: FastifyRequest): Record<string, unknown> {
    const b = req.body;
    if (typeof b !== 'object' || b === null || Array.isArray(b)) throw bad('the request body must be a JSON object');
    return b as Record<string, unknown>;
  }

  private adapterFor(model: unknown): string {
    if (typeof model !== 'string' || !model) throw bad('model must be the base model id or an adapter name (GET /v1/models)', 'model');
    if (model === this.modelId || model === BASE_ADAPTER) return BASE_ADAPTER;
    if (this.engine.model.hasAdapter(model)) return model;
    throw new HttpError(
      404,
      `the model "${model}" does not exist; models: ${[this.modelId, ...this.engine.model.adapterNames].join(', ')}`,
      'not_found_error',
      'model',
      'model_not_found',
    );
  }

  private sampling(body: Record<string, unknown>, promptTokens: number): Sampling {
    const maxTokens =
      num(body, 'max_completion_tokens', 1, this.maxTokensLimit) ??
      num(body, 'max_tokens', 1, this.maxTokensLimit) ??
      this.defaultMaxTokens;
    if (!Number.isInteger(maxTokens)) throw bad(`max_tokens must be an integer, got ${maxTokens}`, 'max_tokens');
    const temperature = num(body, 'temperature', 0, 2) ?? 1;
    const topP = num(body, 'top_p', 0, 1) ?? 1;
    if (topP === 0) throw bad('top_p must be in (0, 1]', 'top_p');
    const seed = num(body, 'seed', -(2 ** 53), 2 ** 53);
    if (seed !== undefined && !Number.isInteger(seed)) throw bad('seed must be an integer', 'seed');
    const n = num(body, 'n', 1, 1);
    void n;
    let stop: string[] = [];
    if (typeof body.stop === 'string') stop = [body.stop];
    else if (Array.isArray(body.stop)) stop = body.stop as string[];
    else if (body.stop !== undefined && body.stop !== null) throw bad('stop must be a string or a list of up to 4 strings', 'stop');
    if (stop.length > 4 || stop.some((s) => typeof s !== 'string' || s.length === 0))
      throw bad('stop must be a string or a list of up to 4 non-empty strings', 'stop');
    const positions = this.engine.model.base.config.maxPositionEmbeddings;
    if (promptTokens + maxTokens > positions) {
      throw bad(
        `the prompt (${promptTokens} tokens) plus max_tokens (${maxTokens}) exceeds the model's ${positions} positions; shorten the prompt or lower max_tokens`,
        'max_tokens',
      );
    }
    return { maxTokens, temperature, topP, seed: seed === undefined ? undefined : seed >>> 0, stop };
  }

  private promptIds(body: Record<string, unknown>, kind: 'text' | 'chat'): number[] {
    const tok = this.engine.tokenizer;
    if (kind === 'chat') {
      const messages = body.messages;
      if (!Array.isArray(messages) || messages.length === 0) throw bad('messages must be a non-empty list of {role, content}', 'messages');
      for (const m of messages) {
        if (typeof m !== 'object' || m === null || typeof (m as ChatMessage).role !== 'string')
          throw bad('every message needs a role and a content', 'messages');
        const c = (m as ChatMessage).content;
        if (
          typeof c !== 'string' &&
          !(
            Array.isArray(c) &&
            c.every(
              (p) =>
                typeof p === 'object' &&
                p &&
                (p as { type?: unknown }).type === 'text' &&
                typeof (p as { text?: unknown }).text === 'string',
            )
          )
        ) {
          throw bad('message content must be a string or a list of {type: "text", text} parts', 'messages');
        }
      }
      const flat = (messages as ChatMessage[]).map((m) => ({
        ...m,
        content: typeof m.content === 'string' ? m.content : (m.content as { text: string }[]).map((p) => p.text).join(''),
      }));
      let text: string;
      try {
        text = tok.applyChatTemplate(flat, { addGenerationPrompt: true, chatTemplate: this.opts.chatTemplate });
      } catch (e) {
        if (e instanceof PeftError)
          throw bad(
            `${e.message}${(e as Error).name === 'MissingChatTemplateError' ? '; start the server with --chat-template FILE, or use /v1/completions' : ''}`,
            'messages',
          );
        throw e;
      }
      return tok.encode(text, { addSpecialTokens: false });
    }
    let p = body.prompt;
    if (Array.isArray(p) && p.length === 1 && typeof p[0] === 'string') p = p[0];
    if (typeof p === 'string') {
      if (p.length === 0) throw bad('prompt is empty', 'prompt');
      return tok.encode(p);
    }
    if (Array.isArray(p) && p.length > 0 && p.every((x) => Number.isInteger(x))) {
      const ids = p as number[];
      const bad_ = ids.find((x) => x < 0 || x >= this.engine.vocabSize);
      if (bad_ !== undefined) throw bad(`token id ${bad_} is outside the vocabulary [0, ${this.engine.vocabSize})`, 'prompt');
      return ids;
    }
    throw bad(
      'prompt must be a non-empty string (or one list of token ids); batches of prompts are not supported, send one request each',
      'prompt',
    );
  }

  private async completion(req: FastifyRequest, reply: FastifyReply, kind: 'text' | 'chat'): Promise<unknown> {
    const body = this.body(req);
    const adapter = this.adapterFor(body.model);
    const ids = this.promptIds(body, kind);
    const s = this.sampling(body, ids.length);
    const stream = body.stream === true;
    if (body.stream !== undefined && typeof body.stream !== 'boolean') throw bad('stream must be true or false', 'stream');
    const includeUsage =
      stream &&
      typeof body.stream_options === 'object' &&
      body.stream_options !== null &&
      (body.stream_options as { include_usage?: unknown }).include_usage === true;
    const id = `${kind === 'chat' ? 'chatcmpl' : 'cmpl'}-${globalThis.crypto.randomUUID()}`;
    const created = Math.floor(Date.now() / 1000);
    const model = body.model as string;
    const abort = new AbortController();
    // A client that goes away frees its row at the next step.
    reply.raw.on('close', () => {
      if (!reply.raw.writableFinished) abort.abort();
    });
    const request: EngineRequest = {
      promptIds: ids,
      adapter,
      maxTokens: s.maxTokens,
      temperature: s.temperature,
      topP: s.topP,
      seed: s.seed,
      stop: s.stop,
      signal: abort.signal,
      deadline: Date.now() + this.timeoutMs,
    };
    const usage = (r: EngineResult) => ({
      prompt_tokens: r.promptTokens,
      completion_tokens: r.tokenIds.length,
      total_tokens: r.promptTokens + r.tokenIds.length,
    });
    const finish = (r: EngineResult) => (r.finishReason === 'length' ? 'length' : 'stop');
    if (!stream) {
      const r = await this.submit(request);
      if (r.finishReason === 'timeout') throw new HttpError(504, `the request took longer than ${this.timeoutMs} ms`, 'timeout_error');
      if (r.finishReason === 'cancelled') return reply;
      const choice =
        kind === 'chat'
          ? { index: 0, message: { role: 'assistant', content: r.text }, logprobs: null, finish_reason: finish(r) }
          : { index: 0, text: r.text, logprobs: null, finish_reason: finish(r) };
      return { id, object: kind === 'chat' ? 'chat.completion' : 'text_completion', created, model, choices: [choice], usage: usage(r) };
    }
    // Server-sent events: one chunk per piece of final text, then the finish chunk and [DONE].
    const chunk = (delta: string | null, finishReason: string | null): Record<string, unknown> =>
      kind === 'chat'
        ? {
            id,
            object: 'chat.completion.chunk',
            created,
            model,
            choices: [{ index: 0, delta: delta === null ? {} : { content: delta }, logprobs: null, finish_reason: finishReason }],
          }
        : {
            id,
            object: 'text_completion',
            created,
            model,
            choices: [{ index: 0, text: delta ?? '', logprobs: null, finish_reason: finishReason }],
          };
    const raw = reply.raw;
    const send = (data: unknown) => {
      if (!raw.destroyed) raw.write(`data: ${typeof data === 'string' ? data : JSON.stringify(data)}\n\n`);
    };
    let started = false;
    const start = () => {
      if (started) return;
      started = true;
      reply.hijack();
      raw.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache', connection: 'keep-alive' });
      if (kind === 'chat')
        send({
          id,
          object: 'chat.completion.chunk',
          created,
          model,
          choices: [{ index: 0, delta: { role: 'assistant', content: '' }, logprobs: null, finish_reason: null }],
        });
    };
    request.onText = (t) => {
      start();
      send(chunk(t, null));
    };
    let r: EngineResult;
    try {
      // Queue errors (503) come back before any byte is written, as JSON.
      const pending = this.submit(request);
      start();
      r = await pending;
    } catch (e) {
      if (!started) throw e;
      const he = e instanceof HttpError ? e : new HttpError(500, (e as Error).message, 'server_error');
      send(errorBody(he));
      raw.end();
      return reply;
    }
    if (r.finishReason === 'timeout')
      send(errorBody(new HttpError(504, `the request took longer than ${this.timeoutMs} ms`, 'timeout_error')));
    else if (r.finishReason !== 'cancelled') {
      send(chunk(null, finish(r)));
      if (includeUsage)
        send({ id, object: kind === 'chat' ? 'chat.completion.chunk' : 'text_completion', created, model, choices: [], usage: usage(r) });
    }
    send('[DONE]');
    raw.end();
    return reply;
  }

  /** Throws at once (before any byte of a stream is written) when the request cannot be queued. */
  private submit(req: EngineRequest): Promise<EngineResult> {
    try {
      return this.engine.submit(req);
    } catch (e) {
      if (e instanceof QueueFullError) throw new HttpError(503, e.message, 'server_error', null, 'server_overloaded');
      if (e instanceof PeftError) throw bad(e.message);
      throw e;
    }
  }
}
