// bench/RESULTS.md is one section per benchmark, each from its `## ` heading to the next one. A
// benchmark run with its write option replaces its own section through this one function and leaves
// the others as they are.

import { existsSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { REPO } from './peer.js';

/** The file the benchmarks write their tables into. */
export const RESULTS_FILE = join(REPO, 'bench', 'RESULTS.md');

/**
 * Replaces the section of `file` that starts with the line `heading` (up to the next `## ` heading)
 * with `text` (which starts with that heading), or appends it. With `keepFrom`, what the old section
 * holds from that marker line on (hand-written notes) is kept after the new text; the marker is written
 * when the old section has none. Written to a temp file and renamed, so an interrupted run leaves the
 * old file whole.
 */
export function writeResultsSection(heading: string, text: string, opts: { file?: string; keepFrom?: string } = {}): void {
  const file = opts.file ?? RESULTS_FILE;
  const old = existsSync(file) ? readFileSync(file, 'utf8') : '# Benchmark results\n';
  const at = old.startsWith(`${heading}\n`) ? 0 : old.indexOf(`\n${heading}\n`);
  const start = at > 0 ? at + 1 : at;
  const next = start < 0 ? -1 : old.indexOf('\n## ', start + heading.length);
  const end = next < 0 ? old.length : next + 1;
  const section = start < 0 ? '' : old.slice(start, end);
  let body = `${text.trimEnd()}\n`;
  if (opts.keepFrom !== undefined) {
    const mark = section.indexOf(opts.keepFrom);
    body += `\n${mark >= 0 ? section.slice(mark).trimEnd() : opts.keepFrom}\n`;
  }
  const out = start < 0 ? `${old.trimEnd()}\n\n${body}` : `${old.slice(0, start)}${body}${end < old.length ? `\n${old.slice(end)}` : ''}`;
  const tmp = `${file}.${process.pid}.tmp`;
  writeFileSync(tmp, out);
  renameSync(tmp, file);
}
