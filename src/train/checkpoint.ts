// Checkpoints: everything a run needs to continue exactly as if it had never stopped (adapter in
// the peft layout, exact trainable tensors, AdamW moments and step, schedule, RNG state, data
// position, metrics so far), written under a temp name and renamed, so a folder is whole or absent.

import { existsSync, mkdir, readdir, rename, rm, join, resolve } from '../storage/index.js';
import { SafetensorsFile, fromTypedArray, toFloat32, writeSafetensors, type RawTensor } from '../io/safetensors.js';
import { tempPathFor, writeFailure, writeFileAtomic } from '../io/atomic.js';
import type { AdaptedModel } from '../tuners/types.js';
import type { AdamWState } from './adamw.js';
import type { DataPosition } from './batches.js';
import { CheckpointError } from './errors.js';
import type { MetricRecord } from './metrics.js';
import type { RngState } from './rng.js';
import type { ScheduleOptions } from './schedule.js';
import { readJsonObject } from '../io/files.js';

export const CHECKPOINTS_DIR = 'checkpoints';
const PREFIX = 'checkpoint-';
const FILES = {
  state: 'trainer_state.json',
  params: 'trainable.safetensors',
  optimizer: 'optimizer.safetensors',
  scheduler: 'scheduler.json',
  rng: 'rng_state.json',
} as const;

/** The settings a resumed run must share with the one that wrote the checkpoint. */
export type RunSignature = Record<string, string | number | boolean | null>;

export interface TrainerState {
  globalStep: number;
  totalSteps: number;
  dataPosition: DataPosition;
  epoch: number;
  tokensSeen: number;
  signature: RunSignature;
  logHistory: MetricRecord[];
}

export interface Checkpoint {
  state: TrainerState;
  /** trainable tensors by name, exactly as the run held them */
  params: Map<string, Float32Array>;
  optimizer: AdamWState;
  schedule: ScheduleOptions;
  rng: RngState;
}

async function writeJson(path: string, value: unknown): Promise<void> {
  const text = JSON.stringify(value, null, 2) + '\n';
  await writeFileAtomic(path, text);
}

/** Writes checkpoint-<step> under `checkpointsDir`; returns its path. */
export async function saveCheckpoint(checkpointsDir: string, ckpt: Checkpoint, model: AdaptedModel): Promise<string> {
  const name = `${PREFIX}${ckpt.state.globalStep}`;
  const final = join(checkpointsDir, name);
  const tmp = tempPathFor(final);
  try {
    await mkdir(checkpointsDir, { recursive: true });
    await mkdir(tmp);
    await model.savePretrained(tmp);
    const params = new Map<string, RawTensor>();
    for (const [n, data] of ckpt.params) params.set(n, fromTypedArray(data, [data.length]));
    await writeSafetensors(join(tmp, FILES.params), params, { format: 'pt' });
    const opt = new Map<string, RawTensor>();
    for (const [n, m] of ckpt.optimizer.expAvg) opt.set(`exp_avg.${n}`, fromTypedArray(m, [m.length]));
    for (const [n, v] of ckpt.optimizer.expAvgSq) opt.set(`exp_avg_sq.${n}`, fromTypedArray(v, [v.length]));
    await writeSafetensors(join(tmp, FILES.optimizer), opt, { format: 'pt', step: String(ckpt.optimizer.step) });
    await writeJson(join(tmp, FILES.scheduler), { ...ckpt.schedule, last_step: ckpt.state.globalStep });
    await writeJson(join(tmp, FILES.rng), { dropout: ckpt.rng });
    await writeJson(join(tmp, FILES.state), {
      global_step: ckpt.state.globalStep,
      max_steps: ckpt.state.totalSteps,
      epoch: ckpt.state.epoch,
      data_position: ckpt.state.dataPosition,
      tokens_seen: ckpt.state.tokensSeen,
      run_signature: ckpt.state.signature,
      log_history: ckpt.state.logHistory,
    });
    if (existsSync(final)) {
      // A checkpoint of the same step from an earlier attempt: swap it out, then remove it.
      const old = tempPathFor(final, 'old');
      await rename(final, old);
      await rename(tmp, final);
      await rm(old, { recursive: true, force: true });
    } else await rename(tmp, final);
  } catch (e) {
    await rm(tmp, { recursive: true, force: true }).catch(() => undefined);
    throw new CheckpointError(`writing checkpoint ${final} failed: ${writeFailure(e)}; earlier checkpoints are untouched`);
  }
  return final;
}

/** The complete checkpoints under a folder, by step (temp folders of interrupted writes are ignored). */
export async function listCheckpoints(checkpointsDir: string): Promise<{ step: number; path: string }[]> {
  let names: string[];
  try {
    names = await readdir(checkpointsDir);
  } catch {
    return [];
  }
  return names
    .map((n) => ({ n, m: /^checkpoint-(\d+)$/.exec(n) }))
    .filter((x) => x.m && existsSync(join(checkpointsDir, x.n, FILES.state)))
    .map((x) => ({ step: Number(x.m![1]), path: join(checkpointsDir, x.n) }))
    .sort((a, b) => a.step - b.step);
}

/** "latest" (the highest step under <outputDir>/checkpoints) or a checkpoint folder, as a path. */
export async function resolveCheckpoint(outputDir: string, resume: string): Promise<string> {
  if (resume === 'latest') {
    const list = await listCheckpoints(join(outputDir, CHECKPOINTS_DIR));
    if (list.length === 0)
      throw new CheckpointError(
        `--resume latest: ${join(outputDir, CHECKPOINTS_DIR)} has no checkpoint (the run stopped before writing one); start without --resume`,
      );
    return list[list.length - 1]!.path;
  }
  const dir = resolve(resume);
  if (!existsSync(dir))
    throw new CheckpointError(`checkpoint folder ${dir} does not exist; pass a checkpoints/checkpoint-N folder or "latest"`);
  return dir;
}

function readJson(dir: string, file: string): Promise<Record<string, unknown>> {
  return readJsonObject(join(dir, file), (reason) => new CheckpointError(`checkpoint ${dir}: ${reason}; resume from another checkpoint`));
}

async function readTensors(dir: string, file: string): Promise<{ tensors: Map<string, RawTensor>; metadata: Record<string, string> }> {
  try {
    const f = await SafetensorsFile.open(join(dir, file));
    try {
      return { tensors: await f.readAll(), metadata: f.metadata ?? {} };
    } finally {
      await f.close();
    }
  } catch (e) {
    throw new CheckpointError(`checkpoint ${dir}: cannot read ${file} (${(e as Error).message}); resume from another checkpoint`);
  }
}

const copy = (t: RawTensor): Float32Array => new Float32Array(toFloat32(t));

export async function loadCheckpoint(dir: string): Promise<Checkpoint> {
  const missing = Object.values(FILES).filter((f) => !existsSync(join(dir, f)));
  if (missing.length)
    throw new CheckpointError(`${dir} is not a complete checkpoint (missing ${missing.join(', ')}); resume from another checkpoint`);
  const s = await readJson(dir, FILES.state);
  const sched = await readJson(dir, FILES.scheduler);
  const rng = await readJson(dir, FILES.rng);
  const params = new Map<string, Float32Array>();
  for (const [n, t] of (await readTensors(dir, FILES.params)).tensors) params.set(n, copy(t));
  const expAvg = new Map<string, Float32Array>();
  const expAvgSq = new Map<string, Float32Array>();
  const opt = await readTensors(dir, FILES.optimizer);
  for (const [n, t] of opt.tensors) {
    if (n.startsWith('exp_avg_sq.')) expAvgSq.set(n.slice('exp_avg_sq.'.length), copy(t));
    else if (n.startsWith('exp_avg.')) expAvg.set(n.slice('exp_avg.'.length), copy(t));
  }
  const step = Number(opt.metadata.step ?? NaN);
  const pos = s.data_position as DataPosition | undefined;
  if (!Number.isInteger(s.global_step) || !pos || !Number.isInteger(step) || !Array.isArray(rng.dropout)) {
    throw new CheckpointError(`checkpoint ${dir} has malformed state files; resume from another checkpoint`);
  }
  return {
    state: {
      globalStep: s.global_step as number,
      totalSteps: s.max_steps as number,
      dataPosition: { epoch: pos.epoch, index: pos.index },
      epoch: s.epoch as number,
      tokensSeen: (s.tokens_seen as number) ?? 0,
      signature: (s.run_signature as RunSignature) ?? {},
      logHistory: (s.log_history as MetricRecord[]) ?? [],
    },
    params,
    optimizer: { step, expAvg, expAvgSq },
    schedule: {
      name: sched.name as ScheduleOptions['name'],
      baseLr: sched.baseLr as number,
      totalSteps: sched.totalSteps as number,
      warmupSteps: sched.warmupSteps as number,
    },
    rng: rng.dropout as RngState,
  };
}
