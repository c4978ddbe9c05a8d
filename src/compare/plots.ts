// The comparison's figures as self-contained SVG: loss curves of every method on one chart (train
// loss thin, eval loss with markers), and task quality against trainable parameters (log scale)
// with the untuned base model as a dashed line. Axis ticks come from the training plot's helper.

import { niceTicks } from '../train/plot.js';
import type { MetricRecord } from '../train/metrics.js';

export interface LossSeries {
  label: string;
  records: readonly MetricRecord[];
}

export interface QualityPoint {
  label: string;
  trainableParams: number;
  /** in [0, 1] */
  quality: number;
}

const COLORS = ['#1f77b4', '#ff7f0e', '#2ca02c', '#d62728', '#9467bd', '#8c564b', '#e377c2', '#7f7f7f', '#bcbd22', '#17becf'];
const esc = (s: string): string => s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');
const f = (v: number): string => v.toFixed(2);

function tickLabel(x: number): string {
  if (x === 0) return '0';
  const a = Math.abs(x);
  if (a >= 1e5 || a < 1e-3) return x.toExponential(0);
  return String(Number(x.toPrecision(4)));
}

interface Frame {
  W: number;
  H: number;
  m: { left: number; right: number; top: number; bottom: number };
  pw: number;
  ph: number;
}

function frame(W: number, H: number, right: number): Frame {
  const m = { left: 72, right, top: 44, bottom: 56 };
  return { W, H, m, pw: W - m.left - m.right, ph: H - m.top - m.bottom };
}

function header(fr: Frame, title: string, xLabel: string, yLabel: string): string[] {
  const { W, H, m, ph, pw } = fr;
  return [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" font-family="Helvetica, Arial, sans-serif" font-size="12">`,
    `<rect width="${W}" height="${H}" fill="white"/>`,
    `<text x="${m.left + pw / 2}" y="24" text-anchor="middle" font-size="15" font-weight="bold">${esc(title)}</text>`,
    `<text x="${m.left + pw / 2}" y="${H - 14}" text-anchor="middle" font-size="13">${esc(xLabel)}</text>`,
    `<text x="18" y="${m.top + ph / 2}" text-anchor="middle" font-size="13" transform="rotate(-90 18 ${m.top + ph / 2})">${esc(yLabel)}</text>`,
  ];
}

function axes(out: string[], fr: Frame, xTicks: { v: number; x: number; label: string }[], yTicks: { v: number; y: number; label: string }[]): void {
  const { m, pw, ph } = fr;
  for (const t of yTicks) {
    out.push(`<line x1="${m.left}" y1="${f(t.y)}" x2="${m.left + pw}" y2="${f(t.y)}" stroke="#e6e6e6"/>`);
    out.push(`<line x1="${m.left - 5}" y1="${f(t.y)}" x2="${m.left}" y2="${f(t.y)}" stroke="#333"/>`);
    out.push(`<text x="${m.left - 8}" y="${f(t.y)}" text-anchor="end" dominant-baseline="middle">${t.label}</text>`);
  }
  for (const t of xTicks) {
    out.push(`<line x1="${f(t.x)}" y1="${m.top}" x2="${f(t.x)}" y2="${m.top + ph}" stroke="#f0f0f0"/>`);
    out.push(`<line x1="${f(t.x)}" y1="${m.top + ph}" x2="${f(t.x)}" y2="${m.top + ph + 5}" stroke="#333"/>`);
    out.push(`<text x="${f(t.x)}" y="${m.top + ph + 19}" text-anchor="middle">${t.label}</text>`);
  }
  out.push(`<rect x="${m.left}" y="${m.top}" width="${pw}" height="${ph}" fill="none" stroke="#333"/>`);
}

function legend(out: string[], fr: Frame, items: { label: string; color: string; dash?: boolean }[]): void {
  const x = fr.m.left + fr.pw + 16;
  items.forEach((it, i) => {
    const y = fr.m.top + 12 + 20 * i;
    out.push(`<line x1="${x}" y1="${y}" x2="${x + 24}" y2="${y}" stroke="${it.color}" stroke-width="2.5"${it.dash ? ' stroke-dasharray="5 4"' : ''}/>`);
    out.push(`<text x="${x + 30}" y="${y}" dominant-baseline="middle">${esc(it.label)}</text>`);
  });
}

/** Train loss (thin) and eval loss (markers) of every method against the step. */
export function lossCurvesSvg(series: readonly LossSeries[], opts: { title?: string; width?: number; height?: number } = {}): string {
  const fr = frame(opts.width ?? 860, opts.height ?? 480, 170);
  const out = header(fr, opts.title ?? 'Loss per method', 'step', 'loss (thin: train, markers: eval)');
  const curves = series.map((s, i) => ({
    ...s,
    color: COLORS[i % COLORS.length]!,
    train: s.records.filter((r) => r.kind === 'train' && Number.isFinite(r.loss)).map((r) => [r.step, (r as { loss: number }).loss] as [number, number]),
    evals: s.records.filter((r) => r.kind === 'eval' && Number.isFinite(r.eval_loss)).map((r) => [r.step, (r as { eval_loss: number }).eval_loss] as [number, number]),
  }));
  const pts = curves.flatMap((c) => [...c.train, ...c.evals]);
  if (pts.length === 0) {
    out.push(`<text x="${fr.W / 2}" y="${fr.H / 2}" text-anchor="middle" fill="#666">no finite loss values logged</text></svg>`);
    return out.join('\n') + '\n';
  }
  const xs = pts.map((p) => p[0]);
  const ys = pts.map((p) => p[1]);
  const xt = niceTicks(Math.min(0, ...xs), Math.max(...xs), 7, true);
  const yt = niceTicks(Math.min(...ys), Math.max(...ys), 6);
  const x0 = Math.min(xt[0]!, ...xs);
  const x1 = Math.max(xt[xt.length - 1]!, ...xs);
  const y0 = Math.min(yt[0]!, ...ys);
  const y1 = Math.max(yt[yt.length - 1]!, ...ys);
  const sx = (x: number) => fr.m.left + ((x - x0) / (x1 - x0 || 1)) * fr.pw;
  const sy = (y: number) => fr.m.top + fr.ph - ((y - y0) / (y1 - y0 || 1)) * fr.ph;
  axes(out, fr, xt.map((v) => ({ v, x: sx(v), label: tickLabel(v) })), yt.map((v) => ({ v, y: sy(v), label: tickLabel(v) })));
  const path = (p: [number, number][]) => p.map(([x, y], i) => `${i ? 'L' : 'M'}${f(sx(x))},${f(sy(y))}`).join(' ');
  for (const c of curves) {
    if (c.train.length > 1) out.push(`<path d="${path(c.train)}" fill="none" stroke="${c.color}" stroke-width="1" stroke-opacity="0.45"/>`);
    if (c.evals.length > 1) out.push(`<path d="${path(c.evals)}" fill="none" stroke="${c.color}" stroke-width="2.2"/>`);
    for (const [x, y] of c.evals) out.push(`<circle cx="${f(sx(x))}" cy="${f(sy(y))}" r="3.5" fill="${c.color}"/>`);
    if (c.train.length === 1) out.push(`<circle cx="${f(sx(c.train[0]![0]))}" cy="${f(sy(c.train[0]![1]))}" r="2.5" fill="${c.color}" fill-opacity="0.5"/>`);
  }
  legend(out, fr, curves.map((c) => ({ label: c.label, color: c.color })));
  out.push('</svg>');
  return out.join('\n') + '\n';
}

/** Task quality against trainable parameters (log scale), one labelled point per method, the base as a dashed line. */
export function qualityVsParamsSvg(
  points: readonly QualityPoint[],
  opts: { base?: number; metric: string; title?: string; width?: number; height?: number },
): string {
  const fr = frame(opts.width ?? 860, opts.height ?? 480, 170);
  const out = header(fr, opts.title ?? `${opts.metric} vs trainable parameters`, 'trainable parameters (log scale)', `${opts.metric} (%)`);
  const good = points.filter((p) => p.trainableParams > 0 && Number.isFinite(p.quality));
  if (good.length === 0) {
    out.push(`<text x="${fr.W / 2}" y="${fr.H / 2}" text-anchor="middle" fill="#666">no results to plot</text></svg>`);
    return out.join('\n') + '\n';
  }
  const logs = good.map((p) => Math.log10(p.trainableParams));
  const lo = Math.floor(Math.min(...logs) - 0.15);
  const hi = Math.ceil(Math.max(...logs) + 0.15);
  const ysAll = [...good.map((p) => 100 * p.quality), ...(opts.base !== undefined ? [100 * opts.base] : [])];
  const yt = niceTicks(Math.max(0, Math.min(...ysAll) - 5), Math.min(100, Math.max(...ysAll) + 5), 6);
  const y0 = yt[0]!;
  const y1 = yt[yt.length - 1]!;
  const sx = (l: number) => fr.m.left + ((l - lo) / (hi - lo || 1)) * fr.pw;
  const sy = (y: number) => fr.m.top + fr.ph - ((y - y0) / (y1 - y0 || 1)) * fr.ph;
  const xt: { v: number; x: number; label: string }[] = [];
  for (let e = lo; e <= hi; e++) xt.push({ v: e, x: sx(e), label: e >= 3 && e < 6 ? `${10 ** (e - 3)}k` : e >= 6 ? `${10 ** (e - 6)}M` : String(10 ** e) });
  axes(out, fr, xt, yt.map((v) => ({ v, y: sy(v), label: tickLabel(v) })));
  const items: { label: string; color: string; dash?: boolean }[] = [];
  if (opts.base !== undefined) {
    const y = f(sy(100 * opts.base));
    out.push(`<line x1="${fr.m.left}" y1="${y}" x2="${fr.m.left + fr.pw}" y2="${y}" stroke="#555" stroke-width="1.5" stroke-dasharray="5 4"/>`);
    items.push({ label: 'base model (untuned)', color: '#555', dash: true });
  }
  good.forEach((p, i) => {
    const color = COLORS[i % COLORS.length]!;
    const x = sx(Math.log10(p.trainableParams));
    const y = sy(100 * p.quality);
    out.push(`<circle cx="${f(x)}" cy="${f(y)}" r="6" fill="${color}" stroke="#222" stroke-width="0.8"/>`);
    out.push(`<text x="${f(x + 9)}" y="${f(y - 9)}" font-size="11">${esc(p.label)}</text>`);
    items.push({ label: p.label, color });
  });
  legend(out, fr, items);
  out.push('</svg>');
  return out.join('\n') + '\n';
}
