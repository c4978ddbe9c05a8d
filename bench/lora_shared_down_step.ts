// Whole-step A/B of LoraModel.sharedDownGroups in one process: two TrainSteps of the same adapted
// random model (TrainStep's defaults, int8 base unless told), one built with the shared lora_A
// product and one without, run alternately on the same batch, so the other jobs' load falls on
// both alike. Prints each one's median and lowest step time.
//   node dist/bench/lora_shared_down_step.js [--model llama] [--method lora-all] [--runs 6] [--base-precision int8]
import type { Batch } from '../src/train/batches.js';
import { TrainStep } from '../src/train/step.js';
import { loraSharedDown } from '../src/tuners/lora/index.js';
import { adaptForBench, randomBenchModel } from './train_models.js';

const argv = process.argv.slice(2);
const opt = (k: string, d: string) => (argv.includes(`--${k}`) ? argv[argv.indexOf(`--${k}`) + 1]! : d);
const base = randomBenchModel(opt('model', 'llama'));
const adapted = await adaptForBench(base, opt('method', 'lora-all'));
const basePrecision = opt('base-precision', 'int8') as 'int8' | 'fp32';
const runs = Number(opt('runs', '6'));
const steps: TrainStep[] = [];
for (const enabled of [false, true]) {
  loraSharedDown.enabled = enabled;
  steps.push(await TrainStep.compile(adapted, { threads: 2, basePrecision, spinning: false }));
}
const [B, S] = [4, 256];
const ids = BigInt64Array.from({ length: B * S }, (_, i) => BigInt((i * 7919) % base.vocabSize));
const batch: Batch = { size: B, seq: S, inputIds: ids, attentionMask: new BigInt64Array(B * S).fill(1n), labels: ids, tokens: B * S };
const params = adapted.parameters();
const times: number[][] = [[], []];
const cpus: number[][] = [[], []];
const losses: number[][] = [[], []];
for (let i = 0; i <= runs; i++) {
  for (const j of i % 2 ? [1, 0] : [0, 1]) {
    const c0 = process.cpuUsage();
    const t0 = performance.now();
    const r = await steps[j]!.run(batch, params);
    const c = process.cpuUsage(c0);
    if (i === 0) continue; // warm-up
    times[j]!.push((performance.now() - t0) / 1000);
    cpus[j]!.push((c.user + c.system) / 1e6);
    losses[j]!.push(r.loss);
  }
}
const med = (a: number[]) => [...a].sort((p, q) => p - q)[a.length >> 1]!;
for (const j of [0, 1])
  console.log(
    `${j ? 'shared' : 'per module'}: step median ${med(times[j]!).toFixed(2)} s, lowest ${Math.min(...times[j]!).toFixed(2)} s, CPU median ${med(cpus[j]!).toFixed(2)} s, loss ${losses[j]![0]!.toFixed(6)}; steps ${times[j]!.map((t) => t.toFixed(2)).join(' ')}`,
  );
await Promise.all(steps.map((s) => s.dispose()));
