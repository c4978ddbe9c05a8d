// Issue 16's unmerged-LoRA gate under load: bench/decode.ts's GPT-2-small int8 configurations
// (merged = the base; LoRA r16 on c_attn, c_proj, c_fc unmerged, its tensors baked into the
// sessions or fed per step), interleaved round by round, each round one 64-token greedy
// generation per configuration. On a machine shared with other jobs the least disturbed round
// (minimum decode ms per step) is the best estimate of each configuration's own cost; medians and
// process CPU ms per token are printed too. With --steps, each decode step is timed on its own
// (DecoderSessions.decode, the JS feeds included): per configuration the minimum, 10th percentile
// and median step, which a busy machine disturbs less than whole generations. Not a RESULTS.md
// writer: bench/decode.ts is the record.
//
//   npx tsc -p . && nice -n 10 node dist/bench/decode_gate.js --rounds 15 [--steps]

import * as fs from 'node:fs';
import { Generator, type InferenceModel } from '../src/generate/index.js';
import type { RuntimeOptions } from '../src/runtime/session.js';
import { LoraModel } from '../src/tuners/lora/index.js';
import { DecoderSessions } from '../src/generate/sessions.js';
import { noise, randomBenchModel } from './train_models.js';
import { median } from './peer.js';
import { forEachFlag, helpOrUnknown, intArg } from './args.js';

const HELP = `usage: node dist/bench/decode_gate.js [options]
  --rounds N     interleaved rounds (default 15)
  --threads N    ONNX Runtime intra-op threads (default 2)
  --only A,B     configurations whose label contains one of A, B
  --steps        time every decode step (DecoderSessions) instead of whole generations`;
let ROUNDS = 15;
let THREADS = 2;
let ONLY = '';
let STEPS = false;
forEachFlag(process.argv.slice(2), (flag, value) => {
  if (flag === '--rounds') ROUNDS = intArg(flag, value(), 1);
  else if (flag === '--steps') STEPS = true;
  else if (flag === '--threads') THREADS = intArg(flag, value(), 1);
  else if (flag === '--only') ONLY = value();
  else helpOrUnknown(flag, HELP);
});
const NEW = 64;
const PROMPT = 32;
const loadavg = (): string => fs.readFileSync('/proc/loadavg', 'utf8').split(' ').slice(0, 3).join(' ');

async function main(): Promise<void> {
  console.log(`load average at start: ${loadavg()}`);
  const base = randomBenchModel('gpt2');
  const prompt = Array.from(noise(PROMPT, 1, 11), (x) => Math.floor((x / Math.sqrt(12) + 0.5) * base.vocabSize) % base.vocabSize);
  const lora = await LoraModel.create(
    base,
    { r: 16, loraAlpha: 32, targetModules: ['c_attn', 'c_proj', 'c_fc'], initLoraWeights: false },
    { seed: 1 },
  );
  if (STEPS) return steps(base, lora, prompt);
  const defaults = { eosTokenIds: [], doSample: false, temperature: 1, topK: 0, topP: 1 };
  const want = (l: string): boolean => !ONLY || ONLY.split(',').some((o) => l.includes(o));
  const configs: { label: string; gen: Generator; decode: number[]; total: number[]; cpu: number[] }[] = [];
  for (const spinning of [false, true]) {
    const rt: RuntimeOptions = { threads: THREADS, quantize: 'int8', spinning };
    const s = spinning ? 'spinning' : 'no spinning';
    const list: [string, InferenceModel, 'frozen' | 'fed'][] = [
      [`merged, ${s}`, base, 'fed'],
      [`LoRA baked, ${s}`, lora, 'frozen'],
      [`LoRA fed, ${s}`, lora, 'fed'],
    ];
    for (const [label, model, adapterTensors] of list) {
      if (!want(label)) continue;
      const gen = await Generator.create(model, { runtime: rt, defaults, adapterTensors });
      await gen.generate([prompt], { maxNewTokens: NEW });
      configs.push({ label, gen, decode: [], total: [], cpu: [] });
    }
  }
  for (let r = 0; r < ROUNDS; r++) {
    for (const c of configs) {
      const c0 = process.cpuUsage();
      const g = await c.gen.generate([prompt], { maxNewTokens: NEW });
      const cpu = process.cpuUsage(c0);
      c.decode.push(g.stats.decodeMs / (NEW - 1));
      c.total.push((g.stats.decodeMs + g.stats.prefillMs) / NEW);
      c.cpu.push((cpu.user + cpu.system) / 1000 / NEW);
    }
  }
  console.log(`load average at end: ${loadavg()}`);
  console.log('| configuration | decode ms/step min | median | ms/new token (prefill incl.) min | median | CPU ms/token min | median |');
  console.log('|---|---:|---:|---:|---:|---:|---:|');
  for (const c of configs) {
    const f = (xs: number[]): string => `${Math.min(...xs).toFixed(2)} | ${median(xs).toFixed(2)}`;
    console.log(`| ${c.label} | ${f(c.decode)} | ${f(c.total)} | ${f(c.cpu)} |`);
  }
  for (const s of ['no spinning', 'spinning']) {
    const m = configs.find((c) => c.label === `merged, ${s}`);
    if (!m) continue;
    for (const c of configs.filter((x) => x !== m && x.label.endsWith(`, ${s}`))) {
      const ratio = (k: 'decode' | 'total' | 'cpu', f: (x: number[]) => number): string => (f(m[k]) / f(c[k])).toFixed(3);
      const min = (x: number[]): number => Math.min(...x);
      console.log(
        `${c.label} / merged (tok/s ratio): decode min ${ratio('decode', min)}, median ${ratio('decode', median)}; with prefill min ${ratio('total', min)}, median ${ratio('total', median)}; CPU min ${ratio('cpu', min)}, median ${ratio('cpu', median)}`,
      );
    }
  }
  for (const c of configs) await c.gen.dispose();
}

/** --steps: per-step wall times of DecoderSessions.decode, configurations interleaved generation by generation. */
async function steps(base: InferenceModel, lora: InferenceModel, prompt: number[]): Promise<void> {
  const want = (l: string): boolean => !ONLY || ONLY.split(',').some((o) => l.includes(o));
  const configs: { label: string; s: DecoderSessions; times: number[] }[] = [];
  for (const spinning of [false, true]) {
    const rt: RuntimeOptions = { threads: THREADS, quantize: 'int8', spinning };
    const sp = spinning ? 'spinning' : 'no spinning';
    const list: [string, InferenceModel, boolean][] = [
      [`merged, ${sp}`, base, false],
      [`LoRA baked, ${sp}`, lora, true],
      [`LoRA fed, ${sp}`, lora, false],
    ];
    for (const [label, model, frozen] of list)
      if (want(label)) configs.push({ label, s: await DecoderSessions.create(model, rt, { frozen }), times: [] });
  }
  const P = prompt.length;
  const once = async (c: (typeof configs)[number], record: boolean): Promise<void> => {
    const params = c.s.params();
    const ones = (n: number): BigInt64Array => new BigInt64Array(n).fill(1n);
    let { cache } = await c.s.prefill(
      {
        batch: 1,
        seq: P,
        inputIds: BigInt64Array.from(prompt, BigInt),
        attentionMask: ones(P),
        positionIds: BigInt64Array.from(prompt.keys(), BigInt),
      },
      params,
    );
    for (let t = 0; t < NEW - 1; t++) {
      const t0 = performance.now();
      ({ cache } = await c.s.decode(
        {
          batch: 1,
          seq: 1,
          inputIds: BigInt64Array.of(BigInt((t * 31 + 7) % 1000)),
          attentionMask: ones(P + t + 1),
          positionIds: BigInt64Array.of(BigInt(P + t)),
        },
        cache,
        params,
      ));
      if (record) c.times.push(performance.now() - t0);
    }
  };
  for (const c of configs) await once(c, false);
  for (let r = 0; r < ROUNDS; r++) for (const c of configs) await once(c, true);
  console.log(`load average at end: ${loadavg()}`);
  const q = (xs: number[], p: number): number => [...xs].sort((a, b) => a - b)[Math.floor(p * (xs.length - 1))]!;
  console.log('| configuration | steps | step ms min | p10 | p25 | median |');
  console.log('|---|---:|---:|---:|---:|---:|');
  for (const c of configs)
    console.log(
      `| ${c.label} | ${c.times.length} | ${q(c.times, 0).toFixed(2)} | ${q(c.times, 0.1).toFixed(2)} | ${q(c.times, 0.25).toFixed(2)} | ${q(c.times, 0.5).toFixed(2)} |`,
    );
  for (const sp of ['no spinning', 'spinning']) {
    const m = configs.find((c) => c.label === `merged, ${sp}`);
    if (!m) continue;
    for (const c of configs.filter((x) => x !== m && x.label.endsWith(`, ${sp}`))) {
      const r = (p: number): string => (q(m.times, p) / q(c.times, p)).toFixed(3);
      console.log(`${c.label} / merged (tok/s ratio): min ${r(0)}, p10 ${r(0.1)}, p25 ${r(0.25)}, median ${r(0.5)}`);
    }
  }
  for (const c of configs) await c.s.dispose();
}

main().catch((e: unknown) => {
  console.error(e instanceof Error ? (e.stack ?? e.message) : e);
  process.exit(1);
});
