// The loss curve of a run as a self-contained SVG: train loss per step and eval loss per
// evaluation against the step, with ticked and labelled axes, grid lines and a legend.

import { writeFileAtomic } from '../io/atomic.js';
import type { MetricRecord } from './metrics.js';

export interface PlotOptions {
  width?: number;
  height?: number;
  title?: string;
}

/** About `count` round tick values (1, 2 or 5 times a power of ten apart), the first <= lo and the last >= hi. */
export function niceTicks(lo: number, hi: number, count = 6, integer = false): number[] {
  if (!(hi > lo)) {
    const d = integer ? 1 : Math.abs(lo) > 0 ? Math.abs(lo) * 0.1 : 1;
    return niceTicks(lo - d, hi + d, count, integer);
  }
  const raw = (hi - lo) / Math.max(1, count - 1);
  const mag = Math.pow(10, Math.floor(Math.log10(raw)));
  const steps = (integer ? [1, 2, 5, 10] : [1, 2, 2.5, 5, 10]).map((m) => m * mag);
  const step = integer
    ? Math.max(
        1,
        steps.find((s) => s >= raw)!,
      )
    : steps.find((s) => s >= raw)!;
  const ticks: number[] = [];
  const first = Math.floor(lo / step + 1e-9);
  const last = Math.ceil(hi / step - 1e-9);
  for (let i = first; i <= last; i++) ticks.push(Number((i * step).toPrecision(12)));
  return ticks;
}

function label(x: number): string {
  if (x === 0) return '0';
  const a = Math.abs(x);
  if (a >= 1e5 || a < 1e-3) return x.toExponential(1);
  return String(Number(x.toPrecision(4)));
}

const esc = (s: string): string => s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');

/** The SVG text of the loss curve for a run's metrics. */
export function lossCurveSvg(records: readonly MetricRecord[], opts: PlotOptions = {}): string {
  const W = opts.width ?? 720;
  const H = opts.height ?? 440;
  const m = { left: 72, right: 24, top: 44, bottom: 56 };
  const pw = W - m.left - m.right;
  const ph = H - m.top - m.bottom;
  const train: [number, number][] = [];
  const evals: [number, number][] = [];
  for (const r of records) {
    if (r.kind === 'train' && Number.isFinite(r.loss)) train.push([r.step, r.loss]);
    if (r.kind === 'eval' && Number.isFinite(r.eval_loss)) evals.push([r.step, r.eval_loss]);
  }
  const all = [...train, ...evals];
  const out: string[] = [];
  out.push(
    `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" font-family="Helvetica, Arial, sans-serif" font-size="12">`,
  );
  out.push(`<rect width="${W}" height="${H}" fill="white"/>`);
  out.push(`<text x="${W / 2}" y="24" text-anchor="middle" font-size="15" font-weight="bold">${esc(opts.title ?? 'Loss')}</text>`);
  if (all.length === 0) {
    out.push(`<text x="${W / 2}" y="${H / 2}" text-anchor="middle" fill="#666">no finite loss values logged</text></svg>`);
    return out.join('\n') + '\n';
  }
  const xs = all.map((p) => p[0]);
  const ys = all.map((p) => p[1]);
  const xTicks = niceTicks(Math.min(0, ...xs), Math.max(...xs), 7, true);
  const yMin = Math.min(...ys);
  const yMax = Math.max(...ys);
  const yTicks = niceTicks(yMin, yMax, 6);
  const x0 = Math.min(xTicks[0]!, ...xs);
  const x1 = Math.max(xTicks[xTicks.length - 1]!, ...xs);
  const y0 = Math.min(yTicks[0]!, yMin);
  const y1 = Math.max(yTicks[yTicks.length - 1]!, yMax);
  const sx = (x: number) => m.left + ((x - x0) / (x1 - x0 || 1)) * pw;
  const sy = (y: number) => m.top + ph - ((y - y0) / (y1 - y0 || 1)) * ph;
  const f = (v: number) => v.toFixed(2);

  // grid, ticks and tick labels
  for (const t of yTicks) {
    const y = f(sy(t));
    out.push(`<line x1="${m.left}" y1="${y}" x2="${m.left + pw}" y2="${y}" stroke="#e6e6e6"/>`);
    out.push(`<line x1="${m.left - 5}" y1="${y}" x2="${m.left}" y2="${y}" stroke="#333"/>`);
    out.push(`<text x="${m.left - 8}" y="${y}" text-anchor="end" dominant-baseline="middle">${label(t)}</text>`);
  }
  for (const t of xTicks) {
    const x = f(sx(t));
    out.push(`<line x1="${x}" y1="${m.top}" x2="${x}" y2="${m.top + ph}" stroke="#f0f0f0"/>`);
    out.push(`<line x1="${x}" y1="${m.top + ph}" x2="${x}" y2="${m.top + ph + 5}" stroke="#333"/>`);
    out.push(`<text x="${x}" y="${m.top + ph + 19}" text-anchor="middle">${label(t)}</text>`);
  }
  // axes and their labels
  out.push(`<rect x="${m.left}" y="${m.top}" width="${pw}" height="${ph}" fill="none" stroke="#333"/>`);
  out.push(`<text x="${m.left + pw / 2}" y="${H - 14}" text-anchor="middle" font-size="13">step</text>`);
  out.push(
    `<text x="18" y="${m.top + ph / 2}" text-anchor="middle" font-size="13" transform="rotate(-90 18 ${m.top + ph / 2})">loss</text>`,
  );

  const path = (pts: [number, number][]) => pts.map(([x, y], i) => `${i ? 'L' : 'M'}${f(sx(x))},${f(sy(y))}`).join(' ');
  const series: { name: string; color: string; pts: [number, number][]; markers: boolean }[] = [
    { name: 'train loss', color: '#1f77b4', pts: train, markers: train.length < 2 },
    { name: 'eval loss', color: '#ff7f0e', pts: evals, markers: true },
  ].filter((s) => s.pts.length > 0);
  for (const s of series) {
    if (s.pts.length > 1) out.push(`<path d="${path(s.pts)}" fill="none" stroke="${s.color}" stroke-width="1.8" stroke-linejoin="round"/>`);
    if (s.markers) for (const [x, y] of s.pts) out.push(`<circle cx="${f(sx(x))}" cy="${f(sy(y))}" r="3.5" fill="${s.color}"/>`);
  }
  // legend, top right inside the plot
  const lw = 118;
  const lh = 10 + 20 * series.length;
  const lx = m.left + pw - lw - 10;
  const ly = m.top + 10;
  out.push(`<rect x="${lx}" y="${ly}" width="${lw}" height="${lh}" fill="white" fill-opacity="0.9" stroke="#999"/>`);
  series.forEach((s, i) => {
    const y = ly + 15 + 20 * i;
    out.push(`<line x1="${lx + 10}" y1="${y}" x2="${lx + 38}" y2="${y}" stroke="${s.color}" stroke-width="2.5"/>`);
    if (s.markers) out.push(`<circle cx="${lx + 24}" cy="${y}" r="3.5" fill="${s.color}"/>`);
    out.push(`<text x="${lx + 46}" y="${y}" dominant-baseline="middle">${s.name}</text>`);
  });
  out.push('</svg>');
  return out.join('\n') + '\n';
}

/** Writes the loss curve to `path` atomically. */
export async function writeLossPlot(path: string, records: readonly MetricRecord[], opts: PlotOptions = {}): Promise<void> {
  await writeFileAtomic(path, lossCurveSvg(records, opts));
}
