// Spawning the PyTorch peer of the benchmarks (bench/peer_torch.py) and describing the machine, for
// every bench that compares against PyTorch (training, decoding). The interpreter and its
// PYTHONPATH are options, so a clone can point the benches at any PyTorch (bench/README.md says how
// to install PyTorch 2.13 for it): --python / PEFT_BENCH_PYTHON and --pythonpath / PEFT_BENCH_PYTHONPATH.

import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';

const HERE = path.dirname(fileURLToPath(import.meta.url));
/** The repository root (bench files run from dist/bench/). */
export const REPO = path.resolve(HERE, '../..');
export const PEER_SCRIPT = path.join(REPO, 'bench', 'peer_torch.py');
/** Where bench/README.md installs PyTorch 2.13 (pip --target): used as PYTHONPATH when it exists and none is given. */
export const DEFAULT_TORCH_TARGET = path.join(os.homedir(), 'torch213');

export interface PeerEnv {
  python: string;
  /** prepended to PYTHONPATH of the peer process; '' = none */
  pythonPath: string;
}

export const PEER_HELP = `  --python P        interpreter of the PyTorch peer (env PEFT_BENCH_PYTHON; default python3)
  --pythonpath D    PYTHONPATH for it (env PEFT_BENCH_PYTHONPATH; default ~/torch213 when it exists)`;

/** The peer's interpreter and PYTHONPATH: explicit options, then the environment, then the defaults. */
export function peerEnv(opts: { python?: string; pythonPath?: string } = {}): PeerEnv {
  const python = opts.python ?? process.env.PEFT_BENCH_PYTHON ?? 'python3';
  const pythonPath =
    opts.pythonPath ??
    process.env.PEFT_BENCH_PYTHONPATH ??
    (fs.existsSync(path.join(DEFAULT_TORCH_TARGET, 'torch')) ? DEFAULT_TORCH_TARGET : '');
  return { python, pythonPath };
}

/**
 * Takes --python / --pythonpath from an argument loop: returns true when `flag` was one of them
 * (its value read with `next`).
 */
export function takePeerOption(flag: string, next: () => string, into: { python?: string; pythonPath?: string }): boolean {
  if (flag === '--python') into.python = next();
  else if (flag === '--pythonpath') into.pythonPath = next();
  else return false;
  return true;
}

/** The environment of a peer process: PYTHONPATH prepended, OMP_WAIT_POLICY=PASSIVE. */
export function childEnv(env: PeerEnv): NodeJS.ProcessEnv {
  const e: NodeJS.ProcessEnv = { ...process.env, OMP_WAIT_POLICY: 'PASSIVE' };
  if (env.pythonPath) e.PYTHONPATH = process.env.PYTHONPATH ? `${env.pythonPath}:${process.env.PYTHONPATH}` : env.pythonPath;
  return e;
}

/** The torch version the peer would run, or a sentence saying why it cannot run. */
export function probeTorch(env: PeerEnv): { version: string } | { problem: string } {
  if (!fs.existsSync(PEER_SCRIPT)) return { problem: `PyTorch peer skipped: ${PEER_SCRIPT} is missing` };
  const version = torchVersion(env);
  if (version !== undefined) return { version };
  return {
    problem: `PyTorch peer skipped: \`${env.pythonPath ? `PYTHONPATH=${env.pythonPath} ` : ''}${env.python} -c "import torch"\` failed; install PyTorch as bench/README.md says, or pass --python / --pythonpath`,
  };
}

/** The torch version `env` imports, or undefined when it cannot import torch. */
export function torchVersion(env: PeerEnv): string | undefined {
  const r = spawnSync(env.python, ['-c', 'import torch; print(torch.__version__)'], { encoding: 'utf8', env: childEnv(env) });
  return r.status === 0 ? r.stdout.trim() : undefined;
}

export interface PeerOutcome {
  /** every JSON line the peer printed (train: one; --infer: one per variant) */
  lines: Record<string, unknown>[];
  /** the first of them, or null when the run failed */
  json: Record<string, unknown> | null;
  /** the command line, as a user would type it from the repository root */
  command: string;
  note?: string;
  wall_s: number;
}

/** Runs bench/peer_torch.py with `args` (OMP_WAIT_POLICY=PASSIVE, as a tuned torch user would) and collects its JSON lines. */
export function runPeer(env: PeerEnv, args: readonly string[], opts: { timeoutS?: number } = {}): PeerOutcome {
  const command = `OMP_WAIT_POLICY=PASSIVE ${env.pythonPath ? `PYTHONPATH=${env.pythonPath} ` : ''}${env.python} ${path.relative(REPO, PEER_SCRIPT)} ${args.join(' ')}`;
  const t0 = performance.now();
  const r = spawnSync(env.python, [PEER_SCRIPT, ...args], {
    cwd: REPO,
    encoding: 'utf8',
    env: childEnv(env),
    stdio: ['ignore', 'pipe', 'pipe'],
    timeout: (opts.timeoutS ?? 900) * 1000,
    maxBuffer: 1 << 24,
  });
  const wall = (performance.now() - t0) / 1000;
  const lines = (r.stdout ?? '')
    .split('\n')
    .filter((l) => l.startsWith('{'))
    .map((l) => JSON.parse(l) as Record<string, unknown>);
  if (r.status !== 0) {
    const why = r.signal ? `killed (${r.signal}) after ${wall.toFixed(0)} s` : `failed (exit ${r.status})`;
    return { lines, json: null, command, wall_s: wall, note: `${why}: ${(r.stderr ?? '').trim().split('\n').slice(-2).join(' | ')}` };
  }
  return { lines, json: lines[0] ?? null, command, wall_s: wall, note: lines.length ? undefined : 'no result line' };
}

// ------------------------------------------------------------------------------ measuring

/** CPU seconds all processes have used so far (from /proc/stat: everything but idle and iowait). */
export function busySeconds(): number {
  try {
    const v = fs.readFileSync('/proc/stat', 'utf8').split('\n')[0]!.trim().split(/\s+/).slice(1).map(Number);
    return (v.slice(0, 8).reduce((p, q) => p + q, 0) - v[3]! - v[4]!) / 100;
  } catch {
    return NaN;
  }
}

/** Runs `fn` and says how many cores other processes used meanwhile: the machine's busy time (/proc/stat) minus this process's CPU time, over the wall time. */
export async function withOtherLoad<T>(fn: () => Promise<T>): Promise<{ value: T; otherCpu: number }> {
  const t0 = performance.now();
  const b0 = busySeconds();
  const c0 = process.cpuUsage();
  const value = await fn();
  const wall = (performance.now() - t0) / 1000;
  const c = process.cpuUsage(c0);
  return { value, otherCpu: Math.max(0, (busySeconds() - b0 - (c.user + c.system) / 1e6) / wall) };
}

/** `warmup` untimed calls of `run`, then `runs` timed ones: the seconds of each and the cores other processes used meanwhile. */
export async function timeRuns(warmup: number, runs: number, run: () => Promise<unknown>): Promise<{ times: number[]; otherCpu: number }> {
  for (let i = 0; i < warmup; i++) await run();
  const { value: times, otherCpu } = await withOtherLoad(async () => {
    const ts: number[] = [];
    for (let i = 0; i < runs; i++) {
      const t = performance.now();
      await run();
      ts.push((performance.now() - t) / 1000);
    }
    return ts;
  });
  return { times, otherCpu };
}

export function median(xs: readonly number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  if (!s.length) return NaN;
  return s.length % 2 ? s[(s.length - 1) / 2]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2;
}

/** `uptime`'s line (load averages), for the record next to a table. */
export function uptime(): string {
  return (
    (spawnSync('uptime', { encoding: 'utf8' }).stdout ?? '').trim() ||
    `load average: ${os
      .loadavg()
      .map((x) => x.toFixed(2))
      .join(', ')}`
  );
}

/** Markdown bullets naming the machine and the software versions. */
export function machineLines(torch?: string): string[] {
  const cpuinfo = fs.readFileSync('/proc/cpuinfo', 'utf8');
  const lscpu = spawnSync('lscpu', { encoding: 'utf8' }).stdout ?? '';
  const cpu = (lscpu.match(/Model name:\s*(.*)/) ?? cpuinfo.match(/model name\s*:\s*(.*)/) ?? [])[1]?.trim() ?? 'unknown';
  const flags = (cpuinfo.match(/flags\s*:\s*(.*)/) ?? [])[1]?.split(' ') ?? [];
  const isa = ['avx2', 'avx512f', 'avx512_vnni', 'avx512_bf16', 'amx_tile'].filter((f) => flags.includes(f)).join(', ');
  const ortVersion = (
    JSON.parse(fs.readFileSync(path.join(REPO, 'node_modules/onnxruntime-node/package.json'), 'utf8')) as { version: string }
  ).version;
  return [
    `- machine: nproc ${os.cpus().length}, ${cpu} (${isa}), ${Math.round(os.totalmem() / 2 ** 30)} GiB RAM, shared with other jobs`,
    `- node ${process.version}, onnxruntime-node ${ortVersion}${torch ? `, torch ${torch} (bench/peer_torch.py, OMP_WAIT_POLICY=PASSIVE)` : ', torch not run'}`,
  ];
}
