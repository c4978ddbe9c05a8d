// The comparison's figures as self-contained SVG: every method's train and eval loss on one chart,
// and task quality against trainable parameters (log scale) with the untuned base dashed and the
// most-common-label score dotted. Axis ticks come from the training plot's helper.

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

function axes(
  out: string[],
  fr: Frame,
  xTicks: { v: number; x: number; label: string }[],
  yTicks: { v: number; y: number; label: string }[],
): void {
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

function legend(out: string[], fr: Frame, items: { label: string; color: string; dash?: string; marker?: boolean }[]): void {
  const x = fr.m.left + fr.pw + 16;
  items.forEach((it, i) => {
    const y = fr.m.top + 12 + 20 * i;
    if (it.marker) out.push(`<circle cx="${x + 12}" cy="${y}" r="5" fill="${it.color}" stroke="#222" stroke-width="0.8"/>`);
    else
      out.push(
        `<line x1="${x}" y1="${y}" x2="${x + 24}" y2="${y}" stroke="${it.color}" stroke-width="2"${it.dash ? ` stroke-dasharray="${it.dash}"` : ''}/>`,
      );
    out.push(`<text x="${x + 30}" y="${y}" dominant-baseline="middle">${esc(it.label)}</text>`);
  });
}

/** Where each point's label goes: above right, else the first nearby slot that overlaps no marker and no label placed so far. */
function placeLabels(
  points: { x: number; y: number; text: string }[],
  top: number,
  bottom: number,
  right: number,
): { x: number; y: number }[] {
  const boxes: { x0: number; x1: number; y0: number; y1: number }[] = points.map((p) => ({
    x0: p.x - 7,
    x1: p.x + 7,
    y0: p.y - 7,
    y1: p.y + 7,
  }));
  const offsets = [4, -10, 18, -24, 32, -38, 46];
  return points.map((p) => {
    const w = 6.2 * p.text.length;
    // to the right of the point, or to its left where the plot ends first
    const x0 = p.x + 9 + w > right ? p.x - 9 - w : p.x + 9;
    let pick = { x: x0, y: p.y + offsets[0]! };
    for (const dy of offsets) {
      const y = Math.min(bottom - 2, Math.max(top + 12, p.y + dy));
      const box = { x0, x1: x0 + w, y0: y - 11, y1: y + 2 };
      if (!boxes.some((b) => b.x0 < box.x1 && box.x0 < b.x1 && b.y0 < box.y1 && box.y0 < b.y1)) {
        pick = { x: box.x0, y };
        boxes.push(box);
        return pick;
      }
    }
    boxes.push({ x0: pick.x, x1: pick.x + w, y0: pick.y - 11, y1: pick.y + 2 });
    return pick;
  });
}

/** Train loss (thin) and eval loss (markers) of every method against the step. */
export function lossCurvesSvg(series: readonly LossSeries[], opts: { title?: string; width?: number; height?: number } = {}): string {
  const fr = frame(opts.width ?? 860, opts.height ?? 480, 180);
  const curves = series.map((s, i) => ({
    ...s,
    color: COLORS[i % COLORS.length]!,
    train: s.records
      .filter((r) => r.kind === 'train' && Number.isFinite(r.loss))
      .map((r) => [r.step, (r as { loss: number }).loss] as [number, number]),
    evals: s.records
      .filter((r) => r.kind === 'eval' && Number.isFinite(r.eval_loss))
      .map((r) => [r.step, (r as { eval_loss: number }).eval_loss] as [number, number]),
  }));
  const pts = curves.flatMap((c) => [...c.train, ...c.evals]);
  const all = pts.map((p) => p[1]);
  // A loss that falls by more than 20x is drawn on a log scale, so the end of training stays readable.
  const logY = all.length > 0 && Math.min(...all) > 0 && Math.max(...all) / Math.min(...all) > 20;
  const out = header(fr, opts.title ?? 'Loss per method', 'step', `loss${logY ? ', log scale' : ''} (thin: train, markers: eval)`);
  if (pts.length === 0) {
    out.push(`<text x="${fr.W / 2}" y="${fr.H / 2}" text-anchor="middle" fill="#666">no finite loss values logged</text></svg>`);
    return out.join('\n') + '\n';
  }
  const xs = pts.map((p) => p[0]);
  const ys = pts.map((p) => p[1]);
  const xt = niceTicks(Math.min(0, ...xs), Math.max(...xs), 7, true);
  const x0 = Math.min(xt[0]!, ...xs);
  const x1 = Math.max(xt[xt.length - 1]!, ...xs);
  const sx = (x: number) => fr.m.left + ((x - x0) / (x1 - x0 || 1)) * fr.pw;
  const yMin = Math.min(...ys);
  const yMax = Math.max(...ys);
  let sy: (y: number) => number;
  let yTicks: number[];
  if (logY) {
    const lo = Math.log10(yMin) - 0.05;
    const hi = Math.log10(yMax) + 0.05;
    const mantissas = hi - lo > 3 ? [1] : [1, 2, 5];
    yTicks = [];
    for (let e = Math.floor(lo); e <= Math.ceil(hi); e++) {
      for (const m of mantissas) {
        const v = Number((m * 10 ** e).toPrecision(3));
        if (Math.log10(v) >= lo && Math.log10(v) <= hi) yTicks.push(v);
      }
    }
    sy = (y: number) => fr.m.top + fr.ph - ((Math.log10(y) - lo) / (hi - lo)) * fr.ph;
  } else {
    yTicks = niceTicks(yMin, yMax, 6);
    const y0 = Math.min(yTicks[0]!, yMin);
    const y1 = Math.max(yTicks[yTicks.length - 1]!, yMax);
    sy = (y: number) => fr.m.top + fr.ph - ((y - y0) / (y1 - y0 || 1)) * fr.ph;
  }
  axes(
    out,
    fr,
    xt.map((v) => ({ v, x: sx(v), label: tickLabel(v) })),
    yTicks.map((v) => ({ v, y: sy(v), label: tickLabel(v) })),
  );
  const path = (p: [number, number][]) => p.map(([x, y], i) => `${i ? 'L' : 'M'}${f(sx(x))},${f(sy(y))}`).join(' ');
  for (const c of curves) {
    if (c.train.length > 1) out.push(`<path d="${path(c.train)}" fill="none" stroke="${c.color}" stroke-width="1" stroke-opacity="0.45"/>`);
    if (c.evals.length > 1) out.push(`<path d="${path(c.evals)}" fill="none" stroke="${c.color}" stroke-width="2.2"/>`);
    for (const [x, y] of c.evals) out.push(`<circle cx="${f(sx(x))}" cy="${f(sy(y))}" r="3.5" fill="${c.color}"/>`);
    if (c.train.length === 1)
      out.push(`<circle cx="${f(sx(c.train[0]![0]))}" cy="${f(sy(c.train[0]![1]))}" r="2.5" fill="${c.color}" fill-opacity="0.5"/>`);
  }
  legend(
    out,
    fr,
    curves.map((c) => ({ label: c.label, color: c.color })),
  );
  out.push('</svg>');
  return out.join('\n') + '\n';
}

/** Task quality against trainable parameters (log scale), one labelled point per method, the base as a dashed line. */
export function qualityVsParamsSvg(
  points: readonly QualityPoint[],
  opts: { base?: number; chance?: number; metric: string; title?: string; width?: number; height?: number },
): string {
  const fr = frame(opts.width ?? 860, opts.height ?? 480, 180);
  const out = header(fr, opts.title ?? `${opts.metric} vs trainable parameters`, 'trainable parameters (log scale)', `${opts.metric} (%)`);
  const good = points.filter((p) => p.trainableParams > 0 && Number.isFinite(p.quality));
  if (good.length === 0) {
    out.push(`<text x="${fr.W / 2}" y="${fr.H / 2}" text-anchor="middle" fill="#666">no results to plot</text></svg>`);
    return out.join('\n') + '\n';
  }
  const logs = good.map((p) => Math.log10(p.trainableParams));
  const lo = Math.floor(Math.min(...logs) - 0.15);
  const hi = Math.ceil(Math.max(...logs) + 0.15);
  const ysAll = [
    ...good.map((p) => 100 * p.quality),
    ...[opts.base, opts.chance].filter((v): v is number => v !== undefined).map((v) => 100 * v),
  ];
  // at least 20 points of the metric tall, inside [0, 100]
  let ylo = Math.max(0, Math.min(...ysAll) - 5);
  let yhi = Math.min(100, Math.max(...ysAll) + 5);
  if (yhi - ylo < 20) {
    const mid = (ylo + yhi) / 2;
    ylo = Math.max(0, mid - 10);
    yhi = Math.min(100, ylo + 20);
    ylo = Math.max(0, yhi - 20);
  }
  const yt = niceTicks(ylo, yhi, 6);
  const y0 = yt[0]!;
  const y1 = yt[yt.length - 1]!;
  const sx = (l: number) => fr.m.left + ((l - lo) / (hi - lo || 1)) * fr.pw;
  const sy = (y: number) => fr.m.top + fr.ph - ((y - y0) / (y1 - y0 || 1)) * fr.ph;
  const xt: { v: number; x: number; label: string }[] = [];
  for (let e = lo; e <= hi; e++)
    xt.push({ v: e, x: sx(e), label: e >= 3 && e < 6 ? `${10 ** (e - 3)}k` : e >= 6 ? `${10 ** (e - 6)}M` : String(10 ** e) });
  axes(
    out,
    fr,
    xt,
    yt.map((v) => ({ v, y: sy(v), label: tickLabel(v) })),
  );
  const items: { label: string; color: string; dash?: string; marker?: boolean }[] = [];
  if (opts.base !== undefined) {
    const y = f(sy(100 * opts.base));
    out.push(
      `<line x1="${fr.m.left}" y1="${y}" x2="${fr.m.left + fr.pw}" y2="${y}" stroke="#555" stroke-width="1.5" stroke-dasharray="5 4"/>`,
    );
    items.push({ label: 'base model', color: '#555', dash: '5 4' });
  }
  if (opts.chance !== undefined) {
    const y = f(sy(100 * opts.chance));
    out.push(
      `<line x1="${fr.m.left}" y1="${y}" x2="${fr.m.left + fr.pw}" y2="${y}" stroke="#999" stroke-width="1.5" stroke-dasharray="2 3"/>`,
    );
    items.push({ label: 'most common label', color: '#999', dash: '2 3' });
  }
  const placed = good.map((p, i) => ({
    ...p,
    color: COLORS[i % COLORS.length]!,
    x: sx(Math.log10(p.trainableParams)),
    y: sy(100 * p.quality),
    text: p.label,
  }));
  for (const p of placed)
    out.push(`<circle cx="${f(p.x)}" cy="${f(p.y)}" r="6" fill="${p.color}" stroke="#222" stroke-width="0.8" fill-opacity="0.9"/>`);
  const spots = placeLabels(placed, fr.m.top, fr.m.top + fr.ph, fr.m.left + fr.pw);
  placed.forEach((p, i) => {
    out.push(`<text x="${f(spots[i]!.x)}" y="${f(spots[i]!.y)}" font-size="11">${esc(p.label)}</text>`);
    items.push({ label: p.label, color: p.color, marker: true });
  });
  legend(out, fr, items);
  out.push('</svg>');
  return out.join('\n') + '\n';
}
