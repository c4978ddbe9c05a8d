// The two compiled sessions behind cached decoding: "prefill" runs the prompt and returns every
// layer's keys/values; "decode" reads the cache (symbolic 'past' length) as zero-copy views of the
// KVCache's JavaScript buffers and returns only the new positions' keys/values, which the KVCache
// appends in place: the cache is never copied out of ONNX Runtime and back per token. Both take
// and give keys/values position-major, [positions, batch, kvHeads, headDim] (see kvcache.ts), and
// Transpose to the models' [batch, kvHeads, positions, headDim] in the graph. Both slice the last
// position's logits in the graph.

import { Graph, type Value } from '../graph/ir.js';
import * as o from '../graph/ops.js';
import type { KV } from '../models/types.js';
import type * as ort from 'onnxruntime-node';
import { RuntimeSession, toOrtTensor, type HostTensor, type RuntimeOptions, type SessionMemoryInfo } from '../runtime/session.js';
import { GenerationError } from './config.js';
import { ADAPTER_INDEX_INPUT } from '../tuners/multi/model.js';
import { type InferenceModel, baseModel, inferenceContext, paramFeeds } from './model.js';
import { KVCache } from './kvcache.js';
import type { FrozenParams } from '../nn/context.js';

export interface DecoderSessionsOptions {
  /**
   * Bake the adapter's tensors into both sessions as constants (BuildOptions.frozenParams), so a
   * step is fed only its tokens and cache: onnxruntime-node converts every feed at every run, about
   * 1.6 us per tensor, ~0.15 ms per token for GPT-2 with LoRA on c_attn, c_proj, c_fc. The sessions
   * then hold the values of the moment they were compiled: `frozen.changed()` says when the model's
   * differ (Generator rebuilds). Not for a model whose adapters change while it serves (serve's
   * MultiAdapterModel, hot swap). Default false: the tensors are fed (ParamFeeds).
   */
  frozen?: boolean;
}

export interface StepInputs {
  batch: number;
  /** new positions per row */
  seq: number;
  /** int64 [batch, seq] */
  inputIds: BigInt64Array;
  /** int64 [batch, cache length + seq]: 1 = token, 0 = padding */
  attentionMask: BigInt64Array;
  /** int64 [batch, seq] */
  positionIds: BigInt64Array;
  /** int64 [batch]: each row's adapter slot, for a mixed-adapter model (MultiAdapterModel.rowIndex) */
  adapterIndex?: BigInt64Array;
}

export interface StepOutput {
  /** float32 [batch, vocab]: the logits of each row's last position */
  logits: Float32Array;
  /** prefill: a new cache; decode: the cache it was given, advanced in place */
  cache: KVCache;
}

/**
 * The model's parameter feeds of both sessions, read from the live host arrays and converted to
 * ONNX Runtime tensors once (DecoderSessions.params). A generation takes them at its start and
 * reuses them at every step: an unmerged LoRA has a hundred or so such tensors, and converting
 * them per token costs about as much as a few of its matmuls.
 */
export interface ParamFeeds {
  prefill: Record<string, ort.Tensor>;
  decode: Record<string, ort.Tensor>;
}

const keyName = (prefix: string, i: number): string => `${prefix}.${i}.key`;
const valueName = (prefix: string, i: number): string => `${prefix}.${i}.value`;

function buildStep(
  model: InferenceModel,
  withPast: boolean,
  frozen: boolean,
): { graph: Graph; outputs: Record<string, Value>; params: () => Record<string, HostTensor>; frozen?: FrozenParams } {
  const base = baseModel(model);
  const g = new Graph();
  // Derived feeds: LoRA's scaling folded into A or B once per generation (ParamFeeds), not per token;
  // frozen: the adapter's tensors (scaling folded) are constants of the graph, fed never.
  const ctx = inferenceContext(model, g, { derivedFeeds: true, frozen });
  // The cache comes in position-major (the KVCache's layout) and is laid out for attention here.
  const kvShape = ['past', 'batch', base.numKVHeads, base.headDim];
  const toHeads = (x: Value): Value => o.transpose(x, [1, 2, 0, 3]);
  const past: KV[] | undefined = withPast
    ? Array.from({ length: base.numLayers }, (_, i) => ({
        key: toHeads(g.input(keyName('past', i), 'float32', kvShape)),
        value: toHeads(g.input(valueName('past', i), 'float32', kvShape)),
      }))
    : undefined;
  const inputIds = g.input('input_ids', 'int64', ['batch', 'seq']);
  // Named like the concatenated keys' length, so shape inference sees mask and keys agree.
  const attentionMask = g.input('attention_mask', 'int64', ['batch', withPast ? 'past+seq' : 'seq']);
  const positionIds = g.input('position_ids', 'int64', ['batch', 'seq']);
  // Only the last position's logits leave the graph: the LM head runs on that position alone.
  ctx.linearInputs.set('lm_head', (x) => (x.rank === 3 ? o.slice(x, 1, -1) : x));
  const out = model.forward(ctx, { inputIds, attentionMask, positionIds, past });
  const outputs: Record<string, Value> = { logits: o.squeeze(o.slice(out.logits, 1, -1), 1) };
  // Out go the positions this step added (the prefill: all of them), position-major. A decode
  // step's presents are past + new (Concat); Gather picks the new ones, so the cache stays put.
  const added = past ? o.add(o.arangeOfDim(inputIds, 1), o.dimOf(past[0]!.key, 2)) : undefined;
  const toPositions = (x: Value): Value => o.transpose(added ? o.gather(x, added, 2) : x, [2, 0, 1, 3]);
  out.presents.forEach((kv, i) => {
    outputs[keyName('present', i)] = toPositions(kv.key);
    outputs[valueName('present', i)] = toPositions(kv.value);
  });
  return { graph: g, outputs, params: paramFeeds(model, ctx), frozen: ctx.frozenParams() };
}

/** The step's arrays hold batch x seq ids and positions and a batch x `maskLength` mask. */
function checkStep(step: StepInputs, maskLength: number): void {
  const { batch, seq } = step;
  if (!Number.isInteger(batch) || batch < 1 || !Number.isInteger(seq) || seq < 1)
    throw new GenerationError(`a step needs batch >= 1 and seq >= 1 (integers), got batch ${batch}, seq ${seq}`);
  const want = (what: string, got: number, n: number): void => {
    if (got !== n) throw new GenerationError(`the step's ${what} holds ${got} values, expected ${n} (${batch} rows x ${n / batch})`);
  };
  want('inputIds', step.inputIds.length, batch * seq);
  want('positionIds', step.positionIds.length, batch * seq);
  want('attentionMask', step.attentionMask.length, batch * maskLength);
}

export class DecoderSessions {
  private constructor(
    private readonly prefillSession: RuntimeSession,
    private readonly decodeSession: RuntimeSession,
    private readonly prefillParams: () => Record<string, HostTensor>,
    private readonly decodeParams: () => Record<string, HostTensor>,
    readonly numLayers: number,
    readonly vocabSize: number,
    private readonly kvHeads: number,
    private readonly headDim: number,
    /** the cache's growth cap: the model's positions, plus its virtual tokens (prompt learning) */
    private readonly maxPositions: number,
    /** the params baked into the sessions (DecoderSessionsOptions.frozen) */
    readonly frozen?: FrozenParams,
  ) {}

  /**
   * Compiles both sessions with the same runtime options. With the default shared weights the two
   * sessions hold no copy of the weights; `weights: 'prepacked'` gives each session MLAS-packed
   * copies (bench/RESULTS.md has what that buys and costs for decoding).
   */
  static async create(model: InferenceModel, runtime: RuntimeOptions = {}, opts: DecoderSessionsOptions = {}): Promise<DecoderSessions> {
    const base = baseModel(model);
    if (!base.causal || base.task !== 'causal-lm') {
      throw new GenerationError(
        `${base.dir} is a ${base.family} ${base.task} model; text generation needs a causal language model (GPT-2, Llama, ...)`,
      );
    }
    const frozen = opts.frozen ?? false;
    const prefill = buildStep(model, false, frozen);
    const decode = buildStep(model, true, frozen);
    // A frozen adapter's factors stay float32 under quantize 'int8', as they are when fed.
    const keep = new Set([...(prefill.frozen?.names ?? []), ...(decode.frozen?.names ?? []), ...(runtime.floatConstants ?? [])]);
    if (keep.size) runtime = { ...runtime, floatConstants: [...keep] };
    const vocab = prefill.outputs.logits!.shape[1];
    if (typeof vocab !== 'number') throw new GenerationError('the model does not give a static vocabulary size for its logits');
    const [ps, ds] = await Promise.all([
      RuntimeSession.fromGraph(prefill.graph, prefill.outputs, { ...runtime, name: 'prefill' }),
      RuntimeSession.fromGraph(decode.graph, decode.outputs, { ...runtime, name: 'decode' }),
    ]);
    const virtual = (model as { numVirtualTokens?: number }).numVirtualTokens ?? 0;
    const maxPositions = base.config.maxPositionEmbeddings + virtual;
    return new DecoderSessions(
      ps,
      ds,
      prefill.params,
      decode.params,
      base.numLayers,
      vocab,
      base.numKVHeads,
      base.headDim,
      maxPositions,
      decode.frozen,
    );
  }

  /** What each session holds (int8Products > 0 with runtime quantize 'int8'). */
  get memory(): { prefill: SessionMemoryInfo; decode: SessionMemoryInfo } {
    return { prefill: this.prefillSession.memory, decode: this.decodeSession.memory };
  }

  /** The parameter feeds as the model holds them now (see ParamFeeds). */
  params(): ParamFeeds {
    const convert = (h: Record<string, HostTensor>): Record<string, ort.Tensor> =>
      Object.fromEntries(Object.entries(h).map(([k, t]) => [k, toOrtTensor(t)]));
    return { prefill: convert(this.prefillParams()), decode: convert(this.decodeParams()) };
  }

  /** Runs the prompt (no cache yet) into a new cache; `params` from params(), else the model's current values. */
  async prefill(step: StepInputs, params?: ParamFeeds): Promise<StepOutput> {
    checkStep(step, step.seq);
    const cache = KVCache.empty(this.numLayers, step.batch, this.kvHeads, this.headDim, 0, this.maxPositions);
    return this.run(this.prefillSession, params ? { ...params.prefill } : this.prefillParams(), step, cache);
  }

  /**
   * Runs new positions on top of a cache and appends their keys/values to it in place (the returned
   * cache is `cache`); `params` from params(), else the model's current values.
   */
  async decode(step: StepInputs, cache: KVCache, params?: ParamFeeds): Promise<StepOutput> {
    if (cache.batch !== step.batch) throw new GenerationError(`the cache holds ${cache.batch} rows, the step ${step.batch}`);
    if (cache.numLayers !== this.numLayers || cache.kvHeads !== this.kvHeads || cache.headDim !== this.headDim)
      throw new GenerationError(
        `the cache (${cache.numLayers} layers x ${cache.kvHeads} heads x ${cache.headDim}) is not this model's (${this.numLayers} x ${this.kvHeads} x ${this.headDim})`,
      );
    // The mask covers the cached positions and the new ones. A mask of the cache's old length means
    // a cache reused after the decode that advanced it (decode appends in place).
    checkStep(step, cache.length + step.seq);
    const feeds: Record<string, HostTensor | ort.Tensor> = params ? { ...params.decode } : this.decodeParams();
    for (let i = 0; i < this.numLayers; i++) {
      const { key, value } = cache.view(i);
      feeds[keyName('past', i)] = key;
      feeds[valueName('past', i)] = value;
    }
    return this.run(this.decodeSession, feeds, step, cache);
  }

  private async run(
    session: RuntimeSession,
    feeds: Record<string, HostTensor | ort.Tensor>,
    step: StepInputs,
    cache: KVCache,
  ): Promise<StepOutput> {
    const { batch, seq } = step;
    const total = step.attentionMask.length / batch;
    feeds.input_ids = { dtype: 'int64', shape: [batch, seq], data: step.inputIds };
    feeds.attention_mask = { dtype: 'int64', shape: [batch, total], data: step.attentionMask };
    feeds.position_ids = { dtype: 'int64', shape: [batch, seq], data: step.positionIds };
    if (session.feeds.some((v) => v.name === ADAPTER_INDEX_INPUT)) {
      if (!step.adapterIndex || step.adapterIndex.length !== batch)
        throw new GenerationError(`a mixed-adapter model needs one adapter per row (${batch} rows)`);
      feeds[ADAPTER_INDEX_INPUT] = { dtype: 'int64', shape: [batch], data: step.adapterIndex };
    }
    const r = await session.run(feeds);
    const keys: Float32Array[] = [];
    const values: Float32Array[] = [];
    for (let i = 0; i < this.numLayers; i++) {
      keys.push(r[keyName('present', i)]!.data as Float32Array);
      values.push(r[valueName('present', i)]!.data as Float32Array);
    }
    cache.append(keys, values);
    return { logits: r.logits!.data as Float32Array, cache };
  }

  async dispose(): Promise<void> {
    await Promise.all([this.prefillSession.dispose(), this.decodeSession.dispose()]);
  }
}
