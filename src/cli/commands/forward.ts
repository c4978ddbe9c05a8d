// `peft forward`: one forward pass of a model over a batch file (input_ids, attention_mask and
// optional labels, as the fixtures' batch.safetensors) written as logits (and the loss when labels
// are given) to a safetensors file. Every input is checked before anything is written.

import { dirname, existsSync, resolve, statSync } from '../../storage/index.js';
import type { Command } from 'commander';
import { fromTypedArray, readSafetensors, toBigInt64, writeSafetensors, type RawTensor } from '../../io/safetensors.js';
import type { HostTensor } from '../../runtime/session.js';
import { ForwardSession, type ForwardBatch } from '../../generate/index.js';
import { MultiAdapterModel } from '../../tuners/multi/index.js';
import type { PretrainedModel } from '../../models/types.js';
import { CliError } from '../errors.js';
import { collect, positiveInt } from '../args.js';
import { loadMixedModelArg, loadModelArg, parseRowAdapters } from './generate.js';

interface ForwardFlags {
  model: string;
  batch: string;
  out: string;
  threads?: number;
  adapter?: string[];
  merged?: boolean;
  rowAdapters?: string;
  hiddenStates?: boolean;
}

export function register(program: Command): void {
  program
    .command('forward')
    .description('run a model on a batch file and write its logits (and loss, given labels) as safetensors')
    .requiredOption('--model <dir|repo>', 'model folder or Hub repo id')
    .requiredOption('--batch <file>', 'safetensors with input_ids [batch, seq], optional attention_mask and labels (integer tensors)')
    .requiredOption('--out <file>', 'safetensors file to write: logits (float32), loss [1] when labels are given')
    .option(
      '--adapter <[name=]dir|repo>',
      'adapter folder to apply; repeatable (earlier ones are merged; with --row-adapters, all are loaded side by side under their names)',
      collect,
    )
    .option(
      '--row-adapters <names>',
      'one adapter name per batch row, comma-separated ("__base__" = none): one forward over a mixed-adapter batch (peft adapter_names)',
    )
    .option('--merged', 'merge the adapters into the weights (peft merge_and_unload) before running')
    .option(
      '--hidden-states',
      'also write every hidden state as hidden_states.<i> (embeddings output, each layer, the final norm), as output_hidden_states',
    )
    .option('--threads <n>', 'ONNX Runtime intra-op threads (default: all cores)', positiveInt('--threads'))
    .action(async (flags: ForwardFlags) => {
      await runForward(flags);
    });
}

/** Integer tensor of the batch file as int64, with its shape checked. */
function intTensor(file: string, tensors: Map<string, RawTensor>, name: string, shape: number[] | undefined): HostTensor {
  const t = tensors.get(name)!;
  if (shape && (t.shape.length !== shape.length || t.shape.some((d, i) => d !== shape[i]))) {
    throw new CliError(`${file}: ${name} has shape [${t.shape}] but input_ids has [${shape}]; they must match`);
  }
  let data: BigInt64Array;
  try {
    data = toBigInt64(t);
  } catch {
    throw new CliError(`${file}: ${name} is ${t.dtype}; it must hold integers (I64 or I32)`);
  }
  return { dtype: 'int64', shape: [...t.shape], data };
}

function batchFromFile(
  file: string,
  tensors: Map<string, RawTensor>,
  model: PretrainedModel,
): { inputIds: HostTensor; attentionMask: HostTensor; labels?: HostTensor } {
  if (!tensors.has('input_ids')) throw new CliError(`${file} has no input_ids tensor (found: ${[...tensors.keys()].join(', ') || 'none'})`);
  const inputIds = intTensor(file, tensors, 'input_ids', undefined);
  if (inputIds.shape.length !== 2) throw new CliError(`${file}: input_ids must be [batch, seq], got [${inputIds.shape}]`);
  const [b, s] = inputIds.shape as [number, number];
  if (b === 0 || s === 0) throw new CliError(`${file}: input_ids is empty ([${inputIds.shape}])`);
  const vocab = model.vocabSize;
  for (const id of inputIds.data as BigInt64Array) {
    if (id < 0n || id >= BigInt(vocab))
      throw new CliError(`${file}: input_ids holds token id ${id}, outside the model's vocabulary [0, ${vocab})`);
  }
  const maxPos = model.config.maxPositionEmbeddings;
  if (s > maxPos) throw new CliError(`${file}: sequences of ${s} tokens exceed the model's ${maxPos} positions (max_position_embeddings)`);
  const attentionMask = tensors.has('attention_mask')
    ? intTensor(file, tensors, 'attention_mask', [b, s])
    : { dtype: 'int64' as const, shape: [b, s], data: new BigInt64Array(b * s).fill(1n) };
  let labels: HostTensor | undefined;
  if (tensors.has('labels')) labels = intTensor(file, tensors, 'labels', model.task === 'seq-cls' ? [b] : [b, s]);
  return { inputIds, attentionMask, labels };
}

async function runForward(flags: ForwardFlags): Promise<void> {
  const batchFile = resolve(flags.batch);
  const outFile = resolve(flags.out);
  if (!existsSync(batchFile)) throw new CliError(`batch file ${flags.batch} does not exist`);
  if (outFile === batchFile) throw new CliError('--out must not be the batch file itself');
  if (existsSync(outFile) && statSync(outFile).isDirectory())
    throw new CliError(`--out ${flags.out} is a folder; give a file name such as ${flags.out}/logits.safetensors`);
  if (!existsSync(dirname(outFile))) throw new CliError(`the folder of --out (${dirname(outFile)}) does not exist`);
  const { base, model } =
    flags.rowAdapters !== undefined
      ? await loadMixedModelArg(flags.model, flags.adapter, flags.merged)
      : await loadModelArg(flags.model, flags.adapter, flags.merged);
  const batch: ForwardBatch = batchFromFile(flags.batch, await readSafetensors(batchFile), base);
  if (model instanceof MultiAdapterModel) {
    const names = parseRowAdapters(flags.rowAdapters!, model.adapterNames, batch.inputIds.shape[0]!, 'batch row');
    batch.adapterIndex = { dtype: 'int64', shape: [names.length], data: model.rowIndex(names) };
  }
  const session = await ForwardSession.create(model, {
    loss: batch.labels !== undefined,
    hiddenStates: flags.hiddenStates ?? false,
    runtime: { threads: flags.threads },
  });
  try {
    const t0 = performance.now();
    const out = await session.run(batch);
    const ms = performance.now() - t0;
    const tensors: Record<string, RawTensor> = { logits: fromTypedArray(out.logits.data as Float32Array, out.logits.shape) };
    if (out.loss !== undefined) tensors.loss = fromTypedArray(Float32Array.of(out.loss), [1]);
    out.hiddenStates?.forEach((h, i) => (tensors[`hidden_states.${i}`] = fromTypedArray(h.data as Float32Array, h.shape)));
    await writeSafetensors(outFile, tensors);
    const [b, s] = batch.inputIds.shape as [number, number];
    process.stderr.write(
      `logits [${out.logits.shape}]${out.loss !== undefined ? `, loss ${out.loss.toFixed(6)}` : ''} for ${b}x${s} tokens in ${ms.toFixed(0)} ms -> ${flags.out}\n`,
    );
  } finally {
    await session.dispose();
  }
}
