// One fine-tuning run as the demo page does it, written once so the page's worker (in-memory
// storage, onnxruntime-web) and the Node reference run of its test (node:fs, onnxruntime-node)
// execute the same code: load a model folder and a jsonl file from the current storage, generate
// before, train an adapter with the Trainer, generate after, save the adapter, and report what the
// test compares (first step's loss and gradient norm, logits of a probe prompt).

import { PeftError } from '../errors.js';
import { ForwardSession, type InferenceModel, generate } from '../generate/index.js';
import { Tokenizer } from '../io/tokenizer.js';
import { loadModel } from '../models/load.js';
import { runtimeBackend } from '../runtime/backend.js';
import type { RuntimeOptions } from '../runtime/session.js';
import { join } from '../storage/index.js';
import { loadDataset, prepareExamples } from '../train/data.js';
import type { TrainRecord } from '../train/metrics.js';
import { Trainer } from '../train/trainer.js';
import { getPeftModel, numParameters, type PeftConfig } from '../tuners/load.js';

/** The methods the page offers. */
export const FINETUNE_METHODS = ['lora', 'ia3', 'prompt_tuning'] as const;
export type FinetuneMethod = (typeof FINETUNE_METHODS)[number];

/** A setting the page passed that cannot be used. */
export class FinetuneError extends PeftError {}

export interface FinetuneOptions {
  /** a model folder in the current storage (config.json, model.safetensors, tokenizer files) */
  modelDir: string;
  /** a jsonl file in the current storage ({prompt, completion}, {text} or {messages} rows) */
  trainFile: string;
  /** where the adapter goes (a new or empty folder) */
  outputDir: string;
  method: FinetuneMethod;
  steps: number;
  learningRate: number;
  batchSize: number;
  seed: number;
  /** LoRA rank (default 8) */
  r?: number;
  /** prompt tuning: virtual tokens (default 8) */
  numVirtualTokens?: number;
  /** use the first n rows of the file (default all) */
  maxExamples?: number;
  /** prompts generated from before and after training (greedy) */
  prompts: string[];
  maxNewTokens?: number;
  runtime?: RuntimeOptions;
  onStep?: (record: TrainRecord, totalSteps: number) => void;
  onStatus?: (text: string) => void;
}

export interface FinetuneResult {
  runtime: string;
  trainExamples: number;
  trainableParameters: number;
  totalParameters: number;
  records: TrainRecord[];
  firstLoss: number;
  /** the global gradient norm of the first step, before clipping */
  firstGradNorm: number;
  finalLoss: number;
  trainSeconds: number;
  /** real tokens per second over the whole run (train steps only) */
  tokensPerSecond: number;
  before: string[];
  after: string[];
  /** logits of the trained model at the last position of prompts[0] */
  probeLogits: number[];
  adapterFiles: string[];
}

/** The adapter config of a method with the page's settings. */
export function adapterConfig(method: FinetuneMethod, o: Pick<FinetuneOptions, 'r' | 'numVirtualTokens'>): PeftConfig {
  switch (method) {
    case 'lora':
      return { r: o.r ?? 8, loraAlpha: 2 * (o.r ?? 8), loraDropout: 0, targetModules: 'all-linear', taskType: 'CAUSAL_LM' };
    case 'ia3':
      return { peftType: 'IA3', taskType: 'CAUSAL_LM' };
    case 'prompt_tuning':
      return { peftType: 'PROMPT_TUNING', taskType: 'CAUSAL_LM', numVirtualTokens: o.numVirtualTokens ?? 8 };
    default:
      throw new FinetuneError(`unknown method "${String(method)}"; choose one of ${FINETUNE_METHODS.join(', ')}`);
  }
}

async function greedy(
  model: InferenceModel,
  tokenizer: Tokenizer,
  prompts: string[],
  maxNewTokens: number,
  runtime?: RuntimeOptions,
): Promise<string[]> {
  if (prompts.length === 0) return [];
  const out = await generate(model, tokenizer, prompts, { maxNewTokens, doSample: false, stopStrings: ['\n'], runtime });
  return out.sequences.map((s) => s.text ?? '');
}

/** Logits at the last position of `prompt` (one row, no padding). */
export async function probeLogits(
  model: InferenceModel,
  tokenizer: Tokenizer,
  prompt: string,
  runtime?: RuntimeOptions,
): Promise<number[]> {
  const ids = tokenizer.encode(prompt);
  const session = await ForwardSession.create(model, { runtime });
  try {
    const n = ids.length;
    const out = await session.run({
      inputIds: { dtype: 'int64', shape: [1, n], data: BigInt64Array.from(ids.map(BigInt)) },
      attentionMask: { dtype: 'int64', shape: [1, n], data: new BigInt64Array(n).fill(1n) },
    });
    const vocab = out.logits.shape[2]!;
    return Array.from(out.logits.data as Float32Array).slice((n - 1) * vocab, n * vocab);
  } finally {
    await session.dispose();
  }
}

export async function finetune(o: FinetuneOptions): Promise<FinetuneResult> {
  const status = o.onStatus ?? (() => undefined);
  if (!FINETUNE_METHODS.includes(o.method))
    throw new FinetuneError(`unknown method "${o.method}"; choose one of ${FINETUNE_METHODS.join(', ')}`);
  if (o.prompts.length === 0) throw new FinetuneError('give at least one prompt to generate from');
  status(`loading the model from ${o.modelDir}`);
  const model = await loadModel(o.modelDir);
  const tokenizer = await Tokenizer.fromDir(o.modelDir);
  const padTokenId = tokenizer.padTokenId ?? tokenizer.eosTokenId;
  if (padTokenId === undefined) throw new FinetuneError(`the tokenizer in ${o.modelDir} has neither a pad nor an EOS token`);
  const { examples: rows } = await loadDataset(o.trainFile, tokenizer, { maxExamples: o.maxExamples });
  const { examples } = prepareExamples(rows, { maxLength: Math.min(512, model.config.maxPositionEmbeddings), file: o.trainFile });
  const maxNewTokens = o.maxNewTokens ?? 16;
  status('generating before training');
  const before = await greedy(model, tokenizer, o.prompts, maxNewTokens, o.runtime);
  const adapted = await getPeftModel(model, adapterConfig(o.method, o) as never, { seed: o.seed });
  const { trainable, all } = numParameters(adapted);
  const records: TrainRecord[] = [];
  let totalSteps = o.steps;
  const trainer = new Trainer(adapted, examples, undefined, {
    outputDir: o.outputDir,
    padTokenId,
    learningRate: o.learningRate,
    batchSize: o.batchSize,
    maxSteps: o.steps,
    schedule: 'constant',
    evalEvery: 0,
    evalAtStart: false,
    saveEvery: 0,
    seed: o.seed,
    tokenizerDir: o.modelDir,
    runtime: o.runtime,
    onStep: (r) => {
      records.push(r);
      o.onStep?.(r, totalSteps);
    },
  });
  totalSteps = o.steps;
  status(`training ${o.method} for ${o.steps} steps`);
  const t0 = performance.now();
  const result = await trainer.train();
  const trainSeconds = (performance.now() - t0) / 1000;
  status('generating after training');
  const after = await greedy(adapted, tokenizer, o.prompts, maxNewTokens, o.runtime);
  const probe = await probeLogits(adapted, tokenizer, o.prompts[0]!, o.runtime);
  const tokens = records.reduce((s, r) => s + r.tokens, 0);
  const stepSeconds = records.reduce((s, r) => s + (r.tokens_per_second > 0 ? r.tokens / r.tokens_per_second : 0), 0);
  return {
    runtime: runtimeBackend().name,
    trainExamples: examples.length,
    trainableParameters: trainable,
    totalParameters: all,
    records,
    firstLoss: records[0]?.loss ?? NaN,
    firstGradNorm: records[0]?.grad_norm ?? NaN,
    finalLoss: result.finalLoss ?? NaN,
    trainSeconds,
    tokensPerSecond: stepSeconds > 0 ? tokens / stepSeconds : 0,
    before,
    after,
    probeLogits: probe,
    adapterFiles: ['adapter_config.json', 'adapter_model.safetensors'].map((f) => join(o.outputDir, f)),
  };
}
