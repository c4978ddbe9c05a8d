// `peft generate`: text continuation of one or several prompts with a KV cache, streamed to stdout
// for a single prompt; greedy by default, sampling with --temperature/--top-k/--top-p and --seed.
// A thin shell over Generator; timing goes to stderr so stdout holds only the text.

import { basename, existsSync, readFile } from '../../storage/index.js';
import type { Command } from 'commander';
import { type RuntimeFlags, collect, intArg, numberArg, positiveInt, runtimeFlags, runtimeOptions } from '../args.js';
import { resolveModelDir } from '../../io/hub.js';
import { Tokenizer } from '../../io/tokenizer.js';
import { loadModel } from '../../models/load.js';
import type { PretrainedModel } from '../../models/types.js';
import { loadAdapter } from '../../tuners/load.js';
import type { AdaptedModel } from '../../tuners/types.js';
import { Generator, type GenerateOptions, type GenerationResult, type InferenceModel } from '../../generate/index.js';
import { CliError } from '../errors.js';
import { BASE_ADAPTER, MultiAdapterModel } from '../../tuners/multi/index.js';

/**
 * A local model folder or Hub repo id, loaded, with the --adapter folders applied in order. Every
 * adapter but the last is merged into the weights (so it must be mergeable: LoRA, IA3); the last
 * one stays a live adapter unless `merged` asks for it to be merged too (peft merge_and_unload).
 */
export async function loadModelArg(
  idOrPath: string,
  adapters: readonly string[] = [],
  merged = false,
): Promise<{ dir: string; base: PretrainedModel; model: InferenceModel }> {
  if (merged && adapters.length === 0) throw new CliError('--merged needs at least one --adapter to merge');
  const dir = await resolveModelDir(idOrPath);
  const base = await loadModel(dir);
  let current = base;
  for (const [i, a] of adapters.entries()) {
    const adapted = await loadAdapter(current, await resolveModelDir(parseAdapterArg(a).dir));
    const last = i === adapters.length - 1;
    if (last && !merged) return { dir, base, model: adapted };
    const mergeable = adapted as AdaptedModel & { mergeAndUnload?: () => PretrainedModel | Promise<PretrainedModel> };
    if (typeof mergeable.mergeAndUnload !== 'function') {
      throw new CliError(
        `adapter ${a} (${adapted.peftType}) cannot be merged into the weights${last ? '; drop --merged' : '; only the last --adapter may be of a method that does not merge'}`,
      );
    }
    current = await mergeable.mergeAndUnload();
  }
  return { dir, base, model: current };
}

/** The text of a --chat-template file (generate, serve); undefined when the flag is not given. */
export async function readChatTemplate(file: string | undefined): Promise<string | undefined> {
  if (file === undefined) return undefined;
  try {
    return await readFile(file, 'utf8');
  } catch (e) {
    throw new CliError(`cannot read the chat template ${file}: ${(e as Error).message}`);
  }
}

/** One --adapter value: "DIR", or "NAME=DIR" (a name for --row-adapters). */
export function parseAdapterArg(v: string): { name?: string; dir: string } {
  const m = /^([^=/\\\s,]+)=(.+)$/.exec(v);
  if (m && !existsSync(v)) return { name: m[1]!, dir: m[2]! };
  return { dir: v };
}

/** "a,b,__base__" -> names, checked against the loaded adapters and the row count. */
export function parseRowAdapters(v: string, known: readonly string[], rows: number, what: string): string[] {
  const names = v.split(',').map((x) => x.trim());
  if (names.some((n) => n === ''))
    throw new CliError(`--row-adapters has an empty name in "${v}"; give one name per ${what}, comma-separated`);
  for (const n of names) {
    if (n !== BASE_ADAPTER && !known.includes(n))
      throw new CliError(`--row-adapters names "${n}", which no --adapter NAME=DIR loads; loaded: ${[BASE_ADAPTER, ...known].join(', ')}`);
  }
  if (names.length !== rows)
    throw new CliError(
      `--row-adapters gives ${names.length} names for ${rows} ${what}s; give exactly one per ${what} ("${BASE_ADAPTER}" for none)`,
    );
  return names;
}

/**
 * The model and its adapters for --row-adapters: every --adapter NAME=DIR (a bare DIR is named by
 * its folder) loaded side by side into one mixed-adapter model.
 */
export async function loadMixedModelArg(
  idOrPath: string,
  adapters: readonly string[] = [],
  merged = false,
): Promise<{ dir: string; base: PretrainedModel; model: MultiAdapterModel }> {
  if (merged) throw new CliError('--merged cannot be combined with --row-adapters (each row keeps its own adapter)');
  if (adapters.length === 0) throw new CliError('--row-adapters needs at least one --adapter NAME=DIR');
  const dir = await resolveModelDir(idOrPath);
  const base = await loadModel(dir);
  const model = new MultiAdapterModel(base);
  for (const a of adapters) {
    const { name, dir: adir } = parseAdapterArg(a);
    const resolved = await resolveModelDir(adir);
    const n = name ?? basename(resolved.replace(/[\\/]+$/, ''));
    if (model.hasAdapter(n)) throw new CliError(`two --adapter flags use the name "${n}"; give each NAME=DIR a different name`);
    await model.loadAdapter(n, resolved);
  }
  return { dir, base, model };
}

interface GenerateFlags extends RuntimeFlags {
  model: string;
  prompt?: string[];
  maxNewTokens?: number;
  temperature?: number;
  topK?: number;
  topP?: number;
  seed?: number;
  stop?: string[];
  chatTemplate?: string;
  chat?: boolean;
  system?: string;
  json?: boolean;
  specialTokens: boolean;
  adapter?: string[];
  merged?: boolean;
  rowAdapters?: string;
}

export function register(program: Command): void {
  const cmd = program
    .command('generate')
    .description('generate text from a causal language model (KV cache; greedy unless sampling options are given)')
    .requiredOption('--model <dir|repo>', 'model folder (config.json, model.safetensors, tokenizer.json) or Hub repo id')
    .option(
      '--adapter <[name=]dir|repo>',
      'adapter folder (adapter_config.json + adapter_model.safetensors) to apply; repeatable (earlier ones are merged; with --row-adapters, all are loaded side by side under their names)',
      collect,
    )
    .option(
      '--row-adapters <names>',
      'one adapter name per prompt, comma-separated ("__base__" = none): a mixed-adapter batch over the --adapter NAME=DIR adapters',
    )
    .option('--merged', 'merge the adapters into the weights first (peft merge_and_unload); same outputs, base-model speed')
    .option('--prompt <text>', 'prompt text; repeat for a batch (left-padded)', collect)
    .option(
      '--max-new-tokens <n>',
      'new tokens per prompt at most (default: generation_config.json, else 20)',
      positiveInt('--max-new-tokens'),
    )
    .option('--temperature <t>', 'sample with this temperature (0 = greedy)', numberArg('--temperature'))
    .option(
      '--top-k <k>',
      'sample from the k most likely tokens (0 = off; default: generation_config.json, else 50 as transformers)',
      intArg('--top-k', 0),
    )
    .option('--top-p <p>', 'nucleus sampling: smallest token set reaching probability p', numberArg('--top-p'))
    .option('--seed <s>', 'sampling seed (the same seed gives the same text)', intArg('--seed', 0))
    .option('--stop <text>', 'stop a prompt when its output contains this text; repeatable', collect)
    .option('--chat', 'wrap each prompt as a user message with the tokenizer chat template')
    .option('--system <text>', 'with --chat: a system message before the prompt')
    .option('--chat-template <file>', 'with --chat: a Jinja chat template file to use instead of the tokenizer one')
    .option('--no-special-tokens', 'do not add the tokenizer special tokens (BOS) to the prompts')
    .option('--json', 'print one JSON line per prompt instead of streaming text');
  runtimeFlags(cmd).action(async (flags: GenerateFlags) => {
    await runGenerate(flags);
  });
}

async function runGenerate(flags: GenerateFlags): Promise<void> {
  const given = flags.prompt ?? [];
  if (given.length === 0) throw new CliError('give at least one --prompt "text"');
  if ((flags.system !== undefined || flags.chatTemplate !== undefined) && !flags.chat)
    throw new CliError('--system and --chat-template need --chat');
  const chatTemplate = await readChatTemplate(flags.chatTemplate);
  const { dir, model } =
    flags.rowAdapters !== undefined
      ? await loadMixedModelArg(flags.model, flags.adapter, flags.merged)
      : await loadModelArg(flags.model, flags.adapter, flags.merged);
  const rowAdapters =
    model instanceof MultiAdapterModel ? parseRowAdapters(flags.rowAdapters!, model.adapterNames, given.length, 'prompt') : undefined;
  const tokenizer = await Tokenizer.fromDir(dir);
  const prompts = given.map((p) => {
    if (!flags.chat) return p;
    const messages = [...(flags.system !== undefined ? [{ role: 'system', content: flags.system }] : []), { role: 'user', content: p }];
    try {
      return tokenizer.applyChatTemplate(messages, { addGenerationPrompt: true, chatTemplate });
    } catch (e) {
      if ((e as Error).name === 'MissingChatTemplateError') {
        throw new CliError(
          `${dir} has no chat template (chat_template.jinja or tokenizer_config.json "chat_template"); drop --chat, or give one with --chat-template FILE`,
        );
      }
      throw e;
    }
  });
  const generator = await Generator.create(model, {
    tokenizer,
    runtime: runtimeOptions(flags),
  });
  const stream = prompts.length === 1 && !flags.json;
  const options: GenerateOptions = {
    maxNewTokens: flags.maxNewTokens,
    temperature: flags.temperature,
    topK: flags.topK,
    topP: flags.topP,
    seed: flags.seed,
    stopStrings: flags.stop,
    adapters: rowAdapters,
    // A chat template writes the special tokens itself, as transformers' apply_chat_template.
    addSpecialTokens: flags.chat ? false : flags.specialTokens,
    onToken: stream ? (e) => e.text && process.stdout.write(e.text) : undefined,
  };
  try {
    const t0 = performance.now();
    const { sequences, stats } = await generator.generate(prompts, options);
    const seconds = (performance.now() - t0) / 1000;
    if (stream) process.stdout.write('\n');
    else if (flags.json) sequences.forEach((s, i) => process.stdout.write(JSON.stringify(jsonLine(given[i]!, s)) + '\n'));
    else sequences.forEach((s, i) => process.stdout.write(`${i ? '\n' : ''}>>> ${given[i]}\n${s.text}\n`));
    process.stderr.write(
      `${stats.newTokens} new tokens for ${stats.batch} prompt(s) in ${seconds.toFixed(2)} s ` +
        `(prefill ${stats.prefillMs.toFixed(0)} ms, decode ${(((stats.steps - 1) * stats.batch) / Math.max(stats.decodeMs / 1000, 1e-9)).toFixed(1)} tok/s)\n`,
    );
  } finally {
    await generator.dispose();
  }
}

function jsonLine(prompt: string, s: GenerationResult): Record<string, unknown> {
  return {
    prompt,
    text: s.text,
    prompt_ids: s.promptIds,
    token_ids: s.tokenIds,
    finish_reason: s.finishReason,
    ...(s.stopString ? { stop_string: s.stopString } : {}),
  };
}
