// Benchmark: whole-model inference on ONNX Runtime through our graph compiler, against PyTorch in
// the same run. Forward throughput (batch 4 x seq 256, logits for every position) and KV-cache
// greedy decoding (batch 1, 32-token prompt, 64 new tokens) for a GPT-2-small-shaped (124M) and a
// SmolLM-135M-shaped Llama with random weights built in memory (nothing is written to disk).
//
//   npm run build && node dist/bench/model_throughput.js              # both models, peer, RESULTS.md
//   node dist/bench/model_throughput.js --models llama --runs 5 --no-write
//   node dist/bench/model_throughput.js --help
//
// The peer is ../shared/bench/peer_torch.py --infer (decode) and bench/forward_torch.py (forward),
// run one after the other with OMP_WAIT_POLICY=PASSIVE, never at the same time as ours.

import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { PretrainedModel } from '../src/models/types.js';
import { ForwardSession, Generator } from '../src/generate/index.js';
import type { RuntimeOptions } from '../src/runtime/session.js';
import { noise, randomBenchModel } from './train_models.js';
import { forEachFlag, helpOrUnknown, intArg, listArg } from './args.js';
import { writeResultsSection } from './results.js';
import { median, timeRuns, withOtherLoad } from './peer.js';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const REPO = path.resolve(HERE, '../..');
const HEADING = '## Models: forward and KV-cache decode';

// The models of train_models.ts's BENCH_CONFIGS (peer_torch.py's SHAPES) this benchmark offers.
const MODELS = ['gpt2', 'llama', 'tiny'] as const;
const WEIGHT_MODES = ['shared', 'prepacked'] as const;

interface Options {
  models: (typeof MODELS)[number][];
  runs: number;
  warmup: number;
  repeat: number;
  threads: number;
  /** weight modes to measure: shared (the library default) and prepacked */
  weights: (typeof WEIGHT_MODES)[number][];
  peer: boolean;
  python: string;
  write: boolean;
  results: string;
}

const HELP = `usage: node dist/bench/model_throughput.js [options]
  --models a,b     gpt2, llama (default both); tiny for a smoke test
  --runs N         timed runs per measurement, median reported (3)
  --warmup N       untimed runs first (1)
  --repeat N       run the whole set N times, torch and ours alternating; medians over repeats (1)
  --threads N      ONNX Runtime intra-op threads and torch threads (2)
  --weights a,b    weight modes to time (shared,prepacked): shared = fed from the JS arrays
                   (the library default), prepacked = packed for MLAS in each session
  --no-peer        skip PyTorch                  --python P   interpreter (/usr/bin/python3)
  --no-write       do not update bench/RESULTS.md`;

function parseArgs(argv: string[]): Options {
  const o: Options = {
    models: ['gpt2', 'llama'],
    runs: 3,
    warmup: 1,
    repeat: 1,
    threads: 2,
    weights: ['shared', 'prepacked'],
    peer: true,
    python: '/usr/bin/python3',
    write: true,
    results: path.join(REPO, 'bench', 'RESULTS.md'),
  };
  forEachFlag(argv, (a, next) => {
    switch (a) {
      case '--models':
        o.models = listArg(next(), MODELS, 'model');
        break;
      case '--runs':
        o.runs = intArg(a, next(), 1);
        break;
      case '--warmup':
        o.warmup = intArg(a, next(), 0);
        break;
      case '--repeat':
        o.repeat = intArg(a, next(), 1);
        break;
      case '--threads':
        o.threads = intArg(a, next(), 1);
        break;
      case '--weights':
        o.weights = listArg(next(), WEIGHT_MODES, 'weights mode');
        break;
      case '--no-peer':
        o.peer = false;
        break;
      case '--python':
        o.python = next();
        break;
      case '--no-write':
        o.write = false;
        break;
      default:
        helpOrUnknown(a, HELP);
    }
  });
  return o;
}

// ------------------------------------------------------------------------------- measurement

const randomIds = (n: number, vocab: number, seed: number): number[] =>
  Array.from(noise(n, 1, seed), (x) => Math.floor((x / Math.sqrt(12) + 0.5) * vocab) % vocab);

interface ForwardResult {
  medianS: number;
  tokensPerS: number;
  timesS: number[];
  compileS: number;
  otherCpu: number;
}
interface DecodeResult {
  medianS: number;
  tokensPerS: number;
  decodeTokensPerS: number;
  prefillMs: number;
  timesS: number[];
  compileS: number;
  otherCpu: number;
}

async function benchForward(model: PretrainedModel, opt: Options, runtime: RuntimeOptions): Promise<ForwardResult> {
  const B = 4;
  const S = 256;
  const t0 = performance.now();
  const session = await ForwardSession.create(model, { runtime });
  const compileS = (performance.now() - t0) / 1000;
  const ids = BigInt64Array.from(randomIds(B * S, model.vocabSize, 7).map(BigInt));
  const batch = {
    inputIds: { dtype: 'int64' as const, shape: [B, S], data: ids },
    attentionMask: { dtype: 'int64' as const, shape: [B, S], data: new BigInt64Array(B * S).fill(1n) },
  };
  const { times, otherCpu } = await timeRuns(opt.warmup, opt.runs, () => session.run(batch));
  await session.dispose();
  const m = median(times);
  return { medianS: m, tokensPerS: (B * S) / m, timesS: times, compileS, otherCpu };
}

async function benchDecode(model: PretrainedModel, opt: Options, runtime: RuntimeOptions): Promise<DecodeResult> {
  const NEW = 64;
  const t0 = performance.now();
  const gen = await Generator.create(model, { runtime });
  const compileS = (performance.now() - t0) / 1000;
  const prompt = randomIds(32, model.vocabSize, 11);
  const once = () => gen.generate([prompt], { maxNewTokens: NEW, stopTokenIds: [] });
  for (let i = 0; i < opt.warmup; i++) await once();
  const { value: runs, otherCpu } = await withOtherLoad(async () => {
    const rs: { total: number; prefill: number; tokens: number }[] = [];
    for (let i = 0; i < opt.runs; i++) {
      const r = await once();
      rs.push({
        total: (r.stats.prefillMs + r.stats.decodeMs) / 1000,
        prefill: r.stats.prefillMs / 1000,
        tokens: r.sequences[0]!.tokenIds.length,
      });
    }
    return rs;
  });
  await gen.dispose();
  if (runs.some((r) => r.tokens !== NEW)) throw new Error('a decode run stopped early');
  const m = median(runs.map((r) => r.total));
  const pre = median(runs.map((r) => r.prefill));
  return {
    medianS: m,
    tokensPerS: NEW / m,
    decodeTokensPerS: (NEW - 1) / (m - pre),
    prefillMs: pre * 1000,
    timesS: runs.map((r) => r.total),
    compileS,
    otherCpu,
  };
}

// ---------------------------------------------------------------------------------------- peer

interface PeerRun {
  json: Record<string, unknown> | null;
  command: string;
  note?: string;
}

function torchAvailable(opt: Options): string | null {
  const probe = spawnSync(opt.python, ['-c', 'import torch'], { stdio: 'ignore' });
  return probe.status === 0
    ? null
    : `PyTorch peer skipped: \`${opt.python} -c "import torch"\` failed (install: apt-get update && apt-get install -y python3-torch libopenblas0-pthread)`;
}

function runPeer(opt: Options, script: string, args: string[], pick: (j: Record<string, unknown>) => boolean): PeerRun {
  const command = `OMP_WAIT_POLICY=PASSIVE ${opt.python} ${path.relative(REPO, script)} ${args.join(' ')}`;
  const r = spawnSync(opt.python, [script, ...args], {
    cwd: REPO,
    encoding: 'utf8',
    env: { ...process.env, OMP_WAIT_POLICY: 'PASSIVE' },
    maxBuffer: 1 << 24,
  });
  if (r.status !== 0)
    return { json: null, command, note: `failed (exit ${r.status}): ${(r.stderr ?? '').trim().split('\n').slice(-3).join(' | ')}` };
  const lines = r.stdout
    .split('\n')
    .filter((l) => l.startsWith('{'))
    .map((l) => JSON.parse(l) as Record<string, unknown>);
  return { json: lines.find(pick) ?? null, command };
}

// ------------------------------------------------------------------------------------ report

function versions(peerTorch: string | undefined): string[] {
  const ortVersion = (
    JSON.parse(fs.readFileSync(path.join(REPO, 'node_modules/onnxruntime-node/package.json'), 'utf8')) as { version: string }
  ).version;
  const cpu = (fs.readFileSync('/proc/cpuinfo', 'utf8').match(/model name\s*:\s*(.*)/) ?? [])[1] ?? os.cpus()[0]?.model ?? 'unknown';
  const flags = (fs.readFileSync('/proc/cpuinfo', 'utf8').match(/flags\s*:\s*(.*)/) ?? [])[1] ?? '';
  const isa = ['avx2', 'avx512f', 'avx512_vnni', 'avx512_bf16', 'amx_tile'].filter((f) => flags.split(' ').includes(f)).join(', ');
  return [
    `- machine: ${os.cpus().length} logical CPUs (nproc ${spawnSync('nproc', { encoding: 'utf8' }).stdout.trim()}), ${cpu} (${isa}), ${Math.round(os.totalmem() / 2 ** 30)} GiB RAM, shared with other jobs`,
    `- node ${process.version}, onnxruntime-node ${ortVersion}${peerTorch ? `, torch ${peerTorch} (Debian python3-torch, OpenBLAS)` : ', torch not run'}`,
  ];
}

function fmt(x: number | undefined, digits = 1): string {
  return x === undefined || !Number.isFinite(x) ? '-' : x.toFixed(digits);
}

const MODE_LABEL: Record<Options['weights'][number], string> = { shared: 'shared (default)', prepacked: 'prepacked' };

async function main(): Promise<void> {
  const opt = parseArgs(process.argv.slice(2));
  const skip = opt.peer ? torchAvailable(opt) : 'PyTorch peer skipped (--no-peer)';
  if (skip) console.log(skip);
  const rows: string[] = [];
  const others: number[] = [];
  const commands: string[] = [`node dist/bench/model_throughput.js ${process.argv.slice(2).join(' ')}`.trim()];
  let torchVersion: string | undefined;
  const started = new Date();
  const ratio = (a: number | undefined, b: number | undefined) => (a !== undefined && b !== undefined ? `${(a / b).toFixed(2)}x` : '-');
  const num = (j: Record<string, unknown> | null | undefined, k: string): number | undefined =>
    j && typeof j[k] === 'number' ? (j[k] as number) : undefined;
  // Per (model, measurement, weights mode): one value per repeat, ours and torch side by side.
  const cells = new Map<
    string,
    {
      name: string;
      what: 'forward' | 'decode';
      mode: string;
      ours: number[];
      torch: number[];
      oursOnly: number[];
      torchOnly: number[];
      prefill: number[];
      torchPrefill: number[];
      setup: number[];
      other: number[];
      torchOther: number[];
    }
  >();
  const cell = (name: string, what: 'forward' | 'decode', mode: string) => {
    const key = `${name}|${what}|${mode}`;
    if (!cells.has(key))
      cells.set(key, {
        name,
        what,
        mode,
        ours: [],
        torch: [],
        oursOnly: [],
        torchOnly: [],
        prefill: [],
        torchPrefill: [],
        setup: [],
        other: [],
        torchOther: [],
      });
    return cells.get(key)!;
  };
  const push = (xs: number[], x: number | undefined) => x !== undefined && xs.push(x);
  for (let rep = 0; rep < opt.repeat; rep++) {
    if (opt.repeat > 1) console.log(`--- repeat ${rep + 1} of ${opt.repeat}`);
    for (const name of opt.models) {
      const t0 = performance.now();
      const model = randomBenchModel(name);
      console.log(
        `${name}: ${model.weights.numel().toLocaleString('en-US')} parameters, random weights built in ${((performance.now() - t0) / 1000).toFixed(1)} s`,
      );
      // The peer first, while our process holds only the JS weights (it runs alone, never beside ours).
      let pf: PeerRun | undefined;
      let pd: PeerRun | undefined;
      if (!skip && name !== 'tiny') {
        pf = runPeer(
          opt,
          path.join(REPO, 'bench', 'forward_torch.py'),
          [
            '--model',
            name,
            '--batch',
            '4',
            '--seq',
            '256',
            '--warmup',
            String(opt.warmup),
            '--steps',
            String(opt.runs),
            '--threads',
            String(opt.threads),
          ],
          () => true,
        );
        pd = runPeer(
          opt,
          path.resolve(REPO, '../shared/bench/peer_torch.py'),
          [
            '--model',
            name,
            '--method',
            'full',
            '--infer',
            '--warmup',
            String(opt.warmup),
            '--steps',
            String(opt.runs),
            '--threads',
            String(opt.threads),
          ],
          (j) => j.mode === 'infer',
        );
        if (rep === 0) commands.push(pf.command, pd.command);
        torchVersion ??= (pf.json?.torch ?? pd.json?.torch) as string | undefined;
        for (const j of [pf.json, pd.json]) if (typeof j?.other_cpu === 'number') others.push(j.other_cpu);
        console.log(
          `  torch forward 4x256: ${pf.json ? `${fmt(num(pf.json, 'tokens_per_s'))} tok/s (median ${fmt(num(pf.json, 'median_s'), 3)} s of [${(pf.json.times_s as number[]).map((t) => t.toFixed(3))}]; other cpu ${fmt(num(pf.json, 'other_cpu'), 2)})` : pf.note}`,
        );
        console.log(
          `  torch decode 32+64: ${pd.json ? `${fmt(num(pd.json, 'tokens_per_s'), 2)} new tok/s, decode-only ${fmt(num(pd.json, 'decode_tokens_per_s'), 2)} tok/s, prefill ${fmt(num(pd.json, 'prefill_ms'))} ms (median ${fmt(num(pd.json, 'median_s'), 3)} s; other cpu ${fmt(num(pd.json, 'other_cpu'), 2)})` : pd.note}`,
        );
      }
      const tf = num(pf?.json, 'tokens_per_s');
      const td = num(pd?.json, 'tokens_per_s');
      for (const mode of opt.weights) {
        const fwd = await benchForward(model, opt, { threads: opt.threads, weights: mode });
        console.log(
          `  ours  forward 4x256 [${MODE_LABEL[mode]}]: ${fmt(fwd.tokensPerS)} tok/s (median ${fwd.medianS.toFixed(3)} s of [${fwd.timesS.map((t) => t.toFixed(3))}]; compile ${fwd.compileS.toFixed(1)} s; other cpu ${fwd.otherCpu.toFixed(2)}) = ${ratio(fwd.tokensPerS, tf)} torch`,
        );
        others.push(fwd.otherCpu);
        const c = cell(name, 'forward', mode);
        c.ours.push(fwd.tokensPerS);
        push(c.torch, tf);
        c.setup.push(fwd.compileS);
        c.other.push(fwd.otherCpu);
        push(c.torchOther, num(pf?.json, 'other_cpu'));
      }
      for (const mode of opt.weights) {
        const dec = await benchDecode(model, opt, { threads: opt.threads, weights: mode });
        console.log(
          `  ours  decode 32+64 [${MODE_LABEL[mode]}]: ${fmt(dec.tokensPerS, 2)} new tok/s, decode-only ${fmt(dec.decodeTokensPerS, 2)} tok/s, prefill ${fmt(dec.prefillMs)} ms (median of [${dec.timesS.map((t) => t.toFixed(3))}] s; compile ${dec.compileS.toFixed(1)} s; other cpu ${dec.otherCpu.toFixed(2)}) = ${ratio(dec.tokensPerS, td)} torch`,
        );
        others.push(dec.otherCpu);
        const c = cell(name, 'decode', mode);
        c.ours.push(dec.tokensPerS);
        push(c.torch, td);
        c.oursOnly.push(dec.decodeTokensPerS);
        push(c.torchOnly, num(pd?.json, 'decode_tokens_per_s'));
        c.prefill.push(dec.prefillMs);
        push(c.torchPrefill, num(pd?.json, 'prefill_ms'));
        c.setup.push(dec.compileS);
        c.other.push(dec.otherCpu);
        push(c.torchOther, num(pd?.json, 'other_cpu'));
      }
    }
  }
  const med = (xs: number[]): number | undefined => (xs.length ? median(xs) : undefined);
  const list = (xs: number[], d: number) => xs.map((x) => x.toFixed(d)).join('/') || '-';
  for (const c of cells.values()) {
    const d = c.what === 'forward' ? 1 : 2;
    const o = med(c.ours);
    const t = med(c.torch);
    const each = opt.repeat > 1 ? `per repeat: ours ${list(c.ours, d)}, torch ${list(c.torch, d)}; ` : '';
    const extra =
      c.what === 'decode'
        ? `prefill ${fmt(med(c.prefill))} vs ${fmt(med(c.torchPrefill))} ms; decode-only ${fmt(med(c.oursOnly), 2)} vs ${fmt(med(c.torchOnly), 2)} tok/s (${ratio(med(c.oursOnly), med(c.torchOnly))}); `
        : '';
    const label = c.what === 'forward' ? 'forward 4x256, tok/s' : 'decode 32+64, new tok/s';
    rows.push(
      `| ${c.name} | ${label} | ${MODE_LABEL[c.mode as Options['weights'][number]]} | ${fmt(o, d)} | ${fmt(t, d)} | ${ratio(o, t)} | ${each}${extra}session setup ${fmt(med(c.setup))} s | ${list(c.other, 2)} / ${list(c.torchOther, 2)} |`,
    );
  }
  const section = [
    HEADING,
    '',
    `Run ${started.toISOString().slice(0, 16).replace('T', ' ')} UTC by bench/model_throughput.ts. Random-weight models of the Hugging Face shapes (gpt2 = GPT-2 small, 124M; llama = SmolLM-135M: hidden 576, 30 layers, 9 heads / 3 KV heads, tied), float32, ${opt.threads} threads on both sides (ONNX Runtime intra-op threads; torch.set_num_threads with OMP_WAIT_POLICY=PASSIVE). Medians of ${opt.runs} timed runs after ${opt.warmup} warm-up${opt.repeat > 1 ? `, the whole set repeated ${opt.repeat} times (torch, then ours, per model) and the median over repeats shown` : ''}. Forward = one inference pass over 4 x 256 random tokens with logits for every position (torch: bench/forward_torch.py, the peer_torch.py model under inference_mode). Decode = greedy, batch 1, 32-token random prompt, 64 new tokens with the KV cache: "new tok/s" = 64 / (prefill + 63 one-token steps), "decode-only" leaves the prefill out; torch: peer_torch.py --infer --method full (the plain model; its loop only computes the last position's logits). Weights: "shared" = frozen weights fed to ONNX Runtime from the JS arrays (one copy per process), "prepacked" = ONNX Runtime packs them for MLAS per session (one more copy). "other cpu" = cores other processes used while timing (ours / torch); above ~0.2 the machine was busy and the numbers are disturbed.`,
    '',
    ...versions(torchVersion),
    ...(skip ? [`- ${skip}`] : []),
    ...(others.length && Math.max(...others) > 0.2
      ? [
          `- **Disturbed run:** other processes used ${median(others).toFixed(2)} of the ${os.cpus().length} cores while timing (median; up to ${Math.max(...others).toFixed(2)}). Absolute numbers are far below a quiet machine's (compare ../shared/bench/peer_results.md) and the ratios carry that noise (the two runtimes need not suffer equally from it).`,
        ]
      : []),
    '',
    '| model | measurement | our weights | ours | torch | ours / torch | detail | other cpu |',
    '|---|---|---|---:|---:|---:|---|---|',
    ...rows,
    '',
    'Commands (from the repository root, after `npx tsc -p .`):',
    '',
    ...commands.map((c) => `    ${c}`),
    '',
  ].join('\n');
  console.log('\n' + section);
  if (opt.write) {
    writeResultsSection(HEADING, section, { file: opt.results });
    console.log(`updated ${path.relative(REPO, opt.results)} (section "${HEADING.slice(3)}")`);
  }
}

main().catch((e: unknown) => {
  console.error(e instanceof Error ? (e.stack ?? e.message) : e);
  process.exit(1);
});
