// One full forward pass over a batch, without a cache: logits for every position (and the task
// loss when labels are given). `peft forward` runs it on a batch file; tests use it as the
// recompute-everything reference for the cached decoder.

import { Graph, type Value } from '../graph/ir.js';
import { RuntimeSession, type HostTensor, type RuntimeOptions } from '../runtime/session.js';
import { GenerationError } from './config.js';
import { ADAPTER_INDEX_INPUT } from '../tuners/multi/model.js';
import { type InferenceModel, baseModel, inferenceContext, paramFeeds } from './model.js';

export interface ForwardSessionOptions {
  /** also compute the task loss from a `labels` input */
  loss?: boolean;
  /** take position ids as an input instead of arange(seq) (left-padded batches) */
  positionIds?: boolean;
  /** also return every hidden state (transformers' output_hidden_states) */
  hiddenStates?: boolean;
  runtime?: RuntimeOptions;
}

export interface ForwardBatch {
  /** int64 [batch, seq] */
  inputIds: HostTensor;
  /** int64 [batch, seq] */
  attentionMask: HostTensor;
  /** int64, [batch, seq] for language models, [batch] for sequence classification */
  labels?: HostTensor;
  /** int64 [batch, seq], when the session was compiled with positionIds */
  positionIds?: HostTensor;
  /** int64 [batch]: each row's adapter slot, for a mixed-adapter model (MultiAdapterModel.rowIndex) */
  adapterIndex?: HostTensor;
}

export interface ForwardOutput {
  /** float32 [batch, seq, vocab] (language models) or [batch, numLabels] */
  logits: HostTensor;
  /** the task loss, when compiled with loss and labels were given */
  loss?: number;
  /** embeddings output, then every layer's (the last after the final norm), when compiled with hiddenStates */
  hiddenStates?: HostTensor[];
}

export class ForwardSession {
  private constructor(
    private readonly session: RuntimeSession,
    private readonly params: () => Record<string, HostTensor>,
    readonly withLoss: boolean,
    readonly withPositionIds: boolean,
    readonly numHiddenStates: number,
    /** token ids must be below this (the embedding rows) */
    private readonly vocabSize: number,
    /** label ids must be below this (vocabulary, or classes of a classifier); -100 is ignored */
    private readonly labelLimit: number,
  ) {}

  static async create(model: InferenceModel, opts: ForwardSessionOptions = {}): Promise<ForwardSession> {
    const base = baseModel(model);
    const g = new Graph();
    const ctx = inferenceContext(model, g);
    const inputIds = g.input('input_ids', 'int64', ['batch', 'seq']);
    const attentionMask = g.input('attention_mask', 'int64', ['batch', 'seq']);
    const positionIds = opts.positionIds ? g.input('position_ids', 'int64', ['batch', 'seq']) : undefined;
    const out = model.forward(ctx, { inputIds, attentionMask, positionIds });
    const outputs: Record<string, Value> = { logits: out.logits };
    if (opts.loss) {
      const labels = g.input('labels', 'int64', base.task === 'seq-cls' ? ['batch'] : ['batch', 'seq']);
      outputs.loss = model.loss(out.logits, labels);
    }
    if (opts.hiddenStates) out.hiddenStates.forEach((h, i) => (outputs[`hidden_states.${i}`] = h));
    const session = await RuntimeSession.fromGraph(g, outputs, { name: 'forward', ...opts.runtime });
    const labelLimit = base.task === 'seq-cls' ? base.config.numLabels : base.vocabSize;
    return new ForwardSession(
      session,
      paramFeeds(model, ctx),
      opts.loss ?? false,
      opts.positionIds ?? false,
      opts.hiddenStates ? out.hiddenStates.length : 0,
      base.vocabSize,
      labelLimit,
    );
  }

  async run(batch: ForwardBatch): Promise<ForwardOutput> {
    const [b, s] = batch.inputIds.shape;
    if (batch.inputIds.shape.length !== 2) throw new GenerationError(`input_ids must be [batch, seq], got [${batch.inputIds.shape}]`);
    if (batch.attentionMask.shape.length !== 2 || batch.attentionMask.shape[0] !== b || batch.attentionMask.shape[1] !== s) {
      throw new GenerationError(`attention_mask must have the shape of input_ids [${b}, ${s}], got [${batch.attentionMask.shape}]`);
    }
    // An id past the embedding (or a label past the classes) would reach ONNX Runtime's Gather as a raw error.
    checkIds(batch.inputIds, 'input_ids', this.vocabSize, false);
    if (this.withLoss && batch.labels) checkIds(batch.labels, 'labels', this.labelLimit, true);
    const feeds: Record<string, HostTensor> = { ...this.params(), input_ids: batch.inputIds, attention_mask: batch.attentionMask };
    if (this.withPositionIds) {
      if (!batch.positionIds) throw new GenerationError('this forward session was compiled to take position ids; pass positionIds');
      feeds.position_ids = batch.positionIds;
    }
    if (this.session.feeds.some((v) => v.name === ADAPTER_INDEX_INPUT)) {
      if (!batch.adapterIndex || batch.adapterIndex.shape.length !== 1 || batch.adapterIndex.shape[0] !== b) {
        throw new GenerationError(`a mixed-adapter model needs one adapter per row: pass adapterIndex, int64 [${b}]`);
      }
      feeds[ADAPTER_INDEX_INPUT] = batch.adapterIndex;
    }
    const fetches = ['logits'];
    if (this.withLoss && batch.labels) {
      feeds.labels = batch.labels;
      fetches.push('loss');
    } else if (this.withLoss) {
      throw new GenerationError('this forward session computes a loss; pass labels');
    }
    for (let i = 0; i < this.numHiddenStates; i++) fetches.push(`hidden_states.${i}`);
    const r = await this.session.run(feeds, fetches);
    const hiddenStates = this.numHiddenStates
      ? Array.from({ length: this.numHiddenStates }, (_, i) => r[`hidden_states.${i}`]!)
      : undefined;
    return { logits: r.logits!, loss: r.loss ? Number(r.loss.data[0]) : undefined, ...(hiddenStates ? { hiddenStates } : {}) };
  }

  async dispose(): Promise<void> {
    await this.session.dispose();
  }
}

/** Every id in [0, limit) (labels may also be -100, the ignored position); a GenerationError naming the first that is not. */
function checkIds(t: HostTensor, name: string, limit: number, ignoreIndex: boolean): void {
  const data = t.data as ArrayLike<number | bigint>;
  for (let i = 0; i < data.length; i++) {
    const v = Number(data[i]);
    if (ignoreIndex && v === -100) continue;
    if (!(Number.isInteger(v) && v >= 0 && v < limit)) {
      throw new GenerationError(
        `${name} holds ${v} at flat position ${i}, outside [0, ${limit})${ignoreIndex ? ' (or -100 to ignore a position)' : ''}; the batch does not belong to this model`,
      );
    }
  }
}
