// QLoRA: LoRA (plain, DoRA, rsLoRA, dropout) over a 4-bit NF4 (double-quant) frozen base. Its forward
// pass and its gradients equal, within 1e-5, LoRA in float32 on the model whose weights were replaced
// by their NF4 round trip; the backward rebuilds each 4-bit weight; and the Trainer fine-tunes it.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Graph } from '../../../../src/graph/ir.js';
import { grad } from '../../../../src/autodiff/grad.js';
import { Tokenizer } from '../../../../src/io/tokenizer.js';
import { loadModel } from '../../../../src/models/load.js';
import type { PretrainedModel } from '../../../../src/models/types.js';
import { BuildContext } from '../../../../src/nn/context.js';
import { RuntimeSession } from '../../../../src/runtime/session.js';
import { collate } from '../../../../src/train/batches.js';
import { parseJsonl, prepareExamples, tokenizeRecords } from '../../../../src/train/data.js';
import { Rng } from '../../../../src/train/rng.js';
import { TrainStep } from '../../../../src/train/step.js';
import { Trainer } from '../../../../src/train/trainer.js';
import { type LoraConfig } from '../../../../src/tuners/lora/index.js';
import { getPeftModel } from '../../../../src/tuners/load.js';
import type { LoraModel } from '../../../../src/tuners/lora/model.js';
import { fixturePath, host, maxAbsDiff, readTensors } from '../../../helpers/fixtures.js';
import { jsonl, swapRecords, tempDir } from '../../../train/synthetic.js';

const NF4 = { bits: 4, type: 'nf4', doubleQuant: true, blockSize: 64 } as const;

/** The quantized model, and the float32 model whose weights are their NF4 round trip. */
async function pair(family: string): Promise<{ q: PretrainedModel; ref: PretrainedModel }> {
  const dir = fixturePath('models', family);
  const q = await loadModel(dir, { quantization: NF4 });
  const ref = await loadModel(dir);
  for (const w of q.weights.quantizedNames()) ref.weights.set(w, q.weights.dequantized(w));
  return { q, ref };
}

async function logits(m: LoraModel, family: string): Promise<Float32Array> {
  const batch = await readTensors('models', family, 'batch.safetensors');
  const g = new Graph();
  const ctx = new BuildContext(g, m.base.weights, { trainable: m.trainableBaseWeights() });
  const inputIds = g.input('input_ids', 'int64', ['batch', 'seq']);
  const attentionMask = g.input('attention_mask', 'int64', ['batch', 'seq']);
  const out = m.forward(ctx, { inputIds, attentionMask });
  const s = await RuntimeSession.fromGraph(g, { logits: out.logits }, { threads: 2 });
  try {
    const feeds: Record<string, ReturnType<typeof host>> = {
      input_ids: host(batch.get('input_ids')!),
      attention_mask: host(batch.get('attention_mask')!),
    };
    for (const [k, t] of m.parameters()) feeds[k] = { dtype: 'float32', shape: t.shape, data: t.data };
    return (await s.run(feeds)).logits!.data as Float32Array;
  } finally {
    await s.dispose();
  }
}

const CASES: { family: string; config: Partial<LoraConfig> }[] = [
  {
    family: 'llama',
    config: {
      r: 8,
      loraAlpha: 16,
      initLoraWeights: false,
      loraDropout: 0.1,
      targetModules: ['q_proj', 'k_proj', 'v_proj', 'o_proj', 'gate_proj', 'up_proj', 'down_proj'],
    },
  },
  // GPT-2's Conv1D weights are quantized transposed; DoRA needs the dequantized matrix for its norm.
  {
    family: 'gpt2',
    config: { r: 4, loraAlpha: 8, initLoraWeights: false, useDora: true, useRslora: true, targetModules: ['c_attn', 'c_proj', 'c_fc'] },
  },
];

for (const { family, config } of CASES) {
  test(`${family}: QLoRA forward equals float32 LoRA on the NF4 round-tripped model (${config.useDora ? 'DoRA, rsLoRA' : 'LoRA, dropout'})`, async () => {
    const { q, ref } = await pair(family);
    const mq = await getPeftModel(q, config, { seed: 3 });
    const mr = await getPeftModel(ref, config, { seed: 3 });
    const a = await logits(mq, family);
    const b = await logits(mr, family);
    const d = maxAbsDiff(a, b);
    assert.ok(d <= 1e-5, `${family}: logits differ by ${d}`);
    // the adapter does change the output (B is not zero with init_lora_weights=false)
    const plain = await logits(await getPeftModel(ref, { ...config, initLoraWeights: true }, { seed: 3 }), family);
    assert.ok(maxAbsDiff(a, plain) > 1e-3);
  });

  test(`${family}: QLoRA gradients equal float32 LoRA's on the NF4 round-tripped model`, async () => {
    const { q, ref } = await pair(family);
    const mq = await getPeftModel(q, config, { seed: 5 });
    const mr = await getPeftModel(ref, config, { seed: 5 });
    const rows = Array.from({ length: 3 }, (_, b) => {
      const ids = Array.from({ length: 12 }, (_, i) => (29 * b + 7 * i + 2) % 300);
      return { inputIds: ids, labels: ids.map((t, i) => (i < 2 ? -100 : t)) };
    });
    const batch = collate(rows, 0);
    const sq = await TrainStep.compile(mq, { threads: 2 });
    const sr = await TrainStep.compile(mr, { threads: 2 });
    try {
      const gq = await sq.run(batch, mq.parameters(), { rng: Rng.fromSeed(11) });
      const gr = await sr.run(batch, mr.parameters(), { rng: Rng.fromSeed(11) });
      assert.ok(Math.abs(gq.loss - gr.loss) <= 1e-5, `loss ${gq.loss} vs ${gr.loss}`);
      let worst = 0;
      for (const [name, g] of gr.grads) {
        const d = maxAbsDiff(gq.grads.get(name)!, g);
        worst = Math.max(worst, d);
        assert.ok(d <= 1e-5, `${name}: gradients differ by ${d}`);
      }
      assert.ok(worst >= 0);
    } finally {
      await sq.dispose();
      await sr.dispose();
    }
  });
}

test('the backward pass multiplies by a rebuilt 4-bit weight, never by a float32 copy held from the forward', async () => {
  const { q } = await pair('llama');
  const m = await getPeftModel(q, { r: 4, targetModules: ['q_proj', 'v_proj'] });
  const g = new Graph();
  const ctx = new BuildContext(g, q.weights, { training: true });
  const ids = g.input('input_ids', 'int64', ['batch', 'seq']);
  const out = m.forward(ctx, { inputIds: ids, attentionMask: g.input('attention_mask', 'int64', ['batch', 'seq']) });
  const loss = m.loss(out.logits, g.input('labels', 'int64', ['batch', 'seq']));
  const forwardNodes = g.nodes.length;
  const params = [...ctx.params.values()];
  grad(loss, params);
  const backward = g.nodes.slice(forwardNodes);
  const rebuilt = backward.filter((n) => n.op === 'QuantMatMul');
  // every quantized layer above the first adapted one passes a gradient down through its weight
  assert.ok(rebuilt.length >= q.weights.quantizedNames().length - 3, `${rebuilt.length} backward products`);
  for (const n of rebuilt) assert.equal((n.attrs as { transB: boolean }).transB, false);
  // no float32 matrix is built outside QuantMatMul (no standalone dequantization, no MatMulT on a weight)
  assert.equal(g.nodes.filter((n) => n.scope.endsWith('.dequant')).length, 0);
  const forward = g.nodes.slice(0, forwardNodes);
  assert.equal(forward.filter((n) => n.op === 'QuantMatMul').length, q.weights.quantizedNames().length);
  for (const n of [...forward, ...backward]) {
    if (n.op === 'MatMulT' || n.op === 'MatMul')
      for (const v of n.inputs) assert.ok(v.kind !== 'const' || v.dtype !== 'uint8', `${n.op} reads 4-bit data`);
  }
});

test('gradient checkpointing: the same loss and gradients, the layers recomputed in the backward pass', async () => {
  for (const { family, config } of CASES) {
    const { q } = await pair(family);
    const m = await getPeftModel(q, config, { seed: 7 });
    const rows = Array.from({ length: 2 }, (_, b) => {
      const ids = Array.from({ length: 10 }, (_, i) => (31 * b + 11 * i + 5) % 300);
      return { inputIds: ids, labels: ids };
    });
    const batch = collate(rows, 0);
    const plain = await TrainStep.compile(m, { threads: 2 });
    const ckpt = await TrainStep.compile(m, { threads: 2, gradientCheckpointing: true });
    try {
      const a = await plain.run(batch, m.parameters(), { rng: Rng.fromSeed(3) });
      const b = await ckpt.run(batch, m.parameters(), { rng: Rng.fromSeed(3) });
      assert.ok(Math.abs(a.loss - b.loss) <= 1e-6, `${family}: loss ${a.loss} vs ${b.loss}`);
      for (const [name, g] of a.grads) {
        const d = maxAbsDiff(b.grads.get(name)!, g);
        assert.ok(d <= 1e-6, `${family} ${name}: gradients differ by ${d}`);
      }
    } finally {
      await plain.dispose();
      await ckpt.dispose();
    }
  }
});

test('QLoRA fine-tune through the Trainer lowers the eval loss on the swap task', async () => {
  const dir = fixturePath('models', 'llama');
  const tok = await Tokenizer.fromDir(dir);
  const { examples } = tokenizeRecords(parseJsonl(jsonl(swapRecords())), tok);
  const rows = prepareExamples(examples, { maxLength: 32 }).examples;
  const base = await loadModel(dir, { quantization: NF4 });
  assert.ok(base.weights.quantizedNames().length > 0);
  const model = await getPeftModel(
    base,
    {
      r: 8,
      loraAlpha: 16,
      loraDropout: 0.05,
      targetModules: ['q_proj', 'k_proj', 'v_proj', 'o_proj', 'gate_proj', 'up_proj', 'down_proj', 'lm_head'],
    },
    { seed: 0 },
  );
  const out = await tempDir('peft-qlora-');
  const r = await new Trainer(model, rows.slice(0, 48), rows.slice(48), {
    outputDir: out,
    padTokenId: tok.padTokenId ?? tok.eosTokenId!,
    learningRate: 1e-2,
    maxSteps: 30,
    batchSize: 8,
    evalEvery: 30,
    runtime: { threads: 2 },
  }).train();
  assert.ok(r.finalEvalLoss! < 0.7 * r.initialEvalLoss!, `eval loss ${r.initialEvalLoss} -> ${r.finalEvalLoss}`);
});
