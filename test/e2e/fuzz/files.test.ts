// Fuzz: corrupt model files through the library's real entry points. Safetensors headers, offsets,
// dtypes and sizes (deserializeSafetensors, SafetensorsFile.open, loadModel), config.json (loadModel),
// tokenizer.json and tokenizer_config.json (Tokenizer.fromDir + encode/decode), adapter_config.json
// (loadAdapter). Every case must load or raise a PeftError, quickly (harness.ts).

import { test, before, after } from 'node:test';
import { mkdtemp, readFile, rm, symlink, writeFile, readdir, cp } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { SafetensorsFile, deserializeSafetensors, serializeSafetensors, fromTypedArray } from '../../../src/io/safetensors.js';
import { Tokenizer } from '../../../src/io/tokenizer.js';
import { loadModel } from '../../../src/models/load.js';
import type { PretrainedModel } from '../../../src/models/types.js';
import { loadAdapter } from '../../../src/tuners/load.js';
import { fixturePath } from '../../helpers/fixtures.js';
import { type FuzzRng, HOSTILE_VALUES, damageBytes, fuzz, mutateJson } from './harness.js';
import type { LooseJson } from '../../helpers/json.js';

let scratch: string;
let gpt2: PretrainedModel;

before(async () => {
  scratch = await mkdtemp(join(tmpdir(), 'peft-fuzz-files-'));
  gpt2 = await loadModel(fixturePath('models', 'gpt2'));
});
after(async () => {
  await rm(scratch, { recursive: true, force: true });
});

/** A model folder whose files link to the fixture's, except those the case rewrites. */
async function modelDir(family: string, name: string): Promise<string> {
  const src = fixturePath('models', family);
  const dir = join(scratch, name);
  await rm(dir, { recursive: true, force: true });
  await cp(src, dir, { recursive: true, filter: (s) => !s.endsWith('.safetensors') || s === src });
  for (const f of await readdir(src)) if (f.endsWith('.safetensors')) await symlink(join(src, f), join(dir, f));
  return dir;
}

const DTYPES = ['F32', 'F16', 'BF16', 'F64', 'I64', 'I32', 'I8', 'U8', 'BOOL', 'F8_E4M3', 'X', 'f32', '', 'I4', 'C64'];
const SHAPES: unknown[] = [
  [-1],
  [1e9, 1e9],
  [2 ** 53],
  ['2'],
  null,
  [],
  [0],
  [3, 2],
  [1, 1, 1, 1, 1, 1, 1, 1, 1, 1],
  [0.5],
  [1e6, 1e6, 1e6],
];

/** A header-level mutation of a safetensors file (or byte damage), as bytes. */
function mutateSafetensors(rng: FuzzRng, bytes: Uint8Array): Uint8Array {
  const n = Number(new DataView(bytes.buffer, bytes.byteOffset).getBigUint64(0, true));
  const header = JSON.parse(new TextDecoder().decode(bytes.subarray(8, 8 + n))) as Record<string, LooseJson>;
  const data = bytes.subarray(8 + n);
  const names = Object.keys(header).filter((k) => k !== '__metadata__');
  const op = rng.int(12);
  let prefixOverride: bigint | undefined;
  const t = header[rng.pick(names)];
  if (op === 0) t.dtype = rng.pick(DTYPES);
  else if (op === 1) t.shape = rng.pick(SHAPES);
  else if (op === 2)
    t.data_offsets = rng.pick<unknown>([
      [0, 1e15],
      [5, 3],
      [-1, 2],
      [0],
      [1.5, 2],
      null,
      [0, 0],
      [0, data.length + 1],
      [2 ** 53, 2 ** 53 + 4],
    ]);
  else if (op === 3)
    t.data_offsets = structuredClone(header[rng.pick(names)].data_offsets); // overlap
  else if (op === 4) delete t[rng.pick(['dtype', 'shape', 'data_offsets'])];
  else if (op === 5) header.__metadata__ = rng.pick<unknown>([123, { a: 1 }, [], { a: 'b' }, 'x', null]);
  else if (op === 6) header[rng.pick(['', '__proto__', 'x'.repeat(5000), 'constructor'])] = structuredClone(t);
  else if (op === 7) return damageBytes(rng, bytes);
  else if (op === 8) prefixOverride = rng.pick([0n, 7n, 2n ** 63n, BigInt(bytes.length), BigInt(n + 1), BigInt(n - 1), 100_000_001n]);
  else if (op === 9) Object.assign(header, mutateJson(rng, header) as object);
  else if (op === 10) {
    // Many tensors, all pointing at the same bytes.
    for (let k = 0; k < 2000; k++) header[`t${k}`] = structuredClone(t);
  } else t.shape = [rng.int(100), rng.int(100)];
  let json = new TextEncoder().encode(JSON.stringify(header));
  if (op === 11 && rng.bool()) json = Uint8Array.from([0xef, 0xbb, 0xbf, ...json]);
  const out = new Uint8Array(8 + json.length + data.length);
  new DataView(out.buffer).setBigUint64(0, prefixOverride ?? BigInt(json.length), true);
  out.set(json, 8);
  out.set(data, 8 + json.length);
  return out;
}

test(
  'fuzz: corrupt safetensors (headers, offsets, dtypes, sizes) are loaded or refused with SafetensorsError/ModelError',
  { timeout: 120_000 },
  async () => {
    const small = serializeSafetensors(
      new Map([
        ['a', fromTypedArray(new Float32Array([1, 2, 3, 4, 5, 6]), [2, 3])],
        ['b', fromTypedArray(new BigInt64Array([1n, 2n, 3n, 4n]), [4])],
        ['c', fromTypedArray(new Int32Array([7, 8, 9]), [3])],
      ]),
      { format: 'pt' },
    );
    await fuzz('safetensors (memory)', 11, 250, (rng) => {
      const t = deserializeSafetensors(mutateSafetensors(rng, small));
      return t.tensors.size;
    });
    const file = join(scratch, 'fuzz.safetensors');
    await fuzz('safetensors (file)', 12, 120, async (rng) => {
      await writeFile(file, mutateSafetensors(rng, small));
      const f = await SafetensorsFile.open(file);
      try {
        await f.readAll();
      } finally {
        await f.close();
      }
    });
    // Whole models: the gpt2 fixture with a corrupt model.safetensors.
    const dir = await modelDir('gpt2', 'st-model');
    const real = await readFile(fixturePath('models', 'gpt2', 'model.safetensors'));
    await fuzz('safetensors (loadModel)', 13, 60, async (rng) => {
      await rm(join(dir, 'model.safetensors'), { force: true });
      await writeFile(join(dir, 'model.safetensors'), mutateSafetensors(rng, real));
      await loadModel(dir);
    });
  },
);

test('fuzz: corrupt config.json (wrong types, huge numbers, missing keys, NaN) through loadModel', { timeout: 120_000 }, async () => {
  for (const [k, family] of ['gpt2', 'llama', 'bert'].entries()) {
    const dir = await modelDir(family, `cfg-${family}`);
    const original = JSON.parse(await readFile(fixturePath('models', family, 'config.json'), 'utf8'));
    const important = [
      'vocab_size',
      'hidden_size',
      'n_embd',
      'n_layer',
      'num_hidden_layers',
      'n_head',
      'num_attention_heads',
      'num_key_value_heads',
      'head_dim',
      'intermediate_size',
      'n_inner',
      'max_position_embeddings',
      'n_positions',
      'num_labels',
      'id2label',
      'model_type',
      'architectures',
      'rope_scaling',
      'rope_theta',
      'tie_word_embeddings',
      'type_vocab_size',
      'layer_norm_eps',
      'rms_norm_eps',
      'torch_dtype',
      'quantization_config',
      'eos_token_id',
      'pad_token_id',
    ];
    await fuzz(`config.json (${family})`, 21 + k, 60, async (rng) => {
      let text: string;
      const op = rng.int(10);
      if (op < 6) {
        const c = structuredClone(original);
        const key = rng.pick(important);
        if (rng.bool(0.2)) delete c[key];
        else
          c[key] = structuredClone(
            rng.pick([...HOSTILE_VALUES, 1e9, 1e9, 4096, 3, { rope_type: 'llama3' }, { '0': 1 }, ['X'], 'gpt2', 'unknown']),
          );
        text = JSON.stringify(c);
      } else if (op < 8) text = JSON.stringify(mutateJson(rng, original));
      else if (op === 8)
        text = JSON.stringify(original).replace(/: (\d+(\.\d+)?)/, rng.pick([': NaN', ': Infinity', ': -Infinity', ': 1e999']));
      else text = new TextDecoder().decode(damageBytes(rng, new TextEncoder().encode(JSON.stringify(original))));
      await writeFile(join(dir, 'config.json'), text);
      await loadModel(dir);
    });
  }
});

test(
  'fuzz: corrupt tokenizer.json / tokenizer_config.json through Tokenizer.fromDir, encode and decode',
  { timeout: 120_000 },
  async () => {
    for (const [k, family] of ['gpt2', 'llama', 'bert'].entries()) {
      const dir = await modelDir(family, `tok-${family}`);
      const tokJson = JSON.parse(await readFile(fixturePath('models', family, 'tokenizer.json'), 'utf8'));
      const cfgJson = JSON.parse(await readFile(fixturePath('models', family, 'tokenizer_config.json'), 'utf8'));
      const regexes = [
        '(a+)+$',
        '(a|a)*b',
        '\\s+(?!\\S)|\\s+',
        '[',
        '(?<x>a)\\k<x>',
        '(?:\\w+\\s?)*$',
        '.*'.repeat(50),
        'x{1,100000}',
        "'s|'t| ?\\p{L}+",
      ];
      await fuzz(`tokenizer (${family})`, 31 + k, 60, async (rng) => {
        const tj = structuredClone(tokJson);
        let cj = structuredClone(cfgJson);
        let raw: string | undefined;
        switch (rng.int(8)) {
          case 0:
            (tj.added_tokens ??= []).push({
              id: rng.pick([1e9, -1, 2 ** 31, 0, 5, 1.5, '3']),
              content: rng.pick(['<x>', '', 'a', '\u0000']),
              special: rng.bool(),
              single_word: false,
              lstrip: false,
              rstrip: false,
              normalized: rng.bool(),
            });
            break;
          case 1:
            tj.model.vocab[rng.pick(['hello', 'a', '', 'Ġthe'])] = rng.pick([1e9, -1, 2 ** 24, 0, null, 'x', 1.5]);
            break;
          case 2:
            tj.pre_tokenizer = {
              type: 'Split',
              pattern: { Regex: rng.pick(regexes) },
              behavior: rng.pick(['Isolated', 'Removed', 'Nope']),
              invert: rng.bool(),
            };
            break;
          case 3:
            tj.normalizer = rng.pick<unknown>([
              { type: 'Replace', pattern: { Regex: rng.pick(regexes) }, content: '' },
              { type: 'Nope' },
              null,
              5,
              { type: 'Sequence', normalizers: [{ type: 'NFC' }, 3] },
            ]);
            break;
          case 4:
            tj.post_processor = rng.pick<unknown>([
              { type: 'TemplateProcessing', single: [{ SpecialToken: { id: 'nope', type_id: 0 } }] },
              { type: 'BertProcessing', cls: ['x', 1e9], sep: 3 },
              7,
              { type: 'Sequence', processors: 'x' },
            ]);
            break;
          case 5:
            cj = mutateJson(rng, cfgJson, [
              ...HOSTILE_VALUES,
              '{% for i in range(1000000000) %}x{% endfor %}',
              { content: 5 },
            ]) as typeof cj;
            break;
          case 6:
            Object.assign(tj, mutateJson(rng, { model: tj.model, added_tokens: tj.added_tokens, decoder: tj.decoder }));
            break;
          default:
            raw = new TextDecoder().decode(damageBytes(rng, new TextEncoder().encode(JSON.stringify(tj))));
        }
        await writeFile(join(dir, 'tokenizer.json'), raw ?? JSON.stringify(tj));
        await writeFile(join(dir, 'tokenizer_config.json'), JSON.stringify(cj));
        const tok = await Tokenizer.fromDir(dir);
        const ids = tok.encode('Hello world, the cat sat. <x> aaaaaaaaaaaaaaaaaaaaaaaaaaaaab');
        tok.decode(ids);
        tok.encodeBatch(['a', 'hello there'], { padding: 'left' });
      });
    }
  },
);

test('fuzz: corrupt adapter_config.json (and adapter weights) through loadAdapter', { timeout: 120_000 }, async () => {
  const kinds = ['lora_attn', 'lora_dora', 'ia3', 'prompt_tuning_text', 'prefix_tuning', 'p_tuning_mlp', 'bn_seq'];
  for (const [k, kind] of kinds.entries()) {
    const src = fixturePath('adapters', 'gpt2', kind);
    const dir = join(scratch, `adapter-${kind}`);
    await cp(src, dir, { recursive: true });
    const original = JSON.parse(await readFile(join(src, 'adapter_config.json'), 'utf8'));
    const weightsFile = (await readdir(src)).find((f) => f.endsWith('.safetensors') && !f.startsWith('expected'))!;
    const weights = await readFile(join(src, weightsFile));
    await fuzz(`adapter_config.json (${kind})`, 41 + k, 20, async (rng) => {
      await writeFile(join(dir, weightsFile), weights);
      const op = rng.int(10);
      let text: string;
      if (op < 6) {
        const c = structuredClone(original);
        const key = rng.pick([
          ...Object.keys(c),
          'r',
          'lora_alpha',
          'target_modules',
          'peft_type',
          'num_virtual_tokens',
          'reduction_factor',
          'rank_pattern',
          'alpha_pattern',
          'layers_to_transform',
        ]);
        if (rng.bool(0.2)) delete c[key];
        else c[key] = structuredClone(rng.pick([...HOSTILE_VALUES, 'LORA', 'IA3', 'NOPE', ['nonexistent'], 'all-linear', { 'h.0': 1e9 }]));
        text = JSON.stringify(c);
      } else if (op < 8) text = JSON.stringify(mutateJson(rng, original));
      else if (op === 8) {
        text = JSON.stringify(original);
        await writeFile(join(dir, weightsFile), mutateSafetensors(rng, weights));
      } else text = new TextDecoder().decode(damageBytes(rng, new TextEncoder().encode(JSON.stringify(original))));
      await writeFile(join(dir, 'adapter_config.json'), text);
      await loadAdapter(gpt2, dir);
    });
  }
});
