// Bottleneck adapters against AdapterHub `adapters` 0.2.2: every fixture case reproduces its
// logits, hidden states and loss; saved folders are the library's byte for byte and reload;
// gradients of the adapter placements match finite differences; U = 0 is the base model; training
// lowers the eval loss; unsupported options and pickle-only folders fail with typed errors.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { copyFile, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { loadModel } from '../../../src/models/load.js';
import * as o from '../../../src/graph/ops.js';
import { Graph, type Value } from '../../../src/graph/ir.js';
import { BuildContext } from '../../../src/nn/context.js';
import { readSafetensors, toFloat32, writeSafetensors } from '../../../src/io/safetensors.js';
import {
  AdapterFormatError,
  BottleneckModel,
  type BnConfig,
  adapterFunction,
  bottleneckLocation,
  doubleSeqBnConfig,
  isAdapterHubFolder,
  loadBottleneck,
  parBnConfig,
  pythonFloatRepr,
  seqBnConfig,
} from '../../../src/tuners/bottleneck/index.js';
import { PeftConfigError } from '../../../src/tuners/types.js';
import { fixtureBatch, fixturePath, inTempDir, maxAbsDiff, readTensors } from '../../helpers/fixtures.js';
import { gradCheck } from '../../helpers/gradcheck.js';
import { Trainer } from '../../../src/train/trainer.js';
import { classificationBatches, countingExamples, runAdapted, runBase, trainAndEval } from '../adapted_run.js';

const CASES = ['gpt2', 'llama', 'bert'].flatMap((m) => ['bn_seq', 'bn_double_seq', 'bn_par'].map((c) => [m, c] as const));

function withTmp<T>(fn: (dir: string) => Promise<T>): Promise<T> {
  return inTempDir('bn-', fn);
}

for (const [model, name] of CASES) {
  test(`${model}/${name}: logits, hidden states and loss match adapters 0.2.2; save/load round trip`, async () => {
    const caseDir = fixturePath('adapters', model, name);
    const base = await loadModel(fixturePath('models', model));
    const batch = await fixtureBatch(model);
    const expected = await readTensors('adapters', model, name, 'expected_outputs.safetensors');
    const bn = await loadBottleneck(base, caseDir);
    const r = await runAdapted(bn, batch);
    for (const key of Object.keys(r)) {
      if (key === 'loss') continue;
      const d = maxAbsDiff(r[key]!.data as Float32Array, toFloat32(expected.get(key)!));
      assert.ok(d < 1e-4, `${key}: max abs diff ${d}`);
    }
    const wantLoss = toFloat32(expected.get('loss')!)[0]!;
    const loss = r.loss!.data[0] as number;
    assert.ok(Math.abs(loss - wantLoss) / Math.abs(wantLoss) < 1e-5, `loss ${loss} vs ${wantLoss}`);

    await withTmp(async (dir) => {
      const withHead = model === 'bert' || name === 'bn_seq';
      await bn.savePretrained(dir, { withHead });
      for (const f of ['adapter_config.json', 'adapter.safetensors', ...(withHead ? ['head_config.json', 'model_head.safetensors'] : [])]) {
        const mine = await readFile(join(dir, f));
        const theirs = await readFile(join(caseDir, f));
        assert.ok(mine.equals(theirs), `${f} differs from the adapters file`);
      }
      const again = await loadBottleneck(await loadModel(fixturePath('models', model)), dir);
      const r2 = await runAdapted(again, batch);
      assert.deepEqual(r2.logits!.data, r.logits!.data);
      assert.equal(r2.loss!.data[0], r.loss!.data[0]);
    });
  });
}

test('bottleneck: a new adapter with U = 0 reproduces the base model exactly', async () => {
  for (const model of ['gpt2', 'llama', 'bert']) {
    const base = await loadModel(fixturePath('models', model));
    const batch = await fixtureBatch(model);
    const b = await runBase(base, batch);
    for (const config of [seqBnConfig(), doubleSeqBnConfig({ reductionFactor: 8 }), parBnConfig()]) {
      const bn = BottleneckModel.create(base, { config, name: 'fresh', seed: 3 });
      for (const s of bn.sites) {
        assert.ok(s.tensors['adapter_up.weight'].data.every((x) => x === 0));
        assert.ok(s.tensors['adapter_down.0.weight'].data.some((x) => x !== 0));
      }
      const r = await runAdapted(bn, batch);
      // x + 0 is x, but the adapter's extra nodes change which patterns ONNX Runtime fuses around
      // them (e.g. BERT's residual Add + LayerNorm), so float32 results may differ in the last bit.
      const d = maxAbsDiff(r.logits!.data as Float32Array, b.logits!.data as Float32Array);
      assert.ok(d <= 1e-6, `${model} ${config.isParallel ? 'par' : config.mhAdapter ? 'double' : 'seq'}: max abs diff ${d}`);
    }
  }
});

test('bottleneck: gradients of every placement match finite differences (float64)', async () => {
  const H = 5;
  const B = 3;
  const cases: [string, BnConfig, boolean][] = [
    ['seq, no LN', seqBnConfig({ nonLinearity: 'relu' }), false],
    ['seq + LN', seqBnConfig({ nonLinearity: 'swish' }), true],
    ['seq + LN, post_add', seqBnConfig({ nonLinearity: 'tanh', residualBeforeLn: 'post_add' }), true],
    ['seq, residual after LN', seqBnConfig({ nonLinearity: 'gelu', residualBeforeLn: false }), true],
    ['double_seq + LN', doubleSeqBnConfig({ nonLinearity: 'gelu' }), true],
    ['double_seq, no LN', doubleSeqBnConfig({ nonLinearity: 'silu' }), false],
    ['par + LN', parBnConfig({ nonLinearity: 'relu' }), true],
    ['par, no LN, no LN after', parBnConfig({ nonLinearity: 'swish', originalLnAfter: false }), false],
  ];
  for (const [label, config, withNorm] of cases) {
    await gradCheck(
      {
        h: { shape: [2, H] },
        x: { shape: [2, H] },
        downW: { shape: [B, H] },
        downB: { shape: [B] },
        upW: { shape: [H, B] },
        upB: { shape: [H] },
        lnW: { shape: [H] },
        lnB: { shape: [H] },
      },
      (p) => {
        // LayerNorm as a composition (float64 throughout), as torch's layer_norm computes it
        const norm = (t: Value): Value => {
          const mu = o.mean(t, -1, true);
          const d = o.sub(t, mu);
          const v = o.mean(o.mul(d, d), -1, true);
          return o.add(o.mul(o.div(d, o.sqrt(o.add(v, 1e-5))), p.lnW!), p.lnB!);
        };
        const w = { downWeight: p.downW!, downBias: p.downB!, upWeight: p.upW!, upBias: p.upB! };
        const A = (z: Value): Value => adapterFunction(z, w, config.nonLinearity, config.scaling as number).out;
        return bottleneckLocation(config, { output: p.h!, residual: p.x!, norm: withNorm ? norm : undefined }, A).out;
      },
      // ONNX Runtime's Erf is float32-only (see test/graph/ops.test.ts): exact GELU gets the coarser check.
      config.nonLinearity === 'gelu' ? { eps: 1e-3, rtol: 2e-3, atol: 1e-4 } : { rtol: 1e-5, atol: 1e-7 },
    ).catch((e: Error) => {
      throw new Error(`${label}: ${e.message}`);
    });
  }
});

test('bottleneck: training lowers the eval loss (gpt2 SeqBn with src/train Trainer, bert DoubleSeqBn + classifier)', async () => {
  const gpt2 = await loadModel(fixturePath('models', 'gpt2'));
  const lm = BottleneckModel.create(gpt2, { config: seqBnConfig({ reductionFactor: 8, dropout: 0.1 }), seed: 1 });
  await withTmp(async (dir) => {
    // src/train's Trainer (dropout masks fed by it) on the counting task
    const r = await new Trainer(lm, countingExamples(1, 32, 12, 100, 40), countingExamples(99, 8, 12, 100, 40), {
      outputDir: dir,
      padTokenId: 0,
      learningRate: 0.01,
      schedule: 'constant',
      maxSteps: 30,
      batchSize: 8,
      runtime: { threads: 1 },
    }).train();
    assert.ok(r.finalEvalLoss! < r.initialEvalLoss! - 0.1, `gpt2 eval loss ${r.initialEvalLoss} -> ${r.finalEvalLoss}`);
  });

  const bert = await loadModel(fixturePath('models', 'bert'));
  const cls = BottleneckModel.create(bert, { config: doubleSeqBnConfig({ reductionFactor: 8, nonLinearity: 'gelu' }), seed: 2 });
  assert.ok(cls.trainHead);
  assert.ok(cls.parameters().has('classifier.weight'));
  const c = await trainAndEval(
    cls,
    classificationBatches(3, 4, 16, 8, 50, 200),
    classificationBatches(77, 1, 16, 8, 50, 200)[0]!,
    30,
    0.02,
  );
  assert.ok(c.after < c.before - 0.05, `bert eval loss ${c.before} -> ${c.after}`);
  // the trained classifier is saved as the head and comes back
  await withTmp(async (dir) => {
    await cls.savePretrained(dir);
    const again = await loadBottleneck(await loadModel(fixturePath('models', 'bert')), dir);
    assert.deepEqual(again.headWeights().get('classifier.weight')!.data, cls.headWeights().get('classifier.weight')!.data);
  });
});

test('bottleneck: folder detection, bare-model keys, load_as, and typed errors', async () => {
  assert.equal(await isAdapterHubFolder(fixturePath('adapters', 'gpt2', 'bn_seq')), true);
  assert.equal(await isAdapterHubFolder(fixturePath('adapters', 'gpt2', 'ia3')), false);
  const base = await loadModel(fixturePath('models', 'gpt2'));
  const batch = await fixtureBatch('gpt2');
  const caseDir = fixturePath('adapters', 'gpt2', 'bn_double_seq');
  const ref = await runAdapted(await loadBottleneck(base, caseDir), batch);
  await withTmp(async (dir) => {
    // keys of an adapter saved from a bare GPT2Model ("h.0...."), renamed on load
    await copyFile(join(caseDir, 'adapter_config.json'), join(dir, 'adapter_config.json'));
    const t = await readSafetensors(join(caseDir, 'adapter.safetensors'));
    await writeSafetensors(join(dir, 'adapter.safetensors'), new Map([...t].map(([k, v]) => [k.replace(/^transformer\./, ''), v])));
    const bn = await loadBottleneck(base, dir, { loadAs: 'renamed' });
    assert.ok([...bn.parameters().keys()].every((k) => k.startsWith('transformer.h.') && k.includes('.adapters.renamed.')));
    const r = await runAdapted(bn, batch);
    assert.deepEqual(r.logits!.data, ref.logits!.data);
  });
  await withTmp(async (dir) => {
    await copyFile(join(caseDir, 'adapter_config.json'), join(dir, 'adapter_config.json'));
    await copyFile(join(caseDir, 'pytorch_adapter.bin'), join(dir, 'pytorch_adapter.bin'));
    await assert.rejects(
      loadBottleneck(base, dir),
      (e: Error) => e instanceof AdapterFormatError && /safetensors/.test(e.message) && /save_file/.test(e.message),
    );
    // a config whose shapes disagree with the weights
    const cfg = JSON.parse(await readFile(join(caseDir, 'adapter_config.json'), 'utf8'));
    cfg.config.reduction_factor = 4;
    await writeFile(join(dir, 'adapter_config.json'), JSON.stringify(cfg));
    await copyFile(join(caseDir, 'adapter.safetensors'), join(dir, 'adapter.safetensors'));
    await assert.rejects(loadBottleneck(base, dir), /shape/);
    // fields of later adapters versions: accepted when off, refused when they ask for something
    cfg.config.reduction_factor = 8;
    cfg.config.stochastic_depth = 0;
    await writeFile(join(dir, 'adapter_config.json'), JSON.stringify(cfg));
    assert.equal((await loadBottleneck(base, dir)).config.extra?.stochastic_depth, 0);
    cfg.config.stochastic_depth = 0.1;
    await writeFile(join(dir, 'adapter_config.json'), JSON.stringify(cfg));
    await assert.rejects(loadBottleneck(base, dir), (e: Error) => e instanceof PeftConfigError && /stochastic_depth/.test(e.message));
  });
  assert.throws(
    () => seqBnConfig({ lnBefore: true }),
    (e: Error) => e instanceof PeftConfigError && /ln_before/.test(e.message),
  );
  assert.throws(
    () => seqBnConfig({ mhAdapter: false, outputAdapter: false }),
    (e: Error) => e instanceof PeftConfigError && /no location/.test(e.message),
  );
  assert.throws(
    () => seqBnConfig({ nonLinearity: 'elu' }),
    (e: Error) => e instanceof PeftConfigError && /relu/.test(e.message),
  );
  assert.throws(() => seqBnConfig({ scaling: 'learned' }), PeftConfigError);
  assert.throws(
    () => BottleneckModel.create(base, { config: seqBnConfig({ leaveOut: [7] }) }),
    (e: Error) => e instanceof PeftConfigError && /2 layers/.test(e.message),
  );
  // adapter dropout becomes a keep-mask input in training graphs only
  for (const training of [false, true]) {
    const g = new Graph();
    const ctx = new BuildContext(g, base.weights, { training });
    const m = BottleneckModel.create(base, { config: seqBnConfig({ dropout: 0.1 }), name: 'drop' });
    m.forward(ctx, {
      inputIds: g.input('input_ids', 'int64', ['batch', 'seq']),
      attentionMask: g.input('attention_mask', 'int64', ['batch', 'seq']),
    });
    assert.deepEqual(
      [...ctx.dropoutMasks.keys()],
      training
        ? [
            'transformer.h.0.output_adapters.adapters.drop.dropout.keep_mask',
            'transformer.h.1.output_adapters.adapters.drop.dropout.keep_mask',
          ]
        : [],
    );
  }
  // leave_out skips layers
  const partial = BottleneckModel.create(base, { config: doubleSeqBnConfig({ leaveOut: [0] }) });
  assert.deepEqual(
    partial.sites.map((s) => `${s.layer}.${s.location}`),
    ['1.mh_adapter', '1.output_adapter'],
  );
});

test('bottleneck: Python float formatting of config values', () => {
  assert.equal(pythonFloatRepr(1), '1.0');
  assert.equal(pythonFloatRepr(4), '4.0');
  assert.equal(pythonFloatRepr(0.0001), '0.0001');
  assert.equal(pythonFloatRepr(0.00001), '1e-05');
  assert.equal(pythonFloatRepr(0.1), '0.1');
  assert.equal(pythonFloatRepr(1e16), '1e+16');
  assert.equal(pythonFloatRepr(123.456), '123.456');
  assert.equal(pythonFloatRepr(-2.5e-7), '-2.5e-07');
});
