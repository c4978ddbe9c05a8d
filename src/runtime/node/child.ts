// Child processes: a script run by a fresh Node process (peft compare runs each method in one, so
// a crash or an out-of-memory kill ends that run only). Node only (node:child_process, node:fs).

import { spawn } from 'node:child_process';
import { closeSync, openSync } from 'node:fs';

export interface NodeChild {
  /** sends SIGTERM */
  kill(): void;
  /** settles when the process has exited and its log is closed; rejects when it could not start */
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

/** Runs `script` with `args` in a new process of this Node binary; stdout and stderr go to `logFile` (truncated). */
export function spawnNodeScript(script: string, args: readonly string[], logFile: string): NodeChild {
  const fd = openSync(logFile, 'w');
  let child: ReturnType<typeof spawn>;
  try {
    child = spawn(process.execPath, [script, ...args], { stdio: ['ignore', fd, fd] });
  } catch (e) {
    closeSync(fd);
    throw e;
  }
  let open = true;
  const closeLog = (): void => {
    if (open) closeSync(fd);
    open = false;
  };
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((done, fail) => {
    child.on('error', (e) => {
      closeLog();
      fail(e);
    });
    child.on('close', (code, signal) => {
      closeLog();
      done({ code, signal });
    });
  });
  return { kill: () => void child.kill('SIGTERM'), exited };
}
