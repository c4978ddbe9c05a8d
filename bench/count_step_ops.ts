// Counts the matrix products of a training step graph (as TrainStep builds it) by op and shape,
// to compare methods structurally (independent of the machine's load).
//   node dist/bench/count_step_ops.js --model llama --method lora-all [--base-precision int8]
import { grad } from '../src/autodiff/grad.js';
import { Graph, type Value } from '../src/graph/ir.js';
import { BuildContext } from '../src/nn/context.js';
import { chunkHeadLoss, DEFAULT_LOSS_CHUNKS } from '../src/train/chunked_loss.js';
import { DEFAULT_GRADIENT_CHECKPOINTING, DEFAULT_SELECTIVE_RECOMPUTE } from '../src/train/step.js';
import { adaptForBench, randomBenchModel } from './train_models.js';

const argv = process.argv.slice(2);
const opt = (k: string, d: string) => {
  const i = argv.indexOf(`--${k}`);
  return i >= 0 ? argv[i + 1]! : d;
};
const base = randomBenchModel(opt('model', 'llama'));
const adapted = await adaptForBench(base, opt('method', 'lora-qv'));
const graph = new Graph();
const ctx = new BuildContext(graph, base.weights, {
  trainable: adapted.trainableBaseWeights(),
  training: true,
  basePrecision: opt('base-precision', 'int8') as 'int8',
  gradientCheckpointing: Number(DEFAULT_GRADIENT_CHECKPOINTING),
  selectiveRecompute: DEFAULT_SELECTIVE_RECOMPUTE,
});
const inputIds = graph.input('input_ids', 'int64', ['batch', 'seq']);
const attentionMask = graph.input('attention_mask', 'int64', ['batch', 'seq']);
const labels = graph.input('labels', 'int64', ['batch', 'seq']);
const out = adapted.forward(ctx, { inputIds, attentionMask });
const loss = chunkHeadLoss(
  adapted.loss(out.logits, labels),
  DEFAULT_LOSS_CHUNKS,
  true,
  () => ctx.halfWeight('lm_head.weight'),
  // SKIP=0: the virtual-token rows through the LM head as before
  process.env.SKIP === '0' ? 0 : Math.max(0, (adapted.prependedLabels ?? 0) - 1),
);
const scale = graph.input('loss_scale', 'float32', []);
const firstGrad = graph.nodes.length;
grad(loss, [...ctx.params.values()], scale);
const shape = (v: Value) => `[${v.shape.join(',')}]${v.dtype === 'float32' ? '' : v.dtype}`;
const by = new Map<string, number>();
const ops = new Map<string, number>();
for (const n of graph.nodes) {
  ops.set(n.op, (ops.get(n.op) ?? 0) + 1);
  if (!/MatMul|Gemm/.test(n.op)) continue;
  const k = `${n.id >= firstGrad ? 'bwd' : 'fwd'} ${n.op} ${n.inputs.map(shape).join(' x ')}`;
  by.set(k, (by.get(k) ?? 0) + 1);
}
for (const [k, c] of [...by].sort()) console.log(String(c).padStart(5), k);
console.log('nodes', graph.nodes.length);
console.log(
  [...ops]
    .sort((a, b) => b[1] - a[1])
    .slice(0, 25)
    .map(([k, c]) => `${k}:${c}`)
    .join(' '),
);
