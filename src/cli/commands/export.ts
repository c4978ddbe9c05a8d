// `peft export`: a trained model or adapter in the formats other runtimes load. Everything is
// loaded and checked first; output follows src/io/outdir.ts (a folder: new, empty or export's own
// earlier output with --overwrite; a file: new), written atomically.

import { basename, dirname, existsSync, join, readdirSync, relative, resolve, statSync } from '../../storage/index.js';
import type { Command } from 'commander';
import { ExportError } from '../../export/errors.js';
import { checkExportFolder, checkNewFile, exportDirOptions, writeExportFolder, writeNewFile } from '../../export/files.js';
import { GGUF_TYPES, type GgufType, ggufLora, ggufModel, modelfile } from '../../export/gguf/model.js';
import { ONNX_DTYPES, type OnnxDtype } from '../../export/onnx_dtypes.js';
import { loadExportSource } from '../../export/source.js';
import { writeTransformersJs } from '../../export/transformersjs.js';
import { Tokenizer } from '../../io/tokenizer.js';
import { resolveModelDir } from '../../io/hub.js';
import { loadModel } from '../../models/load.js';
import { loadAdapter } from '../../tuners/load.js';
import { readAdapterConfigFile } from '../../tuners/lora/save.js';
import { collect } from '../args.js';

interface ExportFlags {
  format: string;
  model?: string;
  adapter?: string[];
  out: string;
  dtype?: string[];
  unmerged?: boolean;
  type?: string;
  baseGguf?: string;
  overwrite?: boolean;
}

const FORMATS = ['transformers.js', 'gguf', 'gguf-lora'];

const HELP = `
Formats:
  transformers.js  a folder @huggingface/transformers loads with from_pretrained(dir) /
                   pipeline('text-generation', dir): config.json, generation_config.json, tokenizer
                   files, onnx/model.onnx (+ model_fp16.onnx, model_quantized.onnx, model_q4.onnx for
                   --dtype fp16, q8, q4). Decoders (GPT-2, Llama/Llama 3, Mistral, Qwen2, Qwen3,
                   SmolLM3, Gemma 3, Phi-3) take input_ids, attention_mask, position_ids
                   (1-based for Gemma 3, as transformers.js feeds them),
                   past_key_values.N.key/value and return logits,
                   present.N.key/value; BERT and ModernBERT classifiers load as
                   AutoModelForSequenceClassification.
                   Weights above 1.5 GiB go to onnx/<file>_data chunks (use_external_data_format).
                   Adapters (LoRA, IA3) are merged unless --unmerged (the last adapter's tensors,
                   e.g. LoRA A/B, stay separate initializers).
  gguf             one GGUF file for llama.cpp / Ollama / node-llama-cpp with the adapters merged:
                   Llama/Llama 3, Mistral (architecture "llama", q/k rows in llama.cpp's rotary
                   order), Qwen2, Qwen3, SmolLM3 (NoPE on every 4th layer, as llama.cpp hard-codes),
                   Gemma 3 (sliding layers by a period) and Phi-3; weights in --type f32, f16 or
                   q8_0 (norms stay f32), the byte-level BPE tokenizer and chat template in the
                   metadata. A configuration llama.cpp would run differently is refused.
  gguf-lora        the LoRA adapter alone as a GGUF adapter (general.type adapter, adapter.lora.alpha,
                   blk.N.<tensor>.weight.lora_a/lora_b) that llama.cpp applies to the base model's GGUF
                   (llama-cli -m base.gguf --lora adapter.gguf); writes <out>.Modelfile for Ollama
                   (FROM --base-gguf, ADAPTER, TEMPLATE) beside it. --model defaults to the adapter's
                   base_model_name_or_path. DoRA, trained biases and modules_to_save cannot be held:
                   export the merged model instead.

Prompt tuning, prefix tuning and P-tuning adapters change the input sequence and are refused.
--out (a file) must not exist; --out (a folder) must be new, empty, or an earlier peft export
folder (replaced with --overwrite). Files are written under a temporary name and renamed when complete.

Examples:
  peft export --format transformers.js --model models/tiny-llama --adapter runs/lora --out web-model
  peft export --format transformers.js --model models/tiny-llama --adapter runs/lora --dtype fp32 --dtype q4 --out web-model
  peft export --format gguf --model models/tiny-llama --adapter runs/lora --type q8_0 --out tuned.gguf
  peft export --format gguf --model models/tiny-llama --out base.gguf
  peft export --format gguf-lora --model models/tiny-llama --adapter runs/lora --base-gguf base.gguf --out lora.gguf
`;

export function register(program: Command): void {
  program
    .command('export')
    .description('export a model with its adapter for another runtime: transformers.js (ONNX), llama.cpp / Ollama (GGUF, GGUF LoRA)')
    .requiredOption('--format <format>', `output format: ${FORMATS.join(', ')}`)
    .option('--model <dir|repo>', 'base model folder (config.json, model.safetensors, tokenizer files) or Hub repo id')
    .option('--adapter <dir>', 'adapter folder to apply; repeatable (applied in order and merged)', collect)
    .requiredOption('--out <path>', 'folder (transformers.js) or file (gguf, gguf-lora) to create; must not exist')
    .option(
      '--dtype <dtype>',
      `transformers.js: ${ONNX_DTYPES.join(', ')}; repeatable, the first is the folder default (default fp32)`,
      collect,
    )
    .option('--unmerged', 'transformers.js: keep the last adapter as separate initializers instead of merging it')
    .option('--type <type>', `gguf: tensor type of the matrices, ${GGUF_TYPES.join(', ')} (default f16)`)
    .option('--overwrite', 'transformers.js: replace the folder an earlier `peft export` wrote to --out (never anything else)')
    .option(
      '--base-gguf <file>',
      'gguf-lora: the base model GGUF the Modelfile names in FROM (default <model folder name>.gguf beside --out)',
    )
    .addHelpText('after', HELP)
    .action(async (flags: ExportFlags) => {
      await runExport(flags);
    });
}

function parseDtypes(given: string[] | undefined): OnnxDtype[] {
  const list = (given ?? ['fp32']).flatMap((d) => d.split(',')).map((d) => d.trim());
  for (const d of list)
    if (!(ONNX_DTYPES as readonly string[]).includes(d)) throw new ExportError(`--dtype ${d} is not one of ${ONNX_DTYPES.join(', ')}`);
  return [...new Set(list as OnnxDtype[])];
}

const say = (s: string) => process.stderr.write(`${s}\n`);
const mib = (n: number) => `${(n / 2 ** 20).toFixed(2)} MiB`;

function folderSize(dir: string): number {
  let n = 0;
  for (const f of readdirSync(dir, { recursive: true })) {
    const st = statSync(join(dir, f));
    if (st.isFile()) n += st.size;
  }
  return n;
}

async function runExport(flags: ExportFlags): Promise<void> {
  if (!FORMATS.includes(flags.format)) throw new ExportError(`--format ${flags.format} is not one of ${FORMATS.join(', ')}`);
  const isOnnx = flags.format === 'transformers.js';
  if (!isOnnx && flags.dtype) throw new ExportError(`--dtype is for --format transformers.js; --format ${flags.format} takes --type`);
  if (!isOnnx && flags.unmerged)
    throw new ExportError(`--unmerged is for --format transformers.js (gguf merges; gguf-lora is the unmerged adapter)`);
  if (flags.format !== 'gguf' && flags.type) throw new ExportError(`--type is for --format gguf`);
  if (flags.format !== 'gguf-lora' && flags.baseGguf) throw new ExportError(`--base-gguf is for --format gguf-lora`);
  if (!isOnnx && flags.overwrite)
    throw new ExportError(
      `--overwrite is for --format transformers.js (a folder); export never replaces a ${flags.format} file: remove it or choose another --out`,
    );
  if (flags.format === 'gguf-lora') return exportGgufLora(flags);
  if (flags.model === undefined) throw new ExportError(`--format ${flags.format} needs --model DIR (the base model)`);
  const t0 = performance.now();
  if (flags.format === 'gguf') {
    const type = (flags.type ?? 'f16') as GgufType;
    if (!GGUF_TYPES.includes(type)) throw new ExportError(`--type ${flags.type} is not one of ${GGUF_TYPES.join(', ')}`);
    const out = checkNewFile(flags.out);
    const src = await loadExportSource(flags.model, flags.adapter ?? [], { format: 'gguf' });
    const chunks = await ggufModel(src.base, src.dir, type);
    await writeNewFile(out, chunks);
    const what = src.adapterTypes.length ? ` with ${src.adapterTypes.join(' + ')} merged` : '';
    say(
      `exported ${src.dir}${what} as GGUF (${type}) to ${flags.out} (${mib(statSync(out).size)}) in ${((performance.now() - t0) / 1000).toFixed(1)} s`,
    );
    const c = src.base.config;
    if (c.ropeScaling?.ropeType === 'longrope') {
      say(
        `note: llama.cpp applies longrope's long factors to every position once its context size passes ${c.originalMaxPositionEmbeddings ?? c.maxPositionEmbeddings} tokens (transformers: once the sequence does); keep the context at or below it to match transformers on shorter inputs`,
      );
    }
    return;
  }
  const dtypes = parseDtypes(flags.dtype);
  const inputs = [
    ...(existsSync(flags.model) ? [{ path: flags.model, what: 'model' }] : []),
    ...(flags.adapter ?? []).map((a) => ({ path: a, what: 'adapter' })),
  ];
  const outOpts = exportDirOptions(flags.overwrite, inputs);
  const out = checkExportFolder(flags.out, outOpts);
  const src = await loadExportSource(flags.model, flags.adapter ?? [], { unmerged: flags.unmerged, format: flags.format });
  await writeExportFolder(out, outOpts, async (dir) => {
    const files = await writeTransformersJs(src.model, src.dir, dir, { dtypes });
    for (const f of files.filter((f) => f.bytes > 0)) say(`  ${f.path}: ${mib(f.bytes)}`);
  });
  const what = src.adapterTypes.length
    ? ` with ${src.adapterTypes.join(' + ')} adapter${flags.unmerged ? ' (last one unmerged)' : ' merged'}`
    : '';
  say(
    `exported ${src.dir}${what} for transformers.js (${dtypes.join(', ')}) to ${flags.out} (${mib(folderSize(out))}) in ${((performance.now() - t0) / 1000).toFixed(1)} s`,
  );
}

async function exportGgufLora(flags: ExportFlags): Promise<void> {
  const adapters = flags.adapter ?? [];
  if (adapters.length !== 1) throw new ExportError('--format gguf-lora writes one adapter: give exactly one --adapter DIR');
  const adapterDir = adapters[0]!;
  if (!existsSync(adapterDir) || !statSync(adapterDir).isDirectory()) throw new ExportError(`--adapter ${adapterDir} is not a folder`);
  let modelArg = flags.model;
  if (modelArg === undefined) {
    const cfg = await readAdapterConfigFile(adapterDir);
    const b = cfg.base_model_name_or_path;
    if (typeof b !== 'string' || !b)
      throw new ExportError(`${adapterDir}/adapter_config.json names no base_model_name_or_path; give the base with --model DIR`);
    modelArg = b;
  }
  const out = checkNewFile(flags.out);
  const mfPath = `${out.replace(/\.gguf$/i, '')}.Modelfile`;
  checkNewFile(mfPath, 'the Modelfile');
  const t0 = performance.now();
  const modelDir = await resolveModelDir(modelArg);
  const base = await loadModel(modelDir);
  for (const name of base.weights.quantizedNames()) base.weights.set(name, base.weights.dequantized(name));
  // Loading the adapter checks it against the base (targets, shapes) as training and merging do.
  const adapted = await loadAdapter(base, adapterDir);
  const { chunks, alpha, tensors } = ggufLora(base, adapted, adapterDir);
  const tok = await Tokenizer.fromDir(modelDir).catch(() => undefined);
  const template = typeof tok?.chatTemplate === 'string' ? tok.chatTemplate : tok?.chatTemplate?.default;
  const baseGguf = flags.baseGguf ?? join(dirname(out), `${basename(resolve(modelDir))}.gguf`);
  const rel = (p: string) => {
    const r = relative(dirname(out), resolve(p));
    return r.startsWith('..') ? resolve(p) : `./${r}`;
  };
  const mf = modelfile(rel(baseGguf), rel(out), template, tok?.eosToken ? [tok.eosToken] : []);
  await writeNewFile(out, chunks);
  await writeNewFile(mfPath, mf);
  say(
    `exported the LoRA adapter ${adapterDir} (${tensors} layers, alpha ${alpha}) as a GGUF adapter to ${flags.out} (${mib(statSync(out).size)}) and ${mfPath} in ${((performance.now() - t0) / 1000).toFixed(1)} s`,
  );
  if (!existsSync(baseGguf))
    say(`the Modelfile's FROM is ${baseGguf}: write it with  peft export --format gguf --model ${modelArg} --out ${baseGguf}`);
}
