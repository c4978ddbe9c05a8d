// Measurements behind docs/QUANTIZATION.md: 4-bit quantization speed, memory held for a quantized
// Qwen2-0.5B-shaped model (random bf16 weights written to a temp folder), the per-run cost of
// in-graph dequantization, and the error NF4/FP4 add to the fixture models' logits.
//
//   npm run build && node dist/bench/quant.js            # all sections
//   node dist/bench/quant.js speed|model|step|error     # one section

import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Graph, type Value } from '../src/graph/ir.js';
import * as o from '../src/graph/ops.js';
import { type RawTensor, fromTypedArray, readSafetensors, toFloat32, writeSafetensors } from '../src/io/safetensors.js';
import { BuildContext } from '../src/nn/context.js';
import { loadModel } from '../src/models/load.js';
import type { PretrainedModel } from '../src/models/types.js';
import { RuntimeSession } from '../src/runtime/session.js';
import { dequantize4bit, quantize4bit } from '../src/quant/blockwise.js';
import { dequantizeInGraph } from '../src/quant/graph.js';
import type { QuantizationConfig } from '../src/quant/plan.js';
import { normals } from './random_weights.js';

const SELF = fileURLToPath(import.meta.url);
const FIXTURES = process.env.PEFT_FIXTURES ?? resolve(process.cwd(), 'test/fixtures/fixtures');

function cpuMs<T>(f: () => T): [T, number] {
  const c0 = process.cpuUsage();
  const r = f();
  const c = process.cpuUsage(c0);
  return [r, (c.user + c.system) / 1000];
}

function speed(): void {
  const rows = 4096;
  const cols = 4096;
  const n = rows * cols;
  const w = normals(n, 0.02, 7);
  console.log(`quantize4bit on a [${rows}, ${cols}] N(0, 0.02) matrix, CPU time per 1M parameters (best of 5, one thread):`);
  for (const [label, opts] of [
    ['nf4, double quant (default)', {}],
    ['nf4, single', { doubleQuant: false }],
    ['nf4, midpoint rounding', { rounding: 'midpoint' }],
    ['fp4, double quant', { type: 'fp4' }],
  ] as const) {
    let best = Infinity;
    for (let r = 0; r < 5; r++) best = Math.min(best, cpuMs(() => quantize4bit(w, [rows, cols], opts))[1]);
    console.log(`  ${label}: ${((best / n) * 1e6).toFixed(1)} ms per 1M (${((best / n) * 1e6).toFixed(2)} ns/param)`);
  }
  const q = quantize4bit(w, [rows, cols]);
  const out = new Float32Array(n);
  let best = Infinity;
  for (let r = 0; r < 5; r++) best = Math.min(best, cpuMs(() => dequantize4bit(q, out))[1]);
  console.log(`  dequantize4bit (host): ${((best / n) * 1e6).toFixed(1)} ms per 1M`);
}

// Qwen2-0.5B's shapes with a 32000-token vocabulary (the linear layers are the real ones).
const QWEN_LIKE = {
  architectures: ['Qwen2ForCausalLM'],
  model_type: 'qwen2',
  hidden_size: 896,
  intermediate_size: 4864,
  num_hidden_layers: 24,
  num_attention_heads: 14,
  num_key_value_heads: 2,
  vocab_size: 32000,
  max_position_embeddings: 32768,
  rms_norm_eps: 1e-6,
  rope_theta: 1000000.0,
  hidden_act: 'silu',
  tie_word_embeddings: true,
  torch_dtype: 'bfloat16',
  use_sliding_window: false,
};

async function writeQwenLike(dir: string): Promise<void> {
  if (existsSync(join(dir, 'model.safetensors'))) return;
  mkdirSync(dir, { recursive: true });
  const c = QWEN_LIKE;
  const H = c.hidden_size;
  const F = c.intermediate_size;
  const KV = (H / c.num_attention_heads) * c.num_key_value_heads;
  const t = new Map<string, RawTensor>();
  let seed = 1;
  const add = (name: string, shape: number[], std: number, ones = false) => {
    const n = shape.reduce((a, b) => a * b, 1);
    t.set(name, fromTypedArray(ones ? new Float32Array(n).fill(1) : normals(n, std, seed++), shape, 'BF16'));
  };
  add('model.embed_tokens.weight', [c.vocab_size, H], 0.02);
  add('model.norm.weight', [H], 0, true);
  for (let i = 0; i < c.num_hidden_layers; i++) {
    const p = `model.layers.${i}`;
    add(`${p}.input_layernorm.weight`, [H], 0, true);
    add(`${p}.post_attention_layernorm.weight`, [H], 0, true);
    add(`${p}.self_attn.q_proj.weight`, [H, H], 0.02);
    add(`${p}.self_attn.q_proj.bias`, [H], 0.02);
    add(`${p}.self_attn.k_proj.weight`, [KV, H], 0.02);
    add(`${p}.self_attn.k_proj.bias`, [KV], 0.02);
    add(`${p}.self_attn.v_proj.weight`, [KV, H], 0.02);
    add(`${p}.self_attn.v_proj.bias`, [KV], 0.02);
    add(`${p}.self_attn.o_proj.weight`, [H, H], 0.02);
    add(`${p}.mlp.gate_proj.weight`, [F, H], 0.02);
    add(`${p}.mlp.up_proj.weight`, [F, H], 0.02);
    add(`${p}.mlp.down_proj.weight`, [H, F], 0.02);
  }
  await writeSafetensors(join(dir, 'model.safetensors'), t, { format: 'pt' });
  writeFileSync(join(dir, 'config.json'), JSON.stringify(c, null, 2) + '\n');
}

function forwardGraph(model: PretrainedModel): { g: Graph; logits: Value } {
  const g = new Graph();
  const ctx = new BuildContext(g, model.weights);
  const out = model.forward(ctx, {
    inputIds: g.input('input_ids', 'int64', ['batch', 'seq']),
    attentionMask: g.input('attention_mask', 'int64', ['batch', 'seq']),
  });
  return { g, logits: out.logits };
}

const mib = (b: number) => (b / 2 ** 20).toFixed(0);

/** Child process: load the model (float or quantized), report time, bytes held and RSS, then one forward. */
async function modelChild(dir: string, mode: string): Promise<void> {
  const quantization: QuantizationConfig | undefined =
    mode === 'float' ? undefined : { bits: 4, type: mode as 'nf4' | 'fp4', doubleQuant: true };
  const rss0 = process.memoryUsage().rss;
  const t0 = performance.now();
  const c0 = process.cpuUsage();
  const model = await loadModel(dir, { quantization });
  const c = process.cpuUsage(c0);
  const loadMs = performance.now() - t0;
  globalThis.gc?.();
  const rssLoaded = process.memoryUsage().rss;
  const w = model.weights;
  const qn = new Set(w.quantizedNames());
  const linearParams = w.numel((n) => /layers\.\d+\.(self_attn|mlp)\.\w+_proj\.weight$/.test(n));
  const linearBytes = w.heldBytes((n) => /layers\.\d+\.(self_attn|mlp)\.\w+_proj\.weight$/.test(n));
  const { g, logits } = forwardGraph(model);
  const t1 = performance.now();
  const s = await RuntimeSession.fromGraph(g, { logits }, { threads: 1 });
  const sessMs = performance.now() - t1;
  const rssSession = process.memoryUsage().rss;
  const T = 32;
  const ids = { dtype: 'int64' as const, shape: [1, T], data: BigInt64Array.from({ length: T }, (_, i) => BigInt((i * 37) % 32000)) };
  const mask = { dtype: 'int64' as const, shape: [1, T], data: new BigInt64Array(T).fill(1n) };
  await s.run({ input_ids: ids, attention_mask: mask });
  const t2 = performance.now();
  await s.run({ input_ids: ids, attention_mask: mask });
  const runMs = performance.now() - t2;
  const rssRun = process.memoryUsage().rss;
  await s.dispose();
  console.log(
    JSON.stringify({
      mode,
      quantizedTensors: qn.size,
      linearParams,
      linearBytesPerParam: linearBytes / linearParams,
      heldMiB: Number(mib(w.heldBytes())),
      loadWallMs: Math.round(loadMs),
      loadCpuMs: Math.round((c.user + c.system) / 1000),
      rssBeforeMiB: Number(mib(rss0)),
      rssLoadedMiB: Number(mib(rssLoaded)),
      sessionCreateMs: Math.round(sessMs),
      rssSessionMiB: Number(mib(rssSession)),
      forward1x32Ms: Math.round(runMs),
      rssAfterRunMiB: Number(mib(rssRun)),
    }),
  );
}

async function modelSection(): Promise<void> {
  const dir = process.env.QUANT_BENCH_DIR ?? join(tmpdir(), 'peft-quant-bench-qwen2-0.5b-like');
  console.log(`Qwen2-0.5B-shaped model (24 layers, hidden 896, MLP 4864, GQA 14/2, vocab 32000, bf16 on disk) in ${dir}`);
  await writeQwenLike(dir);
  for (const mode of ['float', 'nf4', 'fp4']) {
    const r = spawnSync(process.execPath, ['--expose-gc', SELF, 'model-child', dir, mode], { encoding: 'utf8' });
    process.stdout.write(r.stdout);
    if (r.status !== 0) process.stderr.write(r.stderr);
  }
}

async function stepSection(): Promise<void> {
  const N = 2048;
  const K = 2048;
  const B = 16;
  const w = normals(N * K, 0.02, 3);
  const q = quantize4bit(w, [N, K]);
  const x = { dtype: 'float32' as const, shape: [B, K], data: normals(B * K, 1, 5) };
  console.log(`x[${B}, ${K}] @ W^T, W [${N}, ${K}], one thread, ms per run (best of 10):`);
  for (const mode of ['float32 constant', 'nf4 in-graph (pairs)', 'nf4 in-graph (bitops)'] as const) {
    const g = new Graph();
    const xi = g.input('x', 'float32', ['batch', K]);
    const W =
      mode === 'float32 constant'
        ? g.constant('w', 'float32', [N, K], w)
        : dequantizeInGraph(g, 'w', q, { unpack: mode.includes('pairs') ? 'pairs' : 'bitops' });
    const s = await RuntimeSession.fromGraph(g, { y: o.matmulT(xi, W) }, { threads: 1 });
    await s.run({ x });
    let best = Infinity;
    for (let r = 0; r < 10; r++) {
      const t0 = performance.now();
      await s.run({ x });
      best = Math.min(best, performance.now() - t0);
    }
    console.log(`  ${mode}: ${best.toFixed(1)} ms`);
    await s.dispose();
  }
}

async function errorSection(): Promise<void> {
  console.log('logits of the fixture batch: quantized model vs the same model in float32 (max / mean abs difference), loss change:');
  for (const name of ['gpt2', 'llama', 'bert']) {
    const dir = join(FIXTURES, 'models', name);
    const batch = await readSafetensors(join(dir, 'batch.safetensors'));
    const run = async (m: PretrainedModel) => {
      const { g, logits } = forwardGraph(m);
      const labels = g.input('labels', 'int64', m.task === 'seq-cls' ? ['batch'] : ['batch', 'seq']);
      const s = await RuntimeSession.fromGraph(g, { logits, loss: m.loss(logits, labels) }, { threads: 1 });
      const hostT = (t: RawTensor) => ({
        dtype: 'int64' as const,
        shape: t.shape,
        data: new BigInt64Array(t.data.buffer.slice(t.data.byteOffset, t.data.byteOffset + t.data.byteLength)),
      });
      const r = await s.run({
        input_ids: hostT(batch.get('input_ids')!),
        attention_mask: hostT(batch.get('attention_mask')!),
        labels: hostT(batch.get('labels')!),
      });
      await s.dispose();
      return { logits: r.logits!.data as Float32Array, loss: r.loss!.data[0] as number };
    };
    const { logits: ref, loss: refLoss } = await run(await loadModel(dir));
    const want = toFloat32((await readSafetensors(join(dir, 'expected_outputs.safetensors'))).get('logits')!);
    let scale = 0;
    for (const v of want) scale = Math.max(scale, Math.abs(v));
    for (const type of ['nf4', 'fp4'] as const) {
      const { logits: got, loss } = await run(await loadModel(dir, { quantization: { bits: 4, type } }));
      let max = 0;
      let sum = 0;
      for (let i = 0; i < ref.length; i++) {
        const d = Math.abs(got[i]! - ref[i]!);
        max = Math.max(max, d);
        sum += d;
      }
      console.log(
        `  ${name} ${type}: max ${max.toExponential(2)}, mean ${(sum / ref.length).toExponential(2)} (logits span +-${scale.toFixed(2)}); loss ${refLoss.toFixed(5)} -> ${loss.toFixed(5)}`,
      );
    }
  }
}

const [section, ...rest] = process.argv.slice(2);
if (section === 'model-child') await modelChild(rest[0]!, rest[1]!);
else {
  if (!section || section === 'speed') speed();
  if (!section || section === 'model') await modelSection();
  if (!section || section === 'step') await stepSection();
  if (!section || section === 'error') await errorSection();
}
