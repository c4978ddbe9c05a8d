// QLoRA vs LoRA: one training step (forward + backward, one session.run) of LoRA over a float32
// base and over a 4-bit NF4 (double quant) base, on random-weight models of real shapes: bytes held
// for the frozen weights, peak RSS during the steps, and tokens/s. Each run is a fresh process.
//
//   npm run build && node dist/bench/qlora.js [smollm|qwen|all] [--batch 4] [--seq 256] [--steps 2]
//        [--modes lora,qlora,qlora-bnb4,qlora-dequantize] [--threads 2] [--vocab N]
//   node dist/bench/qlora.js merge     # errors of the two QLoRA merges and of adapter compression
//
// Modes: lora (float32 base), qlora (QuantMatMul, dequantization as ONNX ops), qlora-bnb4 (forward
// through ONNX Runtime's MatMulBnb4 kernel), qlora-dequantize (the pre-QuantMatMul graph: each
// weight dequantized once and multiplied with MatMulT, so its float32 copy lives until the backward);
// any mode with "+ckpt" (lora+ckpt, qlora+ckpt) adds gradient checkpointing.

import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { cpus, loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { type RawTensor, fromTypedArray, writeSafetensors } from '../src/io/safetensors.js';
import { loadModel } from '../src/models/load.js';
import type { QuantKernel } from '../src/quant/matmul.js';
import { collate } from '../src/train/batches.js';
import { TrainStep } from '../src/train/step.js';
import { COMPRESSION_METADATA_KEY, COMPRESSION_METHODS, LoraModel, parseCompressionReport } from '../src/tuners/lora/index.js';
import { getPeftModel } from '../src/tuners/load.js';
import { adapterMetadata } from '../src/tuners/lora/save.js';
import { Graph } from '../src/graph/ir.js';
import { Tokenizer } from '../src/io/tokenizer.js';
import type { PretrainedModel } from '../src/models/types.js';
import { BuildContext } from '../src/nn/context.js';
import { type HostTensor, RuntimeSession } from '../src/runtime/session.js';
import { type Batch } from '../src/train/batches.js';
import { parseJsonl, prepareExamples, tokenizeRecords } from '../src/train/data.js';
import { Trainer } from '../src/train/trainer.js';
import { normals } from './random_weights.js';

const SELF = fileURLToPath(import.meta.url);

interface Shape {
  label: string;
  config: Record<string, unknown>;
}

const SHAPES: Record<string, Shape> = {
  smollm: {
    label: 'SmolLM-135M shape (30 layers, hidden 576, MLP 1536, GQA 9/3, vocab 49152, tied)',
    config: {
      architectures: ['LlamaForCausalLM'],
      model_type: 'llama',
      hidden_size: 576,
      intermediate_size: 1536,
      num_hidden_layers: 30,
      num_attention_heads: 9,
      num_key_value_heads: 3,
      vocab_size: 49152,
      max_position_embeddings: 2048,
      rms_norm_eps: 1e-5,
      rope_theta: 10000.0,
      hidden_act: 'silu',
      tie_word_embeddings: true,
      torch_dtype: 'bfloat16',
      attention_bias: false,
      mlp_bias: false,
    },
  },
  qwen: {
    label: 'Qwen2-0.5B shape (24 layers, hidden 896, MLP 4864, GQA 14/2, tied; vocab cut to 32000)',
    config: {
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
    },
  },
};

/** A random N(0, 0.02) bf16 checkpoint of the shape (written once, reused by every run). */
async function writeModel(dir: string, c: Record<string, number | unknown>): Promise<void> {
  if (existsSync(join(dir, 'model.safetensors'))) return;
  mkdirSync(dir, { recursive: true });
  const H = c.hidden_size as number;
  const F = c.intermediate_size as number;
  const KV = (H / (c.num_attention_heads as number)) * (c.num_key_value_heads as number);
  const qwen = c.model_type === 'qwen2';
  const t = new Map<string, RawTensor>();
  let seed = 1;
  const add = (name: string, shape: number[], std: number, ones = false) => {
    const n = shape.reduce((a, b) => a * b, 1);
    t.set(name, fromTypedArray(ones ? new Float32Array(n).fill(1) : normals(n, std, seed++), shape, 'BF16'));
  };
  add('model.embed_tokens.weight', [c.vocab_size as number, H], 0.02);
  add('model.norm.weight', [H], 0, true);
  for (let i = 0; i < (c.num_hidden_layers as number); i++) {
    const p = `model.layers.${i}`;
    add(`${p}.input_layernorm.weight`, [H], 0, true);
    add(`${p}.post_attention_layernorm.weight`, [H], 0, true);
    add(`${p}.self_attn.q_proj.weight`, [H, H], 0.02);
    add(`${p}.self_attn.k_proj.weight`, [KV, H], 0.02);
    add(`${p}.self_attn.v_proj.weight`, [KV, H], 0.02);
    if (qwen) {
      add(`${p}.self_attn.q_proj.bias`, [H], 0.02);
      add(`${p}.self_attn.k_proj.bias`, [KV], 0.02);
      add(`${p}.self_attn.v_proj.bias`, [KV], 0.02);
    }
    add(`${p}.self_attn.o_proj.weight`, [H, H], 0.02);
    add(`${p}.mlp.gate_proj.weight`, [F, H], 0.02);
    add(`${p}.mlp.up_proj.weight`, [F, H], 0.02);
    add(`${p}.mlp.down_proj.weight`, [H, F], 0.02);
  }
  await writeSafetensors(join(dir, 'model.safetensors'), t, { format: 'pt' });
  writeFileSync(join(dir, 'config.json'), JSON.stringify(c, null, 2) + '\n');
}

const MIB = 2 ** 20;

/** VmHWM (peak RSS) and VmRSS of this process, in bytes. */
function procMemory(): { hwm: number; rss: number } {
  const s = readFileSync('/proc/self/status', 'utf8');
  const kb = (k: string) => Number(new RegExp(`${k}:\\s+(\\d+) kB`).exec(s)?.[1] ?? NaN) * 1024;
  return { hwm: kb('VmHWM'), rss: kb('VmRSS') };
}

/** Resets VmHWM to the current RSS (Linux clear_refs 5), so the next peak is the steps' own. */
function resetPeak(): boolean {
  try {
    writeFileSync('/proc/self/clear_refs', '5');
    return true;
  } catch {
    return false;
  }
}

interface Args {
  batch: number;
  seq: number;
  steps: number;
  threads: number;
  r: number;
}

async function child(dir: string, mode: string, a: Args): Promise<void> {
  // "<mode>+ckpt": the same with gradient checkpointing (each decoder layer recomputed in the backward pass)
  const ckpt = mode.endsWith('+ckpt');
  const base_ = ckpt ? mode.slice(0, -'+ckpt'.length) : mode;
  const quantized = base_ !== 'lora';
  const kernel: QuantKernel = base_ === 'qlora-bnb4' ? 'bnb4' : base_ === 'qlora-dequantize' ? 'dequantize' : 'ops';
  const t0 = performance.now();
  const base = await loadModel(dir, quantized ? { quantization: { bits: 4, type: 'nf4', doubleQuant: true, blockSize: 64 } } : {});
  const loadS = (performance.now() - t0) / 1000;
  const linear = (n: string) => /layers\.\d+\.(self_attn|mlp)\.\w+_proj\.weight$/.test(n);
  const frozenBytes = base.weights.heldBytes();
  const linearBytes = base.weights.heldBytes(linear);
  const model = await getPeftModel(
    base,
    {
      r: a.r,
      loraAlpha: 2 * a.r,
      loraDropout: 0,
      targetModules: ['q_proj', 'k_proj', 'v_proj', 'o_proj', 'gate_proj', 'up_proj', 'down_proj'],
    },
    { seed: 0 },
  );
  let trainable = 0;
  for (const t of model.parameters().values()) trainable += t.data.length;
  const vocab = base.config.vocabSize;
  const rows = Array.from({ length: a.batch }, (_, b) => {
    const ids = Array.from({ length: a.seq }, (_, i) => (7919 * b + 104729 * i + 13) % vocab);
    return { inputIds: ids, labels: ids };
  });
  const batch = collate(rows, 0);
  const t1 = performance.now();
  const step = await TrainStep.compile(model, { threads: a.threads, quantKernel: kernel, gradientCheckpointing: ckpt });
  const compileS = (performance.now() - t1) / 1000;
  const params = model.parameters();
  globalThis.gc?.();
  // one warm-up step (ORT's first run plans memory and allocates its arena)
  const w0 = performance.now();
  await step.run(batch, params);
  const warmS = (performance.now() - w0) / 1000;
  globalThis.gc?.();
  const before = procMemory();
  const reset = resetPeak();
  let wall = 0;
  let cpu = 0;
  let loss = NaN;
  for (let i = 0; i < a.steps; i++) {
    const c0 = process.cpuUsage();
    const s0 = performance.now();
    loss = (await step.run(batch, params)).loss;
    wall += performance.now() - s0;
    const c = process.cpuUsage(c0);
    cpu += (c.user + c.system) / 1000;
  }
  const after = procMemory();
  const maxRss = process.resourceUsage().maxRSS * 1024;
  await step.dispose();
  const tokens = a.batch * a.seq;
  console.log(
    JSON.stringify({
      mode,
      kernel: quantized ? kernel : null,
      gradientCheckpointing: ckpt,
      frozenMiB: +(frozenBytes / MIB).toFixed(1),
      linearFrozenMiB: +(linearBytes / MIB).toFixed(1),
      trainable,
      loadS: +loadS.toFixed(1),
      compileS: +compileS.toFixed(1),
      warmupStepS: +warmS.toFixed(1),
      rssBeforeStepsMiB: +(before.rss / MIB).toFixed(0),
      peakRssStepsMiB: reset ? +(after.hwm / MIB).toFixed(0) : null,
      peakRssProcessMiB: +(maxRss / MIB).toFixed(0),
      stepS: +(wall / a.steps / 1000).toFixed(2),
      stepCpuS: +(cpu / a.steps / 1000).toFixed(2),
      tokensPerS: +((tokens * a.steps) / (wall / 1000)).toFixed(1),
      tokensPerCpuS: +((tokens * a.steps) / (cpu / 1000)).toFixed(1),
      loss: +loss.toFixed(4),
    }),
  );
}

function parseArgs(argv: string[]): { models: string[]; modes: string[]; a: Args; vocab?: number } {
  const get = (flag: string): string | undefined => {
    const i = argv.indexOf(flag);
    return i >= 0 ? argv[i + 1] : undefined;
  };
  const num = (flag: string, d: number) => (get(flag) !== undefined ? Number(get(flag)) : d);
  const which = argv[0] && !argv[0].startsWith('--') ? argv[0] : 'all';
  return {
    models: which === 'all' ? ['smollm', 'qwen'] : [which],
    modes: (get('--modes') ?? 'lora,qlora,qlora-bnb4,qlora-dequantize').split(','),
    a: { batch: num('--batch', 4), seq: num('--seq', 256), steps: num('--steps', 2), threads: num('--threads', 2), r: num('--r', 16) },
    vocab: get('--vocab') !== undefined ? Number(get('--vocab')) : undefined,
  };
}

// ---- merge and compression errors (fixture models, adapters fine-tuned with QLoRA) ----------------

type Runnable = Pick<PretrainedModel, 'forward' | 'loss'> & { parameters?: () => Map<string, { shape: number[]; data: Float32Array }> };

/** Logits and mean loss of `m` on one batch. */
async function evaluate(m: Runnable, weights: PretrainedModel['weights'], batch: Batch): Promise<{ logits: Float32Array; loss: number }> {
  const g = new Graph();
  const ctx = new BuildContext(g, weights);
  const out = m.forward(ctx, {
    inputIds: g.input('input_ids', 'int64', ['batch', 'seq']),
    attentionMask: g.input('attention_mask', 'int64', ['batch', 'seq']),
  });
  const loss = m.loss(out.logits, g.input('labels', 'int64', ['batch', 'seq']));
  const s = await RuntimeSession.fromGraph(g, { logits: out.logits, loss }, { threads: 2 });
  try {
    const shape = [batch.size, batch.seq];
    const feeds: Record<string, HostTensor> = {
      input_ids: { dtype: 'int64', shape, data: batch.inputIds },
      attention_mask: { dtype: 'int64', shape, data: batch.attentionMask },
      labels: { dtype: 'int64', shape, data: batch.labels },
    };
    for (const [k, t] of m.parameters?.() ?? []) if (ctx.params.has(k)) feeds[k] = { dtype: 'float32', shape: t.shape, data: t.data };
    const r = await s.run(feeds);
    return { logits: r.logits!.data as Float32Array, loss: r.loss!.data[0] as number };
  } finally {
    await s.dispose();
  }
}

function diff(a: Float32Array, b: Float32Array): string {
  let max = 0;
  let sum = 0;
  for (let i = 0; i < a.length; i++) {
    const d = Math.abs(a[i]! - b[i]!);
    max = Math.max(max, d);
    sum += d;
  }
  return `max ${max.toExponential(2)}, mean ${(sum / a.length).toExponential(2)}`;
}

async function mergeSection(): Promise<void> {
  const fixtures = process.env.PEFT_FIXTURES ?? join(process.cwd(), 'test/fixtures/fixtures');
  const targets: Record<string, string[]> = {
    llama: ['q_proj', 'k_proj', 'v_proj', 'o_proj', 'gate_proj', 'up_proj', 'down_proj'],
    gpt2: ['c_attn', 'c_proj', 'c_fc'],
  };
  console.log(
    'QLoRA adapters (r 8, alpha 16) fine-tuned 30 steps on the swap task over the NF4 fixture models; logits and loss on 16 held-out examples:',
  );
  for (const family of ['llama', 'gpt2']) {
    const dir = join(fixtures, 'models', family);
    const tok = await Tokenizer.fromDir(dir);
    const { examples } = tokenizeRecords(parseJsonl(swapJsonl()), tok);
    const rows = prepareExamples(examples, { maxLength: 32 }).examples;
    const pad = tok.padTokenId ?? tok.eosTokenId!;
    const base = await loadModel(dir, { quantization: { bits: 4, type: 'nf4', doubleQuant: true, blockSize: 64 } });
    const model = await getPeftModel(base, { r: 8, loraAlpha: 16, targetModules: targets[family]! }, { seed: 0 });
    const out = mkdtempSync(join(tmpdir(), 'peft-qlora-merge-bench-'));
    await new Trainer(model, rows.slice(0, 48), undefined, {
      outputDir: out,
      padTokenId: pad,
      learningRate: 1e-2,
      maxSteps: 30,
      batchSize: 8,
      evalAtStart: false,
      runtime: { threads: 2 },
    }).train();
    const batch = collate(rows.slice(48), pad);
    const ref = await evaluate(model, base.weights, batch);
    const a = await model.mergeAndUnload();
    const b = await model.mergeAndUnload({ requantize: true });
    // what merging into the original weights (not their NF4 round trip) would give
    const original = await loadModel(dir);
    const lora = await getPeftModel(original, { r: 8, loraAlpha: 16, targetModules: targets[family]! }, { seed: 0 });
    for (const [k, t] of model.parameters()) lora.parameters().get(k)!.data.set(t.data);
    const c = await lora.mergeAndUnload();
    const ra = await evaluate(a, a.weights, batch);
    const rb = await evaluate(b, b.weights, batch);
    const rc = await evaluate(c, c.weights, batch);
    console.log(`  ${family}: QLoRA model loss ${ref.loss.toFixed(4)}`);
    console.log(`    (a) merged into the dequantized base (float32): logits ${diff(ra.logits, ref.logits)}, loss ${ra.loss.toFixed(4)}`);
    console.log(`    (b) merged and re-quantized to NF4:              logits ${diff(rb.logits, ref.logits)}, loss ${rb.loss.toFixed(4)}`);
    console.log(`    (c) merged into the original float32 weights:   logits ${diff(rc.logits, ref.logits)}, loss ${rc.loss.toFixed(4)}`);
    const plain = mkdtempSync(join(tmpdir(), 'peft-qlora-compress-bench-'));
    await model.savePretrained(plain);
    const bytes = statSync(join(plain, 'adapter_model.safetensors')).size;
    for (const method of COMPRESSION_METHODS) {
      const dir2 = mkdtempSync(join(tmpdir(), 'peft-qlora-compress-bench-'));
      await model.savePretrained(dir2, { compression: method });
      const back = await LoraModel.fromPretrained(base, dir2);
      const rr = await evaluate(back, base.weights, batch);
      const report = parseCompressionReport((await adapterMetadata(dir2))![COMPRESSION_METADATA_KEY]!, dir2);
      console.log(
        `    adapter ${method}: LoRA matrices ${(report.float32_bytes / 1024).toFixed(1)} -> ${(report.stored_bytes / 1024).toFixed(1)} KiB (${(report.float32_bytes / report.stored_bytes).toFixed(2)}x), ` +
          `file ${(bytes / 1024).toFixed(1)} -> ${(statSync(join(dir2, 'adapter_model.safetensors')).size / 1024).toFixed(1)} KiB; ` +
          `recorded drift ${report.max_abs_logit_diff!.toExponential(2)}; held-out logits ${diff(rr.logits, ref.logits)}, loss ${rr.loss.toFixed(4)}`,
      );
    }
  }
}

function swapJsonl(): string {
  const words = ['apple', 'banana', 'cherry', 'grape', 'lemon', 'mango', 'peach', 'plum'];
  const out: string[] = [];
  for (let i = 0; i < 64; i++) {
    const k = (i * 37 + 11) % 64;
    const a = words[k >> 3]!;
    const b = words[k & 7]!;
    out.push(JSON.stringify({ prompt: `${a} ${b} ->`, completion: ` ${b} ${a}` }));
  }
  return out.join('\n') + '\n';
}

async function main(): Promise<void> {
  const argv = process.argv.slice(2);
  if (argv[0] === '--child') {
    await child(argv[1]!, argv[2]!, JSON.parse(argv[3]!) as Args);
    return;
  }
  if (argv[0] === 'merge') {
    await mergeSection();
    return;
  }
  const { models, modes, a, vocab } = parseArgs(argv);
  console.log(
    `machine: ${cpus().length} x ${cpus()[0]?.model}, load average ${loadavg()
      .map((x) => x.toFixed(2))
      .join(' ')}`,
  );
  console.log(
    `LoRA r=${a.r} on q,k,v,o,gate,up,down; batch ${a.batch} x seq ${a.seq}; ${a.steps} timed steps after one warm-up; ${a.threads} ORT threads`,
  );
  for (const m of models) {
    const shape = SHAPES[m];
    if (!shape) throw new Error(`unknown model "${m}"; use smollm, qwen or all`);
    const config = { ...shape.config, ...(vocab ? { vocab_size: vocab } : {}) };
    const dir = join(process.env.QLORA_BENCH_DIR ?? tmpdir(), `peft-qlora-bench-${m}-v${config.vocab_size}`);
    await writeModel(dir, config);
    console.log(`\n${shape.label}${vocab ? ` (vocab ${vocab})` : ''}: ${dir}`);
    const results: Record<string, Record<string, number>> = {};
    for (const mode of modes) {
      const r = spawnSync(process.execPath, ['--expose-gc', SELF, '--child', dir, mode, JSON.stringify(a)], {
        encoding: 'utf8',
        maxBuffer: 1 << 24,
      });
      if (r.status !== 0) {
        process.stderr.write(r.stderr);
        console.log(`${mode}: failed (exit ${r.status})`);
        continue;
      }
      const line = r.stdout.trim().split('\n').pop()!;
      console.log(line);
      results[mode] = JSON.parse(line) as Record<string, number>;
    }
    for (const [mode, r] of Object.entries(results)) {
      // each mode against float32 LoRA with the same checkpointing setting
      const refMode = mode.endsWith('+ckpt') ? 'lora+ckpt' : 'lora';
      const ref = results[refMode];
      if (!ref || mode === 'lora' || mode === 'lora+ckpt') continue;
      const ratio = (k: string) => (r[k]! / ref[k]!).toFixed(2);
      console.log(
        `${mode} / ${refMode}: frozen bytes ${ratio('frozenMiB')}x, peak RSS (steps) ${ratio('peakRssStepsMiB')}x, tokens/s ${ratio('tokensPerS')}x, tokens per CPU-s ${ratio('tokensPerCpuS')}x`,
      );
    }
  }
  console.log(
    `load average at the end: ${loadavg()
      .map((x) => x.toFixed(2))
      .join(' ')}`,
  );
}

await main();
