// Datasets: jsonl parsing with line-numbered errors, the three record formats tokenized as TRL's
// SFTTrainer does (EOS, prompt and non-assistant positions labelled -100), truncation, packing,
// right padding, the eval split, and the shuffled batch stream's resumable position.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Tokenizer } from '../../src/io/tokenizer.js';
import { BatchStream, collate } from '../../src/train/batches.js';
import { IGNORE_INDEX, loadDataset, parseJsonl, prepareExamples, readJsonl, splitForEval, tokenizeRecords } from '../../src/train/data.js';
import { DatasetError } from '../../src/train/errors.js';
import { fixturePath } from '../helpers/fixtures.js';
import { tempDir } from './synthetic.js';
import { TOOL_TEMPLATE, WEATHER_TOOL, weatherConversation } from './tool_chat.js';
import type { LooseJson } from '../helpers/json.js';

const gpt2 = () => Tokenizer.fromDir(fixturePath('models', 'gpt2'));
const llama = () => Tokenizer.fromDir(fixturePath('models', 'llama'));

function rejects(fn: () => unknown, line: number | undefined, pattern: RegExp): void {
  assert.throws(fn, (e: unknown) => {
    assert.ok(e instanceof DatasetError, `expected DatasetError, got ${e}`);
    assert.equal(e.line, line);
    assert.match(e.message, pattern);
    return true;
  });
}

test('malformed jsonl, empty files and wrong fields are DatasetErrors with line numbers', async () => {
  rejects(() => parseJsonl('{"text": "a"}\n{"text": "b"\n', 'x.jsonl'), 2, /not valid JSON/);
  rejects(() => parseJsonl('{"text": "a"}\n\n[1, 2]\n'), 3, /expected a JSON object/);
  rejects(() => parseJsonl('\n  \n'), undefined, /empty/);
  const tok = await gpt2();
  rejects(() => tokenizeRecords(parseJsonl('{"text": "a"}\n{"txt": "b"}'), tok), 2, /unrecognized record with fields "txt"/);
  rejects(() => tokenizeRecords(parseJsonl('{"text": 3}'), tok), 1, /"text" must be a string/);
  rejects(() => tokenizeRecords(parseJsonl('{"prompt": "a"}'), tok), 1, /needs both fields/);
  rejects(() => tokenizeRecords(parseJsonl('{"text": "a"}\n{"prompt": "a", "completion": "b"}'), tok), 2, /one format per file/);
  rejects(
    () => tokenizeRecords(parseJsonl('{"messages": [{"role": "user", "content": "hi"}]}'), tok, { chatTemplate: 'x' }),
    1,
    /no "assistant" message/,
  );
  rejects(() => tokenizeRecords(parseJsonl('{"messages": [{"role": "user"}]}'), tok, { chatTemplate: 'x' }), 1, /messages\[0\]/);
  // A conversation dataset with a tokenizer that has no template: said before anything is tokenized.
  rejects(
    () => tokenizeRecords(parseJsonl('{"messages": [{"role": "assistant", "content": "hi"}]}'), tok),
    undefined,
    /no chat template.*--chat-template/,
  );
  const dir = await tempDir();
  await assert.rejects(
    readJsonl(join(dir, 'missing.jsonl')),
    (e: unknown) => e instanceof DatasetError && /does not exist/.test(e.message),
  );
  await writeFile(join(dir, 'bad.jsonl'), '{"text": "ok"}\n{oops}\n');
  await assert.rejects(
    loadDataset(join(dir, 'bad.jsonl'), tok),
    (e: unknown) => e instanceof DatasetError && e.line === 2 && e.message.startsWith(join(dir, 'bad.jsonl') + ':2'),
  );
});

test('text gets special tokens and one EOS; prompt/completion is labelled on the completion only', async () => {
  for (const tok of [await gpt2(), await llama()]) {
    const eos = tok.eosTokenId!;
    const { format, examples } = tokenizeRecords(parseJsonl('{"text": "hello world"}'), tok);
    assert.equal(format, 'text');
    const ids = tok.encode('hello world');
    assert.deepEqual(examples[0]!.inputIds, [...ids, eos]);
    assert.deepEqual(examples[0]!.labels, [...ids, eos]);
    const already = tokenizeRecords(parseJsonl(JSON.stringify({ text: `hi${tok.eosToken}` })), tok).examples[0]!;
    assert.equal(already.inputIds.filter((t) => t === eos).length, 1, 'an EOS already there is not doubled');

    const pc = tokenizeRecords(parseJsonl('{"prompt": "a b ->", "completion": " b a"}'), tok).examples[0]!;
    const promptIds = tok.encode('a b ->');
    assert.deepEqual(pc.inputIds, [...tok.encode('a b -> b a'), eos]);
    assert.deepEqual(
      pc.labels.slice(0, promptIds.length),
      promptIds.map(() => IGNORE_INDEX),
    );
    assert.deepEqual(pc.labels.slice(promptIds.length), pc.inputIds.slice(promptIds.length));
  }
});

test('conversations: the chat template renders them and only assistant turns carry labels', async () => {
  const tok = await llama();
  const template =
    "{{ bos_token }}{% for m in messages %}{{ '<|' + m.role + '|>\\n' + m.content + eos_token + '\\n' }}{% endfor %}" +
    "{% if add_generation_prompt %}{{ '<|assistant|>\\n' }}{% endif %}";
  const conv = {
    messages: [
      { role: 'system', content: 'be brief' },
      { role: 'user', content: 'two plus two' },
      { role: 'assistant', content: 'four' },
      { role: 'user', content: 'and three' },
      { role: 'assistant', content: 'five' },
    ],
  };
  const { format, examples } = tokenizeRecords(parseJsonl(JSON.stringify(conv)), tok, { chatTemplate: template });
  assert.equal(format, 'messages');
  const ex = examples[0]!;
  const full = tok.applyChatTemplate(conv.messages, { chatTemplate: template });
  assert.equal(tok.decode(ex.inputIds), full, 'the ids spell the rendered conversation');
  assert.equal(ex.inputIds[0], tok.bosTokenId, 'the template writes BOS; no second one is added');
  const learned = ex.inputIds.filter((_, i) => ex.labels[i] !== IGNORE_INDEX);
  assert.equal(tok.decode(learned), `four${tok.eosToken}\nfive${tok.eosToken}\n`);
  // Labels equal the ids wherever they are set.
  ex.labels.forEach((l, i) => l !== IGNORE_INDEX && assert.equal(l, ex.inputIds[i]));
});

test('tool calling: tools and tool_calls reach the template; assistant text and tool-call text are labelled', async () => {
  const tok = await Tokenizer.fromDir('models/tiny-llama');
  const conv = weatherConversation('Paris', 18);
  const { examples } = tokenizeRecords(parseJsonl(JSON.stringify(conv)), tok, { chatTemplate: TOOL_TEMPLATE });
  const ex = examples[0]!;
  const full = tok.applyChatTemplate(conv.messages as never, { chatTemplate: TOOL_TEMPLATE, tools: conv.tools as unknown[] });
  // What transformers' apply_chat_template renders for this template (tojson as json.dumps: ", " and ": ").
  const expected =
    `${tok.bosToken}<|im_start|>system\nBe brief.\n\nYou may call these functions:\n<tools>\n${JSON.stringify(WEATHER_TOOL).replace(/,"/g, ', "').replace(/":/g, '": ')}\n</tools>\n` +
    'Call one as <tool_call>{"name": ..., "arguments": ...}</tool_call><|im_end|>\n' +
    '<|im_start|>user\nWeather in Paris?<|im_end|>\n' +
    '<|im_start|>assistant\n<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call><|im_end|>\n' +
    '<|im_start|>user\n<tool_response>\n18 C\n</tool_response><|im_end|>\n' +
    '<|im_start|>assistant\nIt is 18 C in Paris.<|im_end|>\n';
  assert.equal(full, expected);
  assert.equal(tok.decode(ex.inputIds), full, 'the ids spell the rendered conversation');
  ex.labels.forEach((l, i) => l !== IGNORE_INDEX && assert.equal(l, ex.inputIds[i]));
  // The labelled positions form exactly two runs: the tool-call-only turn and the final answer.
  const runs: string[] = [];
  let cur: number[] = [];
  ex.labels.forEach((l) => {
    if (l !== IGNORE_INDEX) cur.push(l);
    else if (cur.length > 0) {
      runs.push(tok.decode(cur));
      cur = [];
    }
  });
  if (cur.length > 0) runs.push(tok.decode(cur));
  assert.deepEqual(
    runs.map((r) => r.trim()),
    ['<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call><|im_end|>', 'It is 18 C in Paris.<|im_end|>'],
  );
});

test('tool calling rows: malformed tools, tool_calls and null content are one-line DatasetErrors', async () => {
  const tok = await Tokenizer.fromDir('models/tiny-llama');
  const row = (patch: (c: Record<string, LooseJson>) => void): string => {
    const c = weatherConversation('Rome', 20) as Record<string, LooseJson>;
    patch(c);
    return `{"text": "x"}\n`.repeat(0) + JSON.stringify(c);
  };
  const bad = (patch: (c: Record<string, LooseJson>) => void, pattern: RegExp): void =>
    assert.throws(
      () =>
        tokenizeRecords(parseJsonl(`${JSON.stringify(weatherConversation('Oslo', 3))}\n${row(patch)}`, 'chat.jsonl'), tok, {
          chatTemplate: TOOL_TEMPLATE,
          file: 'chat.jsonl',
        }),
      (e: unknown) => {
        assert.ok(e instanceof DatasetError, String(e));
        assert.equal(e.file, 'chat.jsonl');
        assert.equal(e.line, 2);
        assert.match(e.message, pattern);
        assert.doesNotMatch(e.message, /\n/);
        return true;
      },
    );
  bad((c) => (c.tools = { name: 'x' }), /field "tools" must be an array of objects/);
  bad((c) => (c.messages[2].tool_calls = []), /messages\[2\]\.tool_calls must be a non-empty array/);
  bad((c) => (c.messages[2].tool_calls[0].function.name = 7), /messages\[2\]\.tool_calls\[0\]\.function\.name must be a non-empty string/);
  bad((c) => (c.messages[2].tool_calls[0].function.arguments = [1]), /tool_calls\[0\]\.function\.arguments must be an object/);
  bad((c) => (c.messages[2].tool_calls[0].type = 'code'), /tool_calls\[0\]\.type must be "function"/);
  bad((c) => delete c.messages[2].tool_calls[0].function, /tool_calls\[0\]\.function must be an object/);
  bad((c) => (c.messages[1].tool_calls = c.messages[2].tool_calls), /only allowed on an "assistant" message/);
  bad(
    (c) => delete c.messages[2].tool_calls,
    /messages\[2\]\.content must be a string \(it may be null or absent only on an assistant message with "tool_calls"\), found null/,
  );
  bad((c) => (c.messages[3].content = null), /messages\[3\]\.content must be a string/);
  // Absent content next to tool calls, and JSON-string arguments (OpenAI's form), are accepted.
  const ok = weatherConversation('Lima', 25) as Record<string, LooseJson>;
  delete ok.messages[2].content;
  ok.messages[2].tool_calls[0].function.arguments = '{"city": "Lima"}';
  const { examples } = tokenizeRecords(parseJsonl(JSON.stringify(ok)), tok, { chatTemplate: TOOL_TEMPLATE });
  assert.ok(examples[0]!.labels.some((l) => l !== IGNORE_INDEX));
});

test('truncation, packing and dropping rows without labels', async () => {
  const rows = [
    { inputIds: [1, 2, 3, 4, 5], labels: [1, 2, 3, 4, 5] },
    { inputIds: [6, 7, 8], labels: [-100, -100, 8] },
    { inputIds: [9, 10, 11, 12], labels: [-100, -100, -100, -100] },
  ];
  const cut = prepareExamples(rows, { maxLength: 2 });
  assert.deepEqual(cut.examples, [{ inputIds: [1, 2], labels: [1, 2] }]);
  assert.equal(cut.dropped, 2);
  const packed = prepareExamples(rows, { maxLength: 4, packing: true });
  assert.deepEqual(packed.examples, [
    { inputIds: [1, 2, 3, 4], labels: [1, 2, 3, 4] },
    { inputIds: [5, 6, 7, 8], labels: [5, -100, -100, 8] },
  ]);
  assert.equal(packed.dropped, 1);
  assert.throws(
    () => prepareExamples([rows[2]!], { maxLength: 8 }),
    (e: unknown) => e instanceof DatasetError && /--max-len/.test(e.message),
  );
});

test('right padding masks and ignores pad positions', () => {
  const b = collate(
    [
      { inputIds: [5, 6, 7], labels: [-100, 6, 7] },
      { inputIds: [8], labels: [8] },
    ],
    0,
  );
  assert.equal(b.seq, 3);
  assert.deepEqual([...b.inputIds], [5n, 6n, 7n, 8n, 0n, 0n]);
  assert.deepEqual([...b.attentionMask], [1n, 1n, 1n, 1n, 0n, 0n]);
  assert.deepEqual([...b.labels], [-100n, 6n, 7n, 8n, -100n, -100n]);
  assert.equal(b.tokens, 4);
});

test('eval split is seeded and disjoint; batch streams resume at their position', () => {
  const items = Array.from({ length: 20 }, (_, i) => i);
  const a = splitForEval(items, 0.1, 3);
  assert.equal(a.eval.length, 2);
  assert.deepEqual(splitForEval(items, 0.1, 3), a);
  assert.deepEqual(
    [...a.train, ...a.eval].sort((x, y) => x - y),
    items,
  );
  assert.throws(() => splitForEval([1], 0.5, 0), DatasetError);

  const examples = Array.from({ length: 7 }, (_, i) => ({ inputIds: [i, i], labels: [i, i] }));
  const first = (b: ReturnType<BatchStream['next']>) => [...b.inputIds].filter((_, i) => i % 2 === 0).map(Number);
  const s = new BatchStream(examples, 3, 0, 42);
  const seen: number[][] = [];
  for (let i = 0; i < 7; i++) seen.push(first(s.next()));
  // Epochs are 3 + 3 + 1 examples; every epoch visits all seven once, in a new order.
  assert.deepEqual(seen.slice(0, 3).flat().sort(), [0, 1, 2, 3, 4, 5, 6]);
  assert.deepEqual(seen.slice(3, 6).flat().sort(), [0, 1, 2, 3, 4, 5, 6]);
  assert.notDeepEqual(seen.slice(0, 3).flat(), seen.slice(3, 6).flat());
  const again = new BatchStream(examples, 3, 0, 42);
  for (let i = 0; i < 4; i++) again.next();
  const resumed = new BatchStream(examples, 3, 0, 42, true, again.position);
  for (let i = 4; i < 7; i++) assert.deepEqual(first(resumed.next()), seen[i]);
});
