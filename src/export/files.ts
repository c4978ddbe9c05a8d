// Output of exports, on the one output rule (src/io/outdir.ts, src/io/atomic.ts): a folder export
// (transformers.js) claims --out with withOutputDir (new, empty, or export's own earlier output with
// --overwrite; lock; temp clean-up; marker); a file export (gguf, gguf-lora) writes a new file
// through writeFileAtomic. An existing file is never replaced: a GGUF file carries no mark of who
// wrote it, so export cannot tell its own earlier file from the user's model.

import { existsSync, resolve } from '../storage/index.js';
import { writeFileAtomic } from '../io/atomic.js';
import { checkOutputDir, checkOutputFile, type OutputDirOptions, withOutputDir } from '../io/outdir.js';
import { ExportError } from './errors.js';

/** Refuses a file --out that exists, is a folder, or whose parent folder is missing. Writes nothing. */
export function checkNewFile(out: string, flag = '--out'): string {
  const abs = resolve(out);
  if (existsSync(abs))
    throw new ExportError(`${flag} ${out} already exists; export never replaces a file: remove it or choose another path`);
  checkOutputFile(abs, { command: 'export', flag, isOwn: () => false });
  return abs;
}

/** The options of a folder export's --out. */
export const exportDirOptions = (overwrite: boolean | undefined, inputs: { path: string; what: string }[]): OutputDirOptions => ({
  command: 'export',
  overwrite,
  inputs,
});

/** Refuses a folder --out holding anything export did not write (see checkOutputDir). Writes nothing. */
export function checkExportFolder(out: string, opts: OutputDirOptions): string {
  checkOutputDir(out, opts);
  return resolve(out);
}

/** Claims the folder (lock, temp clean-up, earlier own output cleared), fills it and marks it complete. */
export async function writeExportFolder(out: string, opts: OutputDirOptions, fill: (dir: string) => Promise<void>): Promise<void> {
  await withOutputDir(out, opts, fill);
}

/** Writes one new file through a temp name in the same folder (cleaned by the next run if killed). */
export async function writeNewFile(out: string, data: Uint8Array | string | Uint8Array[]): Promise<void> {
  if (existsSync(out)) throw new ExportError(`--out ${out} appeared while exporting; nothing was replaced`);
  await writeFileAtomic(
    out,
    Array.isArray(data)
      ? async (fh) => {
          for (const chunk of data) await fh.write(chunk);
        }
      : data,
  );
}
