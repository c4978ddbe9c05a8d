// The tuner registry is the single list of methods: a toy method registered here (a learned
// per-output scale on chosen linear layers, mergeable into their weights) shows up in
// `peft train --method`, `peft info`, `peft merge`, `peft compare --methods`, createAdapter,
// getPeftModel and printTrainableParameters, with no other file edited.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Command } from 'commander';
import type { Value } from '../../src/graph/ir.js';
import * as o from '../../src/graph/ops.js';
import { fromTypedArray, writeSafetensors, type RawTensor } from '../../src/io/safetensors.js';
import { loadModel } from '../../src/models/load.js';
import type { ForwardArgs, ForwardResult, PretrainedModel } from '../../src/models/types.js';
import type { BuildContext, LinearSpec } from '../../src/nn/context.js';
import { register as registerTrain } from '../../src/cli/commands/train.js';
import { register as registerCompare } from '../../src/cli/commands/compare.js';
import { describe as describeFolder } from '../../src/cli/commands/info.js';
import { runMerge } from '../../src/cli/commands/merge.js';
import { adaptForComparison, methodSpec, parseMethods } from '../../src/compare/methods.js';
import { createAdapter, getPeftModel, loadAdapter, numParameters, printTrainableParameters } from '../../src/tuners/load.js';
import { type Tuner, methodNames, peftTypes, registerTuner, tunerOf } from '../../src/tuners/registry.js';
import type { AdaptedModel, TrainableTensor } from '../../src/tuners/types.js';
import { readAdapterTensors } from '../../src/tuners/lora/save.js';
import { fixturePath } from '../helpers/fixtures.js';
import { tempDir, writeSwapTask } from '../train/synthetic.js';

const llama = fixturePath('models', 'llama');

/** y = base(x) * s for each targeted module; s starts at 1. */
class ToyScaleModel implements AdaptedModel {
  readonly peftType = 'TOY_SCALE';
  constructor(
    readonly base: PretrainedModel,
    readonly targets: LinearSpec[],
    readonly scales: Map<string, TrainableTensor>,
  ) {}
  static create(base: PretrainedModel, fields: Record<string, unknown>): ToyScaleModel {
    const wanted = (fields.target_modules as string[] | undefined) ?? ['q_proj'];
    const targets = base.linears().filter((s) => wanted.some((t) => s.name.endsWith(`.${t}`)));
    return new ToyScaleModel(
      base,
      targets,
      new Map(targets.map((s) => [s.name, { shape: [s.outFeatures], data: new Float32Array(s.outFeatures).fill(1) }])),
    );
  }
  forward(ctx: BuildContext, args: ForwardArgs): ForwardResult {
    for (const s of this.targets) {
      const v: Value = ctx.param(`toy.${s.name}.scale`, [s.outFeatures]);
      ctx.linearHooks.set(s.name, (x, base) => o.mul(base(x), v));
    }
    return this.base.forward(ctx, args);
  }
  loss(logits: Value, labels: Value): Value {
    return this.base.loss(logits, labels);
  }
  parameters(): Map<string, TrainableTensor> {
    return new Map([...this.scales].map(([m, t]) => [`toy.${m}.scale`, t]));
  }
  decayParameters(): Set<string> {
    return new Set();
  }
  trainableBaseWeights(): Set<string> {
    return new Set();
  }
  async savePretrained(dir: string): Promise<void> {
    await mkdir(dir, { recursive: true });
    const tensors = new Map<string, RawTensor>([...this.scales].map(([m, t]) => [`${m}.scale`, fromTypedArray(t.data, t.shape)]));
    await writeSafetensors(join(dir, 'adapter_model.safetensors'), tensors);
    await writeFile(
      join(dir, 'adapter_config.json'),
      JSON.stringify({
        peft_type: 'TOY_SCALE',
        target_modules: [...new Set(this.targets.map((s) => s.name.split('.').pop()))],
        scale_init: 1,
      }),
    );
  }
  mergeAndUnload(): PretrainedModel {
    for (const s of this.targets) {
      const w = this.base.weights.get(`${s.name}.weight`);
      const v = this.scales.get(s.name)!.data;
      const data = Float32Array.from(w.data, (x, i) => x * v[Math.floor(i / s.inFeatures)]!);
      this.base.weights.set(`${s.name}.weight`, { shape: [...w.shape], data });
    }
    return this.base;
  }
}

const toyTuner: Tuner = {
  peftType: 'TOY_SCALE',
  label: 'toy scaling',
  mergeable: true,
  saves: 'adapter (adapter_config.json, adapter_model.safetensors)',
  infoSettings: ['target_modules', 'scale_init'],
  presets: [
    {
      name: 'toy',
      label: 'Toy scaling',
      learningRate: 1e-2,
      fields: { peft_type: 'TOY_SCALE', target_modules: ['q_proj', 'v_proj'] },
      flags: { target: 'target_modules' },
      settings: 'a learned scale per output of q_proj and v_proj',
      compareByDefault: false,
      folklore: { parameter: 'High', compute: 'High', space: 'High', performance: 'Low', flexibility: 'Low' },
    },
  ],
  create: async (base, fields) => ToyScaleModel.create(base, fields),
  fromPretrained: async (base, dir) => {
    const config = JSON.parse(await readFile(join(dir, 'adapter_config.json'), 'utf8')) as Record<string, unknown>;
    const m = ToyScaleModel.create(base, config);
    const file = await readAdapterTensors(dir);
    for (const [name, t] of m.scales) t.data.set(file.get(`${name}.scale`)!.data);
    return m;
  },
};

registerTuner(toyTuner);

test('every bundled method is registered, full fine-tuning last, and a name is registered once', () => {
  for (const t of ['LORA', 'IA3', 'PROMPT_TUNING', 'PREFIX_TUNING', 'P_TUNING', 'BOTTLENECK', 'TOY_SCALE'])
    assert.ok(peftTypes().includes(t), t);
  assert.equal(peftTypes().at(-1), 'FULL');
  assert.equal(methodNames().at(-1), 'full');
  for (const m of ['lora', 'qlora', 'ia3', 'prompt', 'prefix', 'ptuning', 'adapter', 'toy']) assert.ok(methodNames().includes(m), m);
  assert.throws(() => registerTuner(toyTuner), /already registered/);
  assert.equal(tunerOf('TOY_SCALE'), toyTuner);
});

test('a registered method trains through `peft train --method`, and info, merge and compare offer it', async () => {
  const task = await writeSwapTask();
  const out = join(task.dir, 'toy-out');
  const program = new Command().exitOverride();
  registerTrain(program);
  registerCompare(program);
  const train = program.commands.find((c) => c.name() === 'train')!;
  assert.ok(train.options.find((o) => o.long === '--method')!.argChoices!.includes('toy'));
  const compare = program.commands.find((c) => c.name() === 'compare')!;
  assert.match(compare.options.find((o) => o.long === '--methods')!.description, /toy/);
  await program.parseAsync(
    [
      'train',
      '--model',
      llama,
      '--method',
      'toy',
      '--target',
      'q_proj',
      '--data',
      task.train,
      '--out',
      out,
      '--steps',
      '2',
      '--threads',
      '1',
      '--no-eval-at-start',
    ],
    { from: 'user' },
  );
  const config = JSON.parse(await readFile(join(out, 'adapter_config.json'), 'utf8')) as Record<string, unknown>;
  assert.deepEqual(config.target_modules, ['q_proj'], 'the --target flag reached the preset field');

  // loadAdapter dispatches on the peft_type; training moved the scales off 1
  const base = await loadModel(llama);
  const loaded = (await loadAdapter(base, out)) as ToyScaleModel;
  assert.ok(loaded instanceof ToyScaleModel);
  assert.ok(
    [...loaded.scales.values()].some((t) => t.data.some((x) => Math.abs(x - 1) > 1e-6)),
    'trained',
  );

  // peft info: label, settings and counts from the registry
  const info = await describeFolder(out, { model: llama });
  assert.equal(info.kind, 'adapter');
  if (info.kind === 'adapter') {
    assert.equal(info.method, 'toy scaling');
    assert.deepEqual(Object.keys(info.settings), ['target_modules', 'scale_init']);
    assert.equal(
      info.trainable_parameters,
      [...loaded.scales.values()].reduce((n, t) => n + t.data.length, 0),
    );
  }

  // peft merge: the registry says it merges; the merged q_proj rows are scaled
  const merged = join(await tempDir(), 'merged');
  await runMerge({ model: llama, adapter: out, out: merged });
  const got = (await loadModel(merged)).weights.get('model.layers.0.self_attn.q_proj.weight').data;
  const orig = (await loadModel(llama)).weights.get('model.layers.0.self_attn.q_proj.weight');
  const s = loaded.scales.get('model.layers.0.self_attn.q_proj')!.data;
  const inF = orig.shape[1]!;
  let d = 0;
  for (let i = 0; i < got.length; i++) d = Math.max(d, Math.abs(got[i]! - orig.data[i]! * s[Math.floor(i / inF)]!));
  assert.ok(d < 1e-6, `merged weight differs by ${d}`);

  // peft compare: a method name with the preset's defaults
  assert.deepEqual(parseMethods(['full', 'toy', 'lora']), ['lora', 'toy', 'full']);
  assert.equal(methodSpec('toy').label, 'Toy scaling');
  assert.ok((await adaptForComparison(await loadModel(llama), 'toy', 0, llama)) instanceof ToyScaleModel);
});

test('createAdapter and getPeftModel take any method; printTrainableParameters counts every method', async () => {
  const base = await loadModel(llama);
  const toy = await createAdapter(base, { peft_type: 'TOY_SCALE', target_modules: ['k_proj'] });
  assert.ok(toy instanceof ToyScaleModel);
  const viaGet = await getPeftModel(base, { peftType: 'TOY_SCALE', targetModules: ['k_proj'] });
  assert.deepEqual([...viaGet.parameters().keys()], [...toy.parameters().keys()]);
  const n = [...toy.parameters().values()].reduce((a, t) => a + t.data.length, 0);
  assert.deepEqual(numParameters(toy), { trainable: n, all: base.weights.numel() + n });
  const lines: string[] = [];
  printTrainableParameters(toy, (l) => lines.push(l));
  assert.match(lines[0]!, /^trainable params: [\d,]+ \|\| all params: [\d,]+ \|\| trainable%: \d+\.\d{4}$/);
  // every bundled method through one call
  const ia3 = await getPeftModel(base, { peftType: 'IA3' });
  assert.equal(ia3.peftType, 'IA3');
  const full = await getPeftModel(await loadModel(llama), { peftType: 'FULL', targetModules: ['q_proj'] });
  assert.deepEqual(numParameters(full).all, base.weights.numel());
  const lora = await getPeftModel(base, { r: 2, targetModules: ['q_proj'] });
  assert.match(
    printTrainableParameters(lora, () => undefined),
    /^trainable params: /,
  );
  await assert.rejects(getPeftModel(base, { peftType: 'NOPE' }), /peft_type "NOPE" is not supported/);
});
