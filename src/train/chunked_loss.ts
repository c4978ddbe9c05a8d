// The LM head and the causal-LM loss in chunks over the tokens, so the [batch, seq, vocab] logits
// (and their gradient) never exist at once: for GPT-2 small at 4 x 256 each of them is 206 MB, for
// SmolLM's 49k vocabulary 201 MB, and a step held three (logits, the loss's softmax, its gradient).
//
// A rewrite of the graph a model built: when its loss is causalLmLoss / crossEntropyMean over the
// product of the final hidden states h with a frozen LM-head matrix, the loss is rebuilt as
//   for each of `chunks` parts of the rows of h (in order, one after the other):
//     s_c = sum of the part's per-token losses;  dh_c = d s_c / d h_c   (both in the forward pass)
//   L = (s_0 + ... + s_k) / count
//   loss = stop(L) + (z - stop(z)),  z = sum(h * stop(dh / count))
// whose value is L exactly (z - z is 0) and whose gradient with respect to h is dh / count, the
// unchunked loss's. So each part's logits live only while its loss and hidden-state gradient are
// computed (the LM head's backward product runs right after its forward product, as Liger-Kernel's
// fused linear cross-entropy does), and nothing is recomputed. A 1 computed from each part's results
// scales the next part's input, so ONNX Runtime runs the parts one after another instead of holding
// all their logits. The old loss nodes are left unused and dropped at export.

import { grad } from '../autodiff/grad.js';
import type { Node, Value } from '../graph/ir.js';
import * as o from '../graph/ops.js';

/**
 * Parts the LM head and loss are split into when not told otherwise (TrainStep, EvalStep, `peft
 * train --loss-chunks`): 4. Measured on a quiet machine (GPT-2 small, LoRA q/v, int8 base, 4 x 256,
 * 2026-12-02 12:50 UTC, `node dist/bench/train_methods.js --models gpt2 --methods lora-qv
 * --base-precision int8 --no-peer --loss-chunks N`): 1 part 801 tok/s at 1905 MiB peak RSS, 4 parts
 * 781 tok/s (-2.6%) at 1615 MiB, 8 parts 739 tok/s (-7.8%) at 1564 MiB. Every part repacks the
 * LM-head matrix (fed from JS, not prepacked), so more parts cost more CPU; 4 is the most that stays
 * within the 5% a default may cost. A causal LM without a frozen LM head keeps its own loss.
 */
export const DEFAULT_LOSS_CHUNKS = 4;

/** The number of parts bench/RESULTS.md measured for memory (`--loss-chunks 8`). */
export const MEMORY_LOSS_CHUNKS = 8;

const HEAD_OPS = new Set(['Int8MatMul', 'MatMulT', 'MatMul']);

interface HeadLoss {
  /** the final hidden states [batch, seq, hidden] */
  hidden: Value;
  /** the LM-head product node (x @ W with W frozen) */
  head: Node;
  /** the labels, flattened and shifted as the loss uses them: [batch*seq] */
  labels: Value;
  ignoreIndex: number;
  /** number of labels the mean divides by */
  count: Value;
}

/** The parts of `loss` if it is a mean cross-entropy over a frozen LM head's logits, else null. */
function matchHeadLoss(loss: Value): HeadLoss | null {
  const div = loss.producer;
  if (!div || div.op !== 'Div') return null;
  const [total, count] = div.inputs as [Value, Value];
  const reduce = total.producer;
  if (!reduce || reduce.op !== 'ReduceSum') return null;
  const sce = reduce.inputs[0]!.producer;
  if (!sce || sce.op !== 'SoftmaxCrossEntropy') return null;
  const [logits2d, labels] = sce.inputs as [Value, Value];
  const reshape = logits2d.producer;
  if (!reshape || reshape.op !== 'Reshape' || labels.rank !== 1) return null;
  const logits = reshape.inputs[0]!;
  const head = logits.producer;
  if (!head || !HEAD_OPS.has(head.op) || logits.rank !== 3) return null;
  // a trainable or computed LM head (LoRA on lm_head, full fine-tuning) keeps the plain loss
  if (head.inputs.slice(1).some((v) => v.kind !== 'const')) return null;
  const hidden = head.inputs[0]!;
  if (hidden.rank !== 3) return null;
  // the logits feed only the loss
  for (const n of loss.graph.nodes) if (n !== reshape && n.inputs.includes(logits)) return null;
  return { hidden, head, labels, ignoreIndex: (sce.attrs as { ignoreIndex: number }).ignoreIndex, count };
}

/**
 * d(sum of a part's per-token losses) / d(the part's hidden states) for an int8 LM head that also
 * holds its float32 matrix (BuildContext.int8Weight with floatBackward), with the backward product
 * on the int8 copy: the gradient of the logits is softmax(logits) - onehot(labels), and
 * DynamicQuantizeMatMul quantizes its input to 8 bits per tensor, which lost the many small
 * probabilities next to the -1s (gradient cosine 0.91). So the one-hot part is taken apart (the
 * label rows of the float32 matrix, gathered) and the softmax is scaled per row to a maximum of 1
 * before the int8 product, its row scale multiplied back after:
 *   dh = (p / r) @ W^T_int8 * r - W^T[label],   r = max over the row of p = 1 / sum(exp(l - max l)),
 * with p / r = exp(l - max l) computed directly (no normalised softmax), rows with the ignored
 * label giving 0; undefined for any other head (autodiff's product then). Against the float32
 * product, under load: -17% CPU per GPT-2 LoRA q/v step, peak RSS +30-55 MiB at 4 parts
 * (bench/RESULTS.md, "Notes of 2026-12-02, 17:20-18:17 UTC").
 */
function int8HeadGrad(m: HeadLoss, logits: Value, labels: Value, table?: Value): Value | undefined {
  if (m.head.op !== 'Int8MatMul' || m.head.inputs.length !== 6) return undefined;
  const [, b, bScale, bt, btScale, wt] = m.head.inputs as [Value, Value, Value, Value, Value, Value];
  if (bt.dtype !== 'int8' || logits.dtype !== 'float32') return undefined;
  const kept = o.not(o.equal(labels, labels.graph.scalar(m.ignoreIndex, 'int64')));
  const safe = o.where(kept, labels, labels.graph.scalar(0, 'int64'));
  // e = exp(logits - row max) = softmax / its row maximum (in (0, 1], 1 at the maximum); 1 / row sum = that maximum
  const l = o.stopGradient(logits);
  const e = o.exp(o.sub(l, o.max(l, -1, true)));
  const r = o.div(1, o.sum(e, -1, true));
  const spread = o.int8Matmul(e, [bt, btScale, b, bScale]);
  const col = o.unsqueeze(o.cast(kept, 'float32'), -1);
  // the label rows from the float16 copy when there is one (the float32 matrix is then not read)
  const rows = table ? o.cast(o.gather(table, safe, 0), 'float32') : o.gather(wt, safe, 0);
  return o.sub(o.mul(spread, o.mul(r, col)), o.mul(rows, col));
}

/**
 * The loss of `loss`'s graph with the LM head and cross-entropy computed in `chunks` parts over the
 * tokens, with the same value and the same gradients (see the top of this file); `loss` itself when
 * its graph does not have that shape or chunks <= 1. `training`: also compute each part's
 * hidden-state gradient in the forward pass (for a graph that will be differentiated).
 */
export function chunkHeadLoss(loss: Value, chunks: number, training: boolean, labelTable?: () => Value | undefined): Value {
  if (!(chunks > 1)) return loss;
  const m = matchHeadLoss(loss);
  if (!m) return loss;
  const hiddenSize = m.hidden.shape[2] as number;
  const h2 = o.reshape(m.hidden, [-1, hiddenSize]);
  // An int8 head's float32 operand is there for autodiff's backward product, which the parts build
  // themselves (int8HeadGrad, reading only the label rows: from `labelTable`'s float16 copy when
  // given) or do not need (evaluation): then left out, so the step never reads the float32 matrix
  // (and Trainer can release it).
  const floatOperand = m.head.op === 'Int8MatMul' && m.head.inputs.length === 6 && m.head.inputs[3]!.dtype === 'int8';
  const wt = m.head.inputs[5];
  let table = floatOperand && training ? labelTable?.() : undefined;
  if (table && wt && (table.rank !== 2 || table.shape[0] !== wt.shape[0] || table.shape[1] !== wt.shape[1])) table = undefined;
  const rest = m.head.inputs.slice(1, floatOperand && (!training || table) ? 5 : undefined);
  const sums: Value[] = [];
  const grads: Value[] = [];
  let order: Value | undefined;
  for (let c = 0; c < chunks; c++) {
    let hc = o.chunk(h2, 0, c, chunks);
    if (order) hc = o.mul(hc, o.cast(order, hc.dtype));
    const logits = loss.graph.op(m.head.op, [hc, ...rest], m.head.attrs as never)[0]!;
    const s = o.sum(o.softmaxCrossEntropy(logits, o.chunk(m.labels, 0, c, chunks), m.ignoreIndex));
    sums.push(s);
    let done = o.sizeOf(s);
    if (training) {
      const dh = int8HeadGrad(m, logits, o.chunk(m.labels, 0, c, chunks), table) ?? grad(s, [hc])[0]!;
      grads.push(dh);
      done = o.add(done, o.sizeOf(dh));
    }
    // a 1 that exists only once this part is done: the next part waits for it
    order = o.add(o.mul(done, 0), 1);
  }
  const total = sums.reduce((a, b) => o.add(a, b));
  const mean = o.div(total, m.count);
  if (!training) return mean;
  const dh = o.stopGradient(o.div(o.reshapeLike(o.concat(grads, 0), h2), m.count));
  const z = o.sum(o.mul(h2, dh));
  return o.add(o.stopGradient(mean), o.sub(z, o.stopGradient(z)));
}
