// Regression tests for hostile or broken inputs (issue 11): each case here hung, crashed, was
// silently accepted or reached ONNX Runtime as a raw error before; now each is a typed PeftError,
// quickly, before anything is built.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { cp, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import os from 'node:os';
import { join } from 'node:path';
import { PeftError } from '../../src/errors.js';
import { ConfigError } from '../../src/io/hfconfig.js';
import { parseConfig, loadConfig } from '../../src/models/config.js';
import {
  SafetensorsError,
  readSafetensors,
  writeSafetensors,
  type RawTensor,
  fromTypedArray,
  toFloat32,
} from '../../src/io/safetensors.js';
import { ChatTemplateError, Tokenizer, TokenizerLoadError } from '../../src/io/tokenizer.js';
import { regexProblem } from '../../src/io/tokenizer_limits.js';
import { loadModel } from '../../src/models/load.js';
import { ModelError } from '../../src/models/types.js';
import { validateAgainstWeights } from '../../src/models/validate.js';
import { DatasetError } from '../../src/train/errors.js';
import { MAX_JSONL_LINE_CHARS, readJsonl } from '../../src/train/data.js';
import { ForwardSession, Generator, GenerationError } from '../../src/generate/index.js';
import { RuntimeError } from '../../src/runtime/session.js';
import { QuantizationError } from '../../src/quant/errors.js';
import { saveModelPretrained } from '../../src/tuners/lora/merge.js';
import { AdapterError } from '../../src/tuners/types.js';
import { fixturePath } from '../helpers/fixtures.js';
import type { LooseJson } from '../helpers/json.js';

const GPT2 = fixturePath('models', 'gpt2');
const BERT = fixturePath('models', 'bert');

async function copyModel(src: string): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'peft-limits-'));
  await cp(src, dir, { recursive: true });
  return dir;
}

async function editJson(file: string, edit: (j: Record<string, LooseJson>) => void): Promise<void> {
  const j = JSON.parse(await readFile(file, 'utf8'));
  edit(j);
  await writeFile(file, JSON.stringify(j));
}

async function editWeights(dir: string, edit: (t: Map<string, RawTensor>) => void): Promise<void> {
  const t = await readSafetensors(join(dir, 'model.safetensors'));
  edit(t);
  await writeSafetensors(join(dir, 'model.safetensors'), t);
}

/** Runs `fn`, asserting it rejects with `cls` within `ms`. */
async function rejectsWithin(ms: number, fn: () => Promise<unknown>, cls: new (...a: never[]) => Error, re?: RegExp): Promise<void> {
  const t0 = performance.now();
  await assert.rejects(fn(), (e: unknown) => {
    assert.ok(e instanceof cls, `expected ${cls.name}, got ${String(e)}`);
    assert.ok(e instanceof PeftError);
    if (re) assert.match((e as Error).message, re);
    return true;
  });
  const took = performance.now() - t0;
  assert.ok(took < ms, `took ${took.toFixed(0)} ms (bound ${ms})`);
}

const hasMkfifo = (() => {
  try {
    execFileSync('mkfifo', ['--version'], { stdio: 'ignore' });
    return process.platform !== 'win32';
  } catch {
    return false;
  }
})();

test('config: num_labels 1e9 and num_hidden_layers 1e9 are ConfigErrors at once (they hung)', async () => {
  const base = JSON.parse(await readFile(join(BERT, 'config.json'), 'utf8'));
  delete base.id2label;
  delete base.label2id;
  const t0 = performance.now();
  assert.throws(
    () => parseConfig({ ...base, num_labels: 1e9 }),
    (e: unknown) => e instanceof ConfigError && /num_labels is 1000000000/.test(e.message),
  );
  assert.throws(
    () => parseConfig({ ...base, num_hidden_layers: 1e9 }),
    (e: unknown) => e instanceof ConfigError && e.field === 'num_hidden_layers',
  );
  assert.throws(() => parseConfig({ ...base, vocab_size: 2 ** 40 }), ConfigError);
  assert.throws(() => parseConfig({ ...base, id2label: { '1000000000': 'x' } }), ConfigError);
  assert.ok(performance.now() - t0 < 500);
  // Sizes of real models stay accepted.
  assert.equal(
    parseConfig({
      ...base,
      num_hidden_layers: 126,
      vocab_size: 262144,
      hidden_size: 16384,
      num_attention_heads: 128,
      intermediate_size: 53248,
    }).numHiddenLayers,
    126,
  );
});

test('config vs weights: layers, hidden size, vocabulary, positions and norms are checked before the model is built', async () => {
  const dir = await copyModel(GPT2);
  try {
    const original = await readFile(join(dir, 'config.json'), 'utf8');
    const withConfig = async (edit: (j: Record<string, LooseJson>) => void) => {
      await writeFile(join(dir, 'config.json'), original);
      await editJson(join(dir, 'config.json'), edit);
    };
    // Within the config limits but not these weights: the graph would have been built for 4000 layers.
    await withConfig((j) => (j.n_layer = 4000));
    await rejectsWithin(2000, () => loadModel(dir), ModelError, /num_hidden_layers is 4000 but the weights hold 2 layers under .*h/);
    await withConfig((j) => (j.vocab_size = 558));
    await rejectsWithin(2000, () => loadModel(dir), ModelError, /wte\.weight has shape \[557, 64\] but vocab_size 558/);
    await withConfig((j) => (j.n_positions = 256));
    await rejectsWithin(2000, () => loadModel(dir), ModelError, /wpe\.weight/);
    await withConfig((j) => ((j.n_embd = 128), (j.n_head = 4)));
    await rejectsWithin(2000, () => loadModel(dir), ModelError, /hidden_size 128/);
    await writeFile(join(dir, 'config.json'), original);
    // A norm of the wrong length broadcast silently before; an embedding of the wrong rank too.
    await editWeights(dir, (t) => t.set('transformer.ln_f.weight', fromTypedArray(new Float32Array(65).fill(1), [65])));
    await rejectsWithin(2000, () => loadModel(dir), ModelError, /ln_f\.weight has shape \[65\] but hidden_size 64 implies \[64\]/);
    await editWeights(dir, (t) => t.set('transformer.ln_f.weight', fromTypedArray(new Float32Array(1).fill(1), [1])));
    await rejectsWithin(2000, () => loadModel(dir), ModelError, /ln_f\.weight/);
    await cp(join(GPT2, 'model.safetensors'), join(dir, 'model.safetensors'));
    assert.equal((await loadModel(dir)).config.numHiddenLayers, 2);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
  // The same function on header shapes alone (no files): per-head norms may be head_dim long.
  const cfg = parseConfig({
    model_type: 'llama',
    hidden_size: 64,
    num_attention_heads: 4,
    num_hidden_layers: 1,
    vocab_size: 10,
    intermediate_size: 8,
  });
  const shapes = new Map<string, number[]>([
    ['model.embed_tokens.weight', [10, 64]],
    ['model.layers.0.self_attn.q_norm.weight', [16]],
    ['model.layers.0.input_layernorm.weight', [64]],
  ]);
  validateAgainstWeights(cfg, shapes, 'x');
  shapes.set('model.layers.0.self_attn.k_norm.weight', [7]);
  assert.throws(() => validateAgainstWeights(cfg, shapes, 'x'), ModelError);
  shapes.delete('model.layers.0.self_attn.k_norm.weight');
  shapes.set('model.layers.2.mlp.up_proj.weight', [8, 64]);
  assert.throws(() => validateAgainstWeights(cfg, shapes, 'x'), /skip some of the layers|holds? 3 layers|num_hidden_layers is 1/);
});

test('tokenizer: token ids of 1e9 and catastrophic regexes are refused at load, quickly', async () => {
  const dir = await copyModel(GPT2);
  try {
    const file = join(dir, 'tokenizer.json');
    const original = await readFile(file, 'utf8');
    const withJson = async (edit: (j: Record<string, LooseJson>) => void) => {
      await writeFile(file, original);
      await editJson(file, edit);
    };
    await withJson((j) =>
      j.added_tokens.push({ id: 1e9, content: '<x>', special: true, single_word: false, lstrip: false, rstrip: false, normalized: false }),
    );
    await rejectsWithin(1000, () => Tokenizer.fromDir(dir), TokenizerLoadError, /id 1000000000/);
    await withJson((j) => (j.model.vocab['hello'] = 1e9));
    await rejectsWithin(1000, () => Tokenizer.fromDir(dir), TokenizerLoadError, /model\.vocab/);
    await withJson((j) => (j.model.vocab['hello'] = -1));
    await rejectsWithin(1000, () => Tokenizer.fromDir(dir), TokenizerLoadError);
    // "(a+)+$" on "aaaa...b" takes 2^n steps in a backtracking engine and cannot be interrupted.
    await withJson((j) => (j.pre_tokenizer = { type: 'Split', pattern: { Regex: '(a+)+$' }, behavior: 'Isolated', invert: false }));
    await rejectsWithin(1000, () => Tokenizer.fromDir(dir), TokenizerLoadError, /exponential/);
    await withJson((j) => (j.normalizer = { type: 'Replace', pattern: { Regex: '(\\w|\\d)*x' }, content: '' }));
    await rejectsWithin(1000, () => Tokenizer.fromDir(dir), TokenizerLoadError, /exponential/);
    // A real pre-tokenizer pattern (Llama 3's) is accepted and runs in bounded time on adversarial text.
    const llama3 =
      "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
    assert.equal(regexProblem(llama3), undefined);
    await withJson(
      (j) =>
        (j.pre_tokenizer = {
          type: 'Sequence',
          pretokenizers: [{ type: 'Split', pattern: { Regex: llama3 }, behavior: 'Isolated', invert: false }, j.pre_tokenizer],
        }),
    );
    const tok = await Tokenizer.fromDir(dir);
    const t0 = performance.now();
    for (const s of [' '.repeat(100_000) + 'x', 'a'.repeat(100_000) + '!', '\n'.repeat(50_000) + ' x', "'".repeat(100_000)]) tok.encode(s);
    assert.ok(performance.now() - t0 < 10_000, `adversarial inputs took ${performance.now() - t0} ms`);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test('chat template: range(1e9), nested loops, doubling strings/lists and huge indents are ChatTemplateErrors in bounded time', async () => {
  const tok = await Tokenizer.fromDir(GPT2);
  const msgs = [{ role: 'user', content: 'hi' }];
  const t0 = performance.now();
  const hostile = (chatTemplate: string, limits?: Record<string, number>) =>
    assert.throws(
      () => tok.applyChatTemplate(msgs, { chatTemplate, ...(limits ? { limits } : {}) }),
      (e: unknown) => e instanceof ChatTemplateError && /stopped|refused/.test(e.message),
    );
  hostile('{% for i in range(1000000000) %}x{% endfor %}');
  hostile('{% for i in range(100000) %}{% for j in range(100000) %}x{% endfor %}{% endfor %}', { timeoutMs: 300 });
  hostile('{% set ns = namespace(s="xxxxxxxxxxxxxxxx") %}{% for i in range(40) %}{% set ns.s = ns.s + ns.s %}{% endfor %}{{ ns.s }}');
  hostile('{% set ns = namespace(l=[1,2,3,4]) %}{% for i in range(40) %}{% set ns.l = ns.l + ns.l %}{% endfor %}{{ ns.l|length }}');
  hostile('{{ "a\\nb"|indent(1000000000) }}');
  hostile('{{ messages|tojson(indent=100000000) }}');
  hostile('x'.repeat(2_000_000));
  assert.ok(performance.now() - t0 < 5000, `hostile templates took ${performance.now() - t0} ms`);
  // Ordinary templates render as before, with the globals transformers passes.
  const ok = tok.applyChatTemplate(msgs, {
    chatTemplate:
      '{% for m in messages %}<{{ m.role }}>{{ m.content|trim }}{% endfor %}{{ range(3)|join(",") }}{{ messages|tojson(indent=2)|length > 0 }}{% if false %}{{ raise_exception("no") }}{% endif %}',
  });
  assert.equal(ok, '<user>hi0,1,2true');
  assert.throws(() => tok.applyChatTemplate(msgs, { chatTemplate: '{{ raise_exception("bad role") }}' }), /bad role/);
});

test(
  'paths: a FIFO, a folder or a device where a file is expected is refused without blocking',
  { skip: hasMkfifo ? false : 'mkfifo is not available here' },
  async () => {
    const dir = await copyModel(GPT2);
    try {
      for (const f of ['config.json', 'tokenizer.json', 'model.safetensors']) {
        await rm(join(dir, f));
        execFileSync('mkfifo', [join(dir, f)]);
      }
      await rejectsWithin(2000, () => loadConfig(dir), ConfigError, /named pipe/);
      await rejectsWithin(2000, () => Tokenizer.fromDir(dir), TokenizerLoadError, /named pipe/);
      const { SafetensorsFile } = await import('../../src/io/safetensors.js');
      await rejectsWithin(2000, () => SafetensorsFile.open(join(dir, 'model.safetensors')), SafetensorsError, /named pipe/);
      execFileSync('mkfifo', [join(dir, 'data.jsonl')]);
      await rejectsWithin(2000, () => readJsonl(join(dir, 'data.jsonl')), DatasetError, /named pipe/);
      await rejectsWithin(2000, () => readJsonl(dir), DatasetError, /folder/);
      await rejectsWithin(2000, () => readJsonl('/dev/zero'), DatasetError, /character device/);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  },
);

test('jsonl: a BOM is skipped, invalid UTF-8 and over-long lines are DatasetErrors naming file and line', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'peft-jsonl-'));
  try {
    const f = join(dir, 'd.jsonl');
    await writeFile(f, Buffer.concat([Buffer.from([0xef, 0xbb, 0xbf]), Buffer.from('{"text": "a"}\n{"text": "b"}\n')]));
    assert.deepEqual(
      (await readJsonl(f)).map((r) => r.value.text),
      ['a', 'b'],
    );
    // "café" in Latin-1 on line 2.
    await writeFile(f, Buffer.concat([Buffer.from('{"text": "a"}\n{"text": "caf'), Buffer.from([0xe9]), Buffer.from('"}\n')]));
    await rejectsWithin(1000, () => readJsonl(f), DatasetError, /d\.jsonl:2: the line is not valid UTF-8 \(byte 0xe9/);
    // A 10 MB line is refused at once (it took a minute and gigabytes to tokenize).
    await writeFile(f, `{"text": "ok"}\n{"text": "${'x'.repeat(10_000_000)}"}\n`);
    await rejectsWithin(
      3000,
      () => readJsonl(f),
      DatasetError,
      new RegExp(`d\\.jsonl:2: the line is 10000012 characters long, above the limit of ${MAX_JSONL_LINE_CHARS}`),
    );
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test('runtime and forward: --threads beyond the cores, out-of-range token ids and labels are typed errors before ONNX Runtime runs', async () => {
  const model = await loadModel(GPT2);
  await assert.rejects(
    ForwardSession.create(model, { runtime: { threads: 100000 } }),
    (e: unknown) => e instanceof RuntimeError && new RegExp(`from 1 to ${os.availableParallelism()}`).test(e.message),
  );
  const fwd = await ForwardSession.create(model, { loss: true, runtime: { threads: 1 } });
  try {
    const ids = (xs: number[]) => ({ dtype: 'int64' as const, shape: [1, xs.length], data: BigInt64Array.from(xs.map(BigInt)) });
    const mask = ids([1, 1, 1]);
    await assert.rejects(
      fwd.run({ inputIds: ids([1, 557, 2]), attentionMask: mask, labels: ids([1, 2, 3]) }),
      (e: unknown) => e instanceof GenerationError && /input_ids holds 557/.test(e.message),
    );
    await assert.rejects(
      fwd.run({ inputIds: ids([1, 2, 3]), attentionMask: mask, labels: ids([1, 100000, 3]) }),
      (e: unknown) => e instanceof GenerationError && /labels holds 100000/.test(e.message),
    );
    await assert.rejects(fwd.run({ inputIds: ids([1, 2, 3]), attentionMask: mask, labels: ids([1, -5, 3]) }), GenerationError);
    const ok = await fwd.run({ inputIds: ids([1, 2, 3]), attentionMask: mask, labels: ids([-100, 2, 3]) });
    assert.ok(Number.isFinite(ok.loss));
  } finally {
    await fwd.dispose();
  }
});

test('quantize: a skip module that matches nothing is an error naming the nearest valid names', async () => {
  await assert.rejects(loadModel(GPT2, { quantization: { bits: 4, type: 'nf4', skipModules: ['c_atn'] } }), (e: unknown) => {
    assert.ok(e instanceof QuantizationError);
    assert.match(e.message, /skip module "c_atn" matches no linear module of this model; nearest names: "c_attn"/);
    return true;
  });
  await loadModel(GPT2, { quantization: { bits: 4, type: 'nf4', skipModules: ['c_attn', 'h.0.mlp'] } });
});

test('NaN/Inf weights: generate and save (merge) refuse instead of exiting 0 with garbage', async () => {
  const dir = await copyModel(GPT2);
  const out = await mkdtemp(join(tmpdir(), 'peft-nan-out-'));
  try {
    await editWeights(dir, (t) => {
      const w = toFloat32(t.get('transformer.ln_f.weight')!);
      w[3] = NaN;
      t.set('transformer.ln_f.weight', fromTypedArray(w, [w.length]));
    });
    const model = await loadModel(dir);
    const gen = await Generator.create(model, { runtime: { threads: 1 } });
    await assert.rejects(
      gen.generate([1, 2, 3], { maxNewTokens: 3 }),
      (e: unknown) => e instanceof GenerationError && /NaN/.test(e.message),
    );
    await assert.rejects(
      saveModelPretrained(model, join(out, 'merged')),
      (e: unknown) => e instanceof AdapterError && /ln_f\.weight holds NaN at element 3/.test(e.message),
    );
  } finally {
    await rm(dir, { recursive: true, force: true });
    await rm(out, { recursive: true, force: true });
  }
});

test('peft info on a config with num_labels 1e9 answers at once (it hung), and peft generate refuses NaN weights with exit 1', async () => {
  const { peft } = await import('../cli/peft.js');
  const dir = await copyModel(BERT);
  try {
    await editJson(join(dir, 'config.json'), (j) => {
      delete j.id2label;
      delete j.label2id;
      j.num_labels = 1e9;
    });
    const t0 = performance.now();
    const r = await peft(['info', dir]);
    assert.ok(performance.now() - t0 < 30_000);
    assert.ok(r.code === 0 || r.code === 1, r.stderr);
    assert.doesNotMatch(r.stderr, /internal error|at .*\.js:\d+/);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
  const nan = await copyModel(GPT2);
  try {
    await editWeights(nan, (t) => {
      const w = toFloat32(t.get('transformer.ln_f.weight')!);
      w[0] = Infinity;
      t.set('transformer.ln_f.weight', fromTypedArray(w, [w.length]));
    });
    const r = await peft(['generate', '--model', nan, '--prompt', 'hello', '--max-new-tokens', '2']);
    assert.equal(r.code, 1, r.stdout + r.stderr);
    assert.match(r.stderr, /NaN or infinity/);
  } finally {
    await rm(nan, { recursive: true, force: true });
  }
});
