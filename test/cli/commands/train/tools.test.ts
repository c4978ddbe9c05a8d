// `peft train` on tool-calling chat data ({"messages", "tools"} rows with assistant tool_calls)
// with a Hermes-style --chat-template on the bundled tiny-llama: it trains and the loss falls;
// a malformed tool call fails in one line naming file, line and field before --out exists.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { readFile, writeFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { parseMetrics, type TrainRecord } from '../../../../src/train/metrics.js';
import { tempDir } from '../../../train/synthetic.js';
import { TOOL_TEMPLATE, weatherConversation } from '../../../train/tool_chat.js';

const CLI = resolve('dist/src/cli/main.js');
const peft = (args: string[]) => spawnSync(process.execPath, [CLI, ...args], { encoding: 'utf8' });

test('peft train on tools + tool_calls conversations trains tiny-llama and the loss falls', async () => {
  const dir = await tempDir('peft-tools-');
  const cities = ['Paris', 'Rome', 'Oslo', 'Lima', 'Cairo', 'Quito', 'Seoul', 'Perth'];
  const rows = cities.map((c, i) => JSON.stringify(weatherConversation(c, 10 + i)));
  await writeFile(join(dir, 'chat.jsonl'), rows.join('\n') + '\n');
  await writeFile(join(dir, 'tmpl.jinja'), TOOL_TEMPLATE);
  const out = join(dir, 'out');
  const base = ['train', '--model', 'models/tiny-llama', '--chat-template', join(dir, 'tmpl.jinja'), '--threads', '2', '--log-every', '1'];
  const r = peft([...base, '--data', join(dir, 'chat.jsonl'), '--out', out, '--steps', '8', '--lr', '1e-2', '--batch', '4']);
  assert.equal(r.status, 0, r.stderr);
  assert.ok(existsSync(join(out, 'adapter_model.safetensors')));
  const train = parseMetrics(await readFile(join(out, 'metrics.jsonl'), 'utf8')).filter((m): m is TrainRecord => m.kind === 'train');
  assert.equal(train.length, 8);
  assert.ok(train[7]!.loss < train[0]!.loss, `loss ${train[0]!.loss} -> ${train[7]!.loss}`);

  const bad = JSON.parse(rows[1]!);
  bad.messages[2].tool_calls[0].function.arguments = 42;
  await writeFile(join(dir, 'bad.jsonl'), `${rows[0]}\n${JSON.stringify(bad)}\n`);
  const r2 = peft([...base, '--data', join(dir, 'bad.jsonl'), '--out', join(dir, 'out2'), '--steps', '2']);
  assert.equal(r2.status, 1);
  assert.match(r2.stderr.trim(), /bad\.jsonl.*2.*messages\[2\]\.tool_calls\[0\]\.function\.arguments must be an object/);
  assert.equal(r2.stderr.trim().split('\n').length, 1, r2.stderr);
  assert.ok(!existsSync(join(dir, 'out2')));
});
