// Benchmark: batch-1 greedy KV-cache decoding of a GPT-2-small-shaped model (random weights, built
// in memory) as the server runs it: the plain (or merged) model, one LoRA adapter unmerged
// (LoraModel), and the same adapter through the mixed-adapter model (both strategies). 32-token
// prompt, 64 new tokens; medians of --runs timed runs after one warm-up. Also the mixed-batch
// forward strategies at batch 8 over 3 adapters. Prints a markdown block for bench/RESULTS.md.
//
//   npx tsc -p . && node dist/bench/serve_decode.js [--runs 3] [--threads 2] [--weights shared|prepacked]

import { Generator, ForwardSession, type InferenceModel } from '../src/generate/index.js';
import type { PretrainedModel } from '../src/models/types.js';
import type { RuntimeOptions } from '../src/runtime/session.js';
import { LoraModel } from '../src/tuners/lora/index.js';
import { MultiAdapterModel, type MixedStrategy } from '../src/tuners/multi/index.js';
import { randomBenchModel } from './train_models.js';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

function arg(name: string, dflt: string): string {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? process.argv[i + 1]! : dflt;
}
const RUNS = Number(arg('runs', '3'));
const THREADS = Number(arg('threads', '2'));
const WEIGHTS = arg('weights', 'prepacked') as 'shared' | 'prepacked';
const runtime: RuntimeOptions = { threads: THREADS, weights: WEIGHTS };
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

function ids(n: number, vocab: number, seed: number): number[] {
  let s = seed;
  return Array.from({ length: n }, () => ((s = (s * 1103515245 + 12345) % 2 ** 31), s % vocab));
}

async function decode(
  model: InferenceModel,
  vocab: number,
  adapters?: string[],
): Promise<{ tokS: number; decodeTokS: number; prefillMs: number }> {
  const gen = await Generator.create(model, { runtime, defaults: { eosTokenIds: [], doSample: false, temperature: 1, topK: 0, topP: 1 } });
  const prompt = ids(32, vocab, 11);
  const once = () => gen.generate([prompt], { maxNewTokens: 64, adapters });
  await once();
  const rs = [];
  for (let i = 0; i < RUNS; i++) rs.push((await once()).stats);
  await gen.dispose();
  const total = median(rs.map((s) => (s.prefillMs + s.decodeMs) / 1000));
  const pre = median(rs.map((s) => s.prefillMs));
  return { tokS: 64 / total, decodeTokS: 63 / (total - pre / 1000), prefillMs: pre };
}

async function mixedForward(base: PretrainedModel, dirs: Record<string, string>, strategy: MixedStrategy): Promise<number> {
  const m = await MultiAdapterModel.fromFolders(base, dirs, { strategy });
  const f = await ForwardSession.create(m, { runtime });
  const B = 8;
  const S = 64;
  const x = BigInt64Array.from(ids(B * S, base.vocabSize, 5).map(BigInt));
  const names = Object.keys(dirs);
  const batch = {
    inputIds: { dtype: 'int64' as const, shape: [B, S], data: x },
    attentionMask: { dtype: 'int64' as const, shape: [B, S], data: new BigInt64Array(B * S).fill(1n) },
    adapterIndex: { dtype: 'int64' as const, shape: [B], data: m.rowIndex(Array.from({ length: B }, (_, i) => names[i % names.length]!)) },
  };
  await f.run(batch);
  const ts = [];
  for (let i = 0; i < RUNS; i++) {
    const t0 = performance.now();
    await f.run(batch);
    ts.push(performance.now() - t0);
  }
  await f.dispose();
  return median(ts);
}

async function main(): Promise<void> {
  const base = randomBenchModel('gpt2');
  const dir = await mkdtemp(join(tmpdir(), 'peft-serve-bench-'));
  try {
    const lines: string[] = [];
    const say = (s: string) => {
      console.log(s);
      lines.push(s);
    };
    const targets = ['c_attn', 'c_proj', 'c_fc'];
    const dirs: Record<string, string> = {};
    for (const [i, r] of [16, 8, 4].entries()) {
      const l = await LoraModel.create(base, { r, loraAlpha: 2 * r, targetModules: targets, initLoraWeights: false }, { seed: i + 1 });
      await l.savePretrained((dirs[`a${i}`] = join(dir, `a${i}`)));
    }
    const plain = await decode(base, base.vocabSize);
    say(`| base / merged | ${plain.tokS.toFixed(1)} | ${plain.decodeTokS.toFixed(1)} | ${plain.prefillMs.toFixed(0)} | 1.00x |`);
    const lora = await LoraModel.fromPretrained(base, dirs.a0!);
    const un = await decode(lora, base.vocabSize);
    say(
      `| LoRA r16 unmerged (LoraModel) | ${un.tokS.toFixed(1)} | ${un.decodeTokS.toFixed(1)} | ${un.prefillMs.toFixed(0)} | ${(un.tokS / plain.tokS).toFixed(2)}x |`,
    );
    for (const strategy of ['concat', 'gather'] as MixedStrategy[]) {
      const m = await MultiAdapterModel.fromFolders(base, { a0: dirs.a0! }, { strategy });
      const r = await decode(m, base.vocabSize, ['a0']);
      say(
        `| LoRA r16 unmerged, mixed-adapter model (${strategy}) | ${r.tokS.toFixed(1)} | ${r.decodeTokS.toFixed(1)} | ${r.prefillMs.toFixed(0)} | ${(r.tokS / plain.tokS).toFixed(2)}x |`,
      );
    }
    for (const strategy of ['concat', 'gather'] as MixedStrategy[]) {
      const ms = await mixedForward(base, dirs, strategy);
      say(`| mixed forward 8x64, 3 adapters (r16/8/4 on c_attn, c_proj, c_fc), ${strategy} | ${ms.toFixed(0)} ms |`);
    }
    console.log(`\n(threads ${THREADS}, weights ${WEIGHTS}, ${RUNS} runs)`);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

await main();
