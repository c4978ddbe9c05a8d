// What LoRA dropout costs a training step: the SmolLM-135M-shaped random model with LoRA r 8 on
// every linear layer at batch 4 x seq 256, one step with lora_dropout 0 and one with 0.05 (each in
// this process, one after the other), and the time spent drawing the keep-masks
// (src/train/keepmask.ts) measured apart.
//
//   node dist/bench/dropout_masks.js [--model llama|gpt2] [--steps 3] [--threads 2]

import type { Batch } from '../src/train/batches.js';
import { drawKeepMask } from '../src/train/keepmask.js';
import { Rng } from '../src/train/rng.js';
import { TrainStep } from '../src/train/step.js';
import { createAdapter } from '../src/tuners/load.js';
import { allLinearTargets, noise, randomBenchModel } from './train_models.js';

const args = process.argv.slice(2);
const opt = (k: string, d: string) => (args.includes(`--${k}`) ? args[args.indexOf(`--${k}`) + 1]! : d);
const model = opt('model', 'llama');
const steps = Number(opt('steps', '3'));
const threads = Number(opt('threads', '2'));
const [B, S] = [4, 256];

const base = randomBenchModel(model);
const targets = allLinearTargets(base);
const ids = BigInt64Array.from(noise(B * S, 1, 3), (x) => BigInt(Math.floor((x / Math.sqrt(12) + 0.5) * base.vocabSize) % base.vocabSize));
const batch: Batch = { size: B, seq: S, inputIds: ids, attentionMask: new BigInt64Array(B * S).fill(1n), labels: ids, tokens: B * S };
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

for (const dropout of [0, 0.05]) {
  const adapted = await createAdapter(base, {
    peft_type: 'LORA',
    r: 8,
    lora_alpha: 16,
    lora_dropout: dropout,
    target_modules: targets,
    task_type: 'CAUSAL_LM',
  });
  const step = await TrainStep.compile(adapted, { threads });
  const params = adapted.parameters();
  const rng = Rng.fromSeed(1);
  const times: number[] = [];
  for (let i = 0; i < steps + 1; i++) {
    const t = performance.now();
    await step.run(batch, params, { rng });
    if (i > 0) times.push((performance.now() - t) / 1000);
  }
  console.log(
    `${model} LoRA all-linear, dropout ${dropout}: ${median(times).toFixed(3)} s/step (median of ${steps} after 1 warm-up), ${step.dropoutRatios.length} keep-masks`,
  );
  await step.dispose();
}

// the masks alone: one step's worth (each LoRA input, [B, S, in]), refilled in place as TrainStep does
const suffix = new RegExp(`\\.(${targets.join('|')})$`);
const sizes = base
  .linears()
  .filter((l) => suffix.test(l.name))
  .map((l) => B * S * l.inFeatures);
const total = sizes.reduce((a, b) => a + b, 0);
const rng = Rng.fromSeed(2);
const bufs: (Uint8Array | undefined)[] = sizes.map(() => undefined);
for (let rep = 0; rep < 3; rep++) {
  const t = performance.now();
  sizes.forEach((n, i) => (bufs[i] = drawKeepMask(rng, n, 0.05, bufs[i])));
  const dt = performance.now() - t;
  console.log(
    `keep-masks for one step (${sizes.length} masks, ${(total / 1e6).toFixed(1)}M bytes)${rep ? ', refilled' : ', first (fresh pages)'}: ${dt.toFixed(0)} ms, ${((dt / total) * 1e6).toFixed(2)} ns/byte`,
  );
}
const r2 = Rng.fromSeed(2);
const old = new Uint8Array(20_000_000).fill(1); // pages touched first, as for the refilled masks
const t = performance.now();
for (let i = 0; i < old.length; i++) old[i] = r2.nextFloat() >= 0.05 ? 1 : 0;
const ns = ((performance.now() - t) * 1e6) / old.length;
console.log(
  `the per-element JavaScript draw it replaces (keep[i] = rng.nextFloat() >= ratio): ${ns.toFixed(2)} ns/byte, ${((ns * total) / 1e9).toFixed(2)} s for one step's masks`,
);
