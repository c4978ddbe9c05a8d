// `peft export --format gguf / gguf-lora` against llama.cpp (node-llama-cpp 3.21.1, its prebuilt CPU
// binary): the bundled tiny Llama with a trained LoRA adapter, exported merged and as base GGUF +
// GGUF LoRA, generates the same greedy tokens as `peft generate`, its next-token probabilities
// match the softmax of `peft forward`'s logits, and both tokenizers give the same ids. The files
// read back with @huggingface/gguf show the metadata llama.cpp keys on. Bad input is one line.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, readFileSync, readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { ForwardSession, Generator } from '../../../src/generate/index.js';
import { Tokenizer } from '../../../src/io/tokenizer.js';
import { loadModel } from '../../../src/models/load.js';
import { loadAdapter } from '../../../src/tuners/load.js';
import { permuteRotaryRows } from '../../../src/export/gguf/llama.js';
import { encodeTensor, GgmlType } from '../../../src/export/gguf/writer.js';
import { fixture2026Path, fixturePath } from '../../helpers/fixtures.js';
import { peft } from '../../cli/peft.js';
import { TINY_LLAMA, derivedModel, mistralFromLlama, qwen2FromLlama, relayer, tempDir, trainTinyAdapter } from '../support.js';

const tmp = tempDir('peft-export-gguf-');
const PROMPTS = ['The cat sat on the', 'Review: The food was excellent and the staff were kind.\nSentiment:'];

async function exportCli(args: string[], out: string): Promise<string> {
  const r = await peft(['export', ...args, '--out', out]);
  assert.equal(r.code, 0, r.stderr);
  return out;
}

type Llama = Awaited<ReturnType<typeof import('node-llama-cpp').getLlama>>;
let llamaP: Promise<Llama> | undefined;
async function llama(): Promise<Llama> {
  llamaP ??= import('node-llama-cpp').then((m) => m.getLlama({ gpu: false, build: 'never', logLevel: m.LlamaLogLevel.error }));
  return llamaP;
}

/** A GGUF loaded in llama.cpp (with a LoRA GGUF applied), one context reused for every prompt. */
async function openLlamaCpp(modelPath: string, lora?: string) {
  const model = await (await llama()).loadModel({ modelPath });
  const context = await model.createContext({
    contextSize: 256,
    threads: 1,
    ...(lora ? { lora: { adapters: [{ filePath: lora }] } } : {}),
  });
  const sequence = context.getSequence();
  return {
    /** greedy decoding of `prompt` (BOS + llama.cpp's tokenization): prompt ids, new tokens, next-token probabilities of the first `keep` steps */
    async greedy(prompt: string, keep = 3, n = 20): Promise<{ promptIds: number[]; tokens: number[]; probs: Map<number, number>[] }> {
      await sequence.clearHistory();
      // node-llama-cpp's tokenize() leaves BOS to the caller; the GGUF's add_bos_token says whether to add it
      const promptIds = [...(model.tokens.shouldPrependBosToken ? [model.tokens.bos!] : []), ...model.tokenize(prompt)].map(Number);
      const tokens: number[] = [];
      const probs: Map<number, number>[] = [];
      for await (const o of sequence.evaluateWithMetadata(promptIds as never[], { probabilities: true }, { temperature: 0 })) {
        tokens.push(Number(o.token));
        if (probs.length < keep) probs.push(new Map([...o.probabilities].map(([k, v]) => [Number(k), v])));
        if (tokens.length >= n) break;
      }
      return { promptIds, tokens, probs };
    },
    async dispose(): Promise<void> {
      await context.dispose();
      await model.dispose();
    },
  };
}

/** peft generate's greedy tokens (without the stop token, as llama.cpp's evaluate stops before it). */
async function peftGreedy(gen: Generator, prompt: string): Promise<{ promptIds: number[]; tokens: number[] }> {
  const s = (await gen.generate([prompt], { maxNewTokens: 20 })).sequences[0]!;
  const tokens = s.finishReason === 'stop' ? s.tokenIds.slice(0, -1) : s.tokenIds;
  return { promptIds: s.promptIds, tokens };
}

/** max |p - softmax(peft logits)| over the vocabulary, for the first steps of a greedy continuation. */
async function probDiff(fwd: ForwardSession, ids: number[], steps: Map<number, number>[], n: number): Promise<number> {
  const seq = ids.slice(0, ids.length);
  const s = seq.length;
  const r = await fwd.run({
    inputIds: { dtype: 'int64', shape: [1, s], data: BigInt64Array.from(seq.map(BigInt)) },
    attentionMask: { dtype: 'int64', shape: [1, s], data: new BigInt64Array(s).fill(1n) },
  });
  const logits = r.logits.data as Float32Array;
  const V = r.logits.shape[2]!;
  let worst = 0;
  for (let j = 0; j < steps.length; j++) {
    const row = logits.subarray((n - 1 + j) * V, (n + j) * V);
    const m = Math.max(...row);
    let z = 0;
    for (const x of row) z += Math.exp(x - m);
    for (let v = 0; v < V; v++) worst = Math.max(worst, Math.abs(Math.exp(row[v]! - m) / z - (steps[j]!.get(v) ?? 0)));
  }
  return worst;
}

test('permuteRotaryRows moves each head from rotate-half order to interleaved pairs', () => {
  // 2 heads of 4 dims, 1 column: head rows [a0 a1 b0 b1] -> [a0 b0 a1 b1]
  const x = Float32Array.from([0, 1, 2, 3, 10, 11, 12, 13]);
  assert.deepEqual([...permuteRotaryRows(x, 2, 1)], [0, 2, 1, 3, 10, 12, 11, 13]);
  // Q8_0: 34 bytes a block (f16 scale, 32 int8), values recovered within half a step
  const v = Float32Array.from({ length: 64 }, (_, i) => Math.sin(i) * 3);
  const q = encodeTensor(v, GgmlType.Q8_0);
  assert.equal(q.byteLength, 68);
  const dv = new DataView(q.buffer);
  const scale = (b: number) => new Float32Array(Uint32Array.of(0).buffer).fill(0) && halfToFloat(dv.getUint16(b * 34, true));
  for (let i = 0; i < 64; i++)
    assert.ok(
      Math.abs(dv.getInt8(Math.floor(i / 32) * 34 + 2 + (i % 32)) * scale(Math.floor(i / 32)) - v[i]!) <=
        scale(Math.floor(i / 32)) * 0.5 + 1e-3,
    );
});

function halfToFloat(h: number): number {
  const s = h & 0x8000 ? -1 : 1;
  const e = (h >> 10) & 0x1f;
  const f = h & 0x3ff;
  return e === 0 ? s * 2 ** -14 * (f / 1024) : s * 2 ** (e - 15) * (1 + f / 1024);
}

test('tiny Llama + trained LoRA: llama.cpp runs the merged GGUF and base GGUF + GGUF LoRA as peft generate does', async () => {
  const t0 = performance.now();
  const adapter = await trainTinyAdapter(tmp);
  console.log(`trained in ${((performance.now() - t0) / 1000).toFixed(1)} s`);
  const merged = await exportCli(
    ['--format', 'gguf', '--model', TINY_LLAMA, '--adapter', adapter, '--type', 'f32'],
    join(tmp, 'tuned.gguf'),
  );
  const base = await exportCli(['--format', 'gguf', '--model', TINY_LLAMA, '--type', 'f32'], join(tmp, 'tiny-llama.gguf'));
  const lora = await exportCli(['--format', 'gguf-lora', '--model', TINY_LLAMA, '--adapter', adapter], join(tmp, 'lora.gguf'));
  const f16 = await exportCli(['--format', 'gguf', '--model', TINY_LLAMA, '--adapter', adapter], join(tmp, 'tuned-f16.gguf'));
  const q8 = await exportCli(
    ['--format', 'gguf', '--model', TINY_LLAMA, '--adapter', adapter, '--type', 'q8_0'],
    join(tmp, 'tuned-q8_0.gguf'),
  );
  assert.deepEqual(
    readdirSync(tmp).filter((f) => f.startsWith('.')),
    [],
    'no temp files left',
  );

  // What llama.cpp keys on, read back with @huggingface/gguf.
  const { gguf } = await import('@huggingface/gguf');
  const m = (await gguf(merged, { allowLocalFile: true })) as unknown as {
    metadata: Record<string, unknown>;
    tensorInfos: { name: string; shape: bigint[] }[];
  };
  assert.equal(m.metadata['general.architecture'], 'llama');
  assert.equal(m.metadata['tokenizer.ggml.model'], 'gpt2');
  assert.equal(m.metadata['tokenizer.ggml.pre'], 'gpt-2');
  assert.equal((m.metadata['tokenizer.ggml.tokens'] as string[]).length, 1536);
  assert.ok(!m.tensorInfos.some((t) => t.name === 'output.weight'), 'tied head: llama.cpp reuses token_embd');
  const l = (await gguf(lora, { allowLocalFile: true })) as unknown as {
    metadata: Record<string, unknown>;
    tensorInfos: { name: string; shape: bigint[] }[];
  };
  assert.equal(l.metadata['general.type'], 'adapter');
  assert.equal(l.metadata['adapter.type'], 'lora');
  assert.equal(l.metadata['adapter.lora.alpha'], 8);
  const a = l.tensorInfos.find((t) => t.name === 'blk.0.attn_q.weight.lora_a')!;
  const b = l.tensorInfos.find((t) => t.name === 'blk.0.attn_q.weight.lora_b')!;
  assert.deepEqual(
    [a.shape.map(Number), b.shape.map(Number)],
    [
      [192, 4],
      [4, 192],
    ],
    'ne: A [in, r], B [r, out]',
  );
  assert.equal(l.tensorInfos.length, 4 * 7 * 2);
  const mf = readFileSync(join(tmp, 'lora.Modelfile'), 'utf8');
  assert.match(mf, /^FROM \.\/tiny-llama\.gguf\nADAPTER \.\/lora\.gguf\nTEMPLATE """/);

  const tokenizer = await Tokenizer.fromDir(TINY_LLAMA);
  const adapted = await loadAdapter(await loadModel(TINY_LLAMA), adapter);
  const gen = await Generator.create(adapted, { tokenizer, runtime: { threads: 1 } });
  const fwd = await ForwardSession.create(adapted, { runtime: { threads: 1 } });
  const report: string[] = [];
  try {
    const runtimes = [
      ['merged f32', await openLlamaCpp(merged)],
      ['base + LoRA', await openLlamaCpp(base, lora)],
      ['f16', await openLlamaCpp(f16)],
      ['q8_0', await openLlamaCpp(q8)],
    ] as const;
    try {
      for (const prompt of PROMPTS) {
        const ours = await peftGreedy(gen, prompt);
        for (const [what, rt] of runtimes) {
          const exact = what === 'merged f32' || what === 'base + LoRA';
          const theirs = await rt.greedy(prompt, exact ? 3 : 1);
          assert.deepEqual(theirs.promptIds, ours.promptIds, `${what}: llama.cpp tokenizes ${JSON.stringify(prompt)} as peft does`);
          const d = await probDiff(fwd, [...ours.promptIds, ...ours.tokens], theirs.probs, ours.promptIds.length);
          if (exact) {
            assert.deepEqual(theirs.tokens, ours.tokens, `${what}: greedy tokens for ${JSON.stringify(prompt)}`);
            // llama.cpp keeps its KV cache in f16 (its default), the only rounding on this path
            assert.ok(d < 2e-3, `${what}: next-token probabilities differ by ${d}`);
            report.push(`${what} ${d.toExponential(2)}`);
          } else {
            assert.ok(d < (what === 'f16' ? 0.01 : 0.05), `${what}: first-token probabilities differ by ${d}`);
            const same = theirs.tokens.findIndex((t, i) => t !== ours.tokens[i]);
            report.push(`${what} ${d.toExponential(2)} (${same === -1 ? 'all' : same} tokens agree)`);
          }
        }
      }
    } finally {
      for (const [, rt] of runtimes) await rt.dispose();
    }
  } finally {
    await gen.dispose();
    await fwd.dispose();
  }
  const sizes = Object.fromEntries([merged, base, lora, f16, q8].map((f) => [f.split('/').pop(), statSync(f).size]));
  console.log(`llama.cpp vs peft, max |Δp|: ${report.join('; ')}; sizes ${JSON.stringify(sizes)}`);
});

/**
 * Fixture models with LoRA adapters, one per llama.cpp architecture written: rotary permutation
 * (llama, llama3 with llama3 rope scaling as rope_freqs, mistral, smollm3) or none (qwen2 with q/k/v
 * biases, qwen3 with q/k norms, gemma3, phi3); peft scales llama.cpp's alpha / r cannot express
 * (rsLoRA, rank/alpha patterns) folded into B.
 */
const FIXTURE_CASES: [string, () => Promise<string>, string | (() => Promise<string>)][] = [
  ['llama', async () => fixturePath('models', 'llama'), fixturePath('adapters', 'llama', 'lora_all_linear_rslora')],
  ['qwen3', async () => fixture2026Path('models', 'qwen3'), fixture2026Path('adapters', 'qwen3', 'lora_rank_alpha_pattern')],
  ['llama3', async () => fixture2026Path('models', 'llama3'), fixture2026Path('adapters', 'llama3', 'lora_all_linear_rslora')],
  // (1 + w) norms, sliding layers by period 3 with their own rope base, linear rope scaling on the
  // global layer only, query_pre_attn_scalar 24 != head_dim 16 (folded into q_norm), gelu-tanh MLP
  ['gemma3', async () => fixture2026Path('models', 'gemma3_text'), fixture2026Path('adapters', 'gemma3_text', 'lora_all_linear_rslora')],
  // fused attn_qkv / ffn_up (one LoRA pair each), partial rotary, longrope. llama.cpp picks longrope's
  // factor set by its context size (at least 256) where transformers goes by the sequence length, so
  // original_max_position_embeddings is raised from 64 to 256: both then use the short factors.
  [
    'phi3',
    () =>
      derivedModel(tmp, 'phi3', fixture2026Path('models', 'phi3'), {
        original_max_position_embeddings: 256,
        max_position_embeddings: 1024,
      }),
    fixture2026Path('adapters', 'phi3', 'lora_all_linear_rslora'),
  ],
  // llama.cpp's smollm3 skips RoPE on every 4th layer: four layers (the fixture's 0, 1, 1, 2), the last NoPE
  // (its LoRA likewise: the fixture adapter's layers 0, 1, 1, 2)
  [
    'smollm3',
    () =>
      derivedModel(
        tmp,
        'smollm3',
        fixture2026Path('models', 'smollm3'),
        { num_hidden_layers: 4, no_rope_layers: [1, 1, 1, 0], layer_types: Array(4).fill('full_attention') },
        (w) => relayer(w, [0, 1, 1, 2]),
      ),
    async () =>
      derivedModel(
        tmp,
        'smollm3-lora',
        fixture2026Path('adapters', 'smollm3', 'lora_all_linear_rslora'),
        {},
        (w) => relayer(w, [0, 1, 1, 2]),
        { config: 'adapter_config.json', weights: 'adapter_model.safetensors' },
      ),
  ],
  ['mistral', () => mistralFromLlama(tmp), fixturePath('adapters', 'llama', 'lora_attn')],
  ['qwen2', () => qwen2FromLlama(tmp), fixturePath('adapters', 'llama', 'lora_attn')],
];
for (const [family, makeModel, adapter] of FIXTURE_CASES) {
  const adapterName = typeof adapter === 'string' ? adapter.split('/').pop() : 'lora_all_linear_rslora (relayered)';
  test(`${family} fixture + ${adapterName}: llama.cpp runs the merged GGUF and base + GGUF LoRA as peft does`, async () => {
    const dir = join(tmp, family);
    mkdirSync(dir);
    const modelDir = await makeModel();
    const adapterDir = typeof adapter === 'string' ? adapter : await adapter();
    const merged = await exportCli(
      ['--format', 'gguf', '--model', modelDir, '--adapter', adapterDir, '--type', 'f32'],
      join(dir, 'merged.gguf'),
    );
    const base = await exportCli(['--format', 'gguf', '--model', modelDir, '--type', 'f32'], join(dir, 'base.gguf'));
    const lora = await exportCli(
      ['--format', 'gguf-lora', '--model', modelDir, '--adapter', adapterDir, '--base-gguf', base],
      join(dir, 'lora.gguf'),
    );
    const f16 = await exportCli(
      ['--format', 'gguf', '--model', modelDir, '--adapter', adapterDir, '--type', 'f16'],
      join(dir, 'merged-f16.gguf'),
    );
    const q8 = await exportCli(
      ['--format', 'gguf', '--model', modelDir, '--adapter', adapterDir, '--type', 'q8_0'],
      join(dir, 'merged-q8_0.gguf'),
    );
    const tokenizer = await Tokenizer.fromDir(modelDir);
    const adapted = await loadAdapter(await loadModel(modelDir), adapterDir);
    const gen = await Generator.create(adapted, { tokenizer, runtime: { threads: 1 } });
    const fwd = await ForwardSession.create(adapted, { runtime: { threads: 1 } });
    const runtimes = [
      ['merged', await openLlamaCpp(merged)],
      ['base + LoRA', await openLlamaCpp(base, lora)],
      ['f16', await openLlamaCpp(f16)],
      ['q8_0', await openLlamaCpp(q8)],
    ] as const;
    // f16 / q8_0: the first next-token distribution within the bounds docs/EXPORT.md states
    const bound: Record<string, number> = { merged: 2e-3, 'base + LoRA': 2e-3, f16: 0.01, q8_0: 0.05 };
    try {
      for (const prompt of ['hello world', 'The quick brown fox']) {
        const ours = await peftGreedy(gen, prompt);
        for (const [what, rt] of runtimes) {
          const exact = what === 'merged' || what === 'base + LoRA';
          const theirs = await rt.greedy(prompt, exact ? 3 : 1, 10);
          assert.deepEqual(theirs.promptIds, ours.promptIds, `${what}: prompt ids`);
          if (exact) assert.deepEqual(theirs.tokens, ours.tokens.slice(0, 10), `${what}: greedy tokens`);
          const d = await probDiff(fwd, [...ours.promptIds, ...ours.tokens], theirs.probs, ours.promptIds.length);
          assert.ok(d < bound[what]!, `${what}: next-token probabilities differ by ${d}`);
          const same = theirs.tokens.findIndex((t, i) => t !== ours.tokens[i]);
          console.log(
            `${family} ${what} ${JSON.stringify(prompt)}: max |Δp| ${d.toExponential(2)}${exact ? '' : `, ${same === -1 ? 'all' : same} of 10 greedy tokens equal`}`,
          );
        }
      }
    } finally {
      for (const [, rt] of runtimes) await rt.dispose();
      await gen.dispose();
      await fwd.dispose();
    }
  });
}

test('bad input is one line and writes nothing: GPT-2 and BERT as GGUF, configurations llama.cpp runs differently, DoRA and prompt tuning as GGUF LoRA, existing --out', async () => {
  const out = join(tmp, 'never.gguf');
  const one = async (args: string[], re: RegExp) => {
    const r = await peft(['export', ...args, '--out', out]);
    assert.equal(r.code, 1, r.stderr);
    assert.match(r.stderr, re);
    assert.equal(r.stderr.trim().split('\n').length, 1, r.stderr);
    assert.ok(!existsSync(out));
  };
  await one(
    ['--format', 'gguf', '--model', fixturePath('models', 'gpt2')],
    /^error: --format gguf writes llama\.cpp's Llama-family .*model_type "gpt2"/,
  );
  await one(['--format', 'gguf', '--model', fixturePath('models', 'bert')], /^error: --format gguf writes .*model_type "bert"/);
  await one(
    ['--format', 'gguf-lora', '--model', fixturePath('models', 'llama'), '--adapter', fixturePath('adapters', 'llama', 'lora_dora')],
    /^error: .*DoRA/,
  );
  await one(
    [
      '--format',
      'gguf-lora',
      '--model',
      fixturePath('models', 'llama'),
      '--adapter',
      fixturePath('adapters', 'llama', 'prompt_tuning_random'),
    ],
    /^error: .*PROMPT_TUNING adapter/,
  );
  await one(['--format', 'gguf', '--model', fixturePath('models', 'llama'), '--type', 'q4_k'], /^error: --type q4_k/);
  // what llama.cpp would run differently: SmolLM3 NoPE layers off its every-4th pattern, Gemma 3 sliding layers off a period
  await one(['--format', 'gguf', '--model', fixture2026Path('models', 'smollm3')], /^error: .*no_rope_layers \[1,1,0\].*every 4th layer/);
  const gemma = await derivedModel(tmp, 'gemma3-aperiodic', fixture2026Path('models', 'gemma3_text'), {
    layer_types: ['full_attention', 'sliding_attention', 'sliding_attention'],
  });
  await one(['--format', 'gguf', '--model', gemma], /^error: .*layer_types .*by a period/);
  const existing = await exportCli(['--format', 'gguf', '--model', fixturePath('models', 'llama')], join(tmp, 'exists.gguf'));
  const r = await peft(['export', '--format', 'gguf', '--model', fixturePath('models', 'llama'), '--out', existing]);
  assert.equal(r.code, 1);
  assert.match(r.stderr, /^error: --out .* already exists/);
});
