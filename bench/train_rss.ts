// Peak RSS of a short `Trainer` run (LoRA q/v, evaluation at start and end) on a random-weight
// GPT-2-small- or SmolLM-135M-shaped model read from a float32 safetensors folder, as `peft train`
// loads a model: with --base-precision int8 the trainer releases the float32 arrays of the
// matrices the train and eval steps hold only as int8 (issue #19). One JSON line on stdout.
//
//   node dist/bench/train_rss.js --model gpt2 --base-precision int8 --steps 2 --batch 4 --seq 256

import * as fs from 'node:fs';
import * as path from 'node:path';
import { loadModel } from '../src/models/load.js';
import type { BasePrecision } from '../src/nn/context.js';
import type { TokenizedExample } from '../src/train/data.js';
import { Trainer } from '../src/train/trainer.js';
import { getPeftModel } from '../src/tuners/load.js';
import { BENCH_CONFIGS, randomModelFolder } from './train_models.js';

const args = process.argv.slice(2);
const flag = (k: string, d: string): string => {
  const i = args.indexOf(k);
  return i >= 0 && args[i + 1] !== undefined ? args[i + 1]! : d;
};
const model = flag('--model', 'gpt2');
const precision = flag('--base-precision', 'int8') as BasePrecision;
const steps = Number(flag('--steps', '2'));
const batch = Number(flag('--batch', '4'));
const seq = Number(flag('--seq', '256'));
const threads = Number(flag('--threads', '2'));

const mib = (b: number): number => Math.round(b / 2 ** 20);

const dir = randomModelFolder(model);
try {
  // loaded as `peft train` loads it: on the int8 base the linear layers' matrices stay on disk
  const base = await loadModel(dir, { deferLinearWeights: precision === 'int8' });
  const targets = base.family === 'llama' ? ['q_proj', 'v_proj'] : ['c_attn'];
  const adapted = await getPeftModel(base, { r: 8, loraAlpha: 16, targetModules: targets }, { seed: 0 });
  const vocab = (BENCH_CONFIGS[model] as { vocab_size: number }).vocab_size;
  let x = 12345;
  const row = (): TokenizedExample => {
    const ids = Array.from({ length: seq }, () => ((x = (x * 1103515245 + 12345) % 2147483648), x % vocab));
    return { inputIds: ids, labels: ids };
  };
  const train = Array.from({ length: batch * steps }, row);
  const evalRows = Array.from({ length: batch }, row);
  const afterLoad = process.memoryUsage().rss;
  const out = path.join(dir, 'out');
  const t0 = performance.now();
  const r = await new Trainer(adapted, train, evalRows, {
    outputDir: out,
    padTokenId: 0,
    learningRate: 1e-4,
    maxSteps: steps,
    batchSize: batch,
    runtime: { threads, basePrecision: precision },
  }).train();
  console.log(
    JSON.stringify({
      model,
      basePrecision: precision,
      batch,
      seq,
      steps,
      rssAfterLoadMiB: mib(afterLoad),
      peakRssMiB: Math.round(process.resourceUsage().maxRSS / 1024),
      releasedFloat32MiB: mib(base.weights.releasedNames().reduce((s, n) => s + 4 * base.weights.numel((k) => k === n), 0)),
      evalLoss: [r.initialEvalLoss, r.finalEvalLoss],
      seconds: Math.round((performance.now() - t0) / 100) / 10,
    }),
  );
} finally {
  fs.rmSync(dir, { recursive: true, force: true });
}
