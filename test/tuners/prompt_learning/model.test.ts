// What the three prompt-learning methods share: registry dispatch (loadAdapter/createAdapter on
// peft_type), adapter_config.json written with peft's exact keys and values for new adapters,
// encoder outputs saved as 'prompt_embeddings' that reload to the same model, and Python JSON.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { readSafetensors, toFloat32 } from '../../../src/io/safetensors.js';
import { loadModel } from '../../../src/models/load.js';
import { createAdapter, loadAdapter } from '../../../src/tuners/load.js';
import { PTuningModel } from '../../../src/tuners/p_tuning/index.js';
import { PrefixTuningModel } from '../../../src/tuners/prefix_tuning/index.js';
import { pyFloatRepr, pythonJsonDumps, PyFloat } from '../../../src/io/pyjson.js';
import { PromptTuningModel } from '../../../src/tuners/prompt_tuning/index.js';
import { PeftConfigError } from '../../../src/tuners/types.js';
import { fixturePath, maxAbsDiff } from '../../helpers/fixtures.js';
import { checkOutputs, expectedPrompt, fixtureBatch, trainableState, withTempDir } from '../prompt_learning_support.js';

test('Python JSON: float repr and json.dumps(indent=2, sort_keys=True)', () => {
  const cases: [number, string][] = [
    [0, '0.0'],
    [0.1, '0.1'],
    [1e-5, '1e-05'],
    [0.0001, '0.0001'],
    [123, '123.0'],
    [1.5e-7, '1.5e-07'],
    [1e16, '1e+16'],
    [1234567890123456, '1234567890123456.0'],
    [-2.5, '-2.5'],
    [3.0e20, '3e+20'],
    [0.5, '0.5'],
  ];
  for (const [x, want] of cases) assert.equal(pyFloatRepr(x), want, String(x));
  assert.equal(
    pythonJsonDumps({ b: [1, new PyFloat(0)], a: null, c: { y: 'é', x: {} }, d: [] }),
    '{\n  "a": null,\n  "b": [\n    1,\n    0.0\n  ],\n  "c": {\n    "x": {},\n    "y": "\\u00e9"\n  },\n  "d": []\n}',
  );
});

test('loadAdapter dispatches PROMPT_TUNING, PREFIX_TUNING and P_TUNING folders to their methods', async () => {
  const gpt2 = await loadModel(fixturePath('models', 'gpt2'));
  assert.ok((await loadAdapter(gpt2, fixturePath('adapters', 'gpt2', 'prompt_tuning_random'))) instanceof PromptTuningModel);
  assert.ok((await loadAdapter(gpt2, fixturePath('adapters', 'gpt2', 'prefix_tuning_projection'))) instanceof PrefixTuningModel);
  assert.ok((await loadAdapter(gpt2, fixturePath('adapters', 'gpt2', 'p_tuning_lstm'))) instanceof PTuningModel);
  await assert.rejects(
    createAdapter(gpt2, { peft_type: 'P_TUNING', num_virtual_token: 5 }),
    (e: Error) => e instanceof PeftConfigError && /unknown field num_virtual_token/.test(e.message),
  );
});

/** New adapters from the fields a user would pass save peft's adapter_config.json (the base path aside). */
const NEW_ADAPTERS: [string, string, Record<string, unknown>][] = [
  ['gpt2', 'prompt_tuning_random', { peft_type: 'PROMPT_TUNING', num_virtual_tokens: 5 }],
  ['bert', 'prompt_tuning_random', { peft_type: 'PROMPT_TUNING', num_virtual_tokens: 5 }],
  [
    'llama',
    'prompt_tuning_text',
    {
      peft_type: 'PROMPT_TUNING',
      num_virtual_tokens: 5,
      prompt_tuning_init: 'TEXT',
      prompt_tuning_init_text: 'Classify the sentiment of this review:',
      tokenizer_name_or_path: 'models/llama',
    },
  ],
  ['gpt2', 'prefix_tuning', { peft_type: 'PREFIX_TUNING', num_virtual_tokens: 5 }],
  ['llama', 'prefix_tuning', { peft_type: 'PREFIX_TUNING', num_virtual_tokens: 5 }],
  [
    'bert',
    'prefix_tuning_projection',
    { peft_type: 'PREFIX_TUNING', num_virtual_tokens: 5, prefix_projection: true, encoder_hidden_size: 32 },
  ],
  ['gpt2', 'p_tuning_mlp', { peft_type: 'P_TUNING', num_virtual_tokens: 5, encoder_hidden_size: 32 }],
  [
    'llama',
    'p_tuning_lstm',
    { peft_type: 'P_TUNING', num_virtual_tokens: 5, encoder_hidden_size: 32, encoder_reparameterization_type: 'LSTM' },
  ],
];

test('new adapters save adapter_config.json exactly as peft does for the same config', async () => {
  const cwd = process.cwd();
  // tokenizer_name_or_path is resolved against the working directory, as transformers does.
  process.chdir(fixturePath());
  try {
    for (const [name, c, fields] of NEW_ADAPTERS) {
      const base = await loadModel(fixturePath('models', name));
      const model = await createAdapter(base, { ...fields, base_model_name_or_path: `models/${name}` }, { seed: 1 });
      await withTempDir(async (dir) => {
        await model.savePretrained(dir);
        const mine = await readFile(join(dir, 'adapter_config.json'), 'utf8');
        assert.equal(mine, await readFile(fixturePath('adapters', name, c, 'adapter_config.json'), 'utf8'), `${name}/${c}`);
        const saved = await readSafetensors(join(dir, 'adapter_model.safetensors'));
        const theirs = await readSafetensors(fixturePath('adapters', name, c, 'adapter_model.safetensors'));
        assert.deepEqual([...saved.keys()].sort(), [...theirs.keys()].sort(), `${name}/${c}: tensor names`);
        for (const [k, t] of theirs) assert.deepEqual(saved.get(k)!.shape, t.shape, `${name}/${c}: ${k}`);
      });
    }
  } finally {
    process.chdir(cwd);
  }
});

test('an adapter trained through its encoder saves the encoder output, and the saved adapter reproduces it', async () => {
  for (const [name, c] of [
    ['llama', 'p_tuning_lstm'],
    ['bert', 'p_tuning_mlp'],
    ['gpt2', 'prefix_tuning_projection'],
  ] as const) {
    const base = await loadModel(fixturePath('models', name));
    const caseDir = join('adapters', name, c);
    const fields = JSON.parse(await readFile(fixturePath(caseDir, 'adapter_config.json'), 'utf8')) as Record<string, unknown>;
    const model = await createAdapter(base, fields);
    (model as PTuningModel).loadTrainableState(await trainableState(caseDir));
    await withTempDir(async (dir) => {
      await model.savePretrained(dir);
      assert.equal(
        await readFile(join(dir, 'adapter_config.json'), 'utf8'),
        await readFile(fixturePath(caseDir, 'adapter_config.json'), 'utf8'),
      );
      const saved = await readSafetensors(join(dir, 'adapter_model.safetensors'));
      const d = maxAbsDiff(toFloat32(saved.get('prompt_embeddings')!), await expectedPrompt(caseDir));
      assert.ok(d < 1e-5, `${caseDir}: saved prompt_embeddings differ by ${d}`);
      await checkOutputs(await loadAdapter(base, dir), caseDir, await fixtureBatch(name));
    });
  }
});

/** Greedy continuation by recomputing the full forward pass at every step (no cache). */
async function greedyByRecompute(
  model: PromptTuningModel | PrefixTuningModel | PTuningModel,
  prompt: number[],
  steps: number,
): Promise<number[]> {
  const { ForwardSession } = await import('../../../src/generate/index.js');
  const session = await ForwardSession.create(model);
  const ids = [...prompt];
  const out: number[] = [];
  try {
    for (let s = 0; s < steps; s++) {
      const T = ids.length;
      const r = await session.run({
        inputIds: { dtype: 'int64', shape: [1, T], data: BigInt64Array.from(ids.map(BigInt)) },
        attentionMask: { dtype: 'int64', shape: [1, T], data: new BigInt64Array(T).fill(1n) },
      });
      const logits = r.logits.data as Float32Array;
      const V = model.base.vocabSize;
      const last = logits.subarray(logits.length - V);
      let best = 0;
      for (let v = 1; v < V; v++) if (last[v]! > last[best]!) best = v;
      ids.push(best);
      out.push(best);
    }
  } finally {
    await session.dispose();
  }
  return out;
}

test('generate (KV cache, left-padded batch) with each prompt-learning method equals greedy recomputation', async () => {
  const { Generator } = await import('../../../src/generate/index.js');
  const llama = await loadModel(fixturePath('models', 'llama'));
  const gpt2 = await loadModel(fixturePath('models', 'gpt2'));
  const prompts = [
    [5, 77, 300, 12, 9],
    [41, 8, 200],
  ];
  const models = [
    await loadAdapter(llama, fixturePath('adapters', 'llama', 'prompt_tuning_random')),
    await loadAdapter(llama, fixturePath('adapters', 'llama', 'prefix_tuning')),
    PTuningModel.create(gpt2, { numVirtualTokens: 3, encoderReparameterizationType: 'LSTM', encoderHiddenSize: 16 }, { seed: 4 }),
    PrefixTuningModel.create(gpt2, { numVirtualTokens: 3, prefixProjection: true }, { seed: 5 }),
  ] as (PromptTuningModel | PrefixTuningModel | PTuningModel)[];
  for (const model of models) {
    const generator = await Generator.create(model);
    const gen = await generator.generate(prompts, { maxNewTokens: 6, doSample: false, stopTokenIds: [] });
    await generator.dispose();
    for (let b = 0; b < prompts.length; b++) {
      assert.deepEqual(gen.sequences[b]!.tokenIds, await greedyByRecompute(model, prompts[b]!, 6), `${model.peftType} row ${b}`);
    }
  }
});
