// Benchmark for issue 16's decode target: batch-1 greedy KV-cache decoding of a GPT-2-small-shaped
// model (random weights built in memory), 32-token prompt, 64 new tokens, ours against PyTorch 2.13
// (bench/decode_torch.py) in the same run. Ours: float32 with the library defaults (shared weights,
// ONNX Runtime's thread spinning on), float32 prepacked without spinning (RuntimeOptions.spinning
// false, the counterpart of torch's OMP_WAIT_POLICY=PASSIVE), int8 weights (RuntimeOptions.quantize)
// with and without spinning, and a LoRA r16 adapter on c_attn/c_proj/c_fc unmerged (LoraModel) on
// int8 weights, with and without spinning (its tensors baked into the sessions as constants, the
// Generator's default; GeneratorOptions.adapterTensors). Torch: float32, bfloat16, dynamic int8 (quantize_dynamic), eager attention.
// Every configuration is compiled once; then each repeat runs every configuration (ours and torch
// alternating) as warm-up + timed runs. Medians over repeats of per-repeat medians. Wall-clock
// tok/s and process CPU ms per new token (the second is less disturbed by other jobs on a shared
// machine). Load averages from /proc/loadavg at start and end.
//
//   npx tsc -p . && node dist/bench/decode.js                      # writes its bench/RESULTS.md section
//   node dist/bench/decode.js --repeat 3 --runs 3 --python python3 --pythonpath ~/torch213 --no-write

import { spawnSync } from 'node:child_process';
import { busySeconds, childEnv, median, peerEnv, torchVersion as peerTorchVersion } from './peer.js';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { Generator, type InferenceModel } from '../src/generate/index.js';
import type { RuntimeOptions } from '../src/runtime/session.js';
import { LoraModel } from '../src/tuners/lora/index.js';
import { noise, randomBenchModel } from './train_models.js';
import { writeResultsSection } from './results.js';
import { forEachFlag, helpOrUnknown, intArg } from './args.js';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const REPO = path.resolve(HERE, '../..');
const HEADING = '## Decode: GPT-2-small batch-1 greedy vs PyTorch 2.13 (issue 16 target)';
const NEW = 64;
const PROMPT = 32;

const HELP = `usage: node dist/bench/decode.js [options]   (writes its bench/RESULTS.md section)
  --repeat N        times every configuration is run, ours and torch alternating (default 2)
  --runs N          timed generations per configuration and repeat, after 1 warm-up (default 3)
  --threads N       ONNX Runtime intra-op threads and torch threads (default 2)
  --only A,B        run only the configurations whose label contains one of A, B
  --python P        interpreter of the PyTorch peer (default: PEFT_BENCH_PYTHON or python3)
  --pythonpath P    its PYTHONPATH (default: PEFT_BENCH_PYTHONPATH or ~/torch213)
  --no-write        print the section instead of writing bench/RESULTS.md`;
let REPEAT = 2;
let RUNS = 3;
let THREADS = 2;
let WRITE = true;
let ONLY = '';
let python: string | undefined;
let pythonPath: string | undefined;
forEachFlag(process.argv.slice(2), (flag, value) => {
  switch (flag) {
    case '--repeat':
      REPEAT = intArg(flag, value(), 1);
      break;
    case '--runs':
      RUNS = intArg(flag, value(), 1);
      break;
    case '--threads':
      THREADS = intArg(flag, value(), 1);
      break;
    case '--only':
      ONLY = value();
      break;
    case '--python':
      python = value();
      break;
    case '--pythonpath':
      pythonPath = value();
      break;
    case '--no-write':
      WRITE = false;
      break;
    default:
      helpOrUnknown(flag, HELP);
  }
});
// --python / --pythonpath, else PEFT_BENCH_PYTHON / PEFT_BENCH_PYTHONPATH, else python3 with ~/torch213 (bench/peer.ts)
const PEER = peerEnv({ python, pythonPath });

const loadavg = (): string => fs.readFileSync('/proc/loadavg', 'utf8').split(' ').slice(0, 3).join(' ');

interface Measure {
  tokS: number;
  decodeTokS: number;
  prefillMs: number;
  cpuMsPerTok: number;
  other: number;
}
interface Config {
  label: string;
  side: 'ours' | 'torch';
  measure: () => Promise<Measure | string>;
  results: Measure[];
  note?: string;
}

async function oursConfig(label: string, model: InferenceModel, runtime: RuntimeOptions, prompt: number[]): Promise<Config> {
  const t0 = performance.now();
  const gen = await Generator.create(model, { runtime, defaults: { eosTokenIds: [], doSample: false, temperature: 1, topK: 0, topP: 1 } });
  const setup = (performance.now() - t0) / 1000;
  let tokens: number[] | undefined;
  const measure = async (): Promise<Measure> => {
    await gen.generate([prompt], { maxNewTokens: NEW });
    const c0 = process.cpuUsage();
    const b0 = busySeconds();
    const w0 = performance.now();
    const rs = [];
    for (let i = 0; i < RUNS; i++) {
      const r = await gen.generate([prompt], { maxNewTokens: NEW });
      if (r.sequences[0]!.tokenIds.length !== NEW) throw new Error('a run stopped early');
      if (tokens && r.sequences[0]!.tokenIds.join() !== tokens.join()) throw new Error(`${label}: greedy tokens changed between runs`);
      tokens = r.sequences[0]!.tokenIds;
      rs.push(r.stats);
    }
    const wall = (performance.now() - w0) / 1000;
    const c = process.cpuUsage(c0);
    const own = (c.user + c.system) / 1e6;
    const total = median(rs.map((s) => (s.prefillMs + s.decodeMs) / 1000));
    const pre = median(rs.map((s) => s.prefillMs / 1000));
    return {
      tokS: NEW / total,
      decodeTokS: (NEW - 1) / (total - pre),
      prefillMs: pre * 1000,
      cpuMsPerTok: (own * 1000) / (RUNS * NEW),
      other: Math.max(0, (busySeconds() - b0 - own) / wall),
    };
  };
  return { label, side: 'ours', measure, results: [], note: `setup ${setup.toFixed(1)} s` };
}

function torchConfig(label: string, args: string[]): Config {
  const script = path.join(REPO, 'bench', 'decode_torch.py');
  const measure = async (): Promise<Measure | string> => {
    const r = spawnSync(
      PEER.python,
      [
        script,
        '--threads',
        String(THREADS),
        '--prompt',
        String(PROMPT),
        '--new',
        String(NEW),
        '--warmup',
        '1',
        '--runs',
        String(RUNS),
        ...args,
      ],
      {
        cwd: REPO,
        encoding: 'utf8',
        env: childEnv(PEER),
        maxBuffer: 1 << 24,
      },
    );
    if (r.status !== 0) return `failed (exit ${r.status}): ${(r.stderr ?? '').trim().split('\n').slice(-2).join(' | ')}`;
    const j = JSON.parse(r.stdout.split('\n').find((l) => l.startsWith('{'))!) as Record<string, number>;
    return {
      tokS: j.tokens_per_s!,
      decodeTokS: j.decode_tokens_per_s!,
      prefillMs: j.prefill_ms!,
      cpuMsPerTok: j.cpu_ms_per_token!,
      other: j.other_cpu!,
    };
  };
  return { label, side: 'torch', measure, results: [] };
}

async function main(): Promise<void> {
  const started = new Date();
  const loadStart = loadavg();
  console.log(`load average at start: ${loadStart}`);
  const torchVersion = peerTorchVersion(PEER);
  if (!torchVersion) console.log(`PyTorch not importable with ${PEER.python} and PYTHONPATH=${PEER.pythonPath}: ours only`);
  const base = randomBenchModel('gpt2');
  const prompt = Array.from(noise(PROMPT, 1, 11), (x) => Math.floor((x / Math.sqrt(12) + 0.5) * base.vocabSize) % base.vocabSize);
  const lora = await LoraModel.create(
    base,
    { r: 16, loraAlpha: 32, targetModules: ['c_attn', 'c_proj', 'c_fc'], initLoraWeights: false },
    { seed: 1 },
  );
  const t = { threads: THREADS };
  const configs: Config[] = [];
  const want = (l: string) => !ONLY || ONLY.split(',').some((o) => l.includes(o));
  const ours: [string, InferenceModel, RuntimeOptions][] = [
    ['ours float32, shared weights (library default)', base, { ...t }],
    ['ours float32 prepacked, no spinning', base, { ...t, weights: 'prepacked', spinning: false }],
    ['ours int8 weights, no spinning', base, { ...t, quantize: 'int8', spinning: false }],
    ['ours LoRA r16 unmerged, int8 weights, no spinning', lora, { ...t, quantize: 'int8', spinning: false }],
    ['ours int8 weights, spinning', base, { ...t, quantize: 'int8', spinning: true }],
    ['ours LoRA r16 unmerged, int8 weights, spinning', lora, { ...t, quantize: 'int8', spinning: true }],
  ];
  const torch: [string, string[]][] = [
    ['torch float32 eager', ['--dtype', 'float32']],
    ['torch bfloat16 eager', ['--dtype', 'bfloat16']],
    ['torch dynamic int8 (quantize_dynamic)', ['--dtype', 'int8']],
  ];
  for (const [l, m, r] of ours) if (want(l)) configs.push(await oursConfig(l, m, r, prompt));
  if (torchVersion) for (const [l, a] of torch) if (want(l)) configs.push(torchConfig(l, a));
  // ours and torch alternating
  const order = [...configs.filter((c) => c.side === 'ours')];
  const peers = configs.filter((c) => c.side === 'torch');
  const mixed: Config[] = [];
  for (let i = 0; i < Math.max(order.length, peers.length); i++) {
    if (order[i]) mixed.push(order[i]!);
    if (peers[i]) mixed.push(peers[i]!);
  }
  const report = (done: number): void => {
    const loadEnd = loadavg();
    const med = (c: Config, k: keyof Measure) => (c.results.length ? median(c.results.map((r) => r[k])) : NaN);
    const ref = configs.find((c) => c.label === 'torch float32 eager');
    const refBf = configs.find((c) => c.label === 'torch bfloat16 eager');
    const ratio = (a: number, b: number | undefined) =>
      b !== undefined && Number.isFinite(a) && Number.isFinite(b) ? `${(a / b).toFixed(2)}x` : '-';
    const rows = configs.map((c) => {
      const tok = med(c, 'tokS');
      const cpu = med(c, 'cpuMsPerTok');
      const per = c.results.map((r) => r.tokS.toFixed(2)).join(' / ');
      return `| ${c.label} | ${tok.toFixed(2)} | ${med(c, 'decodeTokS').toFixed(2)} | ${med(c, 'prefillMs').toFixed(0)} | ${cpu.toFixed(1)} | ${ratio(tok, ref && med(ref, 'tokS'))} | ${ratio(tok, refBf && med(refBf, 'tokS'))} | ${ratio(ref ? med(ref, 'cpuMsPerTok') : NaN, cpu)} | ${per} | ${c.results.map((r) => r.other.toFixed(2)).join(' / ')} | ${c.note ?? ''} |`;
    });
    const ortVersion = (
      JSON.parse(fs.readFileSync(path.join(REPO, 'node_modules/onnxruntime-node/package.json'), 'utf8')) as { version: string }
    ).version;
    const cpuName = (fs.readFileSync('/proc/cpuinfo', 'utf8').match(/model name\s*:\s*(.*)/) ?? [])[1] ?? 'unknown';
    const section = [
      HEADING,
      '',
      `Run ${started.toISOString().slice(0, 16).replace('T', ' ')} UTC by bench/decode.ts (peer: bench/decode_torch.py). GPT-2-small shape (124M params, random weights), batch 1, greedy, ${PROMPT}-token prompt, ${NEW} new tokens with the KV cache, LM head on the last position only (both sides), ${THREADS} threads on both sides (ONNX Runtime intra-op; torch.set_num_threads with OMP_WAIT_POLICY=PASSIVE). Each repeat runs every configuration, ours and torch alternating (1 warm-up + ${RUNS} timed runs, median); the table shows the median over ${done} repeat(s). "new tok/s" = ${NEW} / (prefill + ${NEW - 1} steps); "CPU ms/token" = the process's CPU time over the timed runs per new token (user + system, all threads; spin-waiting included); "x torch f32 CPU" = torch float32's CPU ms/token over this row's. "other cpu" = cores other processes used during the timed runs, per repeat.`,
      '',
      `- machine: ${os.cpus().length} logical CPUs, ${cpuName}, ${Math.round(os.totalmem() / 2 ** 30)} GiB RAM, shared with other engineers' jobs`,
      `- load average (1/5/15 min, /proc/loadavg): ${loadStart} at the start, ${loadEnd} at the end`,
      `- node ${process.version}, onnxruntime-node ${ortVersion}, torch ${torchVersion ?? 'not available'}`,
      '',
      '| configuration | new tok/s | decode-only tok/s | prefill ms | CPU ms/token | x torch f32 | x torch bf16 | x torch f32 CPU | tok/s per repeat | other cpu | note |',
      '|---|---:|---:|---:|---:|---:|---:|---:|---|---|---|',
      ...rows,
      '',
      'Command (from the repository root, after `npx tsc -p .`; PyTorch 2.13 installed from the local wheel into ~/torch213 as ../shared/bench/README.md says):',
      '',
      `    node dist/bench/decode.js ${process.argv.slice(2).join(' ')}`.trimEnd(),
      '',
    ].join('\n');
    console.log('\n' + section);
    if (WRITE) {
      writeResultsSection(HEADING, section);
      console.log(`updated bench/RESULTS.md (${HEADING.slice(3)})`);
    }
  };
  for (let rep = 0; rep < REPEAT; rep++) {
    for (const c of mixed) {
      const m = await c.measure();
      if (typeof m === 'string') {
        c.note = m;
        console.log(`[${rep + 1}/${REPEAT}] ${c.label}: ${m}`);
        continue;
      }
      c.results.push(m);
      console.log(
        `[${rep + 1}/${REPEAT}] ${c.label}: ${m.tokS.toFixed(2)} new tok/s, decode-only ${m.decodeTokS.toFixed(2)}, prefill ${m.prefillMs.toFixed(0)} ms, ${m.cpuMsPerTok.toFixed(1)} CPU ms/token, other cpu ${m.other.toFixed(2)} (load ${loadavg()})`,
      );
    }
    report(rep + 1);
  }
}

main().catch((e: unknown) => {
  console.error(e instanceof Error ? (e.stack ?? e.message) : e);
  process.exit(1);
});
