// Issue 16's unmerged-LoRA gate (>= 0.9x the merged model's tokens/s), measured in a way a busy
// shared machine disturbs less than wall-clock tokens/s: ONNX Runtime's own profiler times every
// node of the decode session at every step, and each node's minimum over all steps is its
// undisturbed cost. GPT-2-small shape (random weights), batch 1, greedy, 32-token prompt, 64 new
// tokens, int8 base weights (the configuration of bench/decode.ts that meets the 100 tok/s target),
// the plain base (= a merged model: merging changes the weights, not the graph) against a LoRA r16
// adapter on c_attn, c_proj, c_fc, unmerged (LoraModel), with and without thread spinning.
// Per configuration: nodes per decode step, the sum of the nodes' minimum kernel times, and the
// minimum and median of the whole step (ONNX Runtime's model_run, which adds the executor's
// per-node overhead and the copies of the outputs). The unmerged/merged ratio is given two ways:
// implied within the unmerged session (its step without the adapter's own nodes, over its step:
// one session, one stretch of time, so a change of load between sessions does not enter), and
// across the two sessions (each its own stretch of time, so load changes do enter).
//
//   npx tsc -p . && nice -n 10 node dist/bench/decode_nodes.js [--runs 4] [--threads 2]

import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import type * as ort from 'onnxruntime-node';
import { Generator, type InferenceModel } from '../src/generate/index.js';
import { runtimeBackend, setRuntimeBackend } from '../src/runtime/backend.js';
import { LoraModel } from '../src/tuners/lora/index.js';
import { forEachFlag, helpOrUnknown, intArg } from './args.js';
import { randomBenchModel } from './train_models.js';

const HELP =
  "usage: node dist/bench/decode_nodes.js [--runs N (generations per configuration, default 4)] [--threads N (default 2)] [--adapter-tensors auto|frozen|fed (GeneratorOptions.adapterTensors, default auto)] [--by-op (print each profile's node minima summed by op type, in and outside the wrapped modules)]";
let RUNS = 4;
let THREADS = 2;
let TENSORS: 'auto' | 'frozen' | 'fed' = 'auto';
let BY_OP = false;
forEachFlag(process.argv.slice(2), (flag, value) => {
  if (flag === '--runs') RUNS = intArg(flag, value(), 1);
  else if (flag === '--threads') THREADS = intArg(flag, value(), 1);
  else if (flag === '--by-op') BY_OP = true;
  else if (flag === '--adapter-tensors') {
    const v = value();
    if (v !== 'auto' && v !== 'frozen' && v !== 'fed') throw new Error(`--adapter-tensors takes auto, frozen or fed, got "${v}"`);
    TENSORS = v;
  } else helpOrUnknown(flag, HELP);
});

interface ProfileEvent {
  cat: string;
  name: string;
  dur: number;
  args?: { op_name?: string };
}

interface StepProfile {
  nodes: number;
  sumNodeMinUs: number;
  /** the adapter's own nodes (products and adds inside the wrapped modules), summed minima, plus
   * what the Sums that take an adapter's delta and the residual together cost above a plain Add */
  loraNodes: number;
  sums: number;
  loraMinUs: number;
  /** the Concats that grow the KV cache (one copy of every layer's keys and values per step), summed minima */
  concatMinUs: number;
  stepMinUs: number;
  stepMedianUs: number;
}

const WRAPPED = /\.(attn\.c_attn|attn\.c_proj|mlp\.c_fc|mlp\.c_proj)\//;
const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[xs.length >> 1]!;

/** The decode session's profile: the file with the most model runs (the prefill session runs once per generation). */
function summarize(files: string[]): StepProfile {
  let best: StepProfile | undefined;
  let bestRuns = -1;
  for (const f of files) {
    const events = JSON.parse(fs.readFileSync(f, 'utf8')) as ProfileEvent[];
    const perNode = new Map<string, number>();
    const ops = new Map<string, string>();
    const runs: number[] = [];
    for (const e of events) {
      if (e.cat === 'Node' && e.name.endsWith('_kernel_time')) {
        perNode.set(e.name, Math.min(perNode.get(e.name) ?? Infinity, e.dur));
        ops.set(e.name, e.args?.op_name ?? '');
      } else if (e.cat === 'Session' && e.name === 'model_run') runs.push(e.dur);
    }
    if (runs.length > bestRuns) {
      bestRuns = runs.length;
      // In the merged graph a wrapped module's scope holds only its int8 product (MatMulNBits);
      // the float products and adds there are the adapter's.
      const lora = [...perNode].filter(
        ([n]) => WRAPPED.test(n) && (ops.get(n) === 'FusedMatMul' || ops.get(n) === 'MatMul' || ops.get(n) === 'Add'),
      );
      if (BY_OP) {
        const by = new Map<string, [number, number]>();
        for (const [n, d] of perNode) {
          const k = `${WRAPPED.test(n) ? 'wrapped' : 'other'} ${ops.get(n)}`;
          const e = by.get(k) ?? [0, 0];
          by.set(k, [e[0] + 1, e[1] + d]);
        }
        console.log(f, [...by].map(([k, [c, d]]) => `${k}: ${c} ${(d / 1000).toFixed(3)} ms`).join('; '));
      }
      // Where a module's delta meets the residual, the lowering emits one Sum(base, delta, residual)
      // in place of the adapter's Add and the residual Add: the Sum's cost above a plain residual
      // Add (the median minimum of this session's Adds outside the wrapped modules) is the adapter's.
      const sums = [...perNode].filter(([n]) => ops.get(n) === 'Sum').map(([, d]) => d);
      const plainAdds = [...perNode].filter(([n]) => !WRAPPED.test(n) && ops.get(n) === 'Add').map(([, d]) => d);
      const sumExtraUs = sums.length && plainAdds.length ? sums.reduce((a, d) => a + Math.max(0, d - median(plainAdds)), 0) : 0;
      best = {
        nodes: perNode.size,
        loraNodes: lora.length,
        sums: sums.length,
        loraMinUs: lora.reduce((a, [, d]) => a + d, 0) + sumExtraUs,
        concatMinUs: [...perNode].filter(([n]) => ops.get(n) === 'Concat').reduce((a, [, d]) => a + d, 0),
        sumNodeMinUs: [...perNode.values()].reduce((a, b) => a + b, 0),
        stepMinUs: Math.min(...runs),
        stepMedianUs: median(runs),
      };
    }
  }
  return best!;
}

async function profile(model: InferenceModel, spinning: boolean, prompt: number[], dir: string, tag: string): Promise<StepProfile> {
  const backend = runtimeBackend();
  const sessions: ort.InferenceSession[] = [];
  const create = (async (bytes: Uint8Array, opts: ort.InferenceSession.SessionOptions) => {
    const s = await backend.ort.InferenceSession.create(bytes, { ...opts, enableProfiling: true, profileFilePrefix: path.join(dir, tag) });
    sessions.push(s);
    return s;
  }) as unknown as typeof ort.InferenceSession.create;
  const previous = setRuntimeBackend({
    ...backend,
    ort: { ...backend.ort, InferenceSession: { ...backend.ort.InferenceSession, create } },
  });
  let gen: Generator;
  try {
    gen = await Generator.create(model, {
      runtime: { threads: THREADS, quantize: 'int8', spinning },
      adapterTensors: TENSORS,
      defaults: { eosTokenIds: [], doSample: false, temperature: 1, topK: 0, topP: 1 },
    });
  } finally {
    setRuntimeBackend(previous);
  }
  for (let i = 0; i < RUNS; i++) await gen.generate([prompt], { maxNewTokens: 64 });
  // onnxruntime-node writes each session's profile to <prefix>_<timestamp>.json (its endProfiling returns nothing)
  for (const s of sessions) s.endProfiling();
  const files = fs
    .readdirSync(dir)
    .filter((f) => f.startsWith(`${tag}_`) && f.endsWith('.json'))
    .map((f) => path.join(dir, f));
  await gen.dispose();
  return summarize(files);
}

async function main(): Promise<void> {
  const load = (): string => fs.readFileSync('/proc/loadavg', 'utf8').split(' ').slice(0, 3).join(' ');
  console.log(`load average at start: ${load()}`);
  const base = randomBenchModel('gpt2');
  const lora = await LoraModel.create(
    base,
    { r: 16, loraAlpha: 32, targetModules: ['c_attn', 'c_proj', 'c_fc'], initLoraWeights: false },
    { seed: 1 },
  );
  const prompt = Array.from({ length: 32 }, (_, i) => (i * 7919 + 13) % base.vocabSize);
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'peft-decode-nodes-'));
  const rows: string[] = [];
  try {
    for (const spinning of [false, true]) {
      // merged and unmerged alternate, so a change of load hits both
      const merged = await profile(base, spinning, prompt, dir, `merged_${spinning}`);
      const unmerged = await profile(lora, spinning, prompt, dir, `unmerged_${spinning}`);
      const r = (a: number, b: number): string => (a / b).toFixed(3);
      for (const [label, p] of [
        ['merged (base weights)', merged],
        ['LoRA r16 unmerged', unmerged],
      ] as const) {
        const u = p === unmerged;
        rows.push(
          `| ${label}, ${spinning ? 'spinning' : 'no spinning'} | ${p.nodes} | ${(p.sumNodeMinUs / 1000).toFixed(2)} | ${(p.stepMinUs / 1000).toFixed(2)} | ${(p.stepMedianUs / 1000).toFixed(2)} | ${(p.concatMinUs / 1000).toFixed(2)} | ${u ? `${p.loraNodes}${p.sums ? ` + ${p.sums} Sums` : ''}: ${(p.loraMinUs / 1000).toFixed(2)}` : ''} | ${u ? `${r(p.stepMinUs - p.loraMinUs, p.stepMinUs)} / ${r(p.sumNodeMinUs - p.loraMinUs, p.sumNodeMinUs)}` : ''} | ${u ? `${r(merged.sumNodeMinUs, unmerged.sumNodeMinUs)} / ${r(merged.stepMinUs, unmerged.stepMinUs)} / ${r(merged.stepMedianUs, unmerged.stepMedianUs)}` : ''} |`,
        );
      }
    }
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
  console.log(`load average at end: ${load()}`);
  console.log(
    [
      '| decode session (int8 weights) | nodes per step | sum of node minima ms | step min ms | step median ms | KV-cache Concats, minima ms | adapter nodes: their minima ms | implied unmerged / merged (step min, node minima) | merged / unmerged across sessions (node minima / step min / step median) |',
      '|---|---:|---:|---:|---:|---:|---|---|---|',
      ...rows,
    ].join('\n'),
  );
}

main().catch((e: unknown) => {
  console.error(e);
  process.exit(1);
});
