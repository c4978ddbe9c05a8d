// "Which method for you": advice computed from a comparison's own measurements and the user's
// constraints (memory to train in, adapters kept per base, inference latency, quality or
// efficiency first). Every recommendation cites the numbers it rests on, says when a difference is
// within the metric's noise, and says where it departs from the general guidelines of the PEFT
// literature (LoRA for quality on one task, QLoRA for efficiency, IA3 / soft prompts / adapters for
// many tasks, prefix tuning for generation, prompt tuning for classification) and why.

import type { ComparisonReport, MethodRow } from './report.js';
import { formatBytes } from './report.js';
import { CompareError } from './errors.js';

export type Objective = 'quality' | 'efficiency';

export interface Constraints {
  /** peak memory a training run may use (bytes) */
  memoryBudgetBytes?: number;
  /** adapters kept per base model (tasks / customers); storage scales with it */
  tasks: number;
  /** inference latency budget (ms, as the comparison measured it) */
  latencyBudgetMs?: number;
  objective: Objective;
}

export const DEFAULT_CONSTRAINTS: Constraints = { tasks: 1, objective: 'quality' };

export interface Exclusion {
  method: string;
  label: string;
  why: string;
}

export interface GuidelineCheck {
  guideline: string;
  verdict: 'holds' | 'does not hold here' | 'not testable here';
  evidence: string;
}

export interface Advice {
  constraints: Constraints;
  /** the method to use, or null when no measured method fits the constraints */
  pick: { method: string; label: string; why: string; evidence: string[] } | null;
  /** methods within the noise of the pick's quality, cheaper or dearer */
  alternatives: { method: string; label: string; note: string }[];
  excluded: Exclusion[];
  /** the evidence is too weak to rank (differences within noise), said plainly */
  caveats: string[];
  /** where the pick departs from the literature's general guideline, and why */
  contradictions: string[];
  guidelines: GuidelineCheck[];
}

const pct = (x: number): string => `${(100 * x).toFixed(1)}%`;
const share = (x: number): string => `${(100 * x).toFixed(x < 0.001 ? 4 : x < 0.01 ? 3 : 2)}%`;

/** "4GiB", "512 MiB", "2GB", "1e9" -> bytes */
export function parseBytes(text: string): number {
  const m = /^\s*([0-9]*\.?[0-9]+(?:e[0-9]+)?)\s*(b|kb|kib|mb|mib|gb|gib|tb|tib)?\s*$/i.exec(text);
  if (!m) throw new CompareError(`cannot read "${text}" as a memory size; write e.g. 4GiB, 512MiB or 2GB`);
  const unit = (m[2] ?? 'b').toLowerCase();
  const mult: Record<string, number> = {
    b: 1,
    kb: 1e3,
    kib: 1024,
    mb: 1e6,
    mib: 1024 ** 2,
    gb: 1e9,
    gib: 1024 ** 3,
    tb: 1e12,
    tib: 1024 ** 4,
  };
  return Number(m[1]) * mult[unit]!;
}

/** "50ms", "0.2s", "120" (ms) -> milliseconds */
export function parseDurationMs(text: string): number {
  const m = /^\s*([0-9]*\.?[0-9]+)\s*(ms|s)?\s*$/i.exec(text);
  if (!m) throw new CompareError(`cannot read "${text}" as a latency; write e.g. 50ms or 0.2s`);
  return Number(m[1]) * ((m[2] ?? 'ms').toLowerCase() === 's' ? 1000 : 1);
}

/** Standard error of a proportion metric's estimate (0 when the metric is not a proportion). */
function stderrOf(m: MethodRow): number | undefined {
  const q = m.quality!;
  if (q.metric === 'eval_loss' || q.total === undefined || q.total === 0) return undefined;
  const p = q.value;
  return Math.sqrt(Math.max(p * (1 - p), 1 / q.total) / q.total);
}

/** Whether two methods' quality differs by less than the noise of its measurement (two-proportion z at 95%). */
export function withinNoise(a: MethodRow, b: MethodRow): boolean {
  const sa = stderrOf(a);
  const sb = stderrOf(b);
  const qa = a.quality!;
  const qb = b.quality!;
  if (sa === undefined || sb === undefined) {
    // loss-based quality has no per-example noise estimate here: call differences under 1% relative a tie
    return Math.abs(qa.evalLoss - qb.evalLoss) <= 0.01 * Math.max(qa.evalLoss, qb.evalLoss);
  }
  return Math.abs(qa.value - qb.value) <= 1.96 * Math.hypot(sa, sb);
}

function qualityText(m: MethodRow): string {
  const q = m.quality!;
  if (q.metric === 'eval_loss') return `eval loss ${q.evalLoss.toFixed(3)}`;
  return `${pct(q.value)}${q.total !== undefined ? ` (${q.correct}/${q.total})` : ''}`;
}

/** Bytes kept for `tasks` tasks: full fine-tuning keeps a whole model per task, an adapter its folder per task. */
function storageFor(m: MethodRow, tasks: number): number {
  return m.stored_bytes! * tasks;
}

/** Higher is better. */
function qualityKey(m: MethodRow): number {
  return m.quality!.metric === 'eval_loss' ? -m.quality!.evalLoss : m.quality!.value;
}

export function recommend(report: ComparisonReport, constraints: Constraints = DEFAULT_CONSTRAINTS): Advice {
  if (!Number.isInteger(constraints.tasks) || constraints.tasks < 1)
    throw new CompareError(`--tasks must be a positive integer, got ${constraints.tasks}`);
  const ok = report.methods.filter((m) => m.status === 'ok' && m.quality !== undefined);
  const excluded: Exclusion[] = report.methods
    .filter((m) => m.status !== 'ok')
    .map((m) => ({ method: m.method, label: m.label, why: `its run failed (${m.error ?? 'no result'})` }));
  const fits: MethodRow[] = [];
  for (const m of ok) {
    if (constraints.memoryBudgetBytes !== undefined && m.peak_train_rss_bytes! > constraints.memoryBudgetBytes) {
      excluded.push({
        method: m.method,
        label: m.label,
        why: `peak training memory ${formatBytes(m.peak_train_rss_bytes!)} is over the ${formatBytes(constraints.memoryBudgetBytes)} budget`,
      });
    } else if (constraints.latencyBudgetMs !== undefined && m.inference_latency_ms! > constraints.latencyBudgetMs) {
      excluded.push({
        method: m.method,
        label: m.label,
        why: `inference latency ${m.inference_latency_ms!.toFixed(1)} ms is over the ${constraints.latencyBudgetMs} ms budget`,
      });
    } else fits.push(m);
  }
  const caveats: string[] = [];
  const contradictions: string[] = [];
  const guidelines = checkGuidelines(report, ok);
  if (fits.length === 0) {
    return {
      constraints,
      pick: null,
      alternatives: [],
      excluded,
      caveats: ['no measured method fits these constraints: raise the budget or measure on a smaller model'],
      contradictions,
      guidelines,
    };
  }
  const byQuality = [...fits].sort((a, b) => qualityKey(b) - qualityKey(a));
  const best = byQuality[0]!;
  const tied = byQuality.filter((m) => withinNoise(m, best));
  // the cost a method is judged by: storage when many adapters are kept, else training memory then step time
  const cost = (m: MethodRow): [number, number] =>
    constraints.tasks > 1 ? [storageFor(m, constraints.tasks), m.peak_train_rss_bytes!] : [m.peak_train_rss_bytes!, m.step_time_ms!];
  const cheaper = (a: MethodRow, b: MethodRow): number => {
    const [a1, a2] = cost(a);
    const [b1, b2] = cost(b);
    return a1 !== b1 ? a1 - b1 : a2 - b2;
  };
  let pick: MethodRow;
  let why: string;
  if (constraints.objective === 'quality') {
    // the best quality; among methods tied with it within noise, the cheapest
    pick = [...tied].sort(cheaper)[0]!;
    why =
      pick === best
        ? `highest measured quality (${qualityText(best)})${tied.length > 1 ? ` and the cheapest of the ${tied.length} methods within the metric's noise of it` : ''}`
        : `within the metric's noise of the best (${best.label} ${qualityText(best)}) and cheaper`;
  } else {
    // the cheapest method whose gain is at least 90% of the best gain (or tied with the best within noise)
    const bestGain = Math.max(...fits.map((m) => m.relative_gain ?? -Infinity));
    const good = fits.filter(
      (m) => withinNoise(m, best) || (m.relative_gain !== undefined && bestGain > 0 && m.relative_gain >= 0.9 * bestGain),
    );
    pick = [...good].sort(cheaper)[0]!;
    why = `the cheapest ${constraints.tasks > 1 ? `to keep ${constraints.tasks} adapters of` : 'to train'} among methods reaching at least 90% of the best gain or tied with the best within noise`;
  }
  const evidence = [
    `quality ${qualityText(pick)} (best: ${best.label} ${qualityText(best)})`,
    `${share(pick.trainable_share!)} of the parameters trained, step time ${pick.step_time_vs_full!.toFixed(2)}x full fine-tuning's`,
    `peak training memory ${formatBytes(pick.peak_train_rss_bytes!)} (${pick.peak_vs_full!.toFixed(2)}x full fine-tuning's)`,
    `stored per task ${formatBytes(pick.stored_bytes!)}${constraints.tasks > 1 ? `, ${formatBytes(storageFor(pick, constraints.tasks))} for ${constraints.tasks} tasks` : ''}`,
    `inference latency ${pick.inference_latency_ms!.toFixed(1)} ms (${pick.latency_vs_base!.toFixed(2)}x the base model)`,
  ];
  const alternatives = tied
    .filter((m) => m !== pick)
    .map((m) => ({
      method: m.method,
      label: m.label,
      note: `${qualityText(m)}, within noise of ${pick.label}; peak ${formatBytes(m.peak_train_rss_bytes!)}, stored ${formatBytes(m.stored_bytes!)} per task, ${share(m.trainable_share!)} trained`,
    }));
  if (tied.length >= Math.max(3, Math.ceil(fits.length / 2))) {
    caveats.push(
      `${tied.length} of ${fits.length} methods are within the metric's noise of the best (${tied.map((m) => m.label).join(', ')}): the quality ranking between them is not evidence; score more eval examples (--eval-limit) or train longer to separate them`,
    );
  }
  if (best.quality!.metric === 'eval_loss')
    caveats.push('quality here is eval loss, for which no per-example noise estimate is kept: differences under 1% are treated as ties');
  // the literature's default for this situation, and whether the pick departs from it
  const general =
    constraints.objective === 'quality'
      ? constraints.tasks > 1
        ? ['adapter', 'lora']
        : ['lora']
      : constraints.tasks > 1
        ? ['ia3', 'prompt', 'lora']
        : ['qlora', 'lora'];
  if (!general.includes(pick.method)) {
    const g = fits.find((m) => m.method === general[0]) ?? ok.find((m) => m.method === general[0]);
    const guideline =
      constraints.objective === 'quality'
        ? constraints.tasks > 1
          ? 'adapters (or LoRA) for quality across many tasks'
          : 'LoRA for quality on one task'
        : constraints.tasks > 1
          ? 'IA3 or soft prompts for many tasks at minimal cost'
          : 'QLoRA for efficiency';
    if (!g) contradictions.push(`the general guideline is ${guideline}, but ${general[0]} was not measured in this comparison`);
    else if (!fits.includes(g))
      contradictions.push(
        `the general guideline is ${guideline}; here ${g.label} is excluded: ${excluded.find((e) => e.method === g.method)?.why ?? 'it does not fit the constraints'}`,
      );
    else
      contradictions.push(
        `the general guideline is ${guideline}; here ${g.label} scores ${qualityText(g)}${withinNoise(g, pick) ? ` (within noise of ${pick.label}, which is cheaper by the measure above)` : ` against ${pick.label}'s ${qualityText(pick)}`}, peak ${formatBytes(g.peak_train_rss_bytes!)}, stored ${formatBytes(g.stored_bytes!)} per task`,
      );
  }
  return {
    constraints,
    pick: { method: pick.method, label: pick.label, why, evidence },
    alternatives,
    excluded,
    caveats,
    contradictions,
    guidelines,
  };
}

/** The literature's guidelines, each checked against this comparison's numbers. */
function checkGuidelines(report: ComparisonReport, ok: MethodRow[]): GuidelineCheck[] {
  const get = (m: string): MethodRow | undefined => ok.find((x) => x.method === m);
  const out: GuidelineCheck[] = [];
  const lora = get('lora');
  const full = get('full');
  const top = [...ok].sort((a, b) => qualityKey(b) - qualityKey(a))[0];
  const missing = (g: string, ...names: string[]): GuidelineCheck => ({
    guideline: g,
    verdict: 'not testable here',
    evidence: `needs ${names.join(' and ')} in --methods`,
  });
  const compareTo = (m: MethodRow, ref: MethodRow): string =>
    `${m.label} ${qualityText(m)} vs ${ref.label} ${qualityText(ref)}${withinNoise(m, ref) ? ' (within noise)' : ''}`;

  {
    const g = 'LoRA for quality on one task';
    if (!lora || !top) out.push(missing(g, 'lora'));
    else {
      const holds = withinNoise(lora, top) || lora === top;
      out.push({
        guideline: g,
        verdict: holds ? 'holds' : 'does not hold here',
        evidence: `${compareTo(lora, top)}, at ${share(lora.trainable_share!)} of the parameters${full && full !== top ? `; full fine-tuning ${qualityText(full)}` : ''}`,
      });
    }
  }
  {
    const g = 'QLoRA for efficiency (LoRA quality at a fraction of the memory)';
    const q = get('qlora');
    if (!q || !lora) out.push(missing(g, 'qlora', 'lora'));
    else {
      const memRatio = q.peak_train_rss_bytes! / lora.peak_train_rss_bytes!;
      const holds = withinNoise(q, lora) && memRatio < 0.9;
      out.push({
        guideline: g,
        verdict: holds ? 'holds' : 'does not hold here',
        evidence: `${compareTo(q, lora)}; peak training memory ${memRatio.toFixed(2)}x LoRA's${memRatio >= 0.9 ? ' (on a small model the runtime, not the frozen weights, dominates memory)' : ''}, step time ${(q.step_time_ms! / lora.step_time_ms!).toFixed(2)}x`,
      });
    }
  }
  for (const [method, g] of [
    ['ia3', 'IA3 for many tasks with few parameters'],
    ['prompt', 'soft prompts for many tasks at minimal cost'],
    ['adapter', 'adapters for many tasks when compute allows'],
  ] as const) {
    const m = get(method);
    if (!m || !lora) out.push(missing(g, method, 'lora'));
    else {
      const smaller = m.stored_bytes! < lora.stored_bytes!;
      const good = withinNoise(m, lora) || (m.relative_gain ?? 0) >= 0.6;
      out.push({
        guideline: g,
        verdict: smaller && good ? 'holds' : 'does not hold here',
        evidence: `${compareTo(m, lora)}; stored per task ${formatBytes(m.stored_bytes!)} vs LoRA's ${formatBytes(lora.stored_bytes!)}; gain ${m.relative_gain === undefined ? 'n/a' : `${(100 * m.relative_gain).toFixed(0)}%`} of the reference; flexibility ${m.flexibility!.value.toFixed(2)}`,
      });
    }
  }
  const classification = report.task.metric === 'accuracy' || report.task.classification === true;
  {
    const g = 'prefix tuning for generation';
    const p = get('prefix');
    const pr = get('prompt');
    if (classification)
      out.push({
        guideline: g,
        verdict: 'not testable here',
        evidence: `the task (${report.task.name}) is scored as classification; run peft compare on a generation task (e.g. --task arith or json)`,
      });
    else if (!p || !pr) out.push(missing(g, 'prefix', 'prompt'));
    else
      out.push({
        guideline: g,
        verdict: qualityKey(p) >= qualityKey(pr) || withinNoise(p, pr) ? 'holds' : 'does not hold here',
        evidence: `among soft-prompt methods on a generation task: ${compareTo(p, pr)}`,
      });
  }
  {
    const g = 'prompt tuning for classification';
    const pr = get('prompt');
    const p = get('prefix');
    if (!classification)
      out.push({
        guideline: g,
        verdict: 'not testable here',
        evidence: `the task (${report.task.name}) is scored by exact match or loss; run peft compare on a classification task (e.g. --task sentiment)`,
      });
    else if (!pr || !p) out.push(missing(g, 'prompt', 'prefix'));
    else
      out.push({
        guideline: g,
        verdict: qualityKey(pr) >= qualityKey(p) || withinNoise(pr, p) ? 'holds' : 'does not hold here',
        evidence: `among soft-prompt methods on a classification task: ${compareTo(pr, p)}${pr.quality!.chance !== undefined ? `; always answering the most common label scores ${pct(pr.quality!.chance)}` : ''}`,
      });
  }
  out.push({
    guideline: 'P-tuning where natural-language prompts matter',
    verdict: 'not testable here',
    evidence: 'the comparison trains every method on the same fixed prompt format; it has no measurement of sensitivity to prompt wording',
  });
  return out;
}

/** The advice as a Markdown section. */
export function adviceMarkdown(a: Advice): string {
  const c = a.constraints;
  const L: string[] = ['## Which method for you', ''];
  L.push(
    `Constraints: objective ${c.objective}; ${c.tasks} adapter${c.tasks === 1 ? '' : 's'} kept per base; memory budget ${c.memoryBudgetBytes === undefined ? 'none' : formatBytes(c.memoryBudgetBytes)}; latency budget ${c.latencyBudgetMs === undefined ? 'none' : `${c.latencyBudgetMs} ms`}. (Set with --objective, --tasks, --memory-budget, --latency-budget; recompute without training with \`peft compare --from DIR\`.)`,
    '',
  );
  if (a.pick) {
    L.push(`**Use ${a.pick.label}**: ${a.pick.why}.`, '');
    for (const e of a.pick.evidence) L.push(`- ${e}`);
    L.push('');
  } else L.push('**No measured method fits these constraints.**', '');
  if (a.alternatives.length) {
    L.push('Equally good within noise:', '');
    for (const x of a.alternatives) L.push(`- ${x.label}: ${x.note}`);
    L.push('');
  }
  if (a.excluded.length) {
    L.push('Ruled out:', '');
    for (const x of a.excluded) L.push(`- ${x.label}: ${x.why}`);
    L.push('');
  }
  for (const x of a.caveats) L.push(`Caveat: ${x}.`, '');
  for (const x of a.contradictions) L.push(`Against the general guideline: ${x}.`, '');
  L.push('### The general guidelines, checked here', '');
  L.push('| guideline | verdict | evidence |', '| --- | --- | --- |');
  for (const g of a.guidelines) L.push(`| ${g.guideline} | ${g.verdict} | ${g.evidence.replace(/\|/g, '\\|')} |`);
  L.push('');
  return L.join('\n');
}
