// Benchmark: one forward row and one LoRA training row per model family added for issue 13
// (qwen3, gemma3_text, phi3, llama3, smollm3, modernbert), on random-weight models of a
// SmolLM-135M-like size built in memory (hidden 576, 30 layers, 9 heads / 3 KV heads, intermediate
// 1536; each family's own features switched on: Qwen3 q/k norms, Gemma 3 sliding/full layers,
// Phi-3 fused projections, Llama 3 rope scaling, SmolLM3 NoPE layers, ModernBERT local/global
// attention and its classification head).
//
//   npx tsc -p . && node dist/bench/families.js                  # every family, writes bench/RESULTS.md
//   node dist/bench/families.js --families qwen3,modernbert --runs 2 --no-write
//
// Forward = one inference pass over batch x seq random tokens (all positions' logits for the
// decoders, the class logits for ModernBERT). Training = one LoRA step (r 8, alpha 16, q/v-style
// attention targets of each family: q_proj,v_proj / qkv_proj / Wqkv) with loss, gradients and
// AdamW. The PyTorch peer (forward rows) is bench/families_torch.py: the same families written in
// plain torch (transformers is not installed here), run right after our forward row of each family
// with OMP_WAIT_POLICY=PASSIVE, when `--python` (python3) with `--pythonpath` (~/torch213) imports
// torch; otherwise the torch column says "not measured".

import { spawnSync } from 'node:child_process';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { ForwardSession } from '../src/generate/index.js';
import { parseConfig } from '../src/models/config.js';
import { buildModel } from '../src/models/load.js';
import type { PretrainedModel } from '../src/models/types.js';
import { WeightStore } from '../src/nn/weights.js';
import { AdamW } from '../src/train/adamw.js';
import type { Batch } from '../src/train/batches.js';
import { TrainStep } from '../src/train/step.js';
import { createAdapter } from '../src/tuners/load.js';
import { BENCH_CONFIGS, noise } from './train_models.js';
import { forEachFlag, helpOrUnknown, intArg, listArg } from './args.js';
import { RESULTS_FILE, writeResultsSection } from './results.js';
import { childEnv, median, peerEnv, timeRuns, torchVersion, withOtherLoad, type PeerEnv } from './peer.js';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const REPO = path.resolve(HERE, '../..');
const HEADING = '## Model families of issue 13: forward and LoRA training step';

const without = (c: Record<string, unknown>, keys: readonly string[]): Record<string, unknown> =>
  Object.fromEntries(Object.entries(c).filter(([k]) => !keys.includes(k)));
/** The SmolLM-135M-shaped Llama of train_models.ts (BENCH_CONFIGS.llama) without its type: every decoder row starts from it. */
const DECODER = without(BENCH_CONFIGS.llama!, ['model_type', 'architectures']);
/** Its widths alone (ModernBERT starts from these). */
const SHAPE = without(DECODER, ['rms_norm_eps', 'hidden_act', 'tie_word_embeddings', 'rope_theta']);

interface Family {
  config: Record<string, unknown>;
  /** LoRA targets of the training row */
  targets: string[];
}

export const FAMILIES: Record<string, Family> = {
  qwen3: {
    config: { ...DECODER, model_type: 'qwen3', architectures: ['Qwen3ForCausalLM'], head_dim: 64, rope_theta: 1e6 },
    targets: ['q_proj', 'v_proj'],
  },
  gemma3_text: {
    config: {
      ...DECODER,
      model_type: 'gemma3_text',
      architectures: ['Gemma3ForCausalLM'],
      head_dim: 64,
      hidden_activation: 'gelu_pytorch_tanh',
      rms_norm_eps: 1e-6,
      query_pre_attn_scalar: 64,
      sliding_window: 128,
      rope_theta: 1e6,
      rope_local_base_freq: 10000,
      layer_types: Array.from({ length: 30 }, (_, i) => ((i + 1) % 6 === 0 ? 'full_attention' : 'sliding_attention')),
    },
    targets: ['q_proj', 'v_proj'],
  },
  phi3: {
    config: { ...DECODER, model_type: 'phi3', architectures: ['Phi3ForCausalLM'], tie_word_embeddings: false, partial_rotary_factor: 1.0 },
    targets: ['qkv_proj'],
  },
  llama3: {
    config: {
      ...DECODER,
      model_type: 'llama',
      architectures: ['LlamaForCausalLM'],
      rope_theta: 500000,
      rope_scaling: {
        rope_type: 'llama3',
        factor: 32.0,
        low_freq_factor: 1.0,
        high_freq_factor: 4.0,
        original_max_position_embeddings: 8192,
      },
    },
    targets: ['q_proj', 'v_proj'],
  },
  smollm3: {
    config: {
      ...DECODER,
      model_type: 'smollm3',
      architectures: ['SmolLM3ForCausalLM'],
      rope_theta: 2e6,
      no_rope_layers: Array.from({ length: 30 }, (_, i) => ((i + 1) % 4 === 0 ? 0 : 1)),
    },
    targets: ['q_proj', 'v_proj'],
  },
  modernbert: {
    config: {
      ...SHAPE,
      num_key_value_heads: undefined,
      vocab_size: 50368,
      model_type: 'modernbert',
      architectures: ['ModernBertForSequenceClassification'],
      hidden_activation: 'gelu',
      norm_eps: 1e-5,
      global_attn_every_n_layers: 3,
      local_attention: 128,
      global_rope_theta: 160000,
      local_rope_theta: 10000,
      classifier_pooling: 'cls',
      num_labels: 2,
    },
    targets: ['Wqkv'],
  },
};

interface Options {
  families: string[];
  batch: number;
  seq: number;
  runs: number;
  warmup: number;
  threads: number;
  /** override num_hidden_layers (30 by default; the table states it) */
  layers?: number;
  write: boolean;
  python?: string;
  pythonpath?: string;
}

const HELP = `usage: node dist/bench/families.js [options]
  --families a,b   ${Object.keys(FAMILIES).join(', ')} (default all)
  --batch N --seq N  batch shape (2 x 256)
  --runs N         timed runs, median reported (3)      --warmup N   untimed runs first (1)
  --threads N      ONNX Runtime intra-op threads and torch threads (2)
  --layers N       layers instead of 30 (for a loaded machine)
  --python P       interpreter of the PyTorch peer      --pythonpath DIR   where torch is
  --no-write       do not update bench/RESULTS.md`;

function parseArgs(argv: string[]): Options {
  const o: Options = {
    families: Object.keys(FAMILIES),
    batch: 2,
    seq: 256,
    runs: 3,
    warmup: 1,
    threads: 2,
    write: true,
  };
  forEachFlag(argv, (a, next) => {
    switch (a) {
      case '--families':
        o.families = listArg(next(), Object.keys(FAMILIES), 'family');
        break;
      case '--batch':
        o.batch = intArg(a, next(), 1);
        break;
      case '--seq':
        o.seq = intArg(a, next(), 2);
        break;
      case '--runs':
        o.runs = intArg(a, next(), 1);
        break;
      case '--warmup':
        o.warmup = intArg(a, next(), 0);
        break;
      case '--threads':
        o.threads = intArg(a, next(), 1);
        break;
      case '--no-write':
        o.write = false;
        break;
      case '--layers':
        o.layers = intArg(a, next(), 1);
        break;
      case '--python':
        o.python = next();
        break;
      case '--pythonpath':
        o.pythonpath = next();
        break;
      default:
        helpOrUnknown(a, HELP);
    }
  });
  return o;
}

/** A family's model with random weights: matrices N(0, 0.02)-sized noise, norm weights 1, biases 0 (a fresh transformers init). */
export function randomFamilyModel(name: string, layers?: number): PretrainedModel {
  const raw: Record<string, unknown> = Object.fromEntries(Object.entries(FAMILIES[name]!.config).filter(([, v]) => v !== undefined));
  if (layers) {
    raw.num_hidden_layers = layers;
    for (const k of ['layer_types', 'no_rope_layers']) if (Array.isArray(raw[k])) raw[k] = (raw[k] as unknown[]).slice(0, layers);
  }
  const config = parseConfig(raw, `${name} (bench)`);
  const weights = new WeightStore();
  const model = buildModel(config, weights, '');
  const specs = new Map(model.linears().map((s) => [s.name, s]));
  let seed = 1;
  for (const w of model.expectedWeights()) {
    const module = w.slice(0, w.lastIndexOf('.'));
    const spec = specs.get(module);
    let shape: number[];
    if (spec) shape = w.endsWith('.bias') ? [spec.outFeatures] : [spec.outFeatures, spec.inFeatures];
    else if (w === `${model.embeddingName}.weight`) shape = [config.vocabSize, config.hiddenSize];
    else if (/\.(q_norm|k_norm)\.weight$/.test(w)) shape = [model.headDim];
    else shape = [config.hiddenSize];
    const n = shape.reduce((p, q) => p * q, 1);
    const data = shape.length === 2 ? noise(n, 0.02, seed++) : w.endsWith('.bias') ? new Float32Array(n) : new Float32Array(n).fill(1);
    weights.set(w, { shape, data });
  }
  if (config.tieWordEmbeddings && model.linears().some((s) => s.name === 'lm_head'))
    weights.alias('lm_head.weight', `${model.embeddingName}.weight`);
  return model;
}

const ids = (n: number, vocab: number, seed: number): BigInt64Array =>
  BigInt64Array.from(noise(n, 1, seed), (x) => BigInt(Math.floor((x / Math.sqrt(12) + 0.5) * vocab) % vocab));

interface Row {
  family: string;
  kind: 'forward' | 'train';
  params: number;
  torch?: { tokensPerS: number; params: number; otherCpu: number; timesS: number[] } | string;
  trainable?: number;
  medianS: number;
  tokensPerS: number;
  timesS: number[];
  compileS: number;
  otherCpu: number;
  loss?: number;
}

async function benchForward(name: string, model: PretrainedModel, o: Options): Promise<Row> {
  const t0 = performance.now();
  const session = await ForwardSession.create(model, { runtime: { threads: o.threads } });
  const compileS = (performance.now() - t0) / 1000;
  const n = o.batch * o.seq;
  const batch = {
    inputIds: { dtype: 'int64' as const, shape: [o.batch, o.seq], data: ids(n, model.vocabSize, 7) },
    attentionMask: { dtype: 'int64' as const, shape: [o.batch, o.seq], data: new BigInt64Array(n).fill(1n) },
  };
  const { times, otherCpu } = await timeRuns(o.warmup, o.runs, () => session.run(batch));
  await session.dispose();
  const m = median(times);
  return { family: name, kind: 'forward', params: model.weights.numel(), medianS: m, tokensPerS: n / m, timesS: times, compileS, otherCpu };
}

async function benchTrain(name: string, model: PretrainedModel, o: Options): Promise<Row> {
  const seqCls = model.task === 'seq-cls';
  const adapted = await createAdapter(model, {
    peft_type: 'LORA',
    r: 8,
    lora_alpha: 16,
    lora_dropout: 0,
    target_modules: FAMILIES[name]!.targets,
    task_type: seqCls ? 'SEQ_CLS' : 'CAUSAL_LM',
  });
  const params = adapted.parameters();
  let trainable = 0;
  for (const p of params.values()) trainable += p.data.length;
  const t0 = performance.now();
  const step = await TrainStep.compile(adapted, { threads: o.threads });
  const compileS = (performance.now() - t0) / 1000;
  const optimizer = new AdamW({ lr: 1e-4, weightDecay: 0.01 });
  const decay = adapted.decayParameters();
  const n = o.batch * o.seq;
  let seed = 11;
  const nextBatch = (): Batch => {
    const inputIds = ids(n, model.vocabSize, seed++);
    const labels = seqCls ? BigInt64Array.from({ length: o.batch }, (_, i) => BigInt(i % 2)) : inputIds;
    return {
      size: o.batch,
      seq: o.seq,
      inputIds,
      attentionMask: new BigInt64Array(n).fill(1n),
      labels,
      labelKind: seqCls ? 'classes' : 'tokens',
      tokens: n,
    };
  };
  let loss = NaN;
  const one = async (): Promise<number> => {
    const t = performance.now();
    const r = await step.run(nextBatch(), params);
    optimizer.step(params, r.grads, { decay });
    loss = r.loss;
    return (performance.now() - t) / 1000;
  };
  for (let i = 0; i < o.warmup; i++) await one();
  const { value: times, otherCpu } = await withOtherLoad(async () => {
    const ts: number[] = [];
    for (let i = 0; i < o.runs; i++) ts.push(await one());
    return ts;
  });
  await step.dispose();
  const m = median(times);
  return {
    family: name,
    kind: 'train',
    params: model.weights.numel(),
    trainable,
    medianS: m,
    tokensPerS: n / m,
    timesS: times,
    compileS,
    otherCpu,
    loss,
  };
}

/** The peer's interpreter and PYTHONPATH: --python / --pythonpath, else bench/peer.ts's defaults. */
const peerOf = (o: Options): PeerEnv => peerEnv({ python: o.python, pythonPath: o.pythonpath });

/** bench/families_torch.py on one family, same sizes as ours. */
function torchForward(name: string, o: Options): NonNullable<Row['torch']> {
  const args = [
    path.join(REPO, 'bench', 'families_torch.py'),
    '--family',
    name,
    '--layers',
    String(o.layers ?? 30),
    '--batch',
    String(o.batch),
    '--seq',
    String(o.seq),
    '--runs',
    String(o.runs),
    '--warmup',
    String(o.warmup),
    '--threads',
    String(o.threads),
  ];
  const env = peerOf(o);
  const r = spawnSync(env.python, args, {
    cwd: REPO,
    encoding: 'utf8',
    env: childEnv(env),
    maxBuffer: 1 << 24,
  });
  if (r.status !== 0) return `failed (exit ${r.status}): ${(r.stderr ?? '').trim().split('\n').slice(-1)[0]}`;
  const j = JSON.parse(r.stdout.split('\n').find((l) => l.startsWith('{'))!) as {
    tokens_per_s: number;
    params: number;
    other_cpu: number;
    times_s: number[];
  };
  return { tokensPerS: j.tokens_per_s, params: j.params, otherCpu: j.other_cpu, timesS: j.times_s };
}

function peerCell(r: Row): string {
  if (r.kind === 'train') return 'not measured';
  if (r.torch === undefined) return 'not measured';
  if (typeof r.torch === 'string') return r.torch;
  return `${r.torch.tokensPerS.toFixed(1)}${r.torch.params !== r.params ? ` (${r.torch.params.toLocaleString('en-US')} params)` : ''}`;
}
const ratioCell = (r: Row): string =>
  typeof r.torch === 'object' && r.kind === 'forward' ? `${(r.tokensPerS / r.torch.tokensPerS).toFixed(2)}x` : '-';

async function main(): Promise<void> {
  const o = parseArgs(process.argv.slice(2));
  const torch = torchVersion(peerOf(o));
  const rows: Row[] = [];
  const loadStart = os.loadavg()[0]!;
  for (const name of o.families) {
    const t0 = performance.now();
    const model = randomFamilyModel(name, o.layers);
    console.log(
      `${name}: ${model.weights.numel().toLocaleString('en-US')} parameters, random weights in ${((performance.now() - t0) / 1000).toFixed(1)} s`,
    );
    const fwd = await benchForward(name, model, o);
    // the peer right after our forward row, never beside it
    if (torch) {
      fwd.torch = torchForward(name, o);
      console.log(
        `  torch forward: ${typeof fwd.torch === 'string' ? fwd.torch : `${fwd.torch.tokensPerS.toFixed(1)} tok/s (${fwd.torch.params.toLocaleString('en-US')} params; other cpu ${fwd.torch.otherCpu.toFixed(2)})`}`,
      );
    }
    for (const r of [fwd, await benchTrain(name, model, o)]) {
      rows.push(r);
      console.log(
        `  ${r.kind}: ${r.tokensPerS.toFixed(1)} tok/s (median of ${r.timesS.map((t) => t.toFixed(2)).join('/')} s; setup ${r.compileS.toFixed(1)} s; other cpu ${r.otherCpu.toFixed(2)})`,
      );
    }
  }
  const loadEnd = os.loadavg()[0]!;
  const when = new Date().toISOString().slice(0, 16).replace('T', ' ');
  const cpu = (os.cpus()[0]?.model ?? 'unknown CPU').trim();
  const lines = [
    HEADING,
    '',
    `Run ${when} UTC by bench/families.ts. Random-weight models of SmolLM-135M's widths (hidden 576, 9 heads / 3 KV heads, intermediate 1536, vocabulary 49152; ModernBERT 50368 and no KV grouping) with ${o.layers ?? 30} layers${o.layers && o.layers !== 30 ? ' instead of 30 (the machine was too loaded to compile and time 30-layer training steps for six families in the time there was)' : ''} with each family's own features on (see the script), float32, ${o.threads} ONNX Runtime threads, batch ${o.batch} x ${o.seq} random tokens, no padding. Forward = one inference pass (decoders: logits at every position; ModernBERT: class logits). Training = one LoRA step (r 8, alpha 16, targets below; loss + gradients in one ONNX Runtime session, then AdamW). Medians of ${o.runs} timed runs after ${o.warmup} warm-up. ` +
      `**The machine was shared and heavily loaded while this ran** (1-minute load average ${loadStart.toFixed(1)} at the start, ${loadEnd.toFixed(1)} at the end, on ${os.cpus().length} logical CPUs; "other cpu" = cores other processes used during the timed runs), so these numbers are slower and noisier than a quiet machine's; compare them with each other, not with the quiet-machine tables above. ` +
      (torch
        ? `Peer: PyTorch ${torch} (bench/families_torch.py: each family in plain torch with the same shapes and features, since transformers is not installed; eager attention, float32, torch.set_num_threads(${o.threads}), OMP_WAIT_POLICY=PASSIVE), forward rows only, run right after ours for each family; "torch other cpu" as ours. Ours ran with ONNX Runtime's default of spinning idle threads, torch with passive waits; on a machine this oversubscribed that costs ours (bench/RESULTS.md "Decode" measures both settings), so read the ratios as a lower bound with wide noise.`
        : `PyTorch is not importable (\`${peerOf(o).python} -c "import torch"\` with PYTHONPATH=${peerOf(o).pythonPath} fails), so there is no peer column: ours alone.`),
    '',
    `- machine: ${os.cpus().length} logical CPUs (${cpu}), ${(os.totalmem() / 2 ** 30).toFixed(0)} GiB RAM, shared with other jobs`,
    `- node ${process.version}${torch ? `, torch ${torch}` : ''}`,
    '',
    '| family | parameters | measurement | LoRA targets (trainable) | tok/s | torch tok/s | ours / torch | median s | runs s | session setup s | other cpu | torch other cpu |',
    '|---|---:|---|---|---:|---:|---:|---:|---|---:|---:|---:|',
    ...rows.map(
      (r) =>
        `| ${r.family} | ${r.params.toLocaleString('en-US')} | ${r.kind === 'forward' ? `forward ${o.batch}x${o.seq}` : `LoRA train step ${o.batch}x${o.seq}`} | ${r.kind === 'train' ? `${FAMILIES[r.family]!.targets.join(', ')} (${r.trainable!.toLocaleString('en-US')})` : ''} | ${r.tokensPerS.toFixed(1)} | ${peerCell(r)} | ${ratioCell(r)} | ${r.medianS.toFixed(2)} | ${r.timesS.map((t) => t.toFixed(2)).join(' / ')} | ${r.compileS.toFixed(1)} | ${r.otherCpu.toFixed(2)} | ${typeof r.torch === 'object' ? r.torch.otherCpu.toFixed(2) : ''} |`,
    ),
    '',
    'Command (repository root, after `npx tsc -p .`):',
    '',
    `    node dist/bench/families.js --batch ${o.batch} --seq ${o.seq} --runs ${o.runs} --warmup ${o.warmup} --threads ${o.threads}${o.layers ? ` --layers ${o.layers}` : ''}   # PyTorch 2.13 in ~/torch213 (../shared/bench/README.md)`,
    '',
  ];
  const text = lines.join('\n');
  console.log(`\n${text}`);
  if (!o.write) return;
  writeResultsSection(HEADING, text);
  console.log(`updated ${path.relative(REPO, RESULTS_FILE)}`);
}

await main();
