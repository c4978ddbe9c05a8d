// Makes the bundled base model models/tiny-llama from nothing but a seed: generates a synthetic
// corpus, trains a byte-level BPE tokenizer on it, pretrains a small Llama from random init with
// this library's engine (full fine-tuning + Trainer), and writes the Hugging Face folder (float16
// weights, tokenizer files, model card with the measured numbers). Run: npm run pretrain -- --help

import { existsSync } from 'node:fs';
import { mkdir, readFile, rename, rm, stat, writeFile } from 'node:fs/promises';
import os from 'node:os';
import { basename, dirname, join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { generate } from '../src/generate/index.js';
import { fromTypedArray, type RawTensor, writeSafetensors } from '../src/io/safetensors.js';
import { Tokenizer } from '../src/io/tokenizer.js';
import { loadModel } from '../src/models/load.js';
import type { PretrainedModel } from '../src/models/types.js';
import type { TokenizedExample } from '../src/train/data.js';
import { progressFor } from '../src/train/progress_terminal.js';
import { Trainer } from '../src/train/trainer.js';
import { getFullFineTuneModel } from '../src/tuners/full/index.js';
import { countWords, tokenizerJson, trainBpe } from './corpus/bpe.js';
import { modelCard, type PretrainReport } from './corpus/card.js';
import { initialWeights, llamaConfig, type TinyLlamaShape } from './corpus/init.js';
import { Picker } from './corpus/lexicon.js';
import { corpusDocument } from './corpus/text.js';

const SPECIAL_TOKENS = ['<pad>', '<s>', '</s>'] as const;
const IDS = { pad: 0, bos: 1, eos: 2 };
/** Random streams of one seed: the training documents and the held-out ones never share draws. */
const TRAIN_STREAM = 1;
const EVAL_STREAM = 2;

const USAGE = `usage: node dist/scripts/pretrain.js [options]

  --out <dir>          model folder to write (default models/tiny-llama); replaced atomically
  --work <dir>         run folder: initial weights, metrics.jsonl, loss.svg, checkpoints (default out/pretrain)
  --seed <n>           seed of corpus, tokenizer corpus and initialization (default 1234)
  --steps <n>          optimizer steps (default 1800); the corpus is sized for one pass
  --batch <n>          packed blocks per step (default 8)
  --block <n>          tokens per block (default 256)
  --lr <x>             peak learning rate (default 0.002), cosine decay after --warmup steps (default 100)
  --vocab <n>          tokenizer vocabulary incl. special tokens and 256 bytes (default 1536)
  --hidden <n> --layers <n> --heads <n> --kv-heads <n> --intermediate <n>   model shape (192, 4, 4, 2, 576)
  --threads <n>        ONNX Runtime threads (default: all cores)
  --resume             continue the run in --work from its latest checkpoint
`;

interface Options {
  out: string;
  work: string;
  seed: number;
  steps: number;
  batch: number;
  block: number;
  lr: number;
  warmup: number;
  weightDecay: number;
  shape: TinyLlamaShape;
  threads: number;
  resume: boolean;
  bpeDocuments: number;
  evalDocuments: number;
}

class PretrainError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'PretrainError';
  }
}

function parseOptions(argv: string[]): Options | undefined {
  const { values } = parseArgs({
    args: argv,
    options: {
      out: { type: 'string', default: 'models/tiny-llama' },
      work: { type: 'string', default: 'out/pretrain' },
      seed: { type: 'string', default: '1234' },
      steps: { type: 'string', default: '1800' },
      batch: { type: 'string', default: '8' },
      block: { type: 'string', default: '256' },
      lr: { type: 'string', default: '0.002' },
      warmup: { type: 'string', default: '100' },
      vocab: { type: 'string', default: '1536' },
      hidden: { type: 'string', default: '192' },
      layers: { type: 'string', default: '4' },
      heads: { type: 'string', default: '4' },
      'kv-heads': { type: 'string', default: '2' },
      intermediate: { type: 'string', default: '576' },
      threads: { type: 'string', default: String(os.availableParallelism()) },
      resume: { type: 'boolean', default: false },
      help: { type: 'boolean', default: false },
    },
  });
  if (values.help) {
    process.stdout.write(USAGE);
    return undefined;
  }
  const int = (flag: string, v: string, min: number): number => {
    const n = Number(v);
    if (!Number.isInteger(n) || n < min) throw new PretrainError(`--${flag} needs an integer >= ${min}, got ${JSON.stringify(v)}`);
    return n;
  };
  const num = (flag: string, v: string): number => {
    const n = Number(v);
    if (!(n > 0) || !Number.isFinite(n)) throw new PretrainError(`--${flag} needs a positive number, got ${JSON.stringify(v)}`);
    return n;
  };
  const block = int('block', values.block, 16);
  const shape: TinyLlamaShape = {
    hiddenSize: int('hidden', values.hidden, 8),
    numHiddenLayers: int('layers', values.layers, 1),
    numAttentionHeads: int('heads', values.heads, 1),
    numKeyValueHeads: int('kv-heads', values['kv-heads'], 1),
    intermediateSize: int('intermediate', values.intermediate, 8),
    vocabSize: int('vocab', values.vocab, SPECIAL_TOKENS.length + 256 + 1),
    maxPositionEmbeddings: Math.max(256, block),
  };
  if (shape.hiddenSize % shape.numAttentionHeads !== 0 || (shape.hiddenSize / shape.numAttentionHeads) % 2 !== 0) {
    throw new PretrainError(
      `--hidden ${shape.hiddenSize} must split into ${shape.numAttentionHeads} heads of an even size (rotary embeddings)`,
    );
  }
  if (shape.numAttentionHeads % shape.numKeyValueHeads !== 0)
    throw new PretrainError(`--heads ${shape.numAttentionHeads} must be a multiple of --kv-heads ${shape.numKeyValueHeads}`);
  return {
    out: values.out,
    work: values.work,
    seed: int('seed', values.seed, 0),
    steps: int('steps', values.steps, 1),
    batch: int('batch', values.batch, 1),
    block,
    lr: num('lr', values.lr),
    warmup: int('warmup', values.warmup, 0),
    weightDecay: 0.1,
    shape,
    threads: int('threads', values.threads, 1),
    resume: values.resume,
    bpeDocuments: 20000,
    evalDocuments: 600,
  };
}

const say = (s: string): void => void process.stderr.write(`${s}\n`);

/** Writes a JSON file the way Python's json.dump(indent=2) lays it out (close enough for humans). */
async function writeJson(path: string, value: unknown): Promise<void> {
  await writeFile(path, `${JSON.stringify(value, null, 2)}\n`);
}

async function writeTokenizerFiles(dir: string, tokenizer: Record<string, unknown>, maxLength: number): Promise<void> {
  const [pad, bos, eos] = SPECIAL_TOKENS;
  await writeJson(join(dir, 'tokenizer.json'), tokenizer);
  await writeJson(join(dir, 'tokenizer_config.json'), {
    added_tokens_decoder: Object.fromEntries(
      SPECIAL_TOKENS.map((t, i) => [
        String(i),
        { content: t, lstrip: false, normalized: false, rstrip: false, single_word: false, special: true },
      ]),
    ),
    bos_token: bos,
    clean_up_tokenization_spaces: false,
    eos_token: eos,
    model_max_length: maxLength,
    pad_token: pad,
    tokenizer_class: 'PreTrainedTokenizerFast',
  });
  await writeJson(join(dir, 'special_tokens_map.json'), { bos_token: bos, eos_token: eos, pad_token: pad });
}

async function writeGenerationConfig(dir: string): Promise<void> {
  await writeJson(join(dir, 'generation_config.json'), {
    _from_model_config: true,
    bos_token_id: IDS.bos,
    eos_token_id: IDS.eos,
    pad_token_id: IDS.pad,
    transformers_version: '4.44.0',
  });
}

/** Texts whose decode(encode(x)) must give x back: corpus documents and characters the corpus lacks. */
function roundTripCheck(tokenizer: Tokenizer, texts: readonly string[]): void {
  const extra = [
    'Caf\u00e9 na\u00efve \u00fcber \u2013 \u201cquotes\u201d \u{1F642} \u4f60\u597d',
    '  two  spaces\tand tab\n\nnew lines ',
    'Review: 12 + 30 = 42?\nAnswer: {"a": [1, 2]}',
  ];
  for (const text of [...texts, ...extra]) {
    const ids = tokenizer.encode(text, { addSpecialTokens: false });
    const back = tokenizer.decode(ids);
    if (back !== text)
      throw new PretrainError(
        `the trained tokenizer does not round-trip ${JSON.stringify(text.slice(0, 80))}: got ${JSON.stringify(back.slice(0, 80))}`,
      );
  }
  const withBos = tokenizer.encode('hello');
  if (withBos[0] !== IDS.bos)
    throw new PretrainError(`the trained tokenizer does not start sequences with <s> (id ${IDS.bos}): ${withBos}`);
}

/** Documents (BOS ... EOS) concatenated and cut into `count` blocks of `block` tokens. */
function packBlocks(docs: Iterable<number[]>, block: number, count: number): TokenizedExample[] {
  const blocks: TokenizedExample[] = [];
  let cur: number[] = [];
  for (const ids of docs) {
    for (const id of ids) {
      cur.push(id);
      if (cur.length === block) {
        blocks.push({ inputIds: cur, labels: [...cur] });
        cur = [];
        if (blocks.length === count) return blocks;
      }
    }
  }
  throw new PretrainError(`the corpus ran out after ${blocks.length} of ${count} blocks`);
}

function machine(): string {
  const cpus = os.cpus();
  return `${cpus.length} x ${cpus[0]?.model.trim() ?? 'unknown CPU'}, ${Math.round(os.totalmem() / 2 ** 30)} GiB RAM, ${os.platform()} ${os.arch()}, Node ${process.version}`;
}

async function ortVersion(): Promise<string> {
  try {
    const pkg = JSON.parse(await readFile(resolve('node_modules/onnxruntime-node/package.json'), 'utf8')) as { version?: string };
    return pkg.version ?? '?';
  } catch {
    return '?';
  }
}

/** Writes every file into a sibling temp folder, then swaps it in, so a failed run leaves the old model intact. */
async function replaceFolder(out: string, fill: (dir: string) => Promise<void>): Promise<void> {
  const parent = dirname(resolve(out));
  await mkdir(parent, { recursive: true });
  const stage = join(parent, `.${basename(out)}.tmp-${process.pid}`);
  const old = join(parent, `.${basename(out)}.old-${process.pid}`);
  await rm(stage, { recursive: true, force: true });
  await mkdir(stage);
  try {
    await fill(stage);
  } catch (e) {
    await rm(stage, { recursive: true, force: true });
    throw e;
  }
  if (existsSync(out)) await rename(out, old);
  await rename(stage, out);
  await rm(old, { recursive: true, force: true });
}

async function main(): Promise<void> {
  const opt = parseOptions(process.argv.slice(2));
  if (!opt) return;
  const t0 = performance.now();
  const loadStart = os.loadavg()[0]!;
  const { shape } = opt;
  const initDir = join(opt.work, 'init');
  const runDir = join(opt.work, 'run');
  await mkdir(initDir, { recursive: true });

  // 1. Corpus documents for the tokenizer (the first documents of the training stream).
  const trainDocs = new Picker(opt.seed, TRAIN_STREAM);
  const docs: string[] = [];
  for (let i = 0; i < opt.bpeDocuments; i++) docs.push(corpusDocument(trainDocs));
  say(`corpus: ${docs.length} documents for the tokenizer (${(docs.reduce((s, d) => s + d.length, 0) / 1e6).toFixed(1)}M characters)`);

  // 2. Tokenizer.
  const tb = performance.now();
  const bpe = trainBpe(countWords(docs), { vocabSize: shape.vocabSize, specialTokens: SPECIAL_TOKENS, splitDigits: true });
  if (bpe.vocab.size !== shape.vocabSize) {
    throw new PretrainError(
      `the corpus only supports ${bpe.vocab.size} tokens (pairs seen at least twice ran out); lower --vocab to ${bpe.vocab.size}`,
    );
  }
  await writeTokenizerFiles(initDir, tokenizerJson(bpe, SPECIAL_TOKENS[1]), shape.maxPositionEmbeddings);
  const tokenizer = await Tokenizer.fromDir(initDir);
  roundTripCheck(tokenizer, docs.slice(0, 2000));
  say(
    `tokenizer: ${bpe.merges.length} merges, vocabulary ${tokenizer.vocabSize}, round trip ok (${((performance.now() - tb) / 1000).toFixed(1)}s)`,
  );

  // 3. Training blocks: one pass over exactly steps * batch blocks; held-out blocks for eval.
  const needed = opt.steps * opt.batch;
  let trainDocCount = 0;
  let characters = 0;
  let words = 0;
  const trainTokensOf = function* (): Generator<number[]> {
    for (let i = 0; ; i++) {
      const text = i < docs.length ? docs[i]! : corpusDocument(trainDocs);
      trainDocCount++;
      characters += text.length;
      words += text.split(/\s+/).filter(Boolean).length;
      yield [...tokenizer.encode(text), IDS.eos];
    }
  };
  const train = packBlocks(trainTokensOf(), opt.block, needed);
  const evalPicker = new Picker(opt.seed, EVAL_STREAM);
  const evalTexts = Array.from({ length: opt.evalDocuments }, () => corpusDocument(evalPicker));
  const evalIds = evalTexts.map((t) => [...tokenizer.encode(t), IDS.eos]);
  const evalTokenCount = evalIds.reduce((s, x) => s + x.length, 0);
  const evalBlocks = packBlocks(evalIds, opt.block, Math.floor(evalTokenCount / opt.block));
  const trainTokens = needed * opt.block;
  say(
    `data: ${train.length} training blocks of ${opt.block} tokens from ${trainDocCount} documents; ${evalBlocks.length} eval blocks from ${opt.evalDocuments} documents`,
  );

  // 4. Model from random init.
  await writeJson(join(initDir, 'config.json'), llamaConfig(shape, IDS, 'float32'));
  await writeGenerationConfig(initDir);
  if (!opt.resume || !existsSync(join(initDir, 'model.safetensors')))
    await writeSafetensors(join(initDir, 'model.safetensors'), initialWeights(shape, opt.seed), { format: 'pt' });
  const model = await loadModel(initDir);
  const parameters = model.weights.numel();
  say(
    `model: ${parameters.toLocaleString('en-US')} parameters (hidden ${shape.hiddenSize}, ${shape.numHiddenLayers} layers, vocab ${shape.vocabSize})`,
  );

  // 5. Pretraining.
  const full = getFullFineTuneModel(model);
  const trainer = new Trainer(full, train, evalBlocks, {
    outputDir: runDir,
    padTokenId: IDS.pad,
    learningRate: opt.lr,
    weightDecay: opt.weightDecay,
    batchSize: opt.batch,
    maxSteps: opt.steps,
    schedule: 'cosine',
    warmupSteps: Math.min(opt.warmup, opt.steps - 1),
    maxGradNorm: 1,
    evalEvery: Math.max(1, Math.round(opt.steps / 10)),
    saveEvery: Math.max(1, Math.round(opt.steps / 6)),
    seed: opt.seed,
    resume: opt.resume ? 'latest' : undefined,
    overwrite: !opt.resume,
    progress: progressFor(process.stderr, 25),
    runtime: { threads: opt.threads },
  });
  process.on('SIGINT', () => trainer.requestStop());
  const ts = performance.now();
  const result = await trainer.train();
  const trainSeconds = (performance.now() - ts) / 1000;
  if (result.interrupted) {
    say(`stopped at step ${result.globalStep}; continue with --resume`);
    process.exitCode = 130;
    return;
  }
  const trainRecords = result.metrics.filter((m) => m.kind === 'train');
  // A resumed run's wall time covers only its own steps; the step records carry the whole run's.
  const elapsed = opt.resume
    ? trainSeconds
    : Math.max(trainSeconds, (trainRecords[trainRecords.length - 1] as { elapsed_s: number }).elapsed_s);

  // 6. The model folder, float16.
  const ortv = await ortVersion();
  const loadEnd = os.loadavg()[0]!;
  const report: PretrainReport = {
    command: `npm run pretrain -- --seed ${opt.seed} --steps ${opt.steps} --batch ${opt.batch} --block ${opt.block} --lr ${opt.lr} --vocab ${shape.vocabSize} --hidden ${shape.hiddenSize} --layers ${shape.numHiddenLayers} --heads ${shape.numAttentionHeads} --kv-heads ${shape.numKeyValueHeads} --intermediate ${shape.intermediateSize} --threads ${opt.threads}`,
    seed: opt.seed,
    shape,
    parameters,
    fileBytes: 0,
    corpus: {
      trainDocuments: trainDocCount,
      trainTokens,
      evalDocuments: opt.evalDocuments,
      evalTokens: evalBlocks.length * opt.block,
      bpeDocuments: docs.length,
      characters,
    },
    tokenizer: { merges: bpe.merges.length, specialTokens: [...SPECIAL_TOKENS], tokensPerWord: trainTokens / Math.max(1, words) },
    training: {
      steps: opt.steps,
      batchSize: opt.batch,
      blockSize: opt.block,
      learningRate: opt.lr,
      warmupSteps: Math.min(opt.warmup, opt.steps - 1),
      weightDecay: opt.weightDecay,
      schedule: 'cosine',
      threads: opt.threads,
      initialEvalLoss: result.initialEvalLoss ?? NaN,
      finalTrainLoss: result.finalLoss ?? NaN,
      finalEvalLoss: result.finalEvalLoss ?? NaN,
      float16EvalLoss: NaN,
      seconds: elapsed,
      tokensPerSecond: trainTokens / elapsed,
    },
    totalSeconds: 0,
    machine: `${machine()}, onnxruntime-node ${ortv}; 1-minute load average ${loadStart.toFixed(1)} at the start and ${loadEnd.toFixed(1)} at the end (other jobs shared the cores)`,
    samples: [],
  };
  const stage = async (dir: string, withCard: boolean): Promise<void> => {
    const tensors = new Map<string, RawTensor>();
    for (const name of model.weights.names()) {
      const w = model.weights.get(name);
      tensors.set(name, fromTypedArray(w.data, w.shape, 'F16'));
    }
    await writeSafetensors(join(dir, 'model.safetensors'), tensors, { format: 'pt' });
    await writeJson(join(dir, 'config.json'), llamaConfig(shape, IDS, 'float16'));
    await writeGenerationConfig(dir);
    await writeTokenizerFiles(dir, tokenizerJson(bpe, SPECIAL_TOKENS[1]), shape.maxPositionEmbeddings);
    if (withCard) await writeFile(join(dir, 'README.md'), modelCard(report));
  };
  // The saved float16 model is measured before the card is written, so the card reports it.
  const probe = join(opt.work, 'float16');
  await rm(probe, { recursive: true, force: true });
  await mkdir(probe, { recursive: true });
  await stage(probe, false);
  const saved = await loadModel(probe);
  const savedTokenizer = await Tokenizer.fromDir(probe);
  roundTripCheck(savedTokenizer, evalTexts.slice(0, 200));
  report.fileBytes = (await stat(join(probe, 'model.safetensors'))).size;
  report.training.float16EvalLoss = (
    await new Trainer(getFullFineTuneModel(saved), evalBlocks, evalBlocks, {
      outputDir: runDir,
      padTokenId: IDS.pad,
      runtime: { threads: opt.threads },
    }).evaluate()
  ).loss;
  report.samples = await samples(saved, savedTokenizer);
  report.totalSeconds = (performance.now() - t0) / 1000;
  await replaceFolder(opt.out, (dir) => stage(dir, true));
  await rm(probe, { recursive: true, force: true });
  say(
    `done: eval loss ${report.training.initialEvalLoss.toFixed(3)} -> ${report.training.finalEvalLoss.toFixed(3)} (float16 ${report.training.float16EvalLoss.toFixed(3)}), ` +
      `train ${(elapsed / 60).toFixed(1)} min, total ${(report.totalSeconds / 60).toFixed(1)} min; wrote ${opt.out} (${(report.fileBytes / 1e6).toFixed(2)} MB weights)`,
  );
  for (const s of report.samples) say(`  ${JSON.stringify(s.prompt)} -> ${JSON.stringify(s.completion)}`);
}

async function samples(model: PretrainedModel, tokenizer: Tokenizer): Promise<{ prompt: string; completion: string }[]> {
  const prompts = ['Alice went to the', '23 plus 45 is', 'name: Bob; city:', 'The food was', 'Team members:', 'The server sent back {"'];
  const out = await generate(model, tokenizer, prompts, { maxNewTokens: 24, runtime: { threads: 2 } });
  return prompts.map((prompt, i) => ({ prompt, completion: out.sequences[i]!.text ?? '' }));
}

main().catch((e: unknown) => {
  if (
    e instanceof Error &&
    ['PretrainError', 'BpeTrainError', 'TrainError', 'ModelError', 'TokenizerLoadError', 'CheckpointError'].includes(e.name)
  ) {
    process.stderr.write(`error: ${e.message}\n`);
    process.exitCode = 1;
    return;
  }
  process.stderr.write(`${e instanceof Error ? (e.stack ?? e.message) : String(e)}\n`);
  process.exitCode = 2;
});
