// Benchmark: forward + backward of a stack of L linear layers with FROZEN weights and a trainable
// low-rank pair per layer (y = x W^T + (x A^T) B^T * scale, loss = mean(y_L^2)), compiled by our IR
// into one ONNX Runtime session (loss + gradients of every A and B), against the same computation
// in PyTorch (bench/lowrank_stack_torch.py, spawned in the same run). Also measures where resident
// memory goes for each way of holding the frozen weights (RuntimeOptions.weights and friends).
//
//   npm run bench                                   # the five main weight modes once, then PyTorch
//   node dist/bench/lowrank_stack.js --modes mmap-shared,mmap-prepacked --repeat 3
//   node dist/bench/lowrank_stack.js --help
//
// Each weight mode runs in its own child process (so resident-memory numbers do not mix); the
// parent prints a table and, with --out FILE, writes every measurement as JSON lines.

import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import * as readline from 'node:readline';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import * as ort from 'onnxruntime-node';
import { Graph, type Value } from '../src/graph/ir.js';
import * as o from '../src/graph/ops.js';
import { grad } from '../src/autodiff/grad.js';
import { mulberry32 } from '../src/nn/random.js';
import { RuntimeSession, type HostTensor, type RuntimeOptions } from '../src/runtime/session.js';
import { forEachFlag, helpOrUnknown, listArg, numberArg } from './args.js';
import { busySeconds, median } from './peer.js';

// ---------------------------------------------------------------------------------- options
interface Options {
  layers: number;
  d: number;
  rank: number;
  alpha: number;
  batch: number;
  seq: number;
  threads: number;
  warmup: number;
  steps: number;
  modes: string[];
  repeat: number;
  torch: boolean;
  python: string;
  out: string | null;
  dir: string | null;
  child: boolean;
  arena: boolean;
  memPattern: boolean;
  /** byte alignment of the tensor data in the weights file (safetensors itself guarantees 8) */
  align: number;
  /** keep every process alive and interleave their timed steps round by round */
  paired: boolean;
  gapMs: number;
  /** child: wait for a line on stdin before each timed run, answer "done" */
  serve: boolean;
  /** re-report the JSON lines of earlier --out runs (pooled) instead of running */
  from: string | null;
}

const MODES: Record<string, { source: 'file' | 'array'; desc: string; opts: RuntimeOptions }> = {
  // the library default: file-backed weights memory-mapped, no prepacking
  'mmap-shared': {
    source: 'file',
    desc: 'file-backed constants, mmapped external data, no prepacking (default for files)',
    opts: { weights: 'shared' },
  },
  'mmap-prepacked': { source: 'file', desc: 'file-backed constants, mmapped then prepacked per session', opts: { weights: 'prepacked' } },
  // weights read into JS arrays first
  'input-shared': { source: 'array', desc: 'JS arrays fed as graph inputs, zero-copy (default for arrays)', opts: { weights: 'shared' } },
  'input-noprepack': {
    source: 'array',
    desc: 'JS arrays fed as inputs, prepacking off session-wide (isolates that switch)',
    opts: { weights: 'shared', sessionConfig: { 'session.disable_prepacking': '1' } },
  },
  'extmem-prepacked': {
    source: 'array',
    desc: 'JS arrays as in-memory external data, prepacked',
    opts: { weights: 'prepacked', largeConstants: 'external' },
  },
  'extmem-noprepack': {
    source: 'array',
    desc: 'JS arrays as in-memory external data, prepacking off (shows ORT copying the blobs)',
    opts: { weights: 'prepacked', largeConstants: 'external', sessionConfig: { 'session.disable_prepacking': '1' } },
  },
  inline: {
    source: 'array',
    desc: 'JS arrays inlined in the ModelProto, prepacked (the old behaviour)',
    opts: { weights: 'prepacked', largeConstants: 'inline' },
  },
  'inline-noprepack': {
    source: 'array',
    desc: 'JS arrays inlined, prepacking off',
    opts: { weights: 'prepacked', largeConstants: 'inline', sessionConfig: { 'session.disable_prepacking': '1' } },
  },
};
const DEFAULT_MODES = ['mmap-shared', 'mmap-prepacked', 'input-shared', 'extmem-prepacked', 'inline'];

const HELP = `usage: node dist/bench/lowrank_stack.js [options]
  --layers N      frozen linear layers (12)         --d N        width (768)
  --rank N        low-rank r (8)                    --alpha X    scale = alpha / r (16)
  --batch N       (4)   --seq N (256): batch*seq tokens per step
  --threads N     intra-op threads for ORT and torch (2)
  --warmup N      untimed steps (2)                 --steps N    timed steps, median reported (10)
  --modes a,b     weight modes (${DEFAULT_MODES.join(',')}); all: ${Object.keys(MODES).join(',')}
  --repeat N      run the mode list N times, interleaved (1)
  --no-torch      skip the PyTorch peer             --python P   interpreter (/usr/bin/python3)
  --no-arena      ORT enableCpuMemArena false    --no-mem-pattern   ORT enableMemPattern false
  --align N       pad the safetensors header so tensor data starts at a multiple of N bytes (8)
  --paired        all modes and torch stay alive and take turns, one timed step each per round
                  (adjacent steps see the same background load: use on a busy machine)
  --gap MS        pause between turns in --paired (150), so idle BLAS/ORT threads stop spinning
  --out FILE      append every measurement as a JSON line
  --from FILE     print the report for the JSON lines of earlier --out runs, pooled (same shape flags)
  --dir DIR       where to write the weights file (a fresh temp dir)`;

function parseArgs(argv: string[]): Options {
  const o: Options = {
    layers: 12,
    d: 768,
    rank: 8,
    alpha: 16,
    batch: 4,
    seq: 256,
    threads: 2,
    warmup: 2,
    steps: 10,
    modes: DEFAULT_MODES,
    repeat: 1,
    torch: true,
    python: '/usr/bin/python3',
    out: null,
    dir: null,
    child: false,
    arena: true,
    memPattern: true,
    align: 8,
    paired: false,
    gapMs: 150,
    serve: false,
    from: null,
  };
  forEachFlag(argv, (a, next) => {
    const num = (): number => numberArg(a, next());
    switch (a) {
      case '--layers':
        o.layers = num();
        break;
      case '--d':
        o.d = num();
        break;
      case '--rank':
        o.rank = num();
        break;
      case '--alpha':
        o.alpha = num();
        break;
      case '--batch':
        o.batch = num();
        break;
      case '--seq':
        o.seq = num();
        break;
      case '--threads':
        o.threads = num();
        break;
      case '--warmup':
        o.warmup = num();
        break;
      case '--steps':
        o.steps = Math.max(1, num());
        break;
      case '--modes': {
        const v = next();
        o.modes = v === 'all' ? Object.keys(MODES) : listArg(v, Object.keys(MODES), 'mode');
        break;
      }
      case '--repeat':
        o.repeat = Math.max(1, num());
        break;
      case '--no-torch':
        o.torch = false;
        break;
      case '--python':
        o.python = next();
        break;
      case '--out':
        o.out = next();
        break;
      case '--dir':
        o.dir = next();
        break;
      case '--child':
        o.child = true;
        break;
      case '--no-arena':
        o.arena = false;
        break;
      case '--no-mem-pattern':
        o.memPattern = false;
        break;
      case '--paired':
        o.paired = true;
        break;
      case '--align':
        o.align = num();
        break;
      case '--gap':
        o.gapMs = num();
        break;
      case '--serve':
        o.serve = true;
        break;
      case '--from':
        o.from = next();
        break;
      default:
        helpOrUnknown(a, HELP);
    }
  });
  return o;
}

// ------------------------------------------------------------------------------ the data
// Deterministic data shared with the Python peer through two files in one directory:
//   weights.safetensors: layers.{l}.weight [d, d] float32 (torch nn.Linear layout [out, in])
//   inputs.bin: x [batch*seq*d], then per layer A [r*d] and B [d*r], float32 little-endian

function uniform(n: number, seed: number, bound: number): Float32Array {
  const r = mulberry32(seed);
  const a = new Float32Array(n);
  for (let i = 0; i < n; i++) a[i] = (r() * 2 - 1) * bound;
  return a;
}

interface TensorLoc {
  offset: number;
  length: number;
}

function writeData(dir: string, opt: Options): void {
  const { layers: L, d, rank: r } = opt;
  const header: Record<string, unknown> = { __metadata__: { format: 'pt' } };
  const bytes = d * d * 4;
  for (let l = 0; l < L; l++) header[`layers.${l}.weight`] = { dtype: 'F32', shape: [d, d], data_offsets: [l * bytes, (l + 1) * bytes] };
  let json = JSON.stringify(header);
  // safetensors pads the header with spaces to 8 bytes; --align N pads so that 8 + header is a
  // multiple of N (N=64: every tensor starts on a cache line, as the bench's weights are 4-KiB multiples)
  const align = Math.max(8, opt.align);
  json += ' '.repeat((align - ((8 + json.length) % align)) % align);
  const fd = fs.openSync(path.join(dir, 'weights.safetensors'), 'w');
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(BigInt(json.length));
  fs.writeSync(fd, len);
  fs.writeSync(fd, Buffer.from(json, 'utf8'));
  // W uniform(+-sqrt(3/d)): variance 1/d keeps activations at unit scale through the stack
  for (let l = 0; l < L; l++) fs.writeSync(fd, uniform(d * d, 1000 + l, Math.sqrt(3 / d)));
  fs.closeSync(fd);
  const fi = fs.openSync(path.join(dir, 'inputs.bin'), 'w');
  fs.writeSync(fi, uniform(opt.batch * opt.seq * d, 7, Math.sqrt(3)));
  // A kaiming-uniform-like, B small and non-zero (peft starts B at 0, which would zero A's gradient)
  for (let l = 0; l < L; l++) {
    fs.writeSync(fi, uniform(r * d, 2000 + l, 1 / Math.sqrt(d)));
    fs.writeSync(fi, uniform(d * r, 3000 + l, 0.02));
  }
  fs.closeSync(fi);
}

function safetensorsIndex(file: string): Map<string, TensorLoc> {
  const fd = fs.openSync(file, 'r');
  const len = Buffer.alloc(8);
  fs.readSync(fd, len, 0, 8, 0);
  const n = Number(len.readBigUInt64LE());
  const hb = Buffer.alloc(n);
  fs.readSync(fd, hb, 0, n, 8);
  fs.closeSync(fd);
  const header = JSON.parse(hb.toString('utf8')) as Record<string, { data_offsets: [number, number] }>;
  const out = new Map<string, TensorLoc>();
  for (const [k, v] of Object.entries(header)) {
    if (k === '__metadata__') continue;
    out.set(k, { offset: 8 + n + v.data_offsets[0], length: v.data_offsets[1] - v.data_offsets[0] });
  }
  return out;
}

function readF32(file: string, offset: number, count: number): Float32Array {
  const a = new Float32Array(count);
  const fd = fs.openSync(file, 'r');
  let done = 0;
  const u8 = new Uint8Array(a.buffer);
  while (done < u8.byteLength) {
    const n = fs.readSync(fd, u8, done, Math.min(1 << 30, u8.byteLength - done), offset + done);
    if (n === 0) throw new Error(`${file} is truncated`);
    done += n;
  }
  fs.closeSync(fd);
  return a;
}

// ----------------------------------------------------------------------------- memory
interface Mem {
  rss: number; // MiB, VmRSS
  anon: number;
  file: number;
  hwm: number;
  pss: number; // proportional: pages mapped twice in this process count once
  pssAnon: number;
  pssFile: number;
  jsRss: number; // process.memoryUsage().rss
  /** mappings of the weights file: resident, proportional, number of mappings */
  wfile: { rss: number; pss: number; maps: number };
}
let WEIGHTS_FILE = '';
function weightsMapping(): { rss: number; pss: number; maps: number } {
  const out = { rss: 0, pss: 0, maps: 0 };
  if (!WEIGHTS_FILE) return out;
  let inside = false;
  for (const line of fs.readFileSync('/proc/self/smaps', 'utf8').split('\n')) {
    if (/^[0-9a-f]+-[0-9a-f]+ /.test(line)) {
      inside = line.endsWith(WEIGHTS_FILE);
      if (inside) out.maps++;
    } else if (inside) {
      const m = /^(Rss|Pss):\s+(\d+) kB/.exec(line);
      if (m) out[m[1] === 'Rss' ? 'rss' : 'pss'] += Number(m[2]) / 1024;
    }
  }
  return out;
}
function readMem(): Mem {
  const st = fs.readFileSync('/proc/self/status', 'utf8');
  const kb = (k: string): number => Number(new RegExp(`^${k}:\\s+(\\d+)`, 'm').exec(st)?.[1] ?? NaN) / 1024;
  const roll = fs.readFileSync('/proc/self/smaps_rollup', 'utf8');
  const rk = (k: string): number => Number(new RegExp(`^${k}:\\s+(\\d+)`, 'm').exec(roll)?.[1] ?? NaN) / 1024;
  return {
    rss: kb('VmRSS'),
    anon: kb('RssAnon'),
    file: kb('RssFile'),
    hwm: kb('VmHWM'),
    pss: rk('Pss'),
    pssAnon: rk('Pss_Anon'),
    pssFile: rk('Pss_File'),
    jsRss: process.memoryUsage().rss / 2 ** 20,
    wfile: weightsMapping(),
  };
}
const gc = (): void => (globalThis as { gc?: () => void }).gc?.();

// ------------------------------------------------------------------------------ child: one mode
interface ChildResult {
  kind: 'ts';
  mode: string;
  desc: string;
  frozen_params: number;
  trainable_params: number;
  threads: number;
  tokens: number;
  warmup: number;
  steps: number;
  median_ms: number;
  min_ms: number;
  max_ms: number;
  fwd_median_ms: number;
  step_ms: number[];
  /** median over the steps during which other processes used < CLEAN_OTHER cores (NaN if none) */
  clean_median_ms: number;
  clean_steps: number;
  step_other_cpu: number[];
  step_cpu_ms: number[];
  step_faults: number[];
  loss: number;
  grad_sq: { A0: number; BLast: number };
  mem: Record<string, Mem>;
  sampled_peak_rss_mib: number;
  session_memory: unknown;
  create_ms: { train: number; fwd: number };
  other_cpu: number;
  cpu_util: number;
  arena: boolean;
}

function buildGraph(
  opt: Options,
  W: (g: Graph, l: number) => Value,
  withGrads: boolean,
): { g: Graph; outputs: Record<string, Value>; params: Value[] } {
  const { layers: L, d, rank: r } = opt;
  const g = new Graph();
  const x = g.input('x', 'float32', ['batch', 'seq', d]);
  const params: Value[] = [];
  let h = x;
  const scale = opt.alpha / r;
  for (let l = 0; l < L; l++) {
    g.scope(`layers.${l}`, () => {
      const w = W(g, l);
      const A = g.param(`layers.${l}.lora_A`, 'float32', [r, d]);
      const B = g.param(`layers.${l}.lora_B`, 'float32', [d, r]);
      params.push(A, B);
      h = o.add(o.linear(h, w), o.mul(o.linear(o.linear(h, A), B), scale));
    });
  }
  const loss = o.mean(o.mul(h, h));
  const outputs: Record<string, Value> = { loss };
  if (withGrads) grad(loss, params).forEach((gv, i) => (outputs[`grad.${params[i]!.name}`] = gv));
  return { g, outputs, params };
}

function cpuSeconds(): number {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1e6;
}
/** A step is "clean" when other processes used less than this many cores meanwhile. */
const CLEAN_OTHER = 0.25;
function cleanStats(times: number[], other: number[]): { clean_median_ms: number; clean_steps: number } {
  const clean = times.filter((_, i) => other[i]! < CLEAN_OTHER);
  return { clean_median_ms: clean.length ? median(clean) : NaN, clean_steps: clean.length };
}

async function child(opt: Options, dir: string): Promise<void> {
  const mode = opt.modes[0]!;
  const spec = MODES[mode]!;
  const { layers: L, d, rank: r } = opt;
  const N = opt.batch * opt.seq;
  const wfile = path.join(dir, 'weights.safetensors');
  WEIGHTS_FILE = fs.realpathSync(wfile);
  const index = safetensorsIndex(wfile);
  const mem: Record<string, Mem> = {};
  let peak = 0;
  // V8 releases ArrayBuffer backing stores (the ModelProto bytes, for one) off the main thread
  // after a collection, so collect, let it finish, collect again, then read.
  const mark = async (k: string): Promise<void> => {
    gc();
    await new Promise((r) => setTimeout(r, 100));
    gc();
    mem[k] = readMem();
    peak = Math.max(peak, mem[k]!.jsRss);
  };

  // ORT's library and allocators warm up on a throwaway session, so the baseline holds them
  {
    const g = new Graph();
    const x = g.input('x', 'float32', [1, 4]);
    const s = await RuntimeSession.fromGraph(g, { y: o.mul(x, 2) }, { threads: opt.threads });
    await s.run({ x: { dtype: 'float32', shape: [1, 4], data: new Float32Array(4) } });
    await s.dispose();
  }
  // the trainable tensors and the batch (small: 2*L*r*d + N*d floats)
  const inputs = readF32(path.join(dir, 'inputs.bin'), 0, N * d + L * 2 * r * d);
  await mark('baseline');

  // frozen weights: file byte ranges (no JS copy) or JS arrays read from the file
  const arrays: Float32Array[] = [];
  if (spec.source === 'array') for (let l = 0; l < L; l++) arrays.push(readF32(wfile, index.get(`layers.${l}.weight`)!.offset, d * d));
  await mark('js_weights');
  const W = (g: Graph, l: number): Value => {
    const loc = index.get(`layers.${l}.weight`)!;
    return spec.source === 'file'
      ? g.constant(`layers.${l}.weight`, 'float32', [d, d], { kind: 'file', path: wfile, offset: loc.offset, length: loc.length })
      : g.constant(`layers.${l}.weight`, 'float32', [d, d], arrays[l]!);
  };
  const ropts: RuntimeOptions = { ...spec.opts, threads: opt.threads, cpuMemArena: opt.arena, memPattern: opt.memPattern };

  let t0 = performance.now();
  const train = buildGraph(opt, W, true);
  const trainSess = await RuntimeSession.fromGraph(train.g, train.outputs, { ...ropts, name: 'train' });
  const createTrain = performance.now() - t0;
  await mark('train_session');
  t0 = performance.now();
  const fwd = buildGraph(opt, W, false);
  const fwdSess = await RuntimeSession.fromGraph(fwd.g, fwd.outputs, { ...ropts, name: 'forward' });
  const createFwd = performance.now() - t0;
  await mark('fwd_session');

  const feeds: Record<string, HostTensor | ort.Tensor> = {
    x: new ort.Tensor('float32', inputs.subarray(0, N * d), [opt.batch, opt.seq, d]),
  };
  let off = N * d;
  for (const p of train.params) {
    const n = (p.shape[0] as number) * (p.shape[1] as number);
    feeds[p.name] = new ort.Tensor('float32', inputs.subarray(off, off + n), p.shape as number[]);
    off += n;
  }
  // --serve: the parent says when to run each timed step (see --paired)
  const lines = opt.serve ? readline.createInterface({ input: process.stdin })[Symbol.asyncIterator]() : null;
  const gate = async (): Promise<void> => {
    if (lines) await lines.next();
  };
  const done = (ms: number): void => {
    if (lines) process.stdout.write(`done ${ms}\n`);
  };
  const times: number[] = [];
  const stepOther: number[] = []; // cores other processes used during each step
  const stepCpu: number[] = []; // CPU ms this process used per step (all its threads)
  const stepFaults: number[] = []; // page faults (minor + major) per step
  let last: Record<string, HostTensor> = {};
  let cpu0 = 0,
    wall0 = 0,
    busy0 = 0;
  for (let i = 0; i < opt.warmup + opt.steps; i++) {
    if (i === opt.warmup) {
      cpu0 = cpuSeconds();
      busy0 = busySeconds();
      wall0 = performance.now();
    }
    if (i === opt.warmup && lines) process.stdout.write('ready\n');
    if (i >= opt.warmup) await gate();
    const b0 = busySeconds(),
      c0 = cpuSeconds();
    const ru0 = process.resourceUsage();
    const s = performance.now();
    last = await trainSess.run(feeds);
    const e = performance.now() - s;
    const ru1 = process.resourceUsage();
    if (i >= opt.warmup) stepFaults.push(ru1.minorPageFault - ru0.minorPageFault + ru1.majorPageFault - ru0.majorPageFault);
    if (i >= opt.warmup) {
      done(e);
      times.push(e);
      const c = cpuSeconds() - c0;
      stepCpu.push(c * 1000);
      stepOther.push(Math.max(0, busySeconds() - b0 - c) / (e / 1000));
    }
    peak = Math.max(peak, process.memoryUsage().rss / 2 ** 20);
  }
  const wall = (performance.now() - wall0) / 1000;
  const cpu = cpuSeconds() - cpu0;
  const otherCpu = Math.max(0, busySeconds() - busy0 - cpu) / wall;
  await mark('after_train_steps');
  const fwdTimes: number[] = []; // the forward-only session (loss only), first run excluded
  for (let i = 0; i <= opt.steps; i++) {
    await gate();
    const s = performance.now();
    await fwdSess.run({ x: feeds.x!, ...Object.fromEntries(train.params.map((p) => [p.name, feeds[p.name]!])) });
    const e = performance.now() - s;
    done(e);
    if (i > 0) fwdTimes.push(e);
    peak = Math.max(peak, process.memoryUsage().rss / 2 ** 20);
  }
  await mark('after_fwd_runs');
  const sq = (t: HostTensor): number => (t.data as Float32Array).reduce((a, v) => a + v * v, 0);
  const res: ChildResult = {
    kind: 'ts',
    mode,
    desc: spec.desc,
    frozen_params: L * d * d,
    trainable_params: L * 2 * r * d,
    threads: opt.threads,
    tokens: N,
    warmup: opt.warmup,
    steps: opt.steps,
    median_ms: median(times),
    ...cleanStats(times, stepOther),
    step_other_cpu: stepOther,
    step_cpu_ms: stepCpu,
    step_faults: stepFaults,
    min_ms: Math.min(...times),
    max_ms: Math.max(...times),
    fwd_median_ms: median(fwdTimes),
    step_ms: times,
    loss: last.loss!.data[0] as number,
    grad_sq: { A0: sq(last['grad.layers.0.lora_A']!), BLast: sq(last[`grad.layers.${L - 1}.lora_B`]!) },
    mem,
    sampled_peak_rss_mib: peak,
    session_memory: { train: trainSess.memory, forward: fwdSess.memory },
    create_ms: { train: createTrain, fwd: createFwd },
    other_cpu: otherCpu,
    cpu_util: cpu / wall,
    arena: opt.arena,
  };
  await trainSess.dispose();
  await fwdSess.dispose();
  process.stdout.write(JSON.stringify(res) + '\n');
  if (lines) process.exit(0); // the stdin reader would keep the process alive
}

// ------------------------------------------------------------------------------ parent
function runChild(script: string, opt: Options, dir: string, mode: string): Promise<ChildResult> {
  const args = [
    '--expose-gc',
    script,
    '--child',
    '--dir',
    dir,
    '--modes',
    mode,
    '--layers',
    String(opt.layers),
    '--d',
    String(opt.d),
    '--rank',
    String(opt.rank),
    '--alpha',
    String(opt.alpha),
    '--batch',
    String(opt.batch),
    '--seq',
    String(opt.seq),
    '--threads',
    String(opt.threads),
    '--warmup',
    String(opt.warmup),
    '--steps',
    String(opt.steps),
  ];
  if (!opt.arena) args.push('--no-arena');
  if (!opt.memPattern) args.push('--no-mem-pattern');
  return new Promise((resolve, reject) => {
    const p = spawn(process.execPath, args, { stdio: ['ignore', 'pipe', 'inherit'] });
    let out = '';
    p.stdout.on('data', (b: Buffer) => (out += b.toString()));
    p.on('error', reject);
    p.on('close', (code) => {
      if (code !== 0) return reject(new Error(`mode ${mode}: child exited with ${code}`));
      try {
        resolve(JSON.parse(out.trim().split('\n').pop()!) as ChildResult);
      } catch {
        reject(new Error(`mode ${mode}: unreadable child output: ${out.slice(-500)}`));
      }
    });
  });
}

interface TorchResult {
  kind: 'torch';
  step_ms: number[];
  step_other_cpu: number[];
  step_cpu_ms: number[];
  torch: string;
  median_ms: number;
  min_ms: number;
  max_ms: number;
  fwd_median_ms: number;
  loss: number;
  grad_sq: { A0: number; BLast: number };
  peak_rss_mib: number;
  mem: Record<string, { rss: number; hwm: number }>;
  other_cpu: number;
  cpu_util: number;
  [k: string]: unknown;
}

function runTorch(opt: Options, dir: string): Promise<TorchResult | string> {
  const probe = spawnSync(opt.python, ['-c', 'import torch'], { stdio: 'ignore' });
  if (probe.error || probe.status !== 0) {
    return Promise.resolve(
      `PyTorch peer skipped: \`${opt.python} -c "import torch"\` failed (install: apt-get install -y python3-torch libopenblas0-pthread)`,
    );
  }
  const script = path.join(path.dirname(fileURLToPath(import.meta.url)), '..', '..', 'bench', 'lowrank_stack_torch.py');
  const args = [
    script,
    '--dir',
    dir,
    '--layers',
    String(opt.layers),
    '--d',
    String(opt.d),
    '--rank',
    String(opt.rank),
    '--alpha',
    String(opt.alpha),
    '--batch',
    String(opt.batch),
    '--seq',
    String(opt.seq),
    '--threads',
    String(opt.threads),
    '--warmup',
    String(opt.warmup),
    '--steps',
    String(opt.steps),
  ];
  return new Promise((resolve) => {
    // OMP_WAIT_POLICY=PASSIVE: without it the OpenMP and OpenBLAS pools busy-wait against each
    // other on 2 cores (see ../shared/bench/README.md); PASSIVE is the stronger, fair baseline
    const p = spawn(opt.python, args, { stdio: ['ignore', 'pipe', 'inherit'], env: { ...process.env, OMP_WAIT_POLICY: 'PASSIVE' } });
    let out = '';
    p.stdout.on('data', (b: Buffer) => (out += b.toString()));
    p.on('error', (e) => resolve(`PyTorch peer failed to start: ${e.message}`));
    p.on('close', (code) => {
      if (code !== 0) return resolve(`PyTorch peer exited with ${code}`);
      try {
        resolve(JSON.parse(out.trim().split('\n').pop()!) as TorchResult);
      } catch {
        resolve(`PyTorch peer printed no result: ${out.slice(-300)}`);
      }
    });
  });
}

const f1 = (x: number): string => (Number.isFinite(x) ? x.toFixed(1) : 'n/a');
const f2 = (x: number): string => (Number.isFinite(x) ? x.toFixed(2) : 'n/a');
const pad = (s: string, n: number): string => (s.length >= n ? s : s + ' '.repeat(n - s.length));
const relDiff = (a: number, b: number): number => Math.abs(a - b) / Math.max(Math.abs(a), Math.abs(b), 1e-30);

async function parent(opt: Options): Promise<void> {
  const script = fileURLToPath(import.meta.url);
  const dir = opt.dir ?? fs.mkdtempSync(path.join(os.tmpdir(), 'peft-bench-'));
  const own = opt.dir === null;
  const { layers: L, d, rank: r } = opt;
  const P = L * d * d;
  console.log(
    `lowrank stack: L=${L} d=${d} r=${r} tokens=${opt.batch}x${opt.seq}=${opt.batch * opt.seq} fp32, threads=${opt.threads}, ` +
      `warmup ${opt.warmup}, median of ${opt.steps} steps; frozen ${P} params (${f1((P * 4) / 2 ** 20)} MiB), trainable ${L * 2 * r * d}`,
  );
  console.log(
    `machine: ${os.cpus().length} cpus, ${os.cpus()[0]?.model ?? '?'}; node ${process.version}; onnxruntime-node ${(ort.env as { versions?: { common?: string } }).versions?.common ?? '?'}; loadavg ${os.loadavg()[0]!.toFixed(2)}`,
  );
  writeData(dir, opt);
  if (own) {
    for (const sig of ['SIGINT', 'SIGTERM'] as const) {
      process.once(sig, () => {
        fs.rmSync(dir, { recursive: true, force: true });
        process.exit(130);
      });
    }
  }
  const results: ChildResult[] = [];
  const torchRuns: TorchResult[] = [];
  let torchNote = opt.torch ? '' : 'PyTorch peer skipped (--no-torch)';
  if (opt.paired) {
    try {
      for (let rep = 0; rep < opt.repeat; rep++) {
        const r = await runPaired(opt, dir, script);
        results.push(...r.ts);
        torchRuns.push(...r.torch);
        torchNote = r.note;
        console.log(
          `  [${rep + 1}/${opt.repeat}] paired: ${[...r.ts, ...r.torch].map((x) => `${x.kind === 'ts' ? (x as ChildResult).mode : 'torch'} ${f1(x.median_ms)}`).join(', ')} ms/step; ` +
            `page faults/step ${r.ts.map((x) => `${x.mode} ${median(x.step_faults)}`).join(', ')}`,
        );
      }
      report(opt, results, torchRuns.length ? torchRuns : torchNote);
      pairedRatios(results, torchRuns);
    } finally {
      if (own) fs.rmSync(dir, { recursive: true, force: true });
    }
    return;
  }
  try {
    for (let rep = 0; rep < opt.repeat; rep++) {
      for (const mode of opt.modes) {
        const res = await runChild(script, opt, dir, mode);
        results.push(res);
        const m = res.mem;
        console.log(
          `  [${rep + 1}/${opt.repeat}] ${pad(mode, 17)} ${f1(res.median_ms)} ms/step (min ${f1(res.min_ms)} max ${f1(res.max_ms)}), fwd ${f1(res.fwd_median_ms)} ms, faults/step ${median(res.step_faults)}, ` +
            `rss ${f1(m.baseline!.rss)} -> ${f1(m.fwd_session!.rss)} -> ${f1(m.after_fwd_runs!.rss)} MiB, hwm ${f1(m.after_fwd_runs!.hwm)}, other_cpu ${f2(res.other_cpu)}`,
        );
        if (opt.out) fs.appendFileSync(opt.out, JSON.stringify({ ...res, config: { ...opt, child: undefined } }) + '\n');
      }
      // the peer runs in every repetition too, so that both sides see the same spells of noise
      if (opt.torch && !torchNote) {
        const t = await runTorch(opt, dir);
        if (typeof t === 'string') torchNote = t;
        else {
          torchRuns.push(t);
          console.log(
            `  [${rep + 1}/${opt.repeat}] ${pad(`torch ${t.torch}`, 17)} ${f1(t.median_ms)} ms/step (min ${f1(t.min_ms)} max ${f1(t.max_ms)}), fwd ${f1(t.fwd_median_ms)} ms, peak maxrss ${f1(t.peak_rss_mib)} MiB, other_cpu ${f2(t.other_cpu)}`,
          );
          if (opt.out) fs.appendFileSync(opt.out, JSON.stringify({ ...t, config: { ...opt, child: undefined } }) + '\n');
        }
      }
    }
    report(opt, results, torchRuns.length ? torchRuns : torchNote);
  } finally {
    if (own) fs.rmSync(dir, { recursive: true, force: true });
  }
}

function report(opt: Options, results: ChildResult[], torch: TorchResult[] | string): void {
  const P = opt.layers * opt.d * opt.d;
  const perParam = (mib: number): string => f2((mib * 2 ** 20) / P);
  const byMode = new Map<string, ChildResult[]>();
  for (const r of results) byMode.set(r.mode, [...(byMode.get(r.mode) ?? []), r]);
  // Pooled over every run of a mode: all timed steps, and the "clean" ones during which other
  // processes used < CLEAN_OTHER cores (this machine is shared; see other_cpu).
  const pooled = (rs: { step_ms: number[]; step_other_cpu?: number[] }[], clean: boolean): number[] =>
    rs.flatMap((r) => r.step_ms.filter((_, i) => !clean || (r.step_other_cpu?.[i] ?? 0) < CLEAN_OTHER));
  console.log(
    `\nspeed, ms per training step (forward + backward), median of the timed steps pooled over runs; clean: steps with other processes < ${CLEAN_OTHER} cores`,
  );
  console.log(
    '| engine / weights | ms/step (all steps) | ms/step (clean steps) | steps/s (clean) | clean/all steps | min ms | CPU ms/step | per-run medians | fwd-only ms (median of runs) |',
  );
  console.log('| --- | --- | --- | --- | --- | --- | --- | --- | --- |');
  const med: Record<string, number> = {};
  const medAll: Record<string, number> = {};
  const minAll: Record<string, number> = {};
  const row = (
    name: string,
    rs: { step_ms: number[]; step_other_cpu?: number[]; step_cpu_ms?: number[]; median_ms: number; fwd_median_ms: number }[],
  ): void => {
    const cpu = median(rs.flatMap((r) => r.step_cpu_ms ?? []));
    const all = pooled(rs, false),
      clean = pooled(rs, true);
    med[name] = median(clean);
    medAll[name] = median(all);
    minAll[name] = Math.min(...all);
    console.log(
      `| ${name} | ${f1(medAll[name]!)} | ${f1(med[name]!)} | ${f2(1000 / med[name]!)} | ${clean.length}/${all.length} | ${f1(minAll[name]!)} | ${f1(cpu)} | ${rs.map((r) => f1(r.median_ms)).join(', ')} | ${f1(median(rs.map((r) => r.fwd_median_ms)))} |`,
    );
  };
  for (const [mode, rs] of byMode) row(mode, rs);
  if (typeof torch !== 'string') {
    const t = `torch ${torch[0]!.torch}`;
    row(t, torch);
    for (const mode of byMode.keys()) {
      console.log(
        `  speed-up over torch, ${mode}: ${f2(med[t]! / med[mode]!)}x on clean steps, ${f2(medAll[t]! / medAll[mode]!)}x on all steps, ${f2(minAll[t]! / minAll[mode]!)}x on the fastest step (>1: ours faster)`,
      );
    }
  } else console.log(torch);

  // Memory that is ours: private anonymous pages (RssAnon: JS heap and arrays, ONNX Runtime's
  // copies, packed weights, arenas) plus this process's proportional share of the weights file's
  // mapped pages (two sessions mapping the same page count it once). Shared-library pages are left
  // out: their Pss moves whenever other processes on the machine map or unmap the same libraries.
  const own = (x: Mem): number => x.anon + x.wfile.pss;
  // Non-weight session overhead (graph, kernels, plans): the 'input-shared' sessions hold no weight
  // bytes (the weights are inputs read from the JS arrays); else 'mmap-shared' before its pages fault in.
  const ctlMode = byMode.has('input-shared') ? 'input-shared' : byMode.has('mmap-shared') ? 'mmap-shared' : null;
  const overhead = ctlMode
    ? median(byMode.get(ctlMode)!.map((r) => own(r.mem.fwd_session!) - own(r.mem.js_weights!) - r.mem.fwd_session!.wfile.pss))
    : NaN;
  console.log(`\nresident memory (MiB): private anonymous + proportional share of the mapped weights file; plain RSS deltas in brackets`);
  console.log(
    `  bytes per frozen parameter = (growth up to both sessions - non-weight session overhead + weight pages faulted in by the runs) / ${P}; fp32 ideal: 4`,
  );
  console.log(`  non-weight overhead of the two sessions: ${f1(overhead)} MiB (from ${ctlMode ?? 'n/a'})`);
  console.log(
    '| mode | JS weights | + train session | + 2nd (fwd) session | weights file after runs: Pss [RSS], maps | bytes/param | runs: + anon (activations, arena) | VmHWM | sampled peak rss |',
  );
  console.log('| --- | --- | --- | --- | --- | --- | --- | --- | --- |');
  for (const [mode, rs] of byMode) {
    const m = (k: string, f: (x: Mem) => number): number => median(rs.map((r) => f(r.mem[k]!)));
    const d1 = (a: string, b: string): string => `${f1(m(b, own) - m(a, own))} [${f1(m(b, (x) => x.rss) - m(a, (x) => x.rss))}]`;
    const mapped = m('after_fwd_runs', (x) => x.wfile.pss) - m('fwd_session', (x) => x.wfile.pss);
    const weightBytes = m('fwd_session', own) - m('baseline', own) - overhead + mapped;
    const runsAnon = m('after_fwd_runs', (x) => x.anon) - m('fwd_session', (x) => x.anon);
    const w = rs[0]!.mem.after_fwd_runs!.wfile;
    console.log(
      `| ${mode} | ${d1('baseline', 'js_weights')} | ${d1('js_weights', 'train_session')} | ${d1('train_session', 'fwd_session')} | ` +
        `${f1(w.pss)} [${f1(w.rss)}], ${w.maps} | ${perParam(weightBytes)} | ${f1(runsAnon)} | ` +
        `${f1(m('after_fwd_runs', (x) => x.hwm))} | ${f1(median(rs.map((r) => r.sampled_peak_rss_mib)))} |`,
    );
  }
  if (typeof torch !== 'string') {
    const tm = (f: (r: TorchResult) => number): number => median(torch.map(f));
    console.log(
      `  torch: rss baseline ${f1(tm((r) => r.mem.baseline!.rss))}, + weights ${f1(tm((r) => r.mem.weights!.rss - r.mem.baseline!.rss))} ` +
        `(${f2((tm((r) => r.mem.weights!.rss - r.mem.baseline!.rss) * 2 ** 20) / P)} bytes/param), after steps ${f1(tm((r) => r.mem.after_steps!.rss))}, ` +
        `peak maxrss ${f1(tm((r) => r.peak_rss_mib))} MiB`,
    );
    const tr = torch[0]!;
    const ref = results[0];
    if (ref) {
      console.log(
        `  check vs torch: loss ${ref.loss.toPrecision(7)} vs ${tr.loss.toPrecision(7)} (rel ${relDiff(ref.loss, tr.loss).toExponential(1)}), ` +
          `|grad A0|^2 rel ${relDiff(ref.grad_sq.A0, tr.grad_sq.A0).toExponential(1)}, |grad B_last|^2 rel ${relDiff(ref.grad_sq.BLast, tr.grad_sq.BLast).toExponential(1)}`,
      );
    }
  }
  const noisy = results.filter((r) => r.other_cpu > 0.25).length;
  if (noisy)
    console.log(`  note: ${noisy} of ${results.length} runs shared the cores with other processes (other_cpu > 0.25): compare with care`);
}

/** A child process that answers line by line. */
class Peer {
  private readonly queue: string[] = [];
  private waiter: ((l: string) => void) | null = null;
  private exited = false;
  constructor(
    readonly name: string,
    readonly proc: ChildProcess,
  ) {
    readline.createInterface({ input: proc.stdout! }).on('line', (l) => {
      if (this.waiter) {
        const w = this.waiter;
        this.waiter = null;
        w(l);
      } else this.queue.push(l);
    });
    proc.on('close', (code) => {
      this.exited = true;
      if (this.waiter) this.waiter(`exit ${code}`);
    });
  }
  next(): Promise<string> {
    const l = this.queue.shift();
    if (l !== undefined) return Promise.resolve(l);
    if (this.exited) return Promise.resolve('exit');
    return new Promise((r) => (this.waiter = r));
  }
  async expect(prefix: string): Promise<string> {
    const l = await this.next();
    if (!l.startsWith(prefix)) throw new Error(`${this.name}: expected "${prefix}", got "${l.slice(0, 300)}"`);
    return l;
  }
  go(): void {
    this.proc.stdin!.write('go\n');
  }
}

/**
 * Paired timing for a busy machine: every mode and the PyTorch peer stay alive and take turns, one
 * timed step each per round (the order rotates every round), so the k-th steps of all engines ran
 * within a second or two of each other under about the same background load.
 */
async function runPaired(opt: Options, dir: string, script: string): Promise<{ ts: ChildResult[]; torch: TorchResult[]; note: string }> {
  const shape = [
    '--layers',
    String(opt.layers),
    '--d',
    String(opt.d),
    '--rank',
    String(opt.rank),
    '--alpha',
    String(opt.alpha),
    '--batch',
    String(opt.batch),
    '--seq',
    String(opt.seq),
    '--threads',
    String(opt.threads),
    '--warmup',
    String(opt.warmup),
    '--steps',
    String(opt.steps),
  ];
  const peers: Peer[] = [];
  for (const mode of opt.modes) {
    const args = ['--expose-gc', script, '--child', '--serve', '--dir', dir, '--modes', mode, ...shape];
    if (!opt.arena) args.push('--no-arena');
    if (!opt.memPattern) args.push('--no-mem-pattern');
    peers.push(new Peer(mode, spawn(process.execPath, args, { stdio: ['pipe', 'pipe', 'inherit'] })));
  }
  let note = opt.torch ? '' : 'PyTorch peer skipped (--no-torch)';
  if (opt.torch) {
    const probe = spawnSync(opt.python, ['-c', 'import torch'], { stdio: 'ignore' });
    if (probe.error || probe.status !== 0) note = `PyTorch peer skipped: \`${opt.python} -c "import torch"\` failed`;
    else {
      const py = path.join(path.dirname(script), '..', '..', 'bench', 'lowrank_stack_torch.py');
      peers.push(
        new Peer(
          'torch',
          spawn(opt.python, [py, '--serve', '--dir', dir, ...shape], {
            stdio: ['pipe', 'pipe', 'inherit'],
            env: { ...process.env, OMP_WAIT_POLICY: 'PASSIVE' },
          }),
        ),
      );
    }
  }
  // set-up and warm-up run concurrently (untimed); the timed part starts when all are ready
  for (const p of peers) await p.expect('ready');
  const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
  for (const [phase, runs] of [
    ['train', opt.steps],
    ['fwd', opt.steps + 1],
  ] as const) {
    for (let round = 0; round < runs; round++) {
      for (let k = 0; k < peers.length; k++) {
        const p = peers[(round + k) % peers.length]!;
        await sleep(opt.gapMs);
        p.go();
        await p.expect('done');
      }
      if (phase === 'train' && (round + 1) % 5 === 0) console.log(`  paired: ${round + 1}/${runs} rounds`);
    }
  }
  const ts: ChildResult[] = [];
  const torch: TorchResult[] = [];
  for (const p of peers) {
    const l = await p.expect('{');
    const r = JSON.parse(l) as ChildResult | TorchResult;
    if (r.kind === 'ts') ts.push(r as ChildResult);
    else torch.push(r as TorchResult);
    if (opt.out) fs.appendFileSync(opt.out, JSON.stringify({ ...r, paired: true, config: { ...opt, child: undefined } }) + '\n');
  }
  return { ts, torch, note };
}

/** Per-round ratios torch / mode over paired runs: the k-th step of each ran back to back. */
function pairedRatios(ts: ChildResult[], torch: TorchResult[]): void {
  if (!torch.length) return;
  console.log('\npaired speed-up over torch (median and quartiles of the per-round ratio torch step / our step; >1: ours faster)');
  for (const r of ts) {
    const t = torch.find((x) => x.step_ms.length === r.step_ms.length);
    if (!t) continue;
    const ratios = r.step_ms.map((ms, i) => t.step_ms[i]! / ms).sort((a, b) => a - b);
    const q = (f: number): number => ratios[Math.min(ratios.length - 1, Math.floor(f * ratios.length))]!;
    console.log(`  ${pad(r.mode, 17)} ${f2(median(ratios))}x  (q1 ${f2(q(0.25))}, q3 ${f2(q(0.75))}, ${ratios.length} rounds)`);
  }
}

/** Pools the results of several invocations (each appended with --out) into one report. */
function reportFrom(opt: Options): void {
  const same = (c: Partial<Options> | undefined): boolean =>
    !!c &&
    c.layers === opt.layers &&
    c.d === opt.d &&
    c.rank === opt.rank &&
    c.batch === opt.batch &&
    c.seq === opt.seq &&
    c.threads === opt.threads &&
    c.arena === opt.arena &&
    (c.memPattern ?? true) === opt.memPattern;
  const ts: ChildResult[] = [];
  const tr: TorchResult[] = [];
  for (const line of fs.readFileSync(opt.from!, 'utf8').split('\n')) {
    if (!line.trim()) continue;
    const r = JSON.parse(line) as (ChildResult | TorchResult) & { config?: Partial<Options> };
    if (!same(r.config)) continue;
    if (r.kind === 'ts') ts.push(r as ChildResult);
    else tr.push(r as TorchResult);
  }
  const modes = new Set(ts.map((r) => r.mode));
  console.log(
    `pooled from ${opt.from}: ${ts.length} runs of ${[...modes].join(', ')}; ${tr.length} torch runs; L=${opt.layers} d=${opt.d} r=${opt.rank} tokens=${opt.batch}x${opt.seq} threads=${opt.threads}`,
  );
  report(opt, ts, tr.length ? tr : 'no torch runs in the file');
  // paired runs: ratios within each invocation (records of one --paired run are consecutive)
  const paired = ts.filter((r) => (r as { paired?: boolean }).paired);
  const pairedTorch = tr.filter((r) => (r as { paired?: boolean }).paired);
  if (paired.length && pairedTorch.length === 1) pairedRatios(paired, pairedTorch);
  else if (paired.length) console.log(`(${pairedTorch.length} paired torch runs in the file: run --paired again for per-round ratios)`);
}

const opt = parseArgs(process.argv.slice(2));
if (opt.child) await child(opt, opt.dir!);
else if (opt.from) reportFrom(opt);
else await parent(opt);
