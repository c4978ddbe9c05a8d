// Atomic output for exports: everything is written under a hidden temp name beside --out and
// renamed into place at the end, and an existing --out is refused before any work starts.

import { existsSync } from 'node:fs';
import { mkdir, rename, rm, writeFile } from 'node:fs/promises';
import { randomBytes } from 'node:crypto';
import { basename, dirname, join, resolve } from 'node:path';
import { ExportError } from './errors.js';

/** Refuses an --out that exists (file or folder) or whose parent folder is missing. */
export function checkNewOutput(out: string, what: 'file' | 'folder'): string {
  const abs = resolve(out);
  if (existsSync(abs)) throw new ExportError(`--out ${out} already exists; export writes a new ${what}: remove it or choose another path`);
  if (!existsSync(dirname(abs))) throw new ExportError(`the folder of --out (${dirname(abs)}) does not exist; create it first`);
  return abs;
}

function tmpName(out: string): string {
  return join(dirname(out), `.${basename(out)}.tmp-${process.pid}-${randomBytes(4).toString('hex')}`);
}

/** Builds a folder with `fill(tmpDir)` and renames it to `out`; the temp folder is removed on failure. */
export async function writeFolderAtomically(out: string, fill: (dir: string) => Promise<void>): Promise<void> {
  const tmp = tmpName(out);
  await mkdir(tmp);
  try {
    await fill(tmp);
    if (existsSync(out)) throw new ExportError(`--out ${out} appeared while exporting; nothing was replaced`);
    await rename(tmp, out);
  } catch (e) {
    await rm(tmp, { recursive: true, force: true });
    throw e;
  }
}

/** Writes one file through a temp name in the same folder. */
export async function writeFileAtomically(out: string, data: Uint8Array | string | Uint8Array[]): Promise<void> {
  const tmp = tmpName(out);
  try {
    if (Array.isArray(data)) {
      const { open } = await import('node:fs/promises');
      const fh = await open(tmp, 'wx');
      try {
        for (const chunk of data) await fh.write(chunk);
        await fh.sync();
      } finally {
        await fh.close();
      }
    } else {
      await writeFile(tmp, data, { flag: 'wx' });
    }
    if (existsSync(out)) throw new ExportError(`--out ${out} appeared while exporting; nothing was replaced`);
    await rename(tmp, out);
  } catch (e) {
    await rm(tmp, { force: true });
    throw e;
  }
}
