// Profiles one training step of a method (default: LoRA on q/v of the GPT-2-small-shaped random
// model) with ONNX Runtime's own profiler: the step graph is built as TrainStep builds it, run a few
// times in a profiling session, and the per-node times are summed by op type and by model region
// (embedding / attention / MLP / LM head + loss, forward vs backward) to show what limits a step.
//
//   node dist/bench/profile_train_step.js [--model gpt2|llama] [--method lora-qv] [--runs 2] [--threads 2] [--mode shared|prepacked] [--base-precision fp32|int8]
//       [--checkpoint-every K] [--loss-chunks N] [--selective-recompute 0|1]   (defaults: TrainStep's)  [--top 30] (nodes listed)
//   node dist/bench/profile_train_step.js --model llama --runs 0     # only the graph's element-wise work (no session)
//   PEFT_PROFILE_KEEP=/tmp/p.json node dist/bench/profile_train_step.js ...   # also keep ONNX Runtime's profile (per-node JSON)
//
// It first prints the element-wise work of the step graph as built (before ONNX Runtime's own
// fusions): nodes and "element passes" (the elements each node reads or writes, largest operand),
// forward and backward. That count does not depend on the machine's load; the profile does.

import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import * as ort from 'onnxruntime-node';
import { grad } from '../src/autodiff/grad.js';
import { Graph, type Value } from '../src/graph/ir.js';
import { type BasePrecision, BuildContext } from '../src/nn/context.js';
import { lowerGraph } from '../src/onnx/export.js';
import { encodeModel } from '../src/onnx/model.js';
import { toOrtTensor } from '../src/runtime/session.js';
import { chunkHeadLoss, DEFAULT_LOSS_CHUNKS } from '../src/train/chunked_loss.js';
import { DEFAULT_GRADIENT_CHECKPOINTING, DEFAULT_SELECTIVE_RECOMPUTE } from '../src/train/step.js';
import { adaptForBench, randomBenchModel } from './train_models.js';

interface Args {
  model: string;
  method: string;
  runs: number;
  threads: number;
  batch: number;
  seq: number;
  mode: 'shared' | 'prepacked';
  basePrecision: BasePrecision;
  checkpointEvery: number;
  lossChunks: number;
  selectiveRecompute: boolean;
  top: number;
}

function parse(argv: string[]): Args {
  const a: Args = {
    model: 'gpt2',
    method: 'lora-qv',
    runs: 2,
    threads: 2,
    batch: 4,
    seq: 256,
    mode: 'shared',
    basePrecision: 'fp32',
    checkpointEvery: Number(DEFAULT_GRADIENT_CHECKPOINTING),
    lossChunks: DEFAULT_LOSS_CHUNKS,
    selectiveRecompute: DEFAULT_SELECTIVE_RECOMPUTE,
    top: 30,
  };
  for (let i = 0; i < argv.length; i += 2) {
    const k = argv[i]!.replace(/^--/, '');
    const v = argv[i + 1];
    if (v === undefined) throw new Error(`--${k} needs a value`);
    if (k === 'model' || k === 'method') a[k] = v;
    else if (k === 'mode') a.mode = v as Args['mode'];
    else if (k === 'base-precision') {
      if (v !== 'fp32' && v !== 'int8') throw new Error(`--base-precision takes fp32 or int8, got ${v}`);
      a.basePrecision = v;
    } else if (k === 'checkpoint-every') a.checkpointEvery = Number(v);
    else if (k === 'loss-chunks') a.lossChunks = Number(v);
    else if (k === 'selective-recompute') a.selectiveRecompute = v !== '0' && v !== 'false';
    else if (k === 'runs' || k === 'top' || k === 'threads' || k === 'batch' || k === 'seq') a[k] = Number(v);
    else throw new Error(`unknown option --${k}`);
  }
  return a;
}

interface ProfileEvent {
  cat: string;
  name: string;
  dur: number;
  args?: { op_name?: string };
}

/** Model region of a node, from the scope its name carries ("/transformer.h.3.attn/MatMul_12"). */
function region(node: string): string {
  const bwd = /grad|Grad/.test(node) ? 'backward' : 'forward';
  let where = 'other';
  if (/attn|self_attn/.test(node)) where = 'attention block';
  else if (/mlp/.test(node)) where = 'MLP block';
  else if (/lm_head|cross|loss|logits|CrossEntropy|Softmax/.test(node)) where = 'LM head + loss';
  else if (/wte|wpe|embed/.test(node)) where = 'embeddings';
  else if (/ln_|norm/.test(node)) where = 'norms';
  return `${where} (${bwd})`;
}

/** Ops that move or combine elements without a matrix product (the work fused ops remove). */
const ELEMENTWISE = new Set<string>([
  'Add',
  'Sub',
  'Mul',
  'Div',
  'Pow',
  'Neg',
  'Abs',
  'Sqrt',
  'Reciprocal',
  'Exp',
  'Log',
  'Tanh',
  'Erf',
  'Sigmoid',
  'Cos',
  'Sin',
  'Where',
  'Cast',
  'Softmax',
  'LogSoftmax',
  'ReduceSum',
  'ReduceMean',
  'ReduceMax',
  'ExpandLike',
  'Concat',
  'Split',
  'Slice',
  'Pad',
  'Transpose',
  'Dropout',
  'LayerNorm',
  'RmsNorm',
  'Rotary',
  'GeluTanh',
  'Silu',
]);

function elementwiseWork(graph: Graph, firstGradNode: number, args: Args): void {
  // symbolic dims are 'batch', 'seq' or products of them ("batch*seq")
  const dim = (d: number | string): number =>
    typeof d === 'number'
      ? d
      : d
          .split('*')
          .reduce((a, part) => a * (part === 'batch' ? args.batch : part === 'seq' ? args.seq : /^\d+$/.test(part) ? Number(part) : 1), 1);
  const size = (v: Value): number => v.shape.reduce<number>((a, d) => a * dim(d), 1);
  const by = new Map<string, { el: number; n: number }>();
  let total = 0;
  let nodes = 0;
  for (const n of graph.nodes) {
    if (!ELEMENTWISE.has(n.op)) continue;
    const el = Math.max(...n.outputs.map(size), ...n.inputs.map(size));
    const key = `${n.id >= firstGradNode ? 'backward' : 'forward'} ${n.op}`;
    const r = by.get(key) ?? { el: 0, n: 0 };
    r.el += el;
    r.n++;
    by.set(key, r);
    total += el;
    nodes++;
  }
  console.log(`element-wise work in the step graph: ${nodes} nodes, ${(total / 1e6).toFixed(0)} M element passes`);
  for (const [k, r] of [...by].sort((a, b) => b[1].el - a[1].el).slice(0, 15))
    console.log(
      `  ${(r.el / 1e6).toFixed(0).padStart(6)} M  ${((100 * r.el) / total).toFixed(1).padStart(5)}%  ${String(r.n).padStart(5)}x  ${k}`,
    );
}

async function main(): Promise<void> {
  const args = parse(process.argv.slice(2));
  const base = randomBenchModel(args.model);
  const adapted = await adaptForBench(base, args.method);
  const graph = new Graph();
  const ctx = new BuildContext(graph, base.weights, {
    trainable: adapted.trainableBaseWeights(),
    training: true,
    basePrecision: args.basePrecision,
    gradientCheckpointing: args.checkpointEvery,
    selectiveRecompute: args.selectiveRecompute,
  });
  const inputIds = graph.input('input_ids', 'int64', ['batch', 'seq']);
  const attentionMask = graph.input('attention_mask', 'int64', ['batch', 'seq']);
  const labels = graph.input('labels', 'int64', ['batch', 'seq']);
  const out = adapted.forward(ctx, { inputIds, attentionMask });
  const loss = chunkHeadLoss(
    adapted.loss(out.logits, labels),
    args.lossChunks,
    true,
    () => ctx.halfWeight('lm_head.weight'),
    Math.max(0, (adapted.prependedLabels ?? 0) - 1),
  );
  const scale = graph.input('loss_scale', 'float32', []);
  const names = [...ctx.params.keys()];
  const firstGradNode = graph.nodes.length;
  const grads = grad(loss, [...ctx.params.values()], scale);
  const outputs: Record<string, Value> = { loss };
  names.forEach((n, i) => (outputs[`grad.${n}`] = grads[i]!));
  elementwiseWork(graph, firstGradNode, args);
  if (args.runs === 0) return;
  const lowered = lowerGraph(graph, outputs, 'profile', { largeConstants: args.mode === 'shared' ? 'input' : 'external' });
  const bytes = encodeModel(lowered.spec);
  const prefix = path.join(os.tmpdir(), `peft-profile-${process.pid}`);
  const options: ort.InferenceSession.SessionOptions & { externalData?: { path: string; data: Uint8Array }[] } = {
    executionProviders: ['cpu'],
    graphOptimizationLevel: 'all',
    intraOpNumThreads: args.threads,
    interOpNumThreads: 1,
    enableProfiling: true,
    profileFilePrefix: prefix,
    logSeverityLevel: 3,
  };
  if (lowered.externalData.length) options.externalData = lowered.externalData.map((b) => ({ path: b.path, data: b.data }));
  const session = await ort.InferenceSession.create(bytes, options);
  const feeds: Record<string, ort.Tensor> = {};
  for (const c of lowered.constantInputs) {
    if (c.source?.kind !== 'array') throw new Error(`constant ${c.name} has no array`);
    feeds[c.name] = toOrtTensor({ dtype: c.dtype, shape: c.shape as number[], data: c.source.data });
  }
  const B = args.batch;
  const S = args.seq;
  const ids = BigInt64Array.from({ length: B * S }, (_, i) => BigInt((i * 7919) % base.vocabSize));
  feeds.input_ids = new ort.Tensor('int64', ids, [B, S]);
  feeds.attention_mask = new ort.Tensor('int64', new BigInt64Array(B * S).fill(1n), [B, S]);
  feeds.labels = new ort.Tensor('int64', ids, [B, S]);
  feeds.loss_scale = new ort.Tensor('float32', Float32Array.of(1), []);
  const params = adapted.parameters();
  for (const n of names) {
    const p = params.get(n)!;
    feeds[n] = new ort.Tensor('float32', p.data, p.shape);
  }
  const times: number[] = [];
  for (let i = 0; i < args.runs; i++) {
    const t0 = performance.now();
    await session.run(feeds);
    times.push((performance.now() - t0) / 1000);
  }
  session.endProfiling();
  await session.release();
  // ONNX Runtime writes <prefix>_<date>.json.
  const dir = path.dirname(prefix);
  const found = fs.readdirSync(dir).filter((f) => f.startsWith(path.basename(prefix)) && f.endsWith('.json'));
  if (found.length !== 1) throw new Error(`expected one profile file ${prefix}_*.json, found ${found.length}`);
  const profile = path.join(dir, found[0]!);
  const events = JSON.parse(fs.readFileSync(profile, 'utf8')) as ProfileEvent[];
  if (process.env.PEFT_PROFILE_KEEP) fs.copyFileSync(profile, process.env.PEFT_PROFILE_KEEP);
  fs.unlinkSync(profile);
  const nodes = events.filter((e) => e.cat === 'Node' && e.name.endsWith('_kernel_time'));
  const runs = events.filter((e) => e.cat === 'Session' && e.name === 'model_run');
  // The first run includes allocation warm-up: report the last one.
  const last = runs[runs.length - 1]!;
  const inLast = nodes.filter((e) => (e as unknown as { ts: number }).ts >= (last as unknown as { ts: number }).ts);
  const total = inLast.reduce((s, e) => s + e.dur, 0);
  const sum = (key: (e: ProfileEvent) => string) => {
    const m = new Map<string, { us: number; n: number }>();
    for (const e of inLast) {
      const k = key(e);
      const r = m.get(k) ?? { us: 0, n: 0 };
      r.us += e.dur;
      r.n++;
      m.set(k, r);
    }
    return [...m].sort((a, b) => b[1].us - a[1].us);
  };
  const print = (title: string, rows: [string, { us: number; n: number }][], top: number) => {
    console.log(`\n${title}`);
    for (const [k, r] of rows.slice(0, top))
      console.log(
        `  ${(r.us / 1e6).toFixed(3).padStart(7)} s  ${((100 * r.us) / total).toFixed(1).padStart(5)}%  ${String(r.n).padStart(5)}x  ${k}`,
      );
  };
  console.log(
    `${args.model} ${args.method} b${B} s${S} t${args.threads} weights ${args.mode}, base ${args.basePrecision}, checkpoint every ${args.checkpointEvery}, loss parts ${args.lossChunks}, selective ${args.selectiveRecompute}: session runs ${times.map((t) => t.toFixed(2)).join(', ')} s; last run: model_run ${(last.dur / 1e6).toFixed(2)} s, kernels ${(total / 1e6).toFixed(2)} s; load ${os.loadavg()[0]!.toFixed(1)}`,
  );
  print(
    'by op type',
    sum((e) => e.args?.op_name ?? '?'),
    25,
  );
  print(
    'by region',
    sum((e) => region(e.name)),
    20,
  );
  print(
    'top nodes',
    sum((e) => `${e.args?.op_name ?? '?'} ${e.name.replace(/_kernel_time$/, '')}`),
    args.top,
  );
}

main().catch((e: unknown) => {
  console.error(e instanceof Error ? (e.stack ?? e.message) : e);
  process.exit(1);
});
