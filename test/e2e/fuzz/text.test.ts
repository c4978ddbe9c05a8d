// Fuzz: corrupt datasets and hostile chat templates through the real entry points: the jsonl reader
// and tokenization (readJsonl + tokenizeRecords / tokenizeClassification) and chat-template
// rendering (Tokenizer.applyChatTemplate). Every case must succeed or raise a PeftError, quickly.

import { test, before, after } from 'node:test';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Tokenizer } from '../../../src/io/tokenizer.js';
import { readJsonl, tokenizeClassification, tokenizeRecords, prepareExamples } from '../../../src/train/data.js';
import { fixturePath } from '../../helpers/fixtures.js';
import { type FuzzRng, HOSTILE_VALUES, fuzz } from './harness.js';

let scratch: string;
let tok: Tokenizer;
let bertTok: Tokenizer;
before(async () => {
  scratch = await mkdtemp(join(tmpdir(), 'peft-fuzz-text-'));
  tok = await Tokenizer.fromDir(fixturePath('models', 'llama'));
  bertTok = await Tokenizer.fromDir(fixturePath('models', 'bert'));
});
after(async () => {
  await rm(scratch, { recursive: true, force: true });
});

const TEMPLATE =
  "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}</s>{% endfor %}{% if add_generation_prompt %}<|assistant|>{% endif %}";

function jsonlLine(rng: FuzzRng): Buffer {
  const v = () => structuredClone(rng.pick(HOSTILE_VALUES));
  switch (rng.int(16)) {
    case 0:
      return Buffer.from(JSON.stringify({ text: rng.pick(['hello world', '', ' '.repeat(1000), '\ud800', 'a\u0000b']) }));
    case 1:
      return Buffer.from(JSON.stringify({ text: v() }));
    case 2:
      return Buffer.from(JSON.stringify({ prompt: rng.pick(['q', v()]), completion: rng.pick(['a', v()]) }));
    case 3:
      return Buffer.from(JSON.stringify({ prompt: 'only' }));
    case 4:
      return Buffer.from(
        JSON.stringify({
          messages: rng.pick<unknown>([
            'x',
            [],
            [{ role: 1 }],
            [{ role: 'user', content: v() }],
            [
              { role: 'user', content: 'hi' },
              { role: 'assistant', content: 'yo' },
            ],
            [{}],
          ]),
        }),
      );
    case 5:
      return Buffer.from('{"text": "unterminated');
    case 6:
      return Buffer.from('['.repeat(rng.pick([10, 1000, 100_000])) + ']'.repeat(rng.pick([0, 10])));
    case 7:
      return Buffer.from([0x7b, 0x22, 0x74, 0x22, 0x3a, 0x22, 0xe9, 0xff, 0xc3, 0x22, 0x7d]); // Latin-1 / invalid UTF-8
    case 8:
      return Buffer.from(JSON.stringify({ text: 'x'.repeat(rng.pick([1000, 1 << 20, (1 << 20) + 10])) }));
    case 9:
      return Buffer.from(JSON.stringify({ text: 'ok', label: v() }));
    case 10:
      return Buffer.from(rng.pick(['null', '42', '"s"', 'true', '[]', '{}', '\t', '\r', '{"text": "a"}\r']));
    case 11:
      return Buffer.from(JSON.stringify({ text: 'a', extra: { deep: [[[[[[[[]]]]]]]] } }));
    case 12:
      return Buffer.from('{"text": "a", "text": 5}');
    case 13:
      return Buffer.from(JSON.stringify({ label: 'POSITIVE', text: 'nice' }));
    default:
      return Buffer.from(JSON.stringify({ text: 'The cat sat on the mat.' }));
  }
}

test('fuzz: corrupt jsonl datasets through readJsonl and tokenization', { timeout: 120_000 }, async () => {
  const file = join(scratch, 'd.jsonl');
  await fuzz('jsonl', 51, 200, async (rng) => {
    const lines = Array.from({ length: 1 + rng.int(6) }, () => jsonlLine(rng));
    const parts: Buffer[] = [];
    if (rng.bool(0.2)) parts.push(Buffer.from([0xef, 0xbb, 0xbf]));
    lines.forEach((l, i) => parts.push(l, Buffer.from(i < lines.length - 1 || rng.bool() ? (rng.bool(0.2) ? '\r\n' : '\n') : '')));
    await writeFile(file, Buffer.concat(parts));
    const records = await readJsonl(file);
    if (rng.bool(0.3)) {
      tokenizeClassification(records, bertTok, {
        file,
        maxLength: 64,
        labels: { id2label: { 0: 'NEGATIVE', 1: 'POSITIVE' }, label2id: { NEGATIVE: 0, POSITIVE: 1 }, numLabels: 2 },
      } as never);
    } else {
      const { examples } = tokenizeRecords(records, tok, { file, chatTemplate: TEMPLATE });
      prepareExamples(examples, { maxLength: 32, packing: rng.bool(), file });
    }
  });
});

const PIECES = [
  '{% for m in messages %}{{ m.content }}{% endfor %}',
  '{% for i in range(N) %}x{% endfor %}',
  '{% for i in range(N) %}{% for j in range(N) %}{{ i }}{% endfor %}{% endfor %}',
  '{% set ns = namespace(s="ab") %}{% for i in range(N) %}{% set ns.s = ns.s + ns.s %}{% endfor %}{{ ns.s|length }}',
  '{% set ns = namespace(l=[1]) %}{% for i in range(N) %}{% set ns.l = ns.l + ns.l %}{% endfor %}',
  '{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}',
  '{{ messages|tojson(indent=N) }}',
  '{{ "a\\nb"|indent(N) }}',
  '{{ raise_exception("boom") }}',
  '{{ messages[0]["content"]|upper }}',
  '{% if messages|length > 0 %}{{ messages[-1].role }}{% endif %}',
  '{{ range(N)|join(",")|length }}',
  '{{ 2 ** N }}',
  '{{ undefined_var.attr.x }}',
  '{% for %}',
  '{{ ',
  '{% if %}{% endif %}',
  '{{ (((((((((((((((((((((1))))))))))))))))))))) }}',
  '{{ messages|map(attribute="content")|join("") }}',
  '{{ "x" * N }}',
  '{{ messages|selectattr("role", "equalto", "user")|list|length }}',
  '{{ strftime_now("%Y") }}',
  '{% set x = [1,2,3] %}{{ x[N:] }}',
  '{{ bos_token ~ eos_token }}',
];
const NUMBERS = ['3', '100', '100000', '100001', '1000000000', '-5', '1e9', '40', '0', '"x"', 'none'];

test('fuzz: hostile and broken chat templates through applyChatTemplate', { timeout: 120_000 }, async () => {
  await fuzz(
    'chat templates',
    61,
    200,
    (rng) => {
      const n = 1 + rng.int(4);
      let source = '';
      for (let k = 0; k < n; k++) source += rng.pick(PIECES).replace(/N/g, () => rng.pick(NUMBERS));
      if (rng.bool(0.1)) source = source.slice(0, rng.int(source.length));
      if (rng.bool(0.05)) source = '{%'.repeat(rng.pick([10, 10_000]));
      const messages = rng.bool(0.8)
        ? [
            { role: 'user', content: 'hi' },
            { role: 'assistant', content: 'hello' },
          ]
        : [{ role: 5, content: null } as never];
      // A 100 ms time limit keeps the suite fast; the default (5 s) is the same code path.
      return tok.applyChatTemplate(messages, { chatTemplate: source, addGenerationPrompt: rng.bool(), limits: { timeoutMs: 100 } });
    },
    { caseMs: 1500 },
  );
});
