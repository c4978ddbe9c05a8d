// Checks the tokenizer wrapper against the reference token ids that Python transformers produced for
// the fixture models, plus padding, the special-token rules transformers applies on load, and chat
// templates (rendered from temporary copies, since the fixture folders are read-only).

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { cp, mkdtemp, readFile, rm, writeFile, chmod, readdir } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { ChatTemplateError, MissingChatTemplateError, Tokenizer, TokenizerError, TokenizerLoadError } from '../../src/io/tokenizer.js';

import { FIXTURES } from '../helpers/fixtures.js';
import type { LooseJson } from '../helpers/json.js';
const MODELS = ['gpt2', 'llama', 'bert'] as const;

interface TokenizerCase {
  text: string;
  input_ids: number[];
  attention_mask: number[];
  input_ids_without_special_tokens: number[];
  tokens: string[];
  decoded: string;
  decoded_skip_special_tokens: string;
}

const modelDir = (name: string) => path.join(FIXTURES, 'models', name);

async function readJson<T>(file: string): Promise<T> {
  return JSON.parse(await readFile(file, 'utf8')) as T;
}

/** A writable copy of a fixture model's tokenizer files, edited by `edit`. */
async function tempTokenizerCopy(
  name: string,
  edit: (files: { tokenizer: LooseJson; config: LooseJson; specialMap: LooseJson }) => void,
): Promise<string> {
  const dir = await mkdtemp(path.join(os.tmpdir(), `peft-tok-${name}-`));
  for (const f of ['tokenizer.json', 'tokenizer_config.json', 'special_tokens_map.json']) {
    await cp(path.join(modelDir(name), f), path.join(dir, f));
    await chmod(path.join(dir, f), 0o644);
  }
  const files = {
    tokenizer: await readJson<LooseJson>(path.join(dir, 'tokenizer.json')),
    config: await readJson<LooseJson>(path.join(dir, 'tokenizer_config.json')),
    specialMap: await readJson<LooseJson>(path.join(dir, 'special_tokens_map.json')),
  };
  edit(files);
  await writeFile(path.join(dir, 'tokenizer.json'), JSON.stringify(files.tokenizer));
  await writeFile(path.join(dir, 'tokenizer_config.json'), JSON.stringify(files.config));
  await writeFile(path.join(dir, 'special_tokens_map.json'), JSON.stringify(files.specialMap));
  return dir;
}

/** Reads the int64 tensors of a small safetensors file (enough for batch.safetensors). */
async function readI64Tensors(file: string): Promise<Record<string, { shape: number[]; data: number[] }>> {
  const buf = await readFile(file);
  const headerLen = Number(buf.readBigUInt64LE(0));
  const header = JSON.parse(buf.subarray(8, 8 + headerLen).toString('utf8'));
  const out: Record<string, { shape: number[]; data: number[] }> = {};
  for (const [name, info] of Object.entries<LooseJson>(header)) {
    if (name === '__metadata__' || info.dtype !== 'I64') continue;
    const [start, end] = info.data_offsets as [number, number];
    const data: number[] = [];
    for (let o = 8 + headerLen + start; o < 8 + headerLen + end; o += 8) data.push(Number(buf.readBigInt64LE(o)));
    out[name] = { shape: info.shape, data };
  }
  return out;
}

for (const name of MODELS) {
  test(`${name}: token ids, tokens and decoding match transformers for every tokenizer case`, async () => {
    const tok = await Tokenizer.fromDir(modelDir(name));
    const { cases } = await readJson<{ cases: TokenizerCase[] }>(path.join(modelDir(name), 'tokenizer_cases.json'));
    assert.ok(cases.length > 0);
    for (const c of cases) {
      const label = `${name} ${JSON.stringify(c.text)}`;
      assert.deepEqual(tok.encode(c.text), c.input_ids, `${label}: input_ids`);
      assert.deepEqual(tok.encode(c.text, { addSpecialTokens: true }), c.input_ids, `${label}: input_ids (explicit)`);
      assert.deepEqual(
        tok.encode(c.text, { addSpecialTokens: false }),
        c.input_ids_without_special_tokens,
        `${label}: input_ids without special tokens`,
      );
      assert.deepEqual(
        c.input_ids.map((id) => tok.idToToken(id)),
        c.tokens,
        `${label}: tokens`,
      );
      assert.deepEqual(
        c.tokens.map((t) => tok.tokenToId(t)),
        c.input_ids,
        `${label}: tokenToId`,
      );
      assert.equal(tok.decode(c.input_ids), c.decoded, `${label}: decode`);
      assert.equal(tok.decode(c.input_ids, { skipSpecialTokens: true }), c.decoded_skip_special_tokens, `${label}: decode skip`);
      const batch = tok.encodeBatch([c.text], { padding: 'right' });
      assert.deepEqual(batch.inputIds[0], c.input_ids, `${label}: encodeBatch ids`);
      assert.deepEqual(batch.attentionMask[0], c.attention_mask, `${label}: encodeBatch mask`);
      if (c.decoded_skip_special_tokens === c.text) {
        // The text holds no special tokens, so it must survive an encode/decode round trip.
        assert.equal(tok.decode(tok.encode(c.text), { skipSpecialTokens: true }), c.text, `${label}: round trip`);
        assert.equal(tok.decode(tok.encode(c.text, { addSpecialTokens: false })), c.text, `${label}: round trip (no specials)`);
      }
    }
  });

  test(`${name}: special token ids and vocabulary size agree with config.json`, async () => {
    const tok = await Tokenizer.fromDir(modelDir(name));
    const config = await readJson<LooseJson>(path.join(modelDir(name), 'config.json'));
    assert.equal(tok.vocabSize, config.vocab_size);
    assert.equal(tok.baseVocabSize, 556);
    if (config.bos_token_id !== undefined) assert.equal(tok.bosTokenId, config.bos_token_id);
    if (config.eos_token_id !== undefined) assert.equal(tok.eosTokenId, config.eos_token_id);
    if (config.pad_token_id !== undefined) assert.equal(tok.padTokenId, config.pad_token_id);
    assert.equal(tok.modelMaxLength, 128);
  });

  test(`${name}: truncated, right-padded batch equals the fixture batch.safetensors`, async () => {
    const tok = await Tokenizer.fromDir(modelDir(name));
    const manifest = await readJson<LooseJson>(path.join(FIXTURES, 'MANIFEST.json'));
    const texts: string[] = manifest.models.find((m: LooseJson) => m.name === name).batch_texts;
    const batch = await readI64Tensors(path.join(modelDir(name), 'batch.safetensors'));
    const [rows, width] = batch.input_ids.shape as [number, number];
    const ids = Array.from({ length: rows }, (_, r) => batch.input_ids.data.slice(r * width, (r + 1) * width));
    const mask = Array.from({ length: rows }, (_, r) => batch.attention_mask.data.slice(r * width, (r + 1) * width));
    for (let r = 0; r < rows; r++) {
      const len = mask[r].reduce((a, b) => a + b, 0);
      // The fixture rows are the texts truncated to different lengths, special tokens kept.
      const one = tok.encodeBatch([texts[r]], { padding: 'right', maxLength: len, truncation: true });
      assert.deepEqual(one.inputIds[0], ids[r].slice(0, len), `${name} row ${r}`);
      for (const padId of ids[r].slice(len)) assert.equal(padId, tok.padTokenId);
    }
    const padded = tok.encodeBatch(texts, { padding: 'right', maxLength: width, truncation: true, padToMaxLength: true });
    assert.deepEqual(padded.inputIds[0], ids[0]);
    assert.deepEqual(
      padded.attentionMask,
      Array.from({ length: rows }, () => new Array(width).fill(1)),
    );
  });
}

test('encodeBatch pads left or right with the pad token and masks the padding', async () => {
  const tok = await Tokenizer.fromDir(modelDir('llama'));
  const short = tok.encode('Hello world');
  const long = tok.encode('low rank adaptation of large language models');
  const pad = tok.padTokenId as number;
  assert.equal(pad, 559);
  const gap = long.length - short.length;
  const right = tok.encodeBatch(['Hello world', 'low rank adaptation of large language models'], { padding: 'right' });
  assert.deepEqual(right.inputIds, [[...short, ...new Array(gap).fill(pad)], long]);
  assert.deepEqual(right.attentionMask, [[...new Array(short.length).fill(1), ...new Array(gap).fill(0)], new Array(long.length).fill(1)]);
  const left = tok.encodeBatch(['Hello world', 'low rank adaptation of large language models'], { padding: 'left' });
  assert.deepEqual(left.inputIds, [[...new Array(gap).fill(pad), ...short], long]);
  assert.deepEqual(left.attentionMask[0], [...new Array(gap).fill(0), ...new Array(short.length).fill(1)]);
  const noSpecial = tok.encodeBatch(['Hello world'], { padding: 'left', addSpecialTokens: false, maxLength: 10, padToMaxLength: true });
  assert.deepEqual(noSpecial.inputIds[0], [...new Array(10 - short.length + 1).fill(pad), ...short.slice(1)]);
  assert.deepEqual(tok.encodeBatch([], { padding: 'right' }), { inputIds: [], attentionMask: [] });
});

test('encodeBatch refuses over-long rows without truncation and keeps [CLS]/[SEP] when truncating', async () => {
  const tok = await Tokenizer.fromDir(modelDir('bert'));
  assert.throws(
    () => tok.encodeBatch(['The quick brown fox jumps over the lazy dog.'], { padding: 'right', maxLength: 5 }),
    (err: unknown) => {
      assert.ok(err instanceof TokenizerError);
      assert.match((err as Error).message, /truncation: true/);
      return true;
    },
  );
  const cut = tok.encodeBatch(['The quick brown fox jumps over the lazy dog.'], { padding: 'right', maxLength: 5, truncation: true });
  assert.deepEqual(cut.inputIds[0], [558, 303, 403, 72, 559]);
  assert.throws(() => tok.encodeBatch(['x'], { padding: 'right', maxLength: 1, truncation: true }), TokenizerError);
  assert.throws(() => tok.encodeBatch(['x'], { padding: 'right', truncation: true }), TokenizerError);
});

test('without a pad token, padding falls back to eos (GPT-2/Llama convention)', async () => {
  const dir = await tempTokenizerCopy('llama', ({ config, specialMap }) => {
    delete config.pad_token;
    delete specialMap.pad_token;
  });
  try {
    const tok = await Tokenizer.fromDir(dir);
    assert.equal(tok.padTokenId, undefined);
    assert.equal(tok.eosTokenId, 558);
    const { inputIds, attentionMask } = tok.encodeBatch(['Hello world', 'Hello'], { padding: 'right' });
    const n = inputIds[0].length - tok.encode('Hello').length;
    assert.ok(n > 0);
    assert.deepEqual(inputIds[1].slice(-n), new Array(n).fill(558));
    assert.deepEqual(attentionMask[1].slice(-n), new Array(n).fill(0));
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test('special_tokens_map.json overrides tokenizer_config.json, and AddedToken objects are understood', async () => {
  const dir = await tempTokenizerCopy('llama', ({ config, specialMap }) => {
    config.eos_token = { __type: 'AddedToken', content: '<unk>', lstrip: false, rstrip: false, normalized: false };
    specialMap.eos_token = { content: '</s>', lstrip: false, rstrip: false, normalized: false, single_word: false };
    config.pad_token = '<unk>';
    delete specialMap.pad_token;
  });
  try {
    const tok = await Tokenizer.fromDir(dir);
    assert.equal(tok.eosToken, '</s>');
    assert.equal(tok.eosTokenId, 558);
    assert.equal(tok.padTokenId, 556);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test('Llama-family tokenizer classes rebuild the post-processor from add_bos_token/add_eos_token', async () => {
  const content = (await Tokenizer.fromDir(modelDir('llama'))).encode('Hello world', { addSpecialTokens: false });
  const withEos = await tempTokenizerCopy('llama', ({ config }) => {
    config.tokenizer_class = 'LlamaTokenizerFast';
    config.add_eos_token = true;
  });
  const noBos = await tempTokenizerCopy('llama', ({ config }) => {
    config.tokenizer_class = 'LlamaTokenizer';
    config.add_bos_token = false;
  });
  try {
    const a = await Tokenizer.fromDir(withEos);
    assert.deepEqual(a.encode('Hello world'), [557, ...content, 558]);
    assert.deepEqual(a.specialTokenAffixes, { prefix: [557], suffix: [558] });
    const b = await Tokenizer.fromDir(noBos);
    assert.deepEqual(b.encode('Hello world'), content);
  } finally {
    await rm(withEos, { recursive: true, force: true });
    await rm(noBos, { recursive: true, force: true });
  }
});

test('TemplateProcessing special tokens use the ids stored in tokenizer.json, as the Rust tokenizer does', async () => {
  // The template names its token "BOS" while the token itself is "<s>": only the stored ids are reliable.
  const dir = await tempTokenizerCopy('llama', ({ tokenizer }) => {
    tokenizer.post_processor = {
      type: 'Sequence',
      processors: [
        { type: 'ByteLevel', add_prefix_space: false, trim_offsets: false, use_regex: true },
        {
          type: 'TemplateProcessing',
          single: [
            { SpecialToken: { id: 'BOS', type_id: 0 } },
            { Sequence: { id: 'A', type_id: 0 } },
            { SpecialToken: { id: 'EOS', type_id: 0 } },
          ],
          pair: [{ Sequence: { id: 'A', type_id: 0 } }, { Sequence: { id: 'B', type_id: 1 } }],
          special_tokens: {
            BOS: { id: 'BOS', ids: [557], tokens: ['<s>'] },
            EOS: { id: 'EOS', ids: [558], tokens: ['</s>'] },
          },
        },
      ],
    };
  });
  try {
    const tok = await Tokenizer.fromDir(dir);
    assert.deepEqual(tok.encode('Hello world'), [557, 39, 313, 340, 262, 277, 75, 67, 558]);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test('decode handles empty input, bigint ids and ids outside the vocabulary', async () => {
  const tok = await Tokenizer.fromDir(modelDir('gpt2'));
  assert.equal(tok.decode([]), '');
  assert.equal(tok.decode([39n, 313n, 340n]), 'Hello');
  assert.equal(tok.decode([39, 313, 340, 100000, 262, 277, 75, 67]), 'Hello world');
  assert.equal(tok.decode([556], { skipSpecialTokens: true }), '');
  assert.throws(() => tok.decode([1.5]), TokenizerError);
  assert.deepEqual(tok.tokenize('Hello world'), ['H', 'el', 'lo', 'Ġw', 'or', 'l', 'd']);
});

test('loading errors are typed and name the file', async () => {
  await assert.rejects(Tokenizer.fromDir(path.join(os.tmpdir(), 'peft-no-such-tokenizer-dir')), TokenizerLoadError);
  const dir = await mkdtemp(path.join(os.tmpdir(), 'peft-tok-bad-'));
  try {
    await assert.rejects(Tokenizer.fromDir(dir), (err: unknown) => {
      assert.ok(err instanceof TokenizerLoadError);
      assert.equal(err.file, path.join(dir, 'tokenizer.json'));
      return true;
    });
    await writeFile(path.join(dir, 'tokenizer.json'), '{ not json');
    await assert.rejects(Tokenizer.fromDir(dir), /not valid JSON/);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

// The newline right after "{% endif %}" is dropped (transformers renders with trim_blocks/lstrip_blocks),
// so the template emits its line breaks with {{ '\n' }}. The expected strings below are what Python's
// jinja2 3.1 renders for this template with transformers' settings.
const TEMPLATE =
  '{{ bos_token }}{% for message in messages %}' +
  "{% if message['role'] not in ['system', 'user', 'assistant'] %}{{ raise_exception('unknown role ' + message['role']) }}{% endif %}" +
  "{{ '<|' + message['role'] + '|>\\n' + message['content'] | trim }}{% if message['role'] == 'assistant' %}{{ eos_token }}{% endif %}\n" +
  "{{ '\\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|assistant|>\\n' }}{% endif %}";

test("applyChatTemplate renders tokenizer_config.json's template with bos/eos variables", async () => {
  const dir = await tempTokenizerCopy('llama', ({ config }) => {
    config.chat_template = TEMPLATE;
  });
  try {
    const tok = await Tokenizer.fromDir(dir);
    const messages = [
      { role: 'system', content: 'Be brief.' },
      { role: 'user', content: '  Hi there ' },
      { role: 'assistant', content: 'Hello.' },
      { role: 'user', content: 'What is LoRA?' },
    ];
    const expectedBody = '<s><|system|>\nBe brief.\n<|user|>\nHi there\n<|assistant|>\nHello.</s>\n<|user|>\nWhat is LoRA?\n';
    assert.equal(tok.applyChatTemplate(messages), expectedBody);
    assert.equal(tok.applyChatTemplate(messages, { addGenerationPrompt: true }), expectedBody + '<|assistant|>\n');
    // The rendered prompt already holds <s>, so it is encoded without adding special tokens again.
    const ids = tok.encode(tok.applyChatTemplate(messages.slice(0, 2)), { addSpecialTokens: false });
    assert.equal(ids[0], 557);
    assert.equal(ids.filter((i) => i === 557).length, 1);
    assert.throws(
      () => tok.applyChatTemplate([{ role: 'robot', content: 'beep' }]),
      (err: unknown) => {
        assert.ok(err instanceof ChatTemplateError);
        assert.match((err as Error).message, /unknown role robot/);
        return true;
      },
    );
    const files = await readdir(dir);
    assert.deepEqual(files.sort(), ['special_tokens_map.json', 'tokenizer.json', 'tokenizer_config.json']);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test('named chat templates, chat_template.jinja and a caller-supplied template', async () => {
  const dir = await tempTokenizerCopy('gpt2', ({ config }) => {
    config.chat_template = [
      { name: 'default', template: '{% for m in messages %}[{{ m.role }}] {{ m.content }}{% endfor %}{{ eos_token }}' },
      { name: 'tool_use', template: 'tools={{ tools | length }}' },
    ];
  });
  try {
    const tok = await Tokenizer.fromDir(dir);
    const msgs = [{ role: 'user', content: 'hey' }];
    assert.equal(tok.applyChatTemplate(msgs), '[user] hey<|endoftext|>');
    assert.equal(tok.applyChatTemplate(msgs, { tools: [{ name: 'a' }, { name: 'b' }] }), 'tools=2');
    assert.equal(tok.applyChatTemplate(msgs, { templateName: 'tool_use', tools: [] }), 'tools=0');
    assert.throws(() => tok.applyChatTemplate(msgs, { templateName: 'rag' }), MissingChatTemplateError);
    assert.equal(tok.applyChatTemplate(msgs, { chatTemplate: '{{ messages[0].content }}|{{ who }}', extra: { who: 'me' } }), 'hey|me');
    await writeFile(path.join(dir, 'chat_template.jinja'), 'jinja:{{ messages | length }}\n');
    const fromJinja = await Tokenizer.fromDir(dir);
    assert.equal(fromJinja.applyChatTemplate(msgs), 'jinja:1');
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test('a folder without a chat template gives a typed, actionable error', async () => {
  const tok = await Tokenizer.fromDir(modelDir('gpt2'));
  assert.throws(
    () => tok.applyChatTemplate([{ role: 'user', content: 'hi' }]),
    (err: unknown) => {
      assert.ok(err instanceof MissingChatTemplateError);
      assert.match((err as Error).message, /chatTemplate/);
      return true;
    },
  );
});
