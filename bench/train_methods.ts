// Benchmark: training throughput and peak memory of every method (LoRA on q/v and on all linear
// layers, IA3, prompt/prefix/P-tuning, a Pfeiffer bottleneck adapter, full fine-tuning) against
// the PyTorch peer (../shared/bench/peer_torch.py) in the same invocation, each run in its own
// process so peak RSS is per method. Random-weight GPT-2-small- and SmolLM-135M-shaped models.
//
//   npm run bench:train                                              # default: both models, every method
//   npm run bench:train -- --models gpt2 --methods lora-qv,full --steps 3 --no-write
//   node dist/bench/train_methods.js --help
//
// One of our runs = a child `node dist/bench/train_methods.js --child ...` that builds the model,
// compiles the train step (forward + loss + backward in one ONNX Runtime session), runs warm-up
// and timed steps (session.run + host AdamW) and prints one JSON line. The peer runs right after
// ours for the same (model, method), never at the same time, with OMP_WAIT_POLICY=PASSIVE.

import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { AdamW } from '../src/train/adamw.js';
import type { Batch } from '../src/train/batches.js';
import { TrainStep } from '../src/train/step.js';
import { BENCH_CONFIGS, METHODS, type Method, PEER_METHODS, VIRTUAL_TOKENS, adaptForBench, noise, randomBenchModel } from './train_models.js';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const REPO = path.resolve(HERE, '../..');
const HEADING = '## Training: methods vs PyTorch';
const PEER = path.resolve(REPO, '../shared/bench/peer_torch.py');

interface Options {
  models: string[];
  methods: Method[];
  steps: number;
  warmup: number;
  threads: number;
  batch: number;
  seq: number;
  peer: boolean;
  python: string;
  write: boolean;
  results: string;
  timeout: number;
  /** ONNX Runtime's memory-pattern planning (default off: see the notes in RESULTS.md) */
  memPattern: boolean;
  weights: 'shared' | 'prepacked';
}

const HELP = `usage: node dist/bench/train_methods.js [options]
  --models a,b      gpt2, llama (default both); tiny, tiny-llama for a smoke test
  --methods a,b     ${METHODS.join(', ')} (default all)
  --steps N         timed steps per run, median reported (default 3)
  --warmup N        untimed steps first (default 2: ONNX Runtime's arena grows over the first two runs)
  --threads N       ONNX Runtime intra-op threads and torch threads (default 2)
  --batch N --seq N batch shape (default 4 x 256)
  --timeout S       give up on one run after S seconds (default 600)
  --mem-pattern     turn ONNX Runtime's memory-pattern planning on (default off)
  --weights M       shared (default: frozen weights fed from the JS arrays) or prepacked (MLAS-packed copies)
  --no-peer         skip PyTorch              --python P   interpreter (default /usr/bin/python3)
  --no-write        do not update bench/RESULTS.md`;

function parseArgs(argv: string[]): Options {
  const o: Options = {
    models: ['gpt2', 'llama'], methods: [...METHODS], steps: 3, warmup: 2, threads: 2, batch: 4, seq: 256,
    peer: true, python: '/usr/bin/python3', write: true, results: path.join(REPO, 'bench', 'RESULTS.md'), timeout: 600,
    memPattern: false, weights: 'shared',
  };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    const next = (): string => {
      const v = argv[++i];
      if (v === undefined) throw new Error(`${a} needs a value`);
      return v;
    };
    const int = (min: number): number => {
      const v = next();
      const n = Number(v);
      if (!Number.isInteger(n) || n < min) throw new Error(`${a} needs an integer >= ${min}, got ${v}`);
      return n;
    };
    switch (a) {
      case '--models': o.models = next().split(',').filter(Boolean); break;
      case '--methods': o.methods = next().split(',').filter(Boolean) as Method[]; break;
      case '--steps': o.steps = int(1); break;
      case '--warmup': o.warmup = int(0); break;
      case '--threads': o.threads = int(1); break;
      case '--batch': o.batch = int(1); break;
      case '--seq': o.seq = int(2); break;
      case '--timeout': o.timeout = int(10); break;
      case '--mem-pattern': o.memPattern = true; break;
      case '--weights': {
        const w = next();
        if (w !== 'shared' && w !== 'prepacked') throw new Error(`--weights takes shared or prepacked, got ${w}`);
        o.weights = w;
        break;
      }
      case '--no-peer': o.peer = false; break;
      case '--python': o.python = next(); break;
      case '--no-write': o.write = false; break;
      case '--help': console.log(HELP); process.exit(0); break;
      default: throw new Error(`unknown option ${a}\n${HELP}`);
    }
  }
  for (const m of o.models) if (!(m in BENCH_CONFIGS)) throw new Error(`unknown model ${m}; choose from ${Object.keys(BENCH_CONFIGS).join(', ')}`);
  for (const m of o.methods) if (!METHODS.includes(m)) throw new Error(`unknown method ${m}; choose from ${METHODS.join(', ')}`);
  return o;
}

// ------------------------------------------------------------------------------- measurement

/** CPU seconds used by all processes so far (from /proc/stat: everything but idle and iowait). */
function busySeconds(): number {
  try {
    const v = fs.readFileSync('/proc/stat', 'utf8').split('\n')[0]!.trim().split(/\s+/).slice(1).map(Number);
    return (v.slice(0, 8).reduce((p, q) => p + q, 0) - v[3]! - v[4]!) / 100;
  } catch {
    return NaN;
  }
}

const median = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2;
};
const mib = (kib: number): number => kib / 1024;

export interface OurRun {
  model: string;
  method: Method;
  batch: number;
  seq: number;
  threads: number;
  trainable_params: number;
  total_params: number;
  build_s: number;
  compile_s: number;
  steps_s: number[];
  median_step_s: number;
  median_run_s: number;
  median_opt_s: number;
  /** minor page faults per step (fresh memory touched: allocations that are not reused between steps) */
  median_page_faults: number;
  tokens_per_s: number;
  loss_first: number;
  loss_last: number;
  rss_after_model_mib: number;
  rss_after_compile_mib: number;
  peak_rss_mib: number;
  other_cpu: number;
  loadavg_start: number;
  loadavg_end: number;
}

async function child(model: string, method: Method, opt: Options): Promise<OurRun> {
  const loadStart = os.loadavg()[0]!;
  let t = performance.now();
  const base = randomBenchModel(model);
  const adapted = await adaptForBench(base, method);
  const buildS = (performance.now() - t) / 1000;
  const rssModel = mib(process.resourceUsage().maxRSS);
  const params = adapted.parameters();
  let trainable = 0;
  for (const p of params.values()) trainable += p.data.length;
  const baseCount = base.weights.numel();
  t = performance.now();
  const step = await TrainStep.compile(adapted, { threads: opt.threads, memPattern: opt.memPattern, weights: opt.weights });
  const compileS = (performance.now() - t) / 1000;
  const rssCompile = mib(process.resourceUsage().maxRSS);
  const B = opt.batch;
  const S = opt.seq;
  const optimizer = new AdamW({ lr: 1e-4, weightDecay: 0.01 });
  const decay = adapted.decayParameters();
  let seed = 11;
  const nextBatch = (): Batch => {
    const ids = BigInt64Array.from(noise(B * S, 1, seed++), (x) => BigInt(Math.floor((x / Math.sqrt(12) + 0.5) * base.vocabSize) % base.vocabSize));
    return { size: B, seq: S, inputIds: ids, attentionMask: new BigInt64Array(B * S).fill(1n), labels: ids, tokens: B * S };
  };
  const steps: number[] = [];
  const runs: number[] = [];
  const opts: number[] = [];
  const losses: number[] = [];
  const faults: number[] = [];
  let busy0 = 0;
  let cpu0 = process.cpuUsage();
  let wall0 = 0;
  for (let i = 0; i < opt.warmup + opt.steps; i++) {
    const batch = nextBatch();
    if (i === opt.warmup) {
      busy0 = busySeconds();
      cpu0 = process.cpuUsage();
      wall0 = performance.now();
    }
    const faults0 = process.resourceUsage().minorPageFault;
    const t0 = performance.now();
    const r = await step.run(batch, params);
    const t1 = performance.now();
    optimizer.step(params, r.grads, { decay });
    const t2 = performance.now();
    losses.push(r.loss);
    const faulted = process.resourceUsage().minorPageFault - faults0;
    if (i >= opt.warmup) {
      faults.push(faulted);
      steps.push((t2 - t0) / 1000);
      runs.push((t1 - t0) / 1000);
      opts.push((t2 - t1) / 1000);
    }
    process.stderr.write(`  step ${i}${i < opt.warmup ? ' (warmup)' : ''}: ${((t2 - t0) / 1000).toFixed(3)} s (session ${((t1 - t0) / 1000).toFixed(3)} AdamW ${((t2 - t1) / 1000).toFixed(3)}) loss ${r.loss.toFixed(4)}, ${(faulted / 1000).toFixed(0)}k page faults\n`);
  }
  const wall = (performance.now() - wall0) / 1000;
  const c = process.cpuUsage(cpu0);
  const other = Math.max(0, (busySeconds() - busy0 - (c.user + c.system) / 1e6) / wall);
  await step.dispose();
  const med = median(steps);
  return {
    model, method, batch: B, seq: S, threads: opt.threads,
    trainable_params: trainable,
    total_params: method === 'full' ? baseCount : baseCount + trainable,
    build_s: buildS, compile_s: compileS, steps_s: steps,
    median_step_s: med, median_run_s: median(runs), median_opt_s: median(opts), median_page_faults: median(faults),
    tokens_per_s: (B * S) / med,
    loss_first: losses[0]!, loss_last: losses[losses.length - 1]!,
    rss_after_model_mib: rssModel, rss_after_compile_mib: rssCompile,
    peak_rss_mib: mib(process.resourceUsage().maxRSS),
    other_cpu: other, loadavg_start: loadStart, loadavg_end: os.loadavg()[0]!,
  };
}

// -------------------------------------------------------------------------------- the parent

interface Outcome<T> { json: T | null; command: string; note?: string; wall_s: number }

function runOurs(model: string, method: Method, opt: Options): Outcome<OurRun> {
  const args = ['--child', '--models', model, '--methods', method, '--steps', String(opt.steps), '--warmup', String(opt.warmup), '--threads', String(opt.threads), '--batch', String(opt.batch), '--seq', String(opt.seq), '--weights', opt.weights, ...(opt.memPattern ? ['--mem-pattern'] : [])];
  const script = fileURLToPath(import.meta.url);
  const command = `node ${path.relative(REPO, script)} ${args.join(' ')}`;
  const t0 = performance.now();
  const r = spawnSync(process.execPath, [script, ...args], { cwd: REPO, encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'], timeout: opt.timeout * 1000, maxBuffer: 1 << 24 });
  const wall = (performance.now() - t0) / 1000;
  if (r.status !== 0) return { json: null, command, wall_s: wall, note: r.signal ? `killed (${r.signal}) after ${wall.toFixed(0)} s` : `failed (exit ${r.status})` };
  const line = r.stdout.split('\n').find((l) => l.startsWith('{'));
  return { json: line ? (JSON.parse(line) as OurRun) : null, command, wall_s: wall, note: line ? undefined : 'no result line' };
}

function runPeer(model: string, method: string, opt: Options): Outcome<Record<string, unknown>> {
  const args = [PEER, '--model', model, '--method', method, '--batch', String(opt.batch), '--seq', String(opt.seq), '--warmup', String(opt.warmup), '--steps', String(opt.steps), '--threads', String(opt.threads), '--virtual-tokens', String(VIRTUAL_TOKENS)];
  const command = `OMP_WAIT_POLICY=PASSIVE ${opt.python} ${path.relative(REPO, PEER)} ${args.slice(1).join(' ')}`;
  const t0 = performance.now();
  const r = spawnSync(opt.python, args, { cwd: REPO, encoding: 'utf8', env: { ...process.env, OMP_WAIT_POLICY: 'PASSIVE' }, stdio: ['ignore', 'pipe', 'pipe'], timeout: opt.timeout * 1000, maxBuffer: 1 << 24 });
  const wall = (performance.now() - t0) / 1000;
  if (r.status !== 0) return { json: null, command, wall_s: wall, note: `failed (exit ${r.status}${r.signal ? `, ${r.signal}` : ''}): ${(r.stderr ?? '').trim().split('\n').slice(-2).join(' | ')}` };
  const line = r.stdout.split('\n').find((l) => l.startsWith('{'));
  return { json: line ? (JSON.parse(line) as Record<string, unknown>) : null, command, wall_s: wall };
}

function torchProblem(opt: Options): string | null {
  if (!fs.existsSync(PEER)) return `PyTorch peer skipped: ${PEER} is missing`;
  const probe = spawnSync(opt.python, ['-c', 'import torch'], { stdio: 'ignore' });
  return probe.status === 0 ? null : `PyTorch peer skipped: \`${opt.python} -c "import torch"\` failed (install: apt-get update && apt-get install -y python3-torch libopenblas0-pthread)`;
}

function machine(torch: string | undefined): string[] {
  const cpuinfo = fs.readFileSync('/proc/cpuinfo', 'utf8');
  const lscpu = spawnSync('lscpu', { encoding: 'utf8' }).stdout ?? '';
  const cpu = (lscpu.match(/Model name:\s*(.*)/) ?? cpuinfo.match(/model name\s*:\s*(.*)/) ?? [])[1]?.trim() ?? 'unknown';
  const flags = (cpuinfo.match(/flags\s*:\s*(.*)/) ?? [])[1]?.split(' ') ?? [];
  const isa = ['avx2', 'avx512f', 'avx512_vnni', 'avx512_bf16', 'amx_tile'].filter((f) => flags.includes(f)).join(', ');
  const ortVersion = (JSON.parse(fs.readFileSync(path.join(REPO, 'node_modules/onnxruntime-node/package.json'), 'utf8')) as { version: string }).version;
  return [
    `- machine: nproc ${spawnSync('nproc', { encoding: 'utf8' }).stdout.trim()}, ${cpu} (${isa}), ${Math.round(os.totalmem() / 2 ** 30)} GiB RAM, shared with other jobs`,
    `- node ${process.version}, onnxruntime-node ${ortVersion}${torch ? `, torch ${torch} (Debian python3-torch, OpenBLAS)` : ', torch not run'}`,
  ];
}

const f = (x: unknown, d = 1): string => (typeof x === 'number' && Number.isFinite(x) ? x.toFixed(d) : '-');
const group = (n: unknown): string => (typeof n === 'number' ? String(n).replace(/\B(?=(\d{3})+(?!\d))/g, ',') : '-');

async function main(): Promise<void> {
  const argv = process.argv.slice(2);
  if (argv[0] === '--child') {
    const opt = parseArgs(argv.slice(1));
    const r = await child(opt.models[0]!, opt.methods[0]!, opt);
    process.stdout.write(`${JSON.stringify(r)}\n`);
    return;
  }
  const opt = parseArgs(argv);
  const skip = opt.peer ? torchProblem(opt) : 'PyTorch peer skipped (--no-peer)';
  if (skip) console.log(skip);
  const started = new Date();
  const uptimeStart = spawnSync('uptime', { encoding: 'utf8' }).stdout.trim();
  const tables: string[] = [];
  const commands: string[] = [];
  let torch: string | undefined;
  for (const model of opt.models) {
    const rows: string[] = [];
    for (const method of opt.methods) {
      console.log(`${model} ${method}: ours`);
      const ours = runOurs(model, method, opt);
      commands.push(ours.command);
      const o = ours.json;
      console.log(o ? `  ours  ${f(o.tokens_per_s)} tok/s, median ${f(o.median_step_s, 3)} s/step (session ${f(o.median_run_s, 3)}, AdamW ${f(o.median_opt_s, 3)}), compile ${f(o.compile_s)} s, peak RSS ${f(o.peak_rss_mib, 0)} MiB, other cpu ${f(o.other_cpu, 2)}` : `  ours  ${ours.note}`);
      let p: Outcome<Record<string, unknown>> | undefined;
      if (!skip && PEER_METHODS.includes(method) && !model.startsWith('tiny')) {
        p = runPeer(model, method, opt);
        commands.push(p.command);
        torch ??= p.json?.torch as string | undefined;
        console.log(p.json ? `  torch ${f(p.json.tokens_per_s)} tok/s, median ${f(p.json.median_step_s, 3)} s/step, peak RSS ${f(p.json.peak_rss_mib, 0)} MiB, other cpu ${f(p.json.other_cpu, 2)}` : `  torch ${p.note}`);
      }
      const pj = p?.json ?? null;
      const ratio = o && pj && typeof pj.tokens_per_s === 'number' ? `${(o.tokens_per_s / (pj.tokens_per_s as number)).toFixed(2)}x` : '-';
      const memRatio = o && pj && typeof pj.peak_rss_mib === 'number' ? `${(o.peak_rss_mib / (pj.peak_rss_mib as number)).toFixed(2)}x` : '-';
      rows.push(
        `| ${method} | ${group(o?.trainable_params)} | ${o ? f(o.tokens_per_s) : `- (${ours.note})`} | ${pj ? f(pj.tokens_per_s) : p ? `- (${p.note})` : 'n/a'} | **${ratio}** | ${o ? f(o.median_step_s, 2) : '-'} / ${pj ? f(pj.median_step_s, 2) : '-'} | ${o ? `${f(o.median_run_s, 2)} + ${f(o.median_opt_s, 3)}` : '-'} | ${o ? f(o.peak_rss_mib, 0) : '-'} | ${pj ? f(pj.peak_rss_mib, 0) : '-'} | ${memRatio} | ${o ? f(o.compile_s, 1) : '-'} | ${o ? `${f(o.loss_first, 3)} / ${f(o.loss_last, 3)}` : '-'} | ${o ? f(o.other_cpu, 2) : '-'} / ${pj ? f(pj.other_cpu, 2) : '-'} | ${o ? f(o.loadavg_start, 1) : '-'} |`,
      );
    }
    tables.push(
      `### ${model} (${model === 'gpt2' ? 'GPT-2 small, 124M' : model === 'llama' ? 'SmolLM-135M shape' : 'smoke test'}), batch ${opt.batch} x seq ${opt.seq}`,
      '',
      '| method | trainable params | ours tok/s | torch tok/s | ours / torch | s/step ours / torch | ours: session + AdamW s | ours peak RSS MiB | torch peak RSS MiB | RSS ours / torch | ours compile s | ours loss first / last | other cpu ours / torch | load avg (1 min) at start |',
      '|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|',
      ...rows,
      '',
    );
  }
  const uptimeEnd = spawnSync('uptime', { encoding: 'utf8' }).stdout.trim();
  const section = [
    HEADING,
    '',
    `Run ${started.toISOString().slice(0, 16).replace('T', ' ')} UTC by \`bench/train_methods.ts\`. One training step = forward + causal-LM loss + backward + AdamW (lr 1e-4, weight decay 0.01) over the trainable tensors, on random tokens (labels = inputs), float32, ${opt.threads} threads on both sides. tok/s = batch x seq / median step over ${opt.steps} timed steps after ${opt.warmup} warm-up (virtual tokens not counted). Every run of ours is a fresh \`node\` process (peak RSS = that process's maxrss, Node heap and JS weight arrays included); the PyTorch peer (\`peer_torch.py\`, OMP_WAIT_POLICY=PASSIVE) runs right after it, never at the same time. "other cpu" = cores used by other processes while timing: above ~0.2 a row is disturbed. Methods as peer_torch.py builds them: LoRA r 8 / alpha 16 / dropout 0 on c_attn or q_proj,v_proj (lora-qv) or every attention and MLP linear (lora-all); IA3 on peft's default targets; prompt / prefix tuning with ${VIRTUAL_TOKENS} virtual tokens (prefix without projection); p-tuning ${VIRTUAL_TOKENS} tokens with peft's MLP encoder (ours only: the peer has none); adapter = AdapterHub SeqBn (Pfeiffer) on the MLP output, reduction 16 (the peer's is the plain x + up(relu(down(x))) block); full = every weight.`,
    '',
    ...machine(torch),
    `- load: \`${uptimeStart}\` at the start, \`${uptimeEnd}\` at the end`,
    ...(skip ? [`- ${skip}`] : []),
    '',
    ...tables,
    'Commands (from the repository root, after `npx tsc -p .`):',
    '',
    `    npm run bench:train -- ${argv.join(' ')}`.trimEnd(),
    '',
    'which runs, one at a time:',
    '',
    ...commands.map((c) => `    ${c}`),
    '',
  ].join('\n');
  console.log(`\n${section}`);
  if (opt.write) {
    writeSection(opt.results, section);
    console.log(`updated ${path.relative(REPO, opt.results)} (section "${HEADING.slice(3)}"); the "limits" notes after the tables are kept`);
  }
}

const NOTES_MARK = '<!-- train_methods: notes below are kept across runs -->';

/**
 * Replaces this benchmark's generated part of RESULTS.md (from its heading to the notes marker,
 * or to the next '## ' heading), keeping hand-written notes after the marker; appends otherwise.
 */
function writeSection(file: string, section: string): void {
  const old = fs.existsSync(file) ? fs.readFileSync(file, 'utf8') : '# Benchmark results\n';
  const start = old.indexOf(`${HEADING}\n`);
  let text: string;
  if (start < 0) text = `${old.replace(/\n*$/, '\n\n')}${section}\n${NOTES_MARK}\n`;
  else {
    const nextHeading = old.indexOf('\n## ', start + HEADING.length);
    const end = nextHeading < 0 ? old.length : nextHeading + 1;
    const mark = old.indexOf(NOTES_MARK, start);
    const kept = mark >= 0 && mark < end ? old.slice(mark, end) : `${NOTES_MARK}\n`;
    text = old.slice(0, start) + section + '\n' + kept.replace(/\n*$/, '\n') + (end < old.length ? `\n${old.slice(end)}` : '');
  }
  const tmp = `${file}.${process.pid}.tmp`;
  fs.writeFileSync(tmp, text);
  fs.renameSync(tmp, file);
}

main().catch((e: unknown) => {
  console.error(e instanceof Error ? (e.stack ?? e.message) : e);
  process.exit(1);
});
