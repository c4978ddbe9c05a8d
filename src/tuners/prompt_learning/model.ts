// What prompt tuning, prefix tuning and P-tuning share as adapted models: trainable tensors under
// peft's in-memory names, the SEQ_CLS classifier copy (modules_to_save), the encoder output that
// is saved as 'prompt_embeddings', and the graph pieces that put P virtual positions in front.

import { Graph, type Value } from '../../graph/ir.js';
import * as o from '../../graph/ops.js';
import type { RawTensor } from '../../io/safetensors.js';
import { toFloat32 } from '../../io/safetensors.js';
import { type ForwardArgs, type ForwardResult, ModelError, type PretrainedModel } from '../../models/types.js';
import { BuildContext } from '../../nn/context.js';
import { RuntimeSession } from '../../runtime/session.js';
import { AdapterError, type AdaptedModel, type TrainableTensor } from '../types.js';
import type { PromptLearningConfig, PromptPeftType } from './config.js';
import type { PyJson } from '../../io/pyjson.js';
import { type AdapterFolder, takeTensor } from './load.js';
import { writeAdapterFolder } from './save.js';

export interface PromptLearningOptions {
  /** the adapter name inside in-memory tensor names (peft's "default") */
  adapterName?: string;
  /** seed for random initial values (RANDOM / SAMPLE_VOCAB init, encoder weights) */
  seed?: number;
}

/** Name of the classifier in BertForSequenceClassification, which peft trains as modules_to_save. */
const CLASSIFIER = 'classifier';

export abstract class PromptLearningModel<C extends PromptLearningConfig> implements AdaptedModel {
  abstract readonly peftType: PromptPeftType;
  readonly adapterName: string;
  protected readonly tensors = new Map<string, TrainableTensor>();

  protected constructor(
    readonly base: PretrainedModel,
    readonly config: C,
    adapterName = 'default',
  ) {
    this.adapterName = adapterName;
    if (config.taskType === 'SEQ_CLS') {
      for (const p of ['weight', 'bias']) {
        const w = base.weights.get(`${CLASSIFIER}.${p}`);
        this.tensors.set(this.classifierName(p), { shape: [...w.shape], data: Float32Array.from(w.data) });
      }
    }
  }

  /**
   * Positions this method puts in front of the real tokens: the attention mask and the KV cache of
   * a decode step cover them (0 for the additive soft prompt, which inserts none).
   */
  get numVirtualTokens(): number {
    return this.config.numVirtualTokens;
  }

  /** peft's in-memory name of a prompt-encoder tensor, e.g. prompt_encoder.default.embedding.weight */
  protected encoderName(suffix: string): string {
    return `prompt_encoder.${this.adapterName}.${suffix}`;
  }

  protected classifierName(param: string): string {
    return `base_model.${CLASSIFIER}.modules_to_save.${this.adapterName}.${param}`;
  }

  protected param(ctx: BuildContext, name: string): Value {
    const t = this.tensors.get(name);
    if (!t) throw new AdapterError(`${this.peftType} adapter has no tensor "${name}"`);
    return ctx.param(name, t.shape);
  }

  /** The encoder output [P, width] as a graph value: what peft's get_prompt repeats over the batch. */
  abstract promptGraph(ctx: BuildContext): Value;

  abstract forward(ctx: BuildContext, args: ForwardArgs): ForwardResult;

  /** adapter_config.json as an object with peft's keys. */
  abstract configToDisk(): Record<string, PyJson>;

  /** Saved tensor names of adapter_model.safetensors, from the prompt embeddings (peft's layout). */
  protected abstract savedPromptTensors(prompt: TrainableTensor): Map<string, TrainableTensor>;

  /**
   * Causal LM: the -100 labels loss() puts in front of the caller's labels (AdaptedModel.prependedLabels).
   * None here: prefix tuning adds no logit positions; prompt tuning and P-tuning override it.
   */
  get prependedLabels(): number {
    return 0;
  }

  /** The base model's loss; labels [batch, T] get prependedLabels leading -100 to line up with logits [batch, P + T, vocab], as peft does. */
  loss(logits: Value, labels: Value): Value {
    const count = this.prependedLabels;
    return this.base.loss(logits, count > 0 ? prependConstant(labels, count, -100) : labels);
  }

  /**
   * The forward pass of the methods that put virtual tokens in the input (prompt tuning, P-tuning).
   * Prefill (no `past`): `prompt` [P, hidden] goes in front of the token embeddings, and the mask,
   * position ids and token types get P leading entries. Decode steps (`past` given, already holding
   * the virtual tokens) pass through; the caller's mask then covers past (virtual tokens included)
   * + current tokens, and its position ids, if any, count the virtual tokens too.
   */
  protected forwardWithVirtualTokens(ctx: BuildContext, args: ForwardArgs, prompt: () => Value): ForwardResult {
    this.installClassifier(ctx);
    const words = args.inputsEmbeds ?? this.base.embedTokens(ctx, args.inputIds ?? failModel('inputIds or inputsEmbeds is required'));
    if (args.past && args.past.length) return this.base.forward(ctx, { ...args, inputIds: undefined, inputsEmbeds: words });
    const P = this.config.numVirtualTokens;
    const prompts = repeatOverBatch(o.unsqueeze(prompt(), 0), words);
    let positionIds: Value | undefined;
    if (args.positionIds) {
      const virtual = ctx.graph.tensor(
        'virtual_positions',
        args.positionIds.dtype,
        [1, P],
        Array.from({ length: P }, (_, i) => i),
      );
      positionIds = o.concat([repeatOverBatch(virtual, args.positionIds), shiftPositions(args.positionIds, P)], 1);
    }
    return this.base.forward(ctx, {
      inputsEmbeds: o.concat([prompts, words], 1),
      attentionMask: prependOnes(args.attentionMask, P),
      positionIds,
      tokenTypeIds: args.tokenTypeIds ? prependConstant(args.tokenTypeIds, P, 0) : undefined,
    });
  }

  parameters(): Map<string, TrainableTensor> {
    return this.tensors;
  }

  /** transformers' Trainer rule: every parameter whose name does not contain "bias". */
  decayParameters(): Set<string> {
    return new Set([...this.tensors.keys()].filter((n) => !n.includes('bias')));
  }

  trainableBaseWeights(): Set<string> {
    return new Set();
  }

  /** SEQ_CLS: the classifier runs with the adapter's trained copy instead of the base weights. */
  protected installClassifier(ctx: BuildContext): void {
    if (this.config.taskType !== 'SEQ_CLS') return;
    const weight = this.param(ctx, this.classifierName('weight'));
    const bias = this.param(ctx, this.classifierName('bias'));
    ctx.linearHooks.set(CLASSIFIER, (x) => o.linear(x, weight, bias));
  }

  /**
   * Replaces tensors by their in-memory peft names (as in a trainable_state.safetensors), checking
   * every shape. Names this adapter does not have are an error; tensors not given keep their values.
   */
  loadTrainableState(tensors: ReadonlyMap<string, RawTensor | TrainableTensor>): void {
    const updates: [TrainableTensor, Float32Array][] = [];
    for (const [name, t] of tensors) {
      const mine = this.tensors.get(name);
      if (!mine) {
        throw new AdapterError(
          `${this.peftType} adapter has no tensor "${name}" (it has: ${[...this.tensors.keys()].join(', ')}); ` +
            `check that the state was saved from the same method and config (an encoder's weights exist only before saving)`,
        );
      }
      if (t.shape.length !== mine.shape.length || t.shape.some((d, i) => d !== mine.shape[i])) {
        throw new AdapterError(`tensor "${name}" has shape [${t.shape}] but this adapter needs [${mine.shape}]`);
      }
      updates.push([mine, 'dtype' in t && typeof t.dtype === 'string' ? toFloat32(t as RawTensor) : (t as TrainableTensor).data]);
    }
    for (const [mine, data] of updates) mine.data.set(data);
  }

  /** The prompt embeddings as peft saves them: the encoder output, computed by ONNX Runtime. */
  async promptEmbeddings(): Promise<TrainableTensor> {
    const g = new Graph();
    const ctx = new BuildContext(g, this.base.weights);
    const prompt = this.promptGraph(ctx);
    if (prompt.kind === 'param') {
      const t = this.tensors.get(prompt.name)!;
      return { shape: [...t.shape], data: Float32Array.from(t.data) };
    }
    const session = await RuntimeSession.fromGraph(
      g,
      { prompt_embeddings: prompt },
      { name: `${this.peftType} prompt encoder`, threads: 1 },
    );
    try {
      const feeds: Record<string, { dtype: 'float32'; shape: number[]; data: Float32Array }> = {};
      for (const name of ctx.params.keys()) {
        const t = this.tensors.get(name)!;
        feeds[name] = { dtype: 'float32', shape: t.shape, data: t.data };
      }
      const r = await session.run(feeds);
      const out = r.prompt_embeddings!;
      return { shape: [...out.shape], data: Float32Array.from(out.data as Float32Array) };
    } finally {
      await session.dispose();
    }
  }

  /** Every tensor of adapter_model.safetensors under its saved name. */
  async adapterState(): Promise<Map<string, TrainableTensor>> {
    const out = this.savedPromptTensors(await this.promptEmbeddings());
    if (this.config.taskType === 'SEQ_CLS') {
      // peft strips "modules_to_save.<adapter>." from the copy's name when saving.
      for (const p of ['weight', 'bias']) out.set(`base_model.${CLASSIFIER}.${p}`, this.tensors.get(this.classifierName(p))!);
    }
    return out;
  }

  /**
   * SEQ_CLS: takes the trained classifier copy from a saved adapter ('base_model.classifier.*');
   * returns the saved names it used. A file without it keeps the base classifier, as peft does.
   */
  loadSavedClassifier(folder: AdapterFolder): Set<string> {
    const used = new Set<string>();
    if (this.config.taskType !== 'SEQ_CLS') return used;
    for (const p of ['weight', 'bias']) {
      const saved = `base_model.${CLASSIFIER}.${p}`;
      if (!folder.tensors.has(saved)) continue;
      const mine = this.tensors.get(this.classifierName(p))!;
      mine.data.set(takeTensor(folder, saved, mine.shape).data);
      used.add(saved);
    }
    return used;
  }

  /** Writes adapter_config.json and adapter_model.safetensors as peft's save_pretrained does. */
  async savePretrained(dir: string): Promise<void> {
    const state = await this.adapterState();
    await writeAdapterFolder(dir, this.configToDisk(), state);
  }
}

// ---- graph pieces -----------------------------------------------------------------------------

/** x [1, ...] repeated over the batch of `like` (whose first dim is the batch). */
export function repeatOverBatch(x: Value, like: Value): Value {
  // A [batch, 1, ..., 1] probe of x's rank: only its shape matters to Expand.
  let probe = like;
  for (let a = 1; a < like.rank; a++) probe = o.slice(probe, a, 0, 1);
  if (probe.rank > x.rank)
    probe = o.squeeze(
      probe,
      Array.from({ length: probe.rank - x.rank }, (_, i) => x.rank + i),
    );
  if (probe.rank < x.rank)
    probe = o.unsqueeze(
      probe,
      Array.from({ length: x.rank - probe.rank }, (_, i) => probe.rank + i),
    );
  return o.expandLike(x, probe);
}

/** [batch, P] int64 ones in front of an attention mask [batch, T]. */
export function prependOnes(mask: Value, count: number): Value {
  const ones = mask.graph.tensor(`virtual_mask_${count}`, 'int64', [1, count], new Array<number>(count).fill(1));
  return o.concat([repeatOverBatch(o.cast(ones, mask.dtype), mask), mask], 1);
}

/** [batch, P] filled with `value` in front of an int64 tensor [batch, T] (labels, token types). */
export function prependConstant(x: Value, count: number, value: number): Value {
  const fill = x.graph.tensor(`virtual_fill_${value}_${count}`, x.dtype, [1, count], new Array<number>(count).fill(value));
  return o.concat([repeatOverBatch(fill, x), x], 1);
}

/** Position ids the caller gave for the real tokens, moved behind the P virtual positions. */
export function shiftPositions(positionIds: Value, count: number): Value {
  return o.add(positionIds, o.cast(positionIds.graph.scalar(count, 'int64'), positionIds.dtype));
}

/** arange(offset, offset + T) as [1, T] for the tokens of `tokens` [batch, T, ...]. */
export function positionsFrom(tokens: Value, offset: Value | number): Value {
  const ar = o.arangeOfDim(tokens, 1);
  const off = typeof offset === 'number' ? tokens.graph.scalar(offset, 'int64') : offset;
  return o.unsqueeze(o.add(ar, off), 0);
}

function failModel(msg: string): never {
  throw new ModelError(msg);
}
