// The step compiler: builds an adapted model's forward pass, loss and the gradients of every
// trainable tensor it created into ONE ONNX Runtime session with symbolic batch/seq dims, so a
// training step is one session.run; plus a loss-only session (no dropout) for evaluation.
// Causal LMs take labels [batch, seq]; sequence classifiers labels [batch] (class ids).

import { grad } from '../autodiff/grad.js';
import { Graph, type Value } from '../graph/ir.js';
import * as o from '../graph/ops.js';
import type { DType, HostArray } from '../graph/types.js';
import { type BasePrecision, BuildContext, evalDim } from '../nn/context.js';
import type { QuantKernel } from '../quant/matmul.js';
import { type HostTensor, type RuntimeOptions, RuntimeSession } from '../runtime/session.js';
import type { AdaptedModel, TrainableTensor } from '../tuners/types.js';
import type { Batch } from './batches.js';
import { IGNORE_INDEX } from './data.js';
import { TrainError } from './errors.js';
import { chunkHeadLoss, DEFAULT_LOSS_CHUNKS } from './chunked_loss.js';
import { drawKeepMask } from './keepmask.js';
import type { Rng } from './rng.js';

export type StepOptions = Pick<
  RuntimeOptions,
  'threads' | 'executionProvider' | 'graphOptimization' | 'weights' | 'memPattern' | 'cpuMemArena' | 'spinning'
> & {
  /** how products with a 4-bit base weight are computed (QLoRA; default 'ops', see src/quant/matmul.ts) */
  quantKernel?: QuantKernel;
  /**
   * recompute decoder layers in the backward pass instead of keeping their activations: true (or 1)
   * every layer, a number k every k-th layer (0, k, 2k, ...), false or 0 none (default
   * DEFAULT_GRADIENT_CHECKPOINTING)
   */
  gradientCheckpointing?: boolean | number;
  /**
   * recompute each attention core (scores, softmax, probabilities @ v) from q, k and v, and a gated
   * MLP's activation from its two projections, in the backward pass instead of keeping them
   * (default DEFAULT_SELECTIVE_RECOMPUTE; no effect in a checkpointed layer, which is recomputed
   * whole; BuildContext.recomputed)
   */
  selectiveRecompute?: boolean;
  /** frozen float32 matrices multiplied as they are ('fp32', default) or through int8 copies ('int8'; src/quant/int8_base.ts) */
  basePrecision?: BasePrecision;
  /** with basePrecision 'int8': linear modules whose products stay float32 (BuildOptions.int8Exclude) */
  int8Exclude?: readonly string[];
  /**
   * Parts the LM head and causal-LM loss are computed in over the tokens, so the full logits never
   * exist (default DEFAULT_LOSS_CHUNKS = 4; 1 = one product over all tokens; src/train/chunked_loss.ts).
   */
  lossChunks?: number;
};

/**
 * The frozen base's precision `peft train` and the quickstart use when not told otherwise
 * (TrainStep itself defaults to 'fp32'). int8: a GPT-2 LoRA step costs 0.59-0.67x the CPU time of
 * the float32 step and its GEMMs run 1.5-2x float32's on a VNNI CPU; a step's loss and gradients
 * stay within 1% / cosine 0.999 of float32's (test/quant/int8_base.test.ts), LoRA's eval-loss curves
 * on the bundled tasks mix with float32's seed to seed (bench/quality.ts, bench/RESULTS.md "Equal
 * quality"; measured with eval losses on the float32 base); exact match on arith after 400 steps
 * within the seed-to-seed spread of float32's (53.0% against 55.8% over 5 seeds; 44.6% before the
 * backward products scaled the gradient per row: src/quant/int8_base.ts int8InputGrad, docs/QUICKSTART.md).
 * Evaluation during training now runs on
 * the same int8 base, and the trainer releases the float32 arrays of the matrices held only as int8
 * (read back from the checkpoint file if anything needs them later; bench/RESULTS.md, "Memory of a
 * training step").
 */
export const DEFAULT_BASE_PRECISION: BasePrecision = 'int8';

/**
 * Whether a training step recomputes each attention core and gated-MLP activation in the backward
 * pass (StepOptions.selectiveRecompute) when not told otherwise: the [batch, heads, seq, seq]
 * probabilities of every layer are then not kept (GPT-2 small at 4 x 256: 12 MiB a layer; peak
 * RSS 1564 -> 1356 MiB) for about 3% of a step's FLOPs and no CPU time measurable under load
 * (bench/RESULTS.md, "Memory of a training step").
 */
export const DEFAULT_SELECTIVE_RECOMPUTE = true;

/**
 * Which decoder layers a training step recomputes in the backward pass
 * (StepOptions.gradientCheckpointing) when not told otherwise: every second one (layers 0, 2, 4,
 * ...), whose activations are then not kept; the others keep theirs, with selective recomputation.
 * Measured on one quiet machine (bench/RESULTS.md, "Notes of 2026-12-02, 16:04 run"; int8 base,
 * 4 x 256, LoRA q/v): peak RSS GPT-2 small 1020 -> 903 MiB and SmolLM-135M shape 1440 -> 1152
 * (0.48x / 0.50x PyTorch 2.13 bf16's) for 2-17% / 6-11% of the tokens/s, where checkpointing every
 * layer (723 / 821 MiB) cost 22% / 11-16%: the setting closest to both of issue #19's targets. `peft train
 * --gradient-checkpointing` checkpoints every layer, `--no-gradient-checkpointing` none.
 */
export const DEFAULT_GRADIENT_CHECKPOINTING: boolean | number = 2;

/** A gradient-checkpointing setting (StepOptions.gradientCheckpointing) in words: "every layer", "every second layer", "none". */
export function describeCheckpointing(setting: boolean | number): string {
  if (setting === true || setting === 1) return 'every layer';
  if (setting === false || setting === 0) return 'none';
  return setting === 2 ? 'every second layer' : `every ${setting}-th layer`;
}

/** The step option for a --base-precision value: nf4 is chosen when the model is loaded (a 4-bit base), so its products stay as loaded. */
export function trainBasePrecision(flag: string | undefined, quantizedBase = false): BasePrecision {
  if (quantizedBase || flag === 'nf4' || flag === 'fp32') return 'fp32';
  return flag === 'int8' ? 'int8' : DEFAULT_BASE_PRECISION;
}

/**
 * In-memory constants from this size on are weights to the training and evaluation sessions (fed
 * from their JS arrays with weights 'shared', in-memory external data with 'prepacked'), not bytes
 * inlined into each session's ModelProto: 64 KiB, so that the int8 base's copies of SmolLM-135M's
 * 576-wide matrices (110-885 KiB each, under the 1 MiB default) are held once, in the JS arrays
 * both steps share, instead of being copied through the protobuf and prepacked by each session.
 * SmolLM-135M shape, LoRA q/v, 4 x 256, bench step: peak RSS 2076-2087 MiB prepacked, 1433 fed;
 * maxrss after compiling 1222-1228 -> 569 MiB; no consistent CPU cost on a loaded machine (MLAS
 * packs a fed int8 matrix at each product); bench/RESULTS.md "Weights side of a training step's memory".
 */
const STEP_LARGE_CONSTANT_BYTES = 64 * 1024;

/**
 * outputs["grad.<name>"] for each parameter gradient, each times a 1 ONNX Runtime cannot fold
 * (`unfoldedOne`), added in the order the backward pass built them: for a session lowered with
 * `outputsLast` (training steps).
 */
export function addGradientOutputs(graph: Graph, names: readonly string[], grads: readonly Value[], outputs: Record<string, Value>): void {
  const one = unfoldedOne(graph);
  const at = (v: Value): number => v.producer?.id ?? -1;
  const order = grads.map((_, i) => i).sort((a, b) => at(grads[a]!) - at(grads[b]!));
  for (const i of order) outputs[gradName(names[i]!)] = one ? o.mul(grads[i]!, one) : grads[i]!;
}

/**
 * A float32 1 that ONNX Runtime cannot fold (from the size of an input with a symbolic dim;
 * undefined without one). A step outputs each parameter gradient times it: the same values, from a
 * node of its own that no optimization fuses away, built in the order the backward pass built the
 * gradients (`addGradientOutputs`). With
 * `outputsLast` these nodes are the leaves ONNX Runtime's execution order starts from, so each
 * gradient is finished as the backward pass reaches its parameter, LoRA's too, whose products
 * ONNX Runtime rebuilds as new (last-numbered) nodes when it fuses the scaling into them
 * (LowerOptions.outputsLast).
 */
function unfoldedOne(graph: Graph): Value | undefined {
  const sized = graph.inputs.find((v) => v.shape.some((d) => typeof d === 'string'));
  return sized && o.cast(o.add(o.mul(o.sizeOf(sized), 0), 1), 'float32');
}

/** A Dropout whose keep-mask is a graph input: the step draws the mask from the trainer's RNG. */
interface DropoutFeed {
  name: string;
  shape: readonly (number | string)[];
  ratio: number;
}

const BATCH_INPUTS = ['input_ids', 'attention_mask', 'labels'] as const;
const LOSS_SCALE = 'loss_scale';
export const gradName = (param: string): string => `grad.${param}`;

interface BuiltGraph {
  graph: Graph;
  loss: Value;
  /** the model's output: [batch, numLabels] for a sequence classifier */
  logits: Value;
  params: Map<string, Value>;
  dropouts: DropoutFeed[];
  /** parts the LM head and loss run in (1: the model's own loss) */
  lossChunks: number;
  /** base weights the graph holds only as int8 copies (basePrecision 'int8'), given its outputs */
  int8Only: (outputs: readonly Value[]) => string[];
}

function buildLossGraph(
  model: AdaptedModel,
  training: boolean,
  quantKernel?: QuantKernel,
  gradientCheckpointing?: boolean | number,
  basePrecision?: BasePrecision,
  lossChunks = DEFAULT_LOSS_CHUNKS,
  selectiveRecompute = false,
  int8Exclude?: readonly string[],
): BuiltGraph {
  const classes = labelKindOf(model) === 'classes';
  const graph = new Graph();
  const ctx = new BuildContext(graph, model.base.weights, {
    trainable: model.trainableBaseWeights(),
    training,
    quantKernel,
    gradientCheckpointing,
    selectiveRecompute,
    basePrecision,
    int8Exclude,
  });
  const inputIds = graph.input('input_ids', 'int64', ['batch', 'seq']);
  const attentionMask = graph.input('attention_mask', 'int64', ['batch', 'seq']);
  const labels = graph.input('labels', 'int64', classes ? ['batch'] : ['batch', 'seq']);
  const out = model.forward(ctx, { inputIds, attentionMask });
  const modelLoss = model.loss(out.logits, labels);
  // the LM head's label rows from a float16 copy on the int8 base (BuildContext.halfWeight); the
  // positions prompt tuning's prepended -100 labels cover after the shift skip the head
  const loss = classes
    ? modelLoss
    : chunkHeadLoss(modelLoss, lossChunks, training, () => ctx.halfWeight('lm_head.weight'), Math.max(0, (model.prependedLabels ?? 0) - 1));
  if (loss.rank !== 0 || loss.dtype !== 'float32')
    throw new TrainError(`the ${model.peftType} model's loss must be a float32 scalar, got ${loss.toString()}`);

  const tensors = model.parameters();
  const params = new Map(ctx.params);
  for (const [name, v] of params) {
    const t = tensors.get(name);
    if (!t)
      throw new TrainError(
        `the ${model.peftType} model created the trainable tensor "${name}" in its graph but parameters() does not hold it`,
      );
    if (t.shape.length !== v.rank || t.shape.some((d, i) => d !== v.shape[i])) {
      throw new TrainError(`trainable tensor "${name}" is [${t.shape}] in parameters() but [${v.shape}] in the graph`);
    }
  }
  if (params.size === 0)
    throw new TrainError(`the ${model.peftType} model has no trainable tensors in its graph; check the target modules`);

  // Masks made with ctx.dropout, or any Dropout whose keep-mask is a graph input.
  const dropouts: DropoutFeed[] = [];
  for (const n of graph.nodes) {
    if (n.op !== 'Dropout') continue;
    const mask = n.inputs[1]!;
    if (mask.kind !== 'input' || dropouts.some((d) => d.name === mask.name)) continue;
    const ratio = (n.attrs as { ratio: number }).ratio;
    if (!(ratio >= 0 && ratio < 1))
      throw new TrainError(`dropout "${mask.name}" has ratio ${ratio}; a dropout ratio is in [0, 1): set the dropout below 1`);
    dropouts.push({ name: mask.name, shape: mask.shape, ratio });
  }
  for (const v of graph.inputs) {
    if ((BATCH_INPUTS as readonly string[]).includes(v.name) || dropouts.some((d) => d.name === v.name)) continue;
    throw new TrainError(
      `the ${model.peftType} model's graph needs an input "${v.name}" the trainer cannot feed (it feeds input_ids, attention_mask, labels and dropout masks)`,
    );
  }
  return {
    graph,
    loss,
    logits: out.logits,
    params,
    dropouts,
    lossChunks: loss === modelLoss ? 1 : lossChunks,
    int8Only: (outputs) => ctx.int8OnlyWeights(outputs),
  };
}

/**
 * The labels a model trains on: a token per position (causal LM) or a class per row (sequence
 * classifier with 2+ classes); a TrainError saying what to load for anything else.
 */
export function labelKindOf(model: AdaptedModel): 'tokens' | 'classes' {
  const base = model.base;
  if (base.task === 'causal-lm') return 'tokens';
  if (base.task === 'seq-cls') {
    if (base.config.numLabels < 2) {
      throw new TrainError(
        `the ${base.family} model in ${base.dir} has a regression head (num_labels ${base.config.numLabels}); the trainer fine-tunes classifiers with 2 or more classes`,
      );
    }
    return 'classes';
  }
  throw new TrainError(
    `the trainer fine-tunes causal language models and sequence classifiers; the ${base.family} model in ${base.dir} is loaded as a ${base.task} model` +
      (base.family === 'bert'
        ? ' (set "architectures": ["BertForSequenceClassification"] and num_labels/id2label in config.json to train a classifier)'
        : ''),
  );
}

/** The size of a symbolic dim ("batch", "seq", "batch*seq", "seq-1", ...) for one batch. */
export function resolveDim(d: number | string, vars: Record<string, number>): number {
  try {
    return evalDim(d, new Map(Object.entries(vars)));
  } catch (e) {
    throw new TrainError(`cannot size a dropout mask for this batch: ${(e as Error).message}`);
  }
}

function batchFeeds(batch: Batch, kind: 'tokens' | 'classes'): Record<string, HostTensor> {
  const shape = [batch.size, batch.seq];
  if ((batch.labelKind ?? 'tokens') !== kind) {
    throw new TrainError(
      kind === 'classes'
        ? 'this model is a sequence classifier, but the batch holds a label per token; train it on {"text", "label"} rows'
        : 'this model is a causal language model, but the batch holds one class label per row; train it on {"text"}, {"prompt","completion"} or {"messages"} rows',
    );
  }
  return {
    input_ids: { dtype: 'int64', shape, data: batch.inputIds },
    attention_mask: { dtype: 'int64', shape, data: batch.attentionMask },
    labels: { dtype: 'int64', shape: kind === 'classes' ? [batch.size] : shape, data: batch.labels },
  };
}

export function paramFeeds(names: Iterable<string>, params: Map<string, TrainableTensor>, into: Record<string, HostTensor>): void {
  for (const name of names) {
    const p = params.get(name);
    if (!p) throw new TrainError(`trainable tensor "${name}" is missing from the model's parameters`);
    into[name] = { dtype: 'float32' as DType, shape: p.shape, data: p.data as HostArray };
  }
}

/**
 * Draws each dropout's keep-mask for this batch from `rng` into `into`, in one grow-only buffer per
 * mask (`buffers`), refilled each step: fresh pages cost more than the draw. `step` names the caller in the error.
 */
export function keepMaskFeeds(
  dropouts: readonly DropoutFeed[],
  buffers: Map<string, Uint8Array>,
  batch: Batch,
  rng: Rng | undefined,
  step: string,
  into: Record<string, HostTensor>,
): void {
  for (const d of dropouts) {
    if (!rng) throw new TrainError(`this model uses dropout, so the ${step} needs an rng to draw masks from`);
    const shape = d.shape.map((x) => resolveDim(x, { batch: batch.size, seq: batch.seq }));
    const n = shape.reduce((p, q) => p * q, 1);
    let buf = buffers.get(d.name);
    if (!buf || buf.length < n) buffers.set(d.name, (buf = new Uint8Array(n)));
    into[d.name] = { dtype: 'bool', shape, data: drawKeepMask(rng, n, d.ratio, buf) };
  }
}

/**
 * Labels a batch's loss averages over. Classes: rows whose label is not -100. Causal LM: the
 * shifted labels, labels[:, 1:] != -100; when the loss puts `prependedLabels` -100 labels in front
 * (prompt tuning, P-tuning: AdaptedModel.prependedLabels), the shift lands on those, and every
 * position counts: labels[:, 0:] != -100.
 */
export function countLossTokens(batch: Batch, prependedLabels = 0): number {
  let n = 0;
  const ignore = BigInt(IGNORE_INDEX);
  if (batch.labelKind === 'classes') {
    for (const l of batch.labels) if (l !== ignore) n++;
    return n;
  }
  const first = prependedLabels > 0 ? 0 : 1;
  for (let b = 0; b < batch.size; b++) for (let i = first; i < batch.seq; i++) if (batch.labels[b * batch.seq + i] !== ignore) n++;
  return n;
}

/** Rows of a classification batch whose largest logit (the first, on a tie) is their label. */
function countCorrect(logits: Float32Array, batch: Batch): number {
  const classes = logits.length / batch.size;
  let correct = 0;
  for (let b = 0; b < batch.size; b++) {
    let best = 0;
    for (let c = 1; c < classes; c++) if (logits[b * classes + c]! > logits[b * classes + best]!) best = c;
    if (BigInt(best) === batch.labels[b]) correct++;
  }
  return correct;
}

export interface StepResult {
  /** the unscaled mean loss of the batch */
  loss: number;
  /** gradients of loss * lossScale, by parameter name */
  grads: Map<string, Float32Array>;
}

/** Forward + loss + backward of an adapted model as one session. */
export class TrainStep {
  /** each dropout's keep-mask buffer (as large as its largest mask so far), refilled every run */
  private readonly masks = new Map<string, Uint8Array>();

  private constructor(
    private readonly session: RuntimeSession,
    readonly paramNames: readonly string[],
    private readonly dropouts: readonly DropoutFeed[],
    private readonly labelKind: 'tokens' | 'classes' = 'tokens',
    /** parts the LM head and loss run in (1: in one product, as the model builds it) */
    readonly lossChunks = 1,
    /** base weights this step holds only as int8 copies: it never reads their float32 arrays */
    readonly int8OnlyWeights: readonly string[] = [],
  ) {}

  static async compile(model: AdaptedModel, opts: StepOptions = {}): Promise<TrainStep> {
    const { graph, loss, params, dropouts, lossChunks, int8Only } = buildLossGraph(
      model,
      true,
      opts.quantKernel,
      opts.gradientCheckpointing ?? DEFAULT_GRADIENT_CHECKPOINTING,
      opts.basePrecision,
      opts.lossChunks,
      opts.selectiveRecompute ?? DEFAULT_SELECTIVE_RECOMPUTE,
      opts.int8Exclude,
    );
    const scale = graph.input(LOSS_SCALE, 'float32', []);
    const names = [...params.keys()];
    const grads = grad(loss, [...params.values()], scale);
    const outputs: Record<string, Value> = { loss };
    addGradientOutputs(graph, names, grads, outputs);
    // No memory-pattern planning: with symbolic batch/seq dims it allocates a second, per-shape block
    // beside the arena on the second run (+1.4 GiB peak for GPT-2 small at 4 x 256) for no speed gain.
    const session = await RuntimeSession.fromGraph(graph, outputs, {
      memPattern: false,
      largeConstantBytes: STEP_LARGE_CONSTANT_BYTES,
      // each parameter's gradient finished as the backward pass reaches it (LowerOptions.outputsLast)
      outputsLast: true,
      ...opts,
      name: `${model.peftType} train step`,
    });
    return new TrainStep(session, names, dropouts, labelKindOf(model), lossChunks, int8Only(Object.values(outputs)));
  }

  /** Dropout ratios of the masks this step draws (empty when the model has no dropout). */
  get dropoutRatios(): number[] {
    return this.dropouts.map((d) => d.ratio);
  }

  async run(batch: Batch, params: Map<string, TrainableTensor>, opts: { lossScale?: number; rng?: Rng } = {}): Promise<StepResult> {
    const feeds: Record<string, HostTensor> = batchFeeds(batch, this.labelKind);
    feeds[LOSS_SCALE] = { dtype: 'float32', shape: [], data: Float32Array.of(opts.lossScale ?? 1) };
    paramFeeds(this.paramNames, params, feeds);
    keepMaskFeeds(this.dropouts, this.masks, batch, opts.rng, 'train step', feeds);
    const out = await this.session.run(feeds);
    const grads = new Map<string, Float32Array>();
    for (const name of this.paramNames) grads.set(name, out[gradName(name)]!.data as Float32Array);
    return { loss: out.loss!.data[0] as number, grads };
  }

  async dispose(): Promise<void> {
    await this.session.dispose();
  }
}

export interface EvalStepResult {
  /** the mean loss of the batch */
  loss: number;
  /** how many labels it averages over: label tokens (causal LM) or examples (classification) */
  tokens: number;
  /** classification: examples whose argmax logit is their label */
  correct?: number;
}

/** The loss of an adapted model without dropout, for evaluation (and the logits of a classifier, for accuracy). */
export class EvalStep {
  private constructor(
    private readonly session: RuntimeSession,
    readonly paramNames: readonly string[],
    private readonly labelKind: 'tokens' | 'classes',
    private readonly prependedLabels: number,
    /** base weights this step holds only as int8 copies: it never reads their float32 arrays */
    readonly int8OnlyWeights: readonly string[],
  ) {}

  /**
   * With basePrecision 'int8' the evaluation runs on the same int8 base as the training step (the
   * int8 copies are shared, src/quant/int8_base.ts), so training need not keep the float32 arrays
   * of those matrices (Trainer releases them); the eval loss is then the int8 base's.
   */
  static async compile(model: AdaptedModel, opts: StepOptions = {}): Promise<EvalStep> {
    const { graph, loss, logits, params, dropouts, int8Only } = buildLossGraph(
      model,
      false,
      opts.quantKernel,
      undefined,
      opts.basePrecision,
      opts.lossChunks,
      false,
      opts.int8Exclude,
    );
    if (dropouts.length) throw new TrainError(`the ${model.peftType} model draws dropout masks even when built for evaluation`);
    const kind = labelKindOf(model);
    const outputs: Record<string, Value> = kind === 'classes' ? { loss, logits } : { loss };
    const session = await RuntimeSession.fromGraph(graph, outputs, {
      memPattern: false,
      largeConstantBytes: STEP_LARGE_CONSTANT_BYTES,
      ...opts,
      name: `${model.peftType} eval step`,
    });
    return new EvalStep(session, [...params.keys()], kind, model.prependedLabels ?? 0, int8Only(Object.values(outputs)));
  }

  /** The mean loss of the batch, how many labels it averages over, and for a classifier how many rows it gets right. */
  async run(batch: Batch, params: Map<string, TrainableTensor>): Promise<EvalStepResult> {
    const feeds: Record<string, HostTensor> = batchFeeds(batch, this.labelKind);
    paramFeeds(this.paramNames, params, feeds);
    if (this.labelKind === 'classes') {
      const out = await this.session.run(feeds, ['loss', 'logits']);
      return {
        loss: out.loss!.data[0] as number,
        tokens: countLossTokens(batch),
        correct: countCorrect(out.logits!.data as Float32Array, batch),
      };
    }
    const out = await this.session.run(feeds, ['loss']);
    return { loss: out.loss!.data[0] as number, tokens: countLossTokens(batch, this.prependedLabels) };
  }

  async dispose(): Promise<void> {
    await this.session.dispose();
  }
}
