// `peft export`: a trained model or adapter in the formats other runtimes load. Everything is
// loaded and checked first; the output is written under a temp name and renamed into place, and an
// existing --out is refused.

import { readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import type { Command } from 'commander';
import { ExportError } from '../../export/errors.js';
import { checkNewOutput, writeFolderAtomically } from '../../export/files.js';
import { ONNX_DTYPES, type OnnxDtype } from '../../export/onnx_dtypes.js';
import { loadExportSource } from '../../export/source.js';
import { writeTransformersJs } from '../../export/transformersjs.js';
import { collect } from './generate.js';

interface ExportFlags {
  format: string;
  model?: string;
  adapter?: string[];
  out: string;
  dtype?: string[];
  unmerged?: boolean;
}

const FORMATS = ['transformers.js'];

const HELP = `
Formats:
  transformers.js  a folder @huggingface/transformers loads with from_pretrained(dir) /
                   pipeline('text-generation', dir): config.json, generation_config.json, tokenizer
                   files, onnx/model.onnx (+ model_fp16.onnx, model_quantized.onnx, model_q4.onnx for
                   --dtype fp16, q8, q4). Decoders (GPT-2, Llama, Qwen2, Mistral) take input_ids,
                   attention_mask, position_ids, past_key_values.N.key/value and return logits,
                   present.N.key/value; BERT classifiers load as AutoModelForSequenceClassification.
                   Adapters are merged unless --unmerged (LoRA A/B stay separate initializers).

Examples:
  peft export --format transformers.js --model models/tiny-llama --adapter runs/lora --out web-model
  peft export --format transformers.js --model models/tiny-llama --adapter runs/lora --dtype fp32 --dtype q4 --out web-model
`;

export function register(program: Command): void {
  program
    .command('export')
    .description('export a model with its adapter for another runtime (transformers.js ONNX)')
    .requiredOption('--format <format>', `output format: ${FORMATS.join(', ')}`)
    .option('--model <dir|repo>', 'base model folder (config.json, model.safetensors, tokenizer files) or Hub repo id')
    .option('--adapter <dir>', 'adapter folder to apply; repeatable (applied in order, merged)', collect)
    .requiredOption('--out <path>', 'folder (transformers.js) to create; must not exist')
    .option('--dtype <dtype>', `transformers.js: ${ONNX_DTYPES.join(', ')}; repeatable, the first is the folder default (default fp32)`, collect)
    .option('--unmerged', 'transformers.js: keep the last adapter as separate initializers instead of merging it')
    .addHelpText('after', HELP)
    .action(async (flags: ExportFlags) => {
      await runExport(flags);
    });
}

function parseDtypes(given: string[] | undefined): OnnxDtype[] {
  const list = (given ?? ['fp32']).flatMap((d) => d.split(',')).map((d) => d.trim());
  for (const d of list) if (!(ONNX_DTYPES as readonly string[]).includes(d)) throw new ExportError(`--dtype ${d} is not one of ${ONNX_DTYPES.join(', ')}`);
  return [...new Set(list as OnnxDtype[])];
}

const say = (s: string) => process.stderr.write(`${s}\n`);

function folderSize(dir: string): number {
  let n = 0;
  for (const f of readdirSync(dir, { recursive: true }) as string[]) {
    const st = statSync(join(dir, f));
    if (st.isFile()) n += st.size;
  }
  return n;
}

export async function runExport(flags: ExportFlags): Promise<void> {
  if (!FORMATS.includes(flags.format)) throw new ExportError(`--format ${flags.format} is not one of ${FORMATS.join(', ')}`);
  if (flags.model === undefined) throw new ExportError(`--format ${flags.format} needs --model DIR (the base model)`);
  const dtypes = parseDtypes(flags.dtype);
  const out = checkNewOutput(flags.out, 'folder');
  const t0 = performance.now();
  const src = await loadExportSource(flags.model, flags.adapter ?? [], { unmerged: flags.unmerged, format: flags.format });
  await writeFolderAtomically(out, async (dir) => {
    const files = await writeTransformersJs(src.model, src.dir, dir, { dtypes });
    for (const f of files.filter((f) => f.bytes > 0)) say(`  ${f.path}: ${(f.bytes / 2 ** 20).toFixed(2)} MiB`);
  });
  const what = src.adapterTypes.length ? ` with ${src.adapterTypes.join(' + ')} adapter${flags.unmerged ? ' (last one unmerged)' : ' merged'}` : '';
  say(`exported ${src.dir}${what} for transformers.js (${dtypes.join(', ')}) to ${flags.out} (${(folderSize(out) / 2 ** 20).toFixed(2)} MiB) in ${((performance.now() - t0) / 1000).toFixed(1)} s`);
}
