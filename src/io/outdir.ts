// Output folders: the one rule every command that writes a folder follows, so no command can
// destroy what it did not write. A command writes only into
//   - a new folder, or an empty one;
//   - a folder holding its own earlier output (recognised by the marker file it writes there,
//     `.peft-output.json`), when the user asks to replace it (`--overwrite`) or to continue it
//     (`train --resume`), or for commands whose documented default folder is replaced each run
//     (`quickstart`, `compare`);
// and never into a folder holding a model, an adapter or anything else it did not write, not
// even with --overwrite. `checkOutputDir` decides without writing anything (commands call it
// before loading a model); `claimOutputDir` then takes the folder's lock (one writer at a time;
// a lock left by a dead process is taken over), removes temp files interrupted writes left there,
// clears the earlier output when replacing it and writes the marker.

import {
  existsSync,
  readFileSync,
  readdirSync,
  statSync,
  unlinkSync,
  link,
  mkdir,
  readdir,
  rm,
  unlink,
  isAbsolute,
  join,
  relative,
  resolve,
  host,
} from '../storage/index.js';

const hostname = (): string => host.hostname();
import { PeftError } from '../errors.js';
import { isTempName, removeTempFiles, tempPathFor, writeError, writeFileAtomic } from './atomic.js';

/** The file that says which command wrote a folder. */
export const OUTPUT_MARKER = '.peft-output.json';
/** The lock file of a folder a command is writing. */
export const LOCK_FILE = '.peft-lock';

/** An output folder that a command may not write into (it holds something else, or it is an input). */
export class OutputFolderError extends PeftError {}
/** Another live process is writing the folder. */
export class FolderLockedError extends PeftError {}

export interface OutputDirOptions {
  /** the command writing the folder, recorded in the marker ('train', 'merge', 'quantize', ...) */
  command: string;
  /** how the user named the folder, for messages (default '--out') */
  flag?: string;
  /** the user asked to replace the command's earlier output in the folder */
  overwrite?: boolean;
  /** the command continues its earlier output there (train --resume) */
  continueOwn?: boolean;
  /** the command replaces its own earlier output without --overwrite (a documented default folder) */
  replaceOwn?: boolean;
  /** folders the command reads: --out may not be one of them, nor hold one */
  inputs?: { path: string; what: string }[];
  /** added to the "holds an earlier output" error: another way to proceed (e.g. `--resume latest`) */
  continueHint?: string;
}

/** 'new': absent; 'empty': nothing in it; 'own': the command's earlier output. */
export type OutputDirState = 'new' | 'empty' | 'own';

export interface OutputMarker {
  command: string;
  /** 'complete' once the command finished; anything else means it was stopped or failed */
  status: 'running' | 'complete';
  writer: string;
  updated: string;
}

interface LockInfo {
  pid: number;
  host: string;
  boot: string | null;
  /** the process's start time (Linux clock ticks since boot), so a reused pid is not mistaken for the writer */
  start: string | null;
  command: string;
  since: string;
}

const IGNORED = new Set([LOCK_FILE, OUTPUT_MARKER, '.DS_Store']);
const ignorable = (name: string): boolean => IGNORED.has(name) || isTempName(name) || name.startsWith(`${LOCK_FILE}.`);

function readText(path: string): string | null {
  try {
    return readFileSync(path, 'utf8');
  } catch {
    return null;
  }
}

const bootId = (): string | null => readText('/proc/sys/kernel/random/boot_id')?.trim() ?? null;

/** Field 22 of /proc/<pid>/stat (start time), or null off Linux or when the process is gone. */
function processStart(pid: number): string | null {
  const stat = readText(`/proc/${pid}/stat`);
  if (!stat) return null;
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return fields[19] ?? null;
}

const pidAlive = (pid: number): boolean => host.pidAlive(pid);

/** Whether the process that wrote a lock is still running (on this machine and boot). */
function lockHolderAlive(l: LockInfo): boolean {
  if (l.host !== hostname()) return true; // another machine on a shared file system: cannot tell, so respect it
  const boot = bootId();
  if (l.boot && boot && l.boot !== boot) return false;
  if (!Number.isInteger(l.pid) || l.pid <= 0 || !pidAlive(l.pid)) return false;
  if (l.start) {
    const now = processStart(l.pid);
    if (now !== null && now !== l.start) return false; // the pid was reused by another process
  }
  return true;
}

function readLock(path: string): LockInfo | 'unreadable' | null {
  const text = readText(path);
  if (text === null) return existsSync(path) ? 'unreadable' : null;
  try {
    const v = JSON.parse(text) as LockInfo;
    return typeof v?.pid === 'number' ? v : 'unreadable';
  } catch {
    return 'unreadable';
  }
}

/** The marker of a folder, or null when it is absent or not ours. */
export function readOutputMarker(dir: string): OutputMarker | null {
  const text = readText(join(dir, OUTPUT_MARKER));
  if (text === null) return null;
  try {
    const v = JSON.parse(text) as OutputMarker;
    return typeof v?.command === 'string' ? v : null;
  } catch {
    return null;
  }
}

/** What a folder that is not ours looks like, for the error message. */
function describeForeign(entries: string[]): string {
  const has = (f: string) => entries.includes(f);
  const weights = entries.some((f) => /\.(safetensors|bin|gguf|pt|pth|onnx)$/.test(f));
  if (has('config.json') && weights) return 'a model';
  if (has('adapter_config.json') || has('adapter_model.safetensors') || has('adapter_model.bin')) return 'an adapter';
  if (has('pytorch_adapter.bin') || has('adapter.safetensors') || has('adapter_config.json')) return 'an adapter';
  if (weights) return 'model weights';
  const shown = entries.slice(0, 3).join(', ') + (entries.length > 3 ? `, ... (${entries.length} entries)` : '');
  return `other files (${shown})`;
}

const within = (parent: string, child: string): boolean => {
  const rel = relative(parent, child);
  return rel === '' || (!rel.startsWith('..') && !isAbsolute(rel));
};

/**
 * Decides whether `opts.command` may write into `dir`, writing nothing. Throws an
 * OutputFolderError (or FolderLockedError) whose one-line message says what to do.
 */
export function checkOutputDir(dir: string, opts: OutputDirOptions): OutputDirState {
  const flag = opts.flag ?? '--out';
  const abs = resolve(dir);
  for (const input of opts.inputs ?? []) {
    const inp = resolve(input.path);
    if (abs === inp)
      throw new OutputFolderError(`${flag} ${dir} is the ${input.what} folder, which peft ${opts.command} reads; write to a new folder`);
    if (within(abs, inp))
      throw new OutputFolderError(`${flag} ${dir} contains the ${input.what} folder ${input.path}; write to a new folder`);
  }
  if (!existsSync(abs)) return 'new';
  if (!statSync(abs).isDirectory()) throw new OutputFolderError(`${flag} ${dir} exists and is a file; pass a folder`);
  const lock = readLock(join(abs, LOCK_FILE));
  if (lock && lock !== 'unreadable' && !(lock.pid === host.pid && lock.host === hostname()) && lockHolderAlive(lock)) {
    throw new FolderLockedError(
      `${flag} ${dir} is being written by another peft ${lock.command} (pid ${lock.pid}${lock.host !== hostname() ? ` on ${lock.host}` : ''}, since ${lock.since}); wait for it to finish or choose another folder`,
    );
  }
  const entries = readdirSync(abs).filter((n) => !ignorable(n));
  const markerExists = existsSync(join(abs, OUTPUT_MARKER));
  const marker = readOutputMarker(abs);
  if (!markerExists) {
    if (entries.length === 0) return 'empty';
    throw new OutputFolderError(
      `${flag} ${dir} holds ${describeForeign(entries)}, which peft ${opts.command} did not write; choose a new or empty folder (--overwrite only replaces a folder's own earlier peft ${opts.command} output)`,
    );
  }
  if (!marker || marker.command !== opts.command) {
    throw new OutputFolderError(
      `${flag} ${dir} holds the output of ${marker ? `peft ${marker.command}` : 'another command'}, not of peft ${opts.command}; choose a new or empty folder`,
    );
  }
  if (opts.overwrite || opts.continueOwn || opts.replaceOwn || entries.length === 0) return 'own';
  throw new OutputFolderError(
    `${flag} ${dir} holds an earlier peft ${opts.command} output; ${opts.continueHint ? `${opts.continueHint}, ` : ''}pass --overwrite to replace it, or choose a new folder`,
  );
}

/** A folder a command holds the lock of; `release` (or the process exiting) frees it. */
export class OutputDir {
  private released = false;
  private readonly onExit: () => void;
  private readonly removeExitHook: () => void;

  constructor(
    readonly path: string,
    readonly state: OutputDirState,
    readonly command: string,
    private readonly lockPath: string,
  ) {
    // A normal exit (also after an uncaught error) removes the lock; a SIGKILL leaves it for the
    // next command to find stale.
    this.onExit = () => {
      if (this.released) return;
      try {
        const l = readLock(this.lockPath);
        if (l && l !== 'unreadable' && l.pid === host.pid) unlinkSync(this.lockPath);
      } catch {
        // nothing more to do at exit
      }
    };
    this.removeExitHook = host.onExit(this.onExit);
  }

  /** Records that the command finished: the folder's output is whole. */
  async complete(): Promise<void> {
    await writeMarker(this.path, this.command, 'complete');
  }

  /** Frees the lock (idempotent). */
  async release(): Promise<void> {
    if (this.released) return;
    this.released = true;
    this.removeExitHook();
    const l = readLock(this.lockPath);
    if (l && l !== 'unreadable' && l.pid === host.pid) await unlink(this.lockPath).catch(() => undefined);
  }
}

async function writeMarker(dir: string, command: string, status: OutputMarker['status']): Promise<void> {
  const m: OutputMarker = { command, status, writer: 'peft-ts', updated: new Date().toISOString() };
  await writeFileAtomic(join(dir, OUTPUT_MARKER), `${JSON.stringify(m, null, 2)}\n`);
}

/** Takes the lock of `dir` (created), taking over a lock whose process is gone. */
async function acquireLock(dir: string, opts: OutputDirOptions): Promise<string> {
  const lockPath = join(dir, LOCK_FILE);
  const info: LockInfo = {
    pid: host.pid,
    host: hostname(),
    boot: bootId(),
    start: processStart(host.pid),
    command: opts.command,
    since: new Date().toISOString(),
  };
  // The lock is written whole under a temp name and hard-linked into place: link() fails if the
  // lock exists, so exactly one of two racing processes gets it, and a lock is never half-written.
  const tmp = tempPathFor(lockPath);
  await writeFileAtomic(tmp, JSON.stringify(info));
  try {
    for (let attempt = 0; attempt < 5; attempt++) {
      try {
        await link(tmp, lockPath);
        return lockPath;
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
      }
      const held = readLock(lockPath);
      if (held && held !== 'unreadable' && lockHolderAlive(held)) {
        throw new FolderLockedError(
          `${opts.flag ?? '--out'} ${dir} is being written by another peft ${held.command} (pid ${held.pid}); wait for it to finish or choose another folder`,
        );
      }
      // Stale (its process is gone) or unreadable: take it over.
      await unlink(lockPath).catch(() => undefined);
    }
    throw new FolderLockedError(`could not take the lock of ${dir} (${LOCK_FILE} keeps reappearing); another process is writing it`);
  } finally {
    await unlink(tmp).catch(() => undefined);
  }
}

/**
 * Checks `dir` (as checkOutputDir), then creates it, takes its lock, removes temp files left by
 * interrupted writes and, when replacing the command's earlier output (`opts.overwrite` or
 * `opts.replaceOwn`, or `clear`), empties it; writes the marker with status 'running'.
 */
export async function claimOutputDir(dir: string, opts: OutputDirOptions & { clear?: boolean }): Promise<OutputDir> {
  const state = checkOutputDir(dir, opts);
  const abs = resolve(dir);
  let lockPath: string;
  try {
    await mkdir(abs, { recursive: true });
    lockPath = await acquireLock(abs, opts);
  } catch (e) {
    throw writeError(abs, e); // a PeftError (the folder is locked) passes through
  }
  const handle = new OutputDir(abs, state, opts.command, lockPath);
  try {
    // Re-checked under the lock: another process may have written the folder since.
    checkOutputDir(dir, { ...opts, inputs: [] });
    await removeTempFiles(abs);
    if (state === 'own' && (opts.clear ?? (opts.overwrite || opts.replaceOwn) ?? false)) {
      for (const name of await readdir(abs))
        if (name !== LOCK_FILE && !name.startsWith(`${LOCK_FILE}.`)) await rm(join(abs, name), { recursive: true, force: true });
    }
    await writeMarker(abs, opts.command, 'running');
  } catch (e) {
    await handle.release();
    throw writeError(abs, e);
  }
  return handle;
}

/** Writes the marker into a folder a command built elsewhere and is about to move into place (merge). */
export async function markOutputDir(dir: string, command: string): Promise<void> {
  await writeMarker(dir, command, 'complete');
}

/**
 * The whole protocol for a command that writes a folder in one go: claims `dir` (checks, lock,
 * temp clean-up, earlier output cleared when replacing it), runs `write`, marks the folder
 * complete and frees the lock. Call `checkOutputDir` with the same options before the slow part
 * (loading a model) so a refusal comes first.
 */
export async function withOutputDir<T>(dir: string, opts: OutputDirOptions, write: (dir: string) => Promise<T>): Promise<T> {
  const folder = await claimOutputDir(dir, opts);
  try {
    const r = await write(folder.path);
    await folder.complete();
    return r;
  } finally {
    await folder.release();
  }
}

/**
 * The same rule for a command that writes one file: a new file, or (with --overwrite) a file that
 * `isOwn` recognises as the command's earlier output; never any other file. Writes nothing.
 */
export function checkOutputFile(
  file: string,
  opts: { command: string; flag?: string; overwrite?: boolean; isOwn: (path: string) => boolean; inputs?: string[] },
): void {
  const flag = opts.flag ?? '--out';
  const abs = resolve(file);
  if ((opts.inputs ?? []).some((p) => resolve(p) === abs))
    throw new OutputFolderError(`${flag} ${file} is an input of peft ${opts.command}; write to another file`);
  if (!existsSync(abs)) {
    const parent = resolve(abs, '..');
    if (!existsSync(parent) || !statSync(parent).isDirectory())
      throw new OutputFolderError(`the folder of ${flag} (${parent}) does not exist; create it or choose another file`);
    return;
  }
  if (statSync(abs).isDirectory()) throw new OutputFolderError(`${flag} ${file} is a folder; give a file name inside it`);
  if (!opts.overwrite)
    throw new OutputFolderError(
      `${flag} ${file} already exists; pass --overwrite to replace an earlier peft ${opts.command} output, or choose another file`,
    );
  if (statSync(abs).size > 0 && !opts.isOwn(abs)) {
    throw new OutputFolderError(
      `${flag} ${file} is not an earlier peft ${opts.command} output, so --overwrite does not replace it; choose another file`,
    );
  }
}

/** The first line of a file (at most 64 KiB read), for `isOwn` checks. */
export function firstLine(path: string): string {
  const text = readText(path) ?? '';
  const nl = text.indexOf('\n');
  return (nl < 0 ? text : text.slice(0, nl)).slice(0, 65536);
}
