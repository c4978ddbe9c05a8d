// `peft train`: fine-tune a causal LM, or a sequence classifier (BERT) on {"text","label"} rows
// (the task is the loaded model's), with LoRA, QLoRA, IA3, prompt/prefix/P-tuning, adapters or full
// fine-tuning. A thin shell over the library: flags are checked and data tokenized before the
// output folder is touched; Ctrl-C stops after the current step with a checkpoint; --resume
// continues exactly.

import { copyFile, existsSync, host, join, mkdirSync, mkdtemp, mkdtempSync, readFile, rm, rmSync } from '../../storage/index.js';
import { type Command, InvalidArgumentError, Option } from 'commander';
import { writeFileAtomic } from '../../io/atomic.js';
import { GENERATION_CONFIG_FILE } from '../../io/modelfiles.js';
import { RunConfigError, asFlagText, checkPeftFields, readRunConfig } from '../../train/runconfig.js';
import { TensorBoardWriter } from '../../train/tfevents.js';
import { GENERATION_METRICS, type GenerationMetric, evalRows, evaluateRows } from '../../tasks/eval.js';
import { readJsonl } from '../../train/data.js';
import { type AddedTokens, addTokensToTokenizer, growModelFor, parseAddTokens, saveTokenizerFiles } from '../../train/add_tokens.js';
import type { MetricRecord } from '../../train/metrics.js';
import { resolveModelDir } from '../../io/hub.js';
import { isHubDatasetSpec, resolveDataFile } from '../../io/hub_dataset.js';
import { Tokenizer } from '../../io/tokenizer.js';
import { loadModel } from '../../models/load.js';
import type { PretrainedModel } from '../../models/types.js';
import { loadClassificationDataset, loadDataset, prepareExamples, splitForEval } from '../../train/data.js';
import { fmtAccuracy } from '../../train/progress.js';
import { progressFor } from '../../train/progress_terminal.js';
import { SCHEDULES, type ScheduleName } from '../../train/schedule.js';
import { DEFAULT_BASE_PRECISION, DEFAULT_GRADIENT_CHECKPOINTING, describeCheckpointing, trainBasePrecision } from '../../train/step.js';
import { DEFAULT_LOSS_CHUNKS } from '../../train/chunked_loss.js';
import { METRICS_FILE, PLOT_FILE, Trainer, checkRunFolder, totalStepsFor } from '../../train/trainer.js';
import type { LoraConfig } from '../../tuners/lora/config.js';
import { resolveTargetModules } from '../../tuners/lora/targets.js';
import { createAdapter } from '../../tuners/load.js';
import { type MethodPreset, type TrainFlag, type Tuner, methodNames, methodPreset } from '../../tuners/registry.js';
import type { AdaptedModel } from '../../tuners/types.js';
import { CliError } from '../errors.js';
import { intArg, listArg, numberArg, positiveInt } from '../args.js';
import { descriptorOf } from '../../models/registry.js';
import { DEFAULT_BETA, type PreferencePair, loadPreferenceDataset } from '../../train/preference.js';
import type { TrainItem } from '../../train/trainer.js';

interface TrainFlags {
  config?: string;
  model: string;
  data: string;
  out: string;
  /** a registered method preset (src/tuners/registry.ts) */
  method: string;
  quantize?: string;
  basePrecision?: string;
  /** true: every layer (--gradient-checkpointing), k: every k-th layer, false: none (--no-gradient-checkpointing) */
  gradientCheckpointing?: boolean | number;
  /** false with --no-selective-recompute */
  selectiveRecompute?: boolean;
  lossChunks?: number;
  r?: number;
  alpha?: number;
  dropout?: number;
  target?: string[];
  epochs: number;
  steps?: number;
  lr?: number;
  weightDecay: number;
  batch: number;
  gradAccum: number;
  maxLen?: number;
  packing?: boolean;
  evalData?: string;
  evalSplit?: number;
  evalEvery?: number;
  evalAtStart: boolean;
  saveEvery: number;
  warmup?: number;
  schedule: ScheduleName;
  maxGradNorm: number;
  seed: number;
  resume?: string;
  overwrite?: boolean;
  chatTemplate?: string;
  threads?: number;
  logEvery: number;
  reportTo: string[];
  runName?: string;
  maxExamples?: number;
  promptKey?: string;
  completionKey?: string;
  messagesKey?: string;
  textKey?: string;
  evalMetric?: GenerationMetric;
  metricForBestModel?: string;
  earlyStoppingPatience?: number;
  saveBest?: boolean;
  addTokens?: string;
  useDora?: boolean;
  useRslora?: boolean;
  init?: string;
  modulesToSave?: string[];
  layers?: string[];
  numVirtualTokens?: number;
  reductionFactor?: number;
  objective: Objective;
  beta?: number;
  chosenKey?: string;
  rejectedKey?: string;
}

const OBJECTIVES = ['sft', 'dpo', 'orpo'] as const;
type Objective = (typeof OBJECTIVES)[number];

/** Flags that set one adapter_config.json field each (over --config's peft section and the method's defaults). */
const FIELD_FLAGS = {
  useDora: { flag: '--use-dora', field: 'use_dora', value: (v: unknown) => v },
  useRslora: { flag: '--use-rslora', field: 'use_rslora', value: (v: unknown) => v },
  init: { flag: '--init', field: 'init_lora_weights', value: (v: unknown) => (v === 'default' ? true : v) },
  modulesToSave: { flag: '--modules-to-save', field: 'modules_to_save', value: (v: unknown) => v },
  layers: { flag: '--layers', field: 'layers_to_transform', value: (v: unknown) => (v as string[]).map(Number) },
  numVirtualTokens: { flag: '--num-virtual-tokens', field: 'num_virtual_tokens', value: (v: unknown) => v },
  reductionFactor: { flag: '--reduction-factor', field: 'reduction_factor', value: (v: unknown) => v },
} as const;

function layersArg(v: string): string[] {
  const items = v
    .split(',')
    .map((x) => x.trim())
    .filter(Boolean);
  if (items.length === 0 || items.some((x) => !/^\d+$/.test(x)))
    throw new InvalidArgumentError('--layers takes layer indices separated by commas, e.g. 0,1,2.');
  return items;
}

const REPORTERS = ['jsonl', 'tensorboard'] as const;
function reportToArg(v: string): string[] {
  const items = v
    .split(',')
    .map((x) => x.trim())
    .filter(Boolean);
  const bad = items.filter((x) => !(REPORTERS as readonly string[]).includes(x));
  if (items.length === 0 || bad.length)
    throw new InvalidArgumentError(`--report-to takes ${REPORTERS.join(', ')} (comma-separated); metrics.jsonl is always written.`);
  return items;
}

function fractionArg(flag: string): (v: string) => number {
  return (v: string) => {
    const n = Number(v);
    if (v.trim() === '' || !(n > 0 && n < 1)) throw new InvalidArgumentError(`${flag} needs a fraction between 0 and 1.`);
    return n;
  };
}

export function register(program: Command): void {
  program
    .command('train')
    .description('fine-tune a causal language model, or a sequence classifier (BertForSequenceClassification), on a jsonl dataset')
    .option(
      '--config <file>',
      'a YAML or JSON file describing the run: any of these options (kebab- or snake_case) and a "peft" section of adapter_config.json fields in peft\'s names; flags given here override it',
    )
    .option(
      '--model <dir|repo>',
      'base model folder (config.json, model.safetensors, tokenizer.json) or Hub repo id (required, here or in --config)',
    )
    .option(
      '--data <file.jsonl>',
      'training data: one {"text"}, {"prompt","completion"} or {"messages"} object per line (dpo/orpo: {"prompt","chosen","rejected"}); for a sequence classifier {"text","label"} (label: class id or config.json id2label name); or a Hub dataset repo\'s file: hf://datasets/OWNER/NAME[/file.jsonl][@revision]',
    )
    .option(
      '--out <dir>',
      'output folder: final adapter, metrics.jsonl, loss.svg, checkpoints/, run_config.json (required, here or in --config)',
    )
    .addOption(
      new Option(
        '--method <method>',
        'fine-tuning method (qlora: LoRA on the base quantized to NF4; each method starts from the defaults `peft compare` documents)',
      )
        .choices(methodNames())
        .default('lora'),
    )
    .option(
      '--gradient-checkpointing [k]',
      `recompute decoder layers in the backward pass instead of keeping their activations: every layer, or every k-th (default ${describeCheckpointing(DEFAULT_GRADIENT_CHECKPOINTING)}: on a SmolLM-135M-shaped LoRA at 4 x 256, every second layer peaks at 0.80x the RSS of none for 6-11% fewer tokens/s, every layer at 0.57x for 11-16%: bench/RESULTS.md)`,
      positiveInt('--gradient-checkpointing'),
    )
    .option('--no-gradient-checkpointing', "keep every layer's activations for the backward pass (faster, more memory)")
    .option(
      '--no-selective-recompute',
      "keep every layer's attention probabilities (and a gated MLP's activation) for the backward pass instead of recomputing them from q, k and v (and the two projections); the default recomputes them: GPT-2 small LoRA at 4 x 256 peaks about 210 MiB lower for no measurable CPU time (bench/RESULTS.md)",
    )
    .option(
      '--loss-chunks <n>',
      `compute the LM head and the loss in n parts over the tokens, so the full logits and their gradient never exist (same loss and gradients; default ${DEFAULT_LOSS_CHUNKS}: GPT-2 small LoRA at 4 x 256 peaks at 0.85x the RSS of 1 part (all at once) for 2.6% more time; 8 with --gradient-checkpointing: 0.56x at 23% more time: bench/RESULTS.md)`,
      positiveInt('--loss-chunks'),
    )
    .addOption(
      new Option(
        '--base-precision <p>',
        `how the frozen base is held and multiplied: fp32, int8 (two int8 copies, VNNI GEMMs; trainable tensors, gradients and AdamW stay float32) or nf4 (= --quantize nf4); default ${DEFAULT_BASE_PRECISION} (bench/RESULTS.md)`,
      ).choices(['fp32', 'int8', 'nf4']),
    )
    .addOption(
      new Option(
        '--quantize <type>',
        'hold the frozen base 4-bit while training (bitsandbytes NF4/FP4, double quantization); --method qlora implies nf4',
      ).choices(['nf4', 'fp4']),
    )
    .option('--r <n>', `rank, for ${flagMethods('r')} (default 8)`, positiveInt('--r'))
    .option('--alpha <n>', `alpha, for ${flagMethods('alpha')} (default 16)`, numberArg('--alpha'))
    .option('--dropout <p>', `dropout, for ${flagMethods('dropout')} (default 0.05)`, numberArg('--dropout'))
    .option(
      '--target <modules>',
      `comma-separated module names to adapt, for ${flagMethods('target')} (default: peft's for the model type; full: every weight), or all-linear (every linear layer but the output head)`,
      listArg('--target', 'module names'),
    )
    .option('--epochs <n>', 'passes over the training data', numberArg('--epochs'), 3)
    .option('--steps <n>', 'optimizer steps (overrides --epochs)', positiveInt('--steps'))
    .option('--lr <rate>', "peak learning rate (default: the method's, e.g. 2e-4 for LoRA, 5e-5 for full)", numberArg('--lr'))
    .option('--weight-decay <w>', 'AdamW weight decay (not on biases and norm weights)', numberArg('--weight-decay'), 0)
    .option('--batch <n>', 'examples per micro-batch', positiveInt('--batch'), 8)
    .option('--grad-accum <n>', 'micro-batches per optimizer step', positiveInt('--grad-accum'), 1)
    .option('--max-len <n>', "tokens per sequence at most (default: the model's limit, at most 1024)", intArg('--max-len', 2))
    .option('--packing', 'concatenate examples and cut them into --max-len blocks instead of padding')
    .option('--eval-data <file.jsonl>', 'evaluation data (same formats; a classifier reports eval accuracy)')
    .option('--eval-split <fraction>', 'hold out this fraction of --data for evaluation', fractionArg('--eval-split'))
    .option('--eval-every <n>', 'evaluate every n steps (default: 10 times per run)', positiveInt('--eval-every'))
    .option('--no-eval-at-start', 'skip evaluating the untrained model')
    .option('--save-every <n>', 'write a checkpoint every n steps (0: only when stopped)', intArg('--save-every', 0), 500)
    .option('--warmup <n>', 'warmup steps, or a fraction of the run when below 1', numberArg('--warmup'))
    .addOption(new Option('--schedule <name>', 'learning-rate schedule').choices([...SCHEDULES]).default('linear'))
    .option('--max-grad-norm <x>', 'clip the gradient norm to this (0: no clipping)', numberArg('--max-grad-norm'), 1)
    .option('--seed <s>', 'seed of data order, adapter init and dropout', intArg('--seed', 0), 42)
    .option('--resume <dir|latest>', 'continue from a checkpoint folder, or the latest one under --out')
    .option('--overwrite', 'start over in an --out folder that holds an earlier run')
    .option('--chat-template <file>', 'Jinja chat template for {"messages"} data (default: the tokenizer\'s)')
    .option('--threads <n>', 'ONNX Runtime intra-op threads (default: all cores)', positiveInt('--threads'))
    .option('--log-every <n>', 'without a terminal: print a line every n steps', positiveInt('--log-every'), 10)
    .option(
      '--report-to <list>',
      'where metrics go besides the terminal: jsonl (metrics.jsonl, always) and tensorboard (event files under --out/runs/<run name>)',
      reportToArg,
      ['jsonl'],
    )
    .option('--run-name <name>', 'name of the run in TensorBoard and run_config.json (default: the date and time)')
    .option('--max-examples <n>', 'train on the first n rows of --data only', positiveInt('--max-examples'))
    .option('--prompt-key <field>', 'the data\'s field holding the prompt (default "prompt")')
    .option('--completion-key <field>', 'the data\'s field holding the completion (default "completion")')
    .option('--messages-key <field>', 'the data\'s field holding a conversation (default "messages")')
    .option('--text-key <field>', 'the data\'s field holding plain text (default "text")')
    .option('--use-dora', 'LoRA: weight-decomposed low-rank adaptation (use_dora)')
    .option('--use-rslora', 'LoRA: rank-stabilised scaling alpha/sqrt(r) (use_rslora)')
    .addOption(
      new Option(
        '--init <how>',
        'LoRA: initialisation of A/B (init_lora_weights): default (A Kaiming, B zero), gaussian, pissa (SVD of the base), olora (QR of the base)',
      ).choices(['default', 'gaussian', 'pissa', 'olora']),
    )
    .option(
      '--modules-to-save <modules>',
      'modules trained in full and saved beside the adapter (modules_to_save), comma-separated',
      listArg('--modules-to-save', 'module names'),
    )
    .option('--layers <indices>', 'adapt only these layer indices (layers_to_transform), comma-separated', layersArg)
    .option('--num-virtual-tokens <n>', 'prompt/prefix/P-tuning: virtual tokens (num_virtual_tokens)', intArg('--num-virtual-tokens', 1))
    .option(
      '--reduction-factor <n>',
      'bottleneck adapter: hidden size / bottleneck size (reduction_factor)',
      intArg('--reduction-factor', 1),
    )
    .addOption(
      new Option(
        '--eval-metric <name>',
        'also score --eval-data by greedy generation at every evaluation (the first 200 rows; stops at a newline when no reference has one), logged as eval_<name>',
      ).choices(GENERATION_METRICS),
    )
    .option(
      '--metric-for-best-model <field>',
      'eval record field that picks the best model (default: eval_<--eval-metric>, else eval_loss)',
    )
    .option('--save-best', 'keep the adapter of the best evaluation in --out/best (implied by --early-stopping-patience)')
    .option(
      '--early-stopping-patience <n>',
      'stop after n evaluations in a row without improvement of the best-model metric',
      intArg('--early-stopping-patience', 1),
    )
    .addOption(
      new Option(
        '--objective <name>',
        'sft: next-token loss on the completions; dpo: direct preference optimisation (sigmoid loss; the reference is the base with the adapter disabled) or orpo: odds-ratio preference optimisation, both on {"prompt","chosen","rejected"} rows (docs/TRAINING.md)',
      )
        .choices([...OBJECTIVES])
        .default('sft'),
    )
    .option(
      '--beta <b>',
      `dpo: beta, the strength of the pull towards the reference; orpo: lambda, the weight of the odds-ratio term (TRL calls both beta; default ${DEFAULT_BETA.dpo})`,
      numberArg('--beta'),
    )
    .option('--chosen-key <field>', 'dpo/orpo: the data\'s field holding the preferred completion (default "chosen")')
    .option('--rejected-key <field>', 'dpo/orpo: the data\'s field holding the dispreferred completion (default "rejected")')
    .option(
      '--add-tokens <list>',
      'comma-separated new tokens, e.g. "<tool_call>,</tool_call>": added to the tokenizer, the embeddings grown (new rows the mean of the old ones) and the new rows trained with peft\'s trainable tokens besides LoRA; the resized tokenizer is saved with the adapter (LoRA methods)',
    )
    .action(async (flags: TrainFlags, cmd: Command) => {
      const peft = flags.config !== undefined ? applyConfigFile(flags, cmd) : {};
      // field flags are applied over the file's peft section (the command line wins)
      for (const [attr, spec] of Object.entries(FIELD_FLAGS)) {
        const v = (flags as unknown as Record<string, unknown>)[attr];
        if (v !== undefined) peft[spec.field] = spec.value(v);
      }
      for (const k of ['model', 'data', 'out'] as const) {
        if (flags[k] === undefined) throw new CliError(`--${k} is required (as a flag or as "${k}:" in --config)`);
      }
      await runTrain(flags, peft);
    });
}

/**
 * Fills `flags` from --config where the command line did not give the option (CLI flags override
 * the file), parsing each value with the flag's own parser; returns the file's "peft" section.
 */
function applyConfigFile(flags: TrainFlags, cmd: Command): Record<string, unknown> {
  const options = cmd.options.filter((o) => o.long !== '--config');
  const keys = options.map((o) => o.long!.replace(/^--(no-)?/, ''));
  const cfg = readRunConfig(flags.config!, keys);
  const target = flags as unknown as Record<string, unknown>;
  for (const [attr, value] of Object.entries(cfg.options)) {
    const opt = options.find((o) => o.attributeName() === attr)!;
    if (cmd.getOptionValueSource(attr) === 'cli') continue;
    const key = opt.long!.replace(/^--(no-)?/, '');
    if (opt.isBoolean() || opt.negate) {
      if (typeof value !== 'boolean')
        throw new RunConfigError(`${cfg.file}: "${key}" must be true or false, found ${JSON.stringify(value)}`);
      target[attr] = value;
      continue;
    }
    const text = asFlagText(key, value, cfg.file);
    if (opt.argChoices && !opt.argChoices.includes(text))
      throw new RunConfigError(`${cfg.file}: "${key}" must be one of ${opt.argChoices.join(', ')}, found "${text}"`);
    try {
      target[attr] = opt.parseArg ? opt.parseArg(text, undefined) : text;
    } catch (e) {
      throw new RunConfigError(`${cfg.file}: "${key}": ${(e as Error).message}`);
    }
  }
  return cfg.peft;
}

/** A metrics.jsonl record as TensorBoard scalars, named as transformers' TensorBoardCallback names them. */
function tensorBoardScalars(r: MetricRecord): Record<string, number> {
  if (r.kind === 'train') {
    const s: Record<string, number> = {
      'train/loss': r.loss,
      'train/learning_rate': r.learning_rate,
      'train/grad_norm': r.grad_norm,
      'train/tokens_per_second': r.tokens_per_second,
      'train/epoch': r.epoch,
    };
    for (const [k, v] of Object.entries(r)) if (k.startsWith('rewards/') && typeof v === 'number') s[`train/${k}`] = v;
    return s;
  }
  const s: Record<string, number> = { 'eval/loss': r.eval_loss };
  for (const [k, v] of Object.entries(r)) if (k.startsWith('eval_rewards/') && typeof v === 'number') s[`eval/${k.slice(5)}`] = v;
  if (r.eval_perplexity !== undefined) s['eval/perplexity'] = r.eval_perplexity;
  if (r.eval_accuracy !== undefined) s['eval/accuracy'] = r.eval_accuracy;
  return s;
}

/** The fields the method's adapter_config.json holds: the preset's and those a saved adapter writes. */
async function peftFieldsOf(f: TrainFlags, model: PretrainedModel): Promise<string[]> {
  const { preset } = presetOf(f.method);
  const fields = new Set(Object.keys(preset.trainFields ?? preset.fields));
  const adapted = await createAdapter(model, { ...(preset.trainFields ?? preset.fields) }, { seed: f.seed });
  const dir = await mkdtemp(join(host.tmpdir(), 'peft-fields-'));
  try {
    await adapted.savePretrained(dir);
    const file = join(dir, 'adapter_config.json');
    if (existsSync(file)) {
      const saved = JSON.parse(await readFile(file, 'utf8')) as Record<string, unknown>;
      for (const k of Object.keys(saved)) fields.add(k);
      if (saved.config && typeof saved.config === 'object') for (const k of Object.keys(saved.config)) fields.add(k);
    }
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
  return [...fields];
}

/** The methods whose preset takes a flag, for the help text. */
function flagMethods(flag: TrainFlag): string {
  return methodNames()
    .filter((n) => methodPreset(n)!.preset.flags?.[flag] !== undefined)
    .join(', ');
}

function presetOf(method: string): { tuner: Tuner; preset: MethodPreset } {
  const found = methodPreset(method);
  if (!found) throw new CliError(`unknown --method ${method}; choose from ${methodNames().join(', ')}`);
  return found;
}

function checkFlags(f: TrainFlags): void {
  const { preset } = presetOf(f.method);
  if (f.basePrecision === 'nf4' && f.quantize === 'fp4')
    throw new CliError('--base-precision nf4 and --quantize fp4 disagree; give one of them');
  if (f.method === 'full' && (f.quantize !== undefined || f.basePrecision === 'nf4'))
    throw new CliError(
      '--quantize freezes the base in 4 bits, which full fine-tuning trains; use --method lora (QLoRA) or drop --quantize',
    );
  const unused = (['r', 'alpha', 'dropout', 'target'] as const).filter((k) => f[k] !== undefined && preset.flags?.[k] === undefined);
  if (unused.length) {
    const many = unused.length > 1;
    throw new CliError(
      `--${unused.join(', --')} ${many ? 'are' : 'is'} for --method ${flagMethods(unused[0]!)}; remove ${many ? 'them' : 'it'} for --method ${f.method}`,
    );
  }
  if (f.dropout !== undefined && !(f.dropout >= 0 && f.dropout < 1)) throw new CliError(`--dropout must be in [0, 1), got ${f.dropout}`);
  if (f.evalData !== undefined && f.evalSplit !== undefined) throw new CliError('give either --eval-data or --eval-split, not both');
  if (!(f.epochs > 0)) throw new CliError(`--epochs must be above 0, got ${f.epochs}`);
  if (f.lr !== undefined && !(f.lr >= 0)) throw new CliError(`--lr must be >= 0, got ${f.lr}`);
  if (f.warmup !== undefined && !(f.warmup >= 0 && (f.warmup < 1 || Number.isInteger(f.warmup)))) {
    throw new CliError(`--warmup takes a number of steps (an integer) or a fraction below 1, got ${f.warmup}`);
  }
  if (!(f.maxGradNorm >= 0)) throw new CliError(`--max-grad-norm must be >= 0, got ${f.maxGradNorm}`);
  if (f.objective === 'sft') {
    const given = (['beta', 'chosenKey', 'rejectedKey'] as const).filter((k) => f[k] !== undefined);
    if (given.length)
      throw new CliError(
        `--${given.map((k) => k.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`)).join(', --')} ${given.length > 1 ? 'are' : 'is'} for --objective dpo or orpo; add --objective or remove ${given.length > 1 ? 'them' : 'it'}`,
      );
  } else {
    if (f.beta !== undefined && !(f.beta > 0 && Number.isFinite(f.beta)))
      throw new CliError(`--beta must be a positive number, got ${f.beta}`);
    const sftOnly = (
      [
        ['packing', '--packing'],
        ['chatTemplate', '--chat-template'],
        ['completionKey', '--completion-key'],
        ['messagesKey', '--messages-key'],
        ['textKey', '--text-key'],
        ['evalMetric', '--eval-metric'],
        ['addTokens', '--add-tokens'],
      ] as const
    ).filter(([k]) => f[k] !== undefined && f[k] !== false);
    if (sftOnly.length)
      throw new CliError(
        `${sftOnly.map(([, fl]) => fl).join(', ')} ${sftOnly.length > 1 ? 'are' : 'is'} not for --objective ${f.objective}, which trains on {"prompt","chosen","rejected"} rows; remove ${sftOnly.length > 1 ? 'them' : 'it'}`,
      );
    if (f.objective === 'dpo' && f.method === 'full')
      throw new CliError(
        "DPO's reference model is the base with the adapter disabled, and --method full has no adapter; use an adapter method (e.g. --method lora), or --objective orpo, which needs no reference",
      );
  }
  for (const [flag, file] of [
    ['--data', f.data],
    ['--eval-data', f.evalData],
    ['--chat-template', f.chatTemplate],
  ] as const) {
    if (file !== undefined && !isHubDatasetSpec(file) && !existsSync(file)) throw new CliError(`${flag} ${file} does not exist`);
  }
}

/** Positions the method puts in front of the real tokens (prompt/prefix/P-tuning), which share the model's learned positions. */
function virtualPositions(f: TrainFlags, model: PretrainedModel): number {
  const { preset } = presetOf(f.method);
  const n = (preset.trainFields ?? preset.fields).num_virtual_tokens;
  // Rotary-position architectures (their descriptor says so) have no position table to run out of.
  return typeof n === 'number' && descriptorOf(model).positions === 'absolute' ? n : 0;
}

function defaultMaxLen(model: PretrainedModel, tokenizer: Tokenizer, virtual: number): number {
  return Math.min(1024, tokenizer.modelMaxLength ?? Infinity, (model.config.maxPositionEmbeddings || Infinity) - virtual);
}

/** The method's preset fields, the method flags given, and the task of the model. */
/**
 * --target as a config takes it: "all-linear" is peft's shorthand only as a string (every linear
 * layer but the output head); a list names modules. Full fine-tuning selects weights by module
 * name, so there it becomes the names of the linear layers LoRA's all-linear wraps.
 */
function targetModules(f: TrainFlags, model: PretrainedModel, peftType: unknown): string[] | string | undefined {
  const t = f.target;
  if (!t?.some((n) => n.toLowerCase() === 'all-linear')) return t;
  if (t.length > 1)
    throw new CliError(
      '--target all-linear already means every linear layer but the output head; give it alone, or list module names without it',
    );
  if (peftType !== 'FULL') return 'all-linear';
  return resolveTargetModules(model, {
    targetModules: 'all-linear',
    taskType: model.task === 'seq-cls' ? 'SEQ_CLS' : 'CAUSAL_LM',
  } as LoraConfig);
}

async function adapt(f: TrainFlags, model: PretrainedModel, steps: number, peft: Record<string, unknown> = {}): Promise<AdaptedModel> {
  const { preset } = presetOf(f.method);
  const fields: Record<string, unknown> = { ...(preset.trainFields ?? preset.fields), ...peft };
  if (preset.stepsField && (fields[preset.stepsField] ?? null) === null) fields[preset.stepsField] = steps;
  for (const [flag, field] of Object.entries(preset.flags ?? {}) as [TrainFlag, string][]) {
    if (f[flag] !== undefined) fields[field] = flag === 'target' ? targetModules(f, model, fields.peft_type) : f[flag];
  }
  if (model.task === 'seq-cls' && fields.task_type !== undefined) fields.task_type = 'SEQ_CLS';
  fields.base_model_name_or_path = f.model;
  return createAdapter(model, fields, { seed: f.seed });
}

/** --add-tokens: the resized tokenizer's files (and the model's generation_config.json) in a temporary folder kept until the process exits. */
async function tokenizerFolder(modelDir: string, added: AddedTokens): Promise<string> {
  const tmp = mkdtempSync(join(host.tmpdir(), 'peft-add-tokens-'));
  process.once('exit', () => rmSync(tmp, { recursive: true, force: true }));
  await saveTokenizerFiles(added.files, tmp);
  if (existsSync(join(modelDir, GENERATION_CONFIG_FILE)))
    await copyFile(join(modelDir, GENERATION_CONFIG_FILE), join(tmp, GENERATION_CONFIG_FILE));
  return tmp;
}

async function runTrain(f: TrainFlags, peftSection: Record<string, unknown> = {}): Promise<void> {
  let peft = peftSection;
  checkFlags(f);
  // hf://datasets/... : the file is fetched into the Hub cache (run_config.json keeps the spec)
  const dataSpecs = { data: f.data, evalData: f.evalData };
  f.data = await resolveDataFile(f.data, { role: 'train' });
  if (f.evalData !== undefined) f.evalData = await resolveDataFile(f.evalData, { role: 'eval' });
  if (Object.keys(peft).length && f.method === 'full')
    throw new RunConfigError(
      `${f.config}: full fine-tuning has no adapter_config.json; remove the "peft" section or choose another method`,
    );
  if (peft.peft_type !== undefined && peft.peft_type !== presetOf(f.method).tuner.peftType) {
    throw new RunConfigError(
      `${f.config}: peft.peft_type is ${String(peft.peft_type)} but method ${f.method} is ${presetOf(f.method).tuner.peftType}; set "method" to match or drop peft_type`,
    );
  }
  const say = (s: string) => process.stderr.write(`${s}\n`);
  const dir = await resolveModelDir(f.model);
  // The output folder is checked (never a model or adapter the run did not write, nor one another
  // run is writing) before the model is loaded; the trainer takes its lock when training starts.
  await checkRunFolder(f.out, { resume: f.resume, overwrite: f.overwrite, inputs: [{ path: dir, what: 'base model' }] });
  const quantize = f.quantize ?? (f.basePrecision === 'nf4' || presetOf(f.method).preset.quantizedBase ? 'nf4' : undefined);
  const newTokens = f.addTokens !== undefined ? parseAddTokens(f.addTokens) : undefined;
  if (newTokens && presetOf(f.method).tuner.peftType !== 'LORA')
    throw new CliError(`--add-tokens trains the new rows with LoRA's trainable tokens; use --method lora or qlora, not ${f.method}`);
  if (newTokens && peft.trainable_token_indices !== undefined)
    throw new RunConfigError(`${f.config}: --add-tokens sets peft.trainable_token_indices to the new tokens; remove one of the two`);
  // On the int8 base the linear layers' float32 matrices are never read whole: each is quantized
  // from the file when the steps are compiled (loadModel's deferLinearWeights).
  let model = await loadModel(
    dir,
    quantize
      ? { quantization: { bits: 4, type: quantize as 'nf4' | 'fp4', doubleQuant: true, blockSize: 64 } }
      : { deferLinearWeights: trainBasePrecision(f.basePrecision, false) === 'int8' && f.method !== 'full' },
  );
  if (quantize)
    say(
      `base held 4-bit (${quantize}, double quantization): ${model.weights.quantizedNames().length} linear weights, ${(model.weights.heldBytes() / 2 ** 20).toFixed(1)} MiB of frozen weights`,
    );
  if (Object.keys(peft).length) {
    const valid = await peftFieldsOf(f, model);
    for (const spec of Object.values(FIELD_FLAGS)) {
      const given = (f as unknown as Record<string, unknown>)[
        Object.keys(FIELD_FLAGS).find((k) => FIELD_FLAGS[k as keyof typeof FIELD_FLAGS] === spec)!
      ];
      if (given !== undefined && !valid.includes(spec.field))
        throw new CliError(
          `${spec.flag} sets ${spec.field}, which --method ${f.method} does not have; remove it or choose a method that does`,
        );
    }
    checkPeftFields(peft, valid, f.method, f.config ?? 'the command line');
  }
  // --add-tokens: the tokenizer with the tokens (its files saved to --out at the end) and the model grown to it
  let added: AddedTokens | undefined;
  if (newTokens) {
    added = await addTokensToTokenizer(dir, newTokens);
    model = growModelFor(model, added.length);
    const tied = !model.weights.has('lm_head.weight') || model.weights.isAlias('lm_head.weight');
    // peft's trainable tokens: the input embedding's new rows (a tied head follows them); an untied head's new rows too
    peft = {
      ...peft,
      trainable_token_indices: tied ? added.ids : { [model.embeddingName.split('.').pop()!]: added.ids, lm_head: added.ids },
    };
    say(
      `added ${newTokens.length} token${newTokens.length > 1 ? 's' : ''} (ids ${added.ids.join(', ')}): vocabulary ${added.length}, new embedding rows mean-initialised and trained as trainable tokens`,
    );
  }
  const tokenizer = added?.tokenizer ?? (await Tokenizer.fromDir(dir));
  const padId = tokenizer.padTokenId ?? tokenizer.eosTokenId;
  if (padId === undefined)
    throw new CliError(`the tokenizer in ${dir} has neither a pad nor an EOS token; set "pad_token" in tokenizer_config.json`);
  const virtual = virtualPositions(f, model);
  const maxLength = f.maxLen ?? defaultMaxLen(model, tokenizer, virtual);
  if (model.config.maxPositionEmbeddings && maxLength + virtual > model.config.maxPositionEmbeddings) {
    throw new CliError(
      `--max-len ${maxLength}${virtual ? ` plus the method's ${virtual} virtual tokens` : ''} is above the model's max_position_embeddings (${model.config.maxPositionEmbeddings}); lower it`,
    );
  }
  const classifier = model.task === 'seq-cls';
  if (classifier && f.packing)
    throw new CliError(
      '--packing concatenates language-modelling text; a sequence classifier trains on one {"text","label"} row per example, so drop --packing',
    );
  if (classifier && f.chatTemplate !== undefined)
    throw new CliError(
      '--chat-template is for {"messages"} data of a causal language model; a sequence classifier trains on {"text","label"} rows',
    );
  const chatTemplate = f.chatTemplate ? await readFile(f.chatTemplate, 'utf8') : undefined;

  let trainExamples: TrainItem[];
  let evalExamples: TrainItem[] | undefined;
  if (classifier) {
    const labels = model.config;
    const train = await loadClassificationDataset(f.data, tokenizer, { labels, maxLength });
    const ev = f.evalData ? await loadClassificationDataset(f.evalData, tokenizer, { labels, maxLength }) : undefined;
    trainExamples = train.examples;
    if (ev) evalExamples = ev.examples;
    else if (f.evalSplit !== undefined) ({ train: trainExamples, eval: evalExamples } = splitForEval(trainExamples, f.evalSplit, f.seed));
    const cut = train.truncated + (ev?.truncated ?? 0);
    say(
      `data: ${trainExamples.length} training examples ({"text","label"}, ${labels.numLabels} classes` +
        `${cut ? `; ${cut} cut to --max-len ${maxLength}` : ''})` +
        (evalExamples ? `, ${evalExamples.length} for evaluation` : ', no evaluation set'),
    );
  } else if (f.objective !== 'sft') {
    if (classifier)
      throw new CliError(
        `--objective ${f.objective} tunes a causal language model on preference pairs; ${f.model} is a sequence classifier`,
      );
    const keys = { prompt: f.promptKey, chosen: f.chosenKey, rejected: f.rejectedKey };
    const train = await loadPreferenceDataset(f.data, tokenizer, { maxLength, maxExamples: f.maxExamples, keys });
    const ev = f.evalData ? await loadPreferenceDataset(f.evalData, tokenizer, { maxLength, keys }) : undefined;
    let trainPairs: PreferencePair[] = train.pairs;
    let evalPairs = ev?.pairs;
    if (!ev && f.evalSplit !== undefined) ({ train: trainPairs, eval: evalPairs } = splitForEval(trainPairs, f.evalSplit, f.seed));
    const cut = train.truncated + (ev?.truncated ?? 0);
    const dropped = train.dropped + (ev?.dropped ?? 0);
    say(
      `data: ${trainPairs.length} training preference pairs ({"prompt","chosen","rejected"}, ${f.objective}, beta ${f.beta ?? DEFAULT_BETA[f.objective]}` +
        `${cut ? `; ${cut} cut to --max-len ${maxLength}` : ''}${dropped ? `; ${dropped} left out: no completion token within --max-len ${maxLength}` : ''})` +
        (evalPairs ? `, ${evalPairs.length} for evaluation` : ', no evaluation set'),
    );
    trainExamples = trainPairs;
    evalExamples = evalPairs;
  } else {
    const keys = { prompt: f.promptKey, completion: f.completionKey, messages: f.messagesKey, text: f.textKey };
    const train = await loadDataset(f.data, tokenizer, { chatTemplate, keys, maxExamples: f.maxExamples });
    let trainRows = train.examples;
    let evalRows = f.evalData ? (await loadDataset(f.evalData, tokenizer, { chatTemplate, keys })).examples : undefined;
    if (!f.evalData && f.evalSplit !== undefined) ({ train: trainRows, eval: evalRows } = splitForEval(trainRows, f.evalSplit, f.seed));
    const prepared = prepareExamples(trainRows, { maxLength, packing: f.packing, file: f.data });
    const preparedEval = evalRows ? prepareExamples(evalRows, { maxLength, packing: f.packing, file: f.evalData ?? f.data }) : undefined;
    say(
      `data: ${prepared.examples.length} training ${f.packing ? `blocks of ${maxLength} tokens` : 'examples'} (${train.format}` +
        `${prepared.dropped ? `, ${prepared.dropped} left out: no label within --max-len ${maxLength}` : ''})` +
        (preparedEval ? `, ${preparedEval.examples.length} for evaluation` : ', no evaluation set'),
    );
    trainExamples = prepared.examples;
    evalExamples = preparedEval?.examples;
  }

  const steps = totalStepsFor(trainExamples.length, { maxSteps: f.steps, epochs: f.epochs, batchSize: f.batch, gradAccum: f.gradAccum });
  const adapted = await adapt(f, model, steps, peft);
  let trainable = 0;
  for (const t of adapted.parameters().values()) trainable += t.data.length;
  const total = model.weights.numel();
  say(
    `${adapted.peftType}: ${trainable.toLocaleString('en-US')} trainable parameters of ${total.toLocaleString('en-US')} (${((100 * trainable) / total).toFixed(3)}%)`,
  );

  f.runName ??= new Date().toISOString().replace(/[:.]/g, '-');
  if (!/^[A-Za-z0-9._-]{1,100}$/.test(f.runName))
    throw new CliError(`--run-name "${f.runName}" must be 1-100 letters, digits, '.', '_' or '-' (it names a folder)`);
  // TensorBoard's writer starts once the trainer has claimed --out (it creates the folder)
  let tensorboard: TensorBoardWriter | undefined;
  const wantTensorboard = f.reportTo.includes('tensorboard');
  // --eval-metric: generation-scored rows of --eval-data, decoded at every evaluation with the adapter as it is then
  let evalMetrics: (() => Promise<Record<string, number>>) | undefined;
  if (f.evalMetric !== undefined) {
    if (classifier) throw new CliError('--eval-metric scores generations; a sequence classifier already reports eval accuracy');
    if (f.evalData === undefined)
      throw new CliError('--eval-metric needs --eval-data with {"prompt","completion"} or {"messages"} rows to generate from');
    const metric = f.evalMetric;
    const records = (await readJsonl(f.evalData)).slice(0, 200);
    const rows = evalRows(
      records,
      tokenizer,
      metric,
      { promptKey: f.promptKey, completionKey: f.completionKey, messagesKey: f.messagesKey },
      f.evalData,
    );
    const stopStrings = rows.some((r) => r.reference.includes('\n')) ? [] : ['\n'];
    evalMetrics = async () => ({
      [metric]: (await evaluateRows(adapted, tokenizer, rows, { metric, stopStrings, runtime: { threads: f.threads } })).score,
    });
  }
  if (
    (f.earlyStoppingPatience !== undefined || f.saveBest || f.metricForBestModel !== undefined) &&
    f.evalData === undefined &&
    f.evalSplit === undefined
  ) {
    throw new CliError(
      '--early-stopping-patience, --save-best and --metric-for-best-model need an evaluation set (--eval-data or --eval-split)',
    );
  }
  if (f.metricForBestModel !== undefined) {
    const logged =
      f.objective !== 'sft'
        ? ['eval_loss', 'eval_accuracy', ...['chosen', 'rejected', 'accuracies', 'margins'].map((m) => `eval_rewards/${m}`)]
        : ['eval_loss', classifier ? 'eval_accuracy' : 'eval_perplexity', ...(f.evalMetric ? [`eval_${f.evalMetric}`] : [])];
    if (!logged.includes(f.metricForBestModel))
      throw new CliError(`--metric-for-best-model ${f.metricForBestModel} is not logged by this run; choose from ${logged.join(', ')}`);
  }
  const progress = progressFor(process.stderr, f.logEvery);
  const trainer = new Trainer(adapted, trainExamples, evalExamples, {
    outputDir: f.out,
    padTokenId: padId,
    learningRate: f.lr ?? presetOf(f.method).preset.trainLearningRate ?? presetOf(f.method).preset.learningRate,
    weightDecay: f.weightDecay,
    batchSize: f.batch,
    gradAccum: f.gradAccum,
    epochs: f.epochs,
    maxSteps: f.steps,
    schedule: f.schedule,
    warmupSteps: f.warmup !== undefined && f.warmup >= 1 ? f.warmup : undefined,
    warmupRatio: f.warmup !== undefined && f.warmup < 1 ? f.warmup : undefined,
    maxGradNorm: f.maxGradNorm,
    evalEvery: f.evalEvery ?? Math.max(1, Math.round(steps / 10)),
    evalAtStart: f.evalAtStart,
    saveEvery: f.saveEvery,
    seed: f.seed,
    resume: f.resume,
    overwrite: f.overwrite,
    tokenizerDir: added ? await tokenizerFolder(dir, added) : dir, // saved next to the adapter, as transformers' Trainer does
    progress,
    runtime: {
      threads: f.threads,
      gradientCheckpointing: f.gradientCheckpointing,
      selectiveRecompute: f.selectiveRecompute === false ? false : undefined,
      lossChunks: f.lossChunks,
      basePrecision: trainBasePrecision(f.basePrecision, quantize !== undefined),
    },
    evalMetrics,
    metricForBestModel: f.metricForBestModel ?? (f.evalMetric ? `eval_${f.evalMetric}` : undefined),
    saveBest: f.saveBest || f.earlyStoppingPatience !== undefined || undefined,
    earlyStoppingPatience: f.earlyStoppingPatience,
    preference: f.objective !== 'sft' ? { objective: f.objective, beta: f.beta } : undefined,
    onRecord: wantTensorboard
      ? (r) => {
          if (!tensorboard) {
            const tbDir = join(f.out, 'runs', f.runName!);
            mkdirSync(tbDir, { recursive: true });
            tensorboard = new TensorBoardWriter(tbDir);
          }
          tensorboard.add(r.step, tensorBoardScalars(r));
        }
      : undefined,
  });

  let interrupts = 0;
  const onSigint = (): void => {
    interrupts += 1;
    if (interrupts > 1) {
      say('interrupted again: exiting now without a checkpoint for the current step');
      process.exit(130);
    }
    progress.message('stopping after the current step and writing a checkpoint (Ctrl-C again to quit at once)');
    trainer.requestStop();
  };
  process.on('SIGINT', onSigint);
  try {
    const r = await trainer.train();
    if (r.interrupted) {
      process.exitCode = 130;
      return;
    }
    // the run as resolved (file, defaults and flags together): `peft train --config run_config.json` repeats it
    const { config: _file, resume: _resume, overwrite: _overwrite, ...resolved } = f;
    void [_file, _resume, _overwrite];
    const runConfig = { ...resolved, ...dataSpecs, ...(Object.keys(peftSection).length ? { peft: peftSection } : {}) };
    await writeFileAtomic(join(f.out, 'run_config.json'), `${JSON.stringify(runConfig, null, 2)}\n`);
    const evalText =
      r.initialEvalLoss !== undefined && r.finalEvalLoss !== undefined
        ? `; eval loss ${r.initialEvalLoss.toFixed(4)} -> ${r.finalEvalLoss.toFixed(4)}`
        : r.finalEvalLoss !== undefined
          ? `; eval loss ${r.finalEvalLoss.toFixed(4)}`
          : '';
    const saved = presetOf(f.method).tuner.saves ?? 'adapter';
    const accText =
      r.finalEvalAccuracy === undefined
        ? ''
        : r.initialEvalAccuracy !== undefined
          ? `; eval accuracy ${fmtAccuracy(r.initialEvalAccuracy)} -> ${fmtAccuracy(r.finalEvalAccuracy)}`
          : `; eval accuracy ${fmtAccuracy(r.finalEvalAccuracy)}`;
    say(
      `done: ${r.globalStep} steps${r.earlyStopped ? ' (early stopping)' : ''}, final loss ${r.finalLoss?.toFixed(4)}${evalText}${accText}`,
    );
    if (r.best)
      say(
        `best ${r.best.metric} ${r.best.value.toFixed(4)} at step ${r.best.step}${f.saveBest || f.earlyStoppingPatience !== undefined ? `; its adapter is in ${join(f.out, 'best')}` : ''}`,
      );
    say(`saved the ${saved}, ${METRICS_FILE} and ${PLOT_FILE} to ${f.out}`);
  } finally {
    process.removeListener('SIGINT', onSigint);
  }
}
