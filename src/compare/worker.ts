// The process a comparison starts for each run: `node worker.js JOB.json RESULT.json` runs the job
// and writes {ok, result} or {ok: false, error} to RESULT.json atomically, so the parent reads
// either a whole answer or none. Only ever executed as a script, never imported.

import { readFile } from '../storage/index.js';
import { writeFileAtomic } from '../io/atomic.js';
import type { CompareJob, WorkerOutput } from './job.js';
import { runJob } from './run.js';

async function main(): Promise<number> {
  const [jobFile, resultFile] = process.argv.slice(2);
  if (!jobFile || !resultFile) {
    process.stderr.write('usage: node worker.js JOB.json RESULT.json (started by the method comparison)\n');
    return 2;
  }
  let out: WorkerOutput;
  try {
    const job = JSON.parse(await readFile(jobFile, 'utf8')) as CompareJob;
    out = { ok: true, result: await runJob(job) };
  } catch (e) {
    const err = e instanceof Error ? e : new Error(String(e));
    process.stderr.write(`${err.stack ?? err.message}\n`);
    out = { ok: false, error: { name: err.name, message: err.message, stack: err.stack } };
  }
  await writeFileAtomic(resultFile, `${JSON.stringify(out)}\n`);
  return out.ok ? 0 : 1;
}

main().then(
  (code) => (process.exitCode = code),
  (e: unknown) => {
    process.stderr.write(`the comparison worker could not write its result: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}\n`);
    process.exitCode = 2;
  },
);
