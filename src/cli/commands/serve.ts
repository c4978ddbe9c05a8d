// `peft serve`: an OpenAI-compatible server over one base model and any number of LoRA/IA3 adapters
// (src/serve/). Binds to 127.0.0.1 unless --host says otherwise; stops cleanly on SIGINT/SIGTERM.

import { basename } from '../../storage/index.js';
import type { Command } from 'commander';
import { resolveModelDir } from '../../io/hub.js';
import { Tokenizer } from '../../io/tokenizer.js';
import { loadModel } from '../../models/load.js';
import { loadGenerationDefaults } from '../../generate/config.js';
import { MultiAdapterModel } from '../../tuners/multi/index.js';
import { OpenAIServer, ServeEngine } from '../../serve/index.js';
import { CliError } from '../errors.js';
import { type RuntimeFlags, collect, intArg, runtimeFlags, runtimeOptions } from '../args.js';
import { parseAdapterArg, readChatTemplate } from './generate.js';

interface ServeFlags extends RuntimeFlags {
  model: string;
  adapter?: string[];
  port: number;
  host: string;
  modelId?: string;
  maxBatch: number;
  maxQueue: number;
  maxTokensLimit: number;
  timeout: number;
  bodyLimit: number;
  targetModules?: string;
  maxRank?: number;
  chatTemplate?: string;
  adapterLoading: boolean;
}

export function register(program: Command): void {
  const cmd = program
    .command('serve')
    .description(
      'serve the model and its adapters over an OpenAI-compatible HTTP API (completions, chat, streaming, continuous batching, hot-swapped adapters)',
    )
    .requiredOption('--model <dir|repo>', 'base model folder or Hub repo id')
    .option('--adapter <name=dir>', 'LoRA or IA3 adapter to serve under NAME (a request\'s "model" field picks it); repeatable', collect)
    .option('--port <n>', 'TCP port', intArg('--port', 0), 8000)
    .option('--host <addr>', 'address to bind (default loopback only)', '127.0.0.1')
    .option('--model-id <id>', 'the id the base model is listed under (default: its folder name)')
    .option('--max-batch <n>', 'requests decoded together at most', intArg('--max-batch', 1), 16)
    .option('--max-queue <n>', 'requests waiting at most; more get 503', intArg('--max-queue', 0), 64)
    .option('--max-tokens-limit <n>', 'largest max_tokens a request may ask for', intArg('--max-tokens-limit', 1), 1024)
    .option('--timeout <s>', 'seconds a request may take', intArg('--timeout', 1), 300)
    .option('--body-limit <bytes>', 'request body size limit', intArg('--body-limit', 1024), 1024 * 1024)
    .option(
      '--target-modules <list>',
      'LoRA target modules to compile in for adapters loaded later (e.g. q_proj,v_proj); default: those of the --adapter adapters',
    )
    .option('--max-rank <r>', 'pad LoRA ranks to at least r (peft prepare_model_for_compiled_hotswap target_rank)', intArg('--max-rank', 1))
    .option('--chat-template <file>', 'Jinja chat template for /v1/chat/completions instead of the tokenizer one')
    .option('--no-adapter-loading', 'refuse POST /v1/adapters (adapters given at start only)');
  runtimeFlags(cmd).action(async (flags: ServeFlags) => {
    await runServe(flags);
  });
}

async function runServe(flags: ServeFlags): Promise<void> {
  const chatTemplate = await readChatTemplate(flags.chatTemplate);
  const adapters = (flags.adapter ?? []).map((a) => {
    const p = parseAdapterArg(a);
    return { name: p.name ?? basename(p.dir.replace(/[\\/]+$/, '')), dir: p.dir };
  });
  const dir = await resolveModelDir(flags.model);
  const base = await loadModel(dir);
  if (!base.causal || base.task !== 'causal-lm')
    throw new CliError(`${dir} is not a causal language model; peft serve needs one (GPT-2, Llama, ...)`);
  const targets = flags.targetModules
    ?.split(',')
    .map((s) => s.trim())
    .filter(Boolean);
  const model = new MultiAdapterModel(base, { targetModules: targets, maxRank: flags.maxRank });
  for (const a of adapters) {
    if (model.hasAdapter(a.name)) throw new CliError(`two --adapter flags use the name "${a.name}"; give each NAME=DIR a different name`);
    await model.loadAdapter(a.name, await resolveModelDir(a.dir));
  }
  const tokenizer = await Tokenizer.fromDir(dir);
  const defaults = await loadGenerationDefaults(dir, base.config);
  const engine = await ServeEngine.create(model, tokenizer, defaults, {
    maxBatch: flags.maxBatch,
    maxQueue: flags.maxQueue,
    runtime: runtimeOptions(flags),
  });
  const modelId = flags.modelId ?? basename(dir.replace(/[\\/]+$/, ''));
  const server = new OpenAIServer(engine, {
    modelId,
    maxTokensLimit: flags.maxTokensLimit,
    requestTimeoutMs: flags.timeout * 1000,
    bodyLimit: flags.bodyLimit,
    chatTemplate,
    allowAdapterLoading: flags.adapterLoading,
  });
  let address: string;
  try {
    address = await server.listen(flags.port, flags.host);
  } catch (e) {
    await engine.close();
    throw new CliError(`cannot listen on ${flags.host}:${flags.port}: ${(e as Error).message}; pick another --port`);
  }
  process.stderr.write(
    `serving ${modelId}${adapters.length ? ` + ${adapters.map((a) => a.name).join(', ')}` : ''} at ${address}/v1 (OpenAI API; Ctrl-C stops)\n`,
  );
  await new Promise<void>((resolve) => {
    const stop = () => resolve();
    process.once('SIGINT', stop);
    process.once('SIGTERM', stop);
  });
  await server.close();
  await engine.close();
}
