// What the machine is (cores, CPU model, memory, load), for reports that must say where a number
// was measured (peft compare). Node only (node:os); nothing the browser bundle reaches uses it.

import os from 'node:os';

export interface MachineInfo {
  /** logical cores this process may use */
  nproc: number;
  cpu: string;
  memoryBytes: number;
  /** e.g. "linux x64" */
  platform: string;
}

export function machineInfo(): MachineInfo {
  return {
    nproc: os.availableParallelism(),
    cpu: os.cpus()[0]?.model.trim() ?? 'unknown',
    memoryBytes: os.totalmem(),
    platform: `${os.platform()} ${os.arch()}`,
  };
}

/** The 1, 5 and 15 minute load averages. */
export function loadAverage(): number[] {
  return os.loadavg();
}
