// LoRA's tensor names and adapter folders. tensorNames() is the one mapping from a module path to
// both names a tensor has (graph/in-memory peft name, adapter_model.safetensors key); saving reads
// it forwards and loading inverts the very same table, so the two cannot drift apart.

import { existsSync, statSync, mkdir, readFile, dirname, join } from '../../storage/index.js';
import { writeFileAtomic } from '../../io/atomic.js';
import { readTorchBin } from '../../io/torchbin.js';
import { ShardedSafetensors } from '../../io/safetensors/sharded.js';
import { type RawTensor, SafetensorsFile, fromTypedArray, readSafetensors, toFloat32, writeSafetensors } from '../../io/safetensors.js';
import type { QuantizationConfig } from '../../quant/plan.js';
import {
  BASE_QUANTIZATION_METADATA_KEY,
  COMPRESSION_CONFIG_KEY,
  COMPRESSION_METADATA_KEY,
  type CompressionReport,
  type CompressionSpec,
  compressTensor,
  decompressTensors,
  parseCompressionReport,
  withCompressionEntry,
} from './compress.js';
import { AdapterError, PeftConfigError, type TrainableTensor } from '../types.js';
import { type LoraConfig, loraConfigFileText, loraConfigFromJson } from './config.js';
import { readJsonObject } from '../../io/files.js';

export type TensorKind =
  | 'lora_A'
  | 'lora_B'
  | 'lora_B_bias'
  | 'lora_magnitude_vector'
  | 'lora_embedding_A'
  | 'lora_embedding_B'
  | 'trainable_tokens_delta'
  | 'base_layer'
  | 'base';

/** The prefix peft's PeftModel puts in front of the base model's module names. */
export const PEFT_PREFIX = 'base_model.model.';

/**
 * Names of one adapter tensor. `kind` 'base' is a base-model weight the adapter replaces (a
 * modules_to_save copy or a trained bias), named `weight`; `wrapped` says whether its module is
 * a LoRA layer, whose own bias peft saves as `<module>.base_layer.bias`.
 */
export function tensorNames(
  kind: TensorKind,
  module: string,
  adapter: string,
  opts: { weight?: string; wrapped?: boolean } = {},
): { param: string; saved: string } {
  switch (kind) {
    case 'lora_A':
    case 'lora_B':
      return { param: `${PEFT_PREFIX}${module}.${kind}.${adapter}.weight`, saved: `${PEFT_PREFIX}${module}.${kind}.weight` };
    case 'lora_B_bias':
      // lora_bias=true: lora_B is an nn.Linear with a bias
      return { param: `${PEFT_PREFIX}${module}.lora_B.${adapter}.bias`, saved: `${PEFT_PREFIX}${module}.lora_B.bias` };
    case 'lora_magnitude_vector':
      // peft keeps the pre-refactor key without ".weight" on disk.
      return { param: `${PEFT_PREFIX}${module}.${kind}.${adapter}.weight`, saved: `${PEFT_PREFIX}${module}.${kind}` };
    case 'lora_embedding_A':
    case 'lora_embedding_B':
      // nn.Parameters in a ParameterDict: no ".weight"
      return { param: `${PEFT_PREFIX}${module}.${kind}.${adapter}`, saved: `${PEFT_PREFIX}${module}.${kind}` };
    case 'trainable_tokens_delta':
      return {
        param: `${PEFT_PREFIX}${module}.token_adapter.trainable_tokens_delta.${adapter}`,
        saved: `${PEFT_PREFIX}${module}.token_adapter.trainable_tokens_delta`,
      };
    case 'base_layer':
      // the base embedding peft saves next to an embedding LoRA (save_embedding_layers="auto"); never trained
      return { param: `${module}.weight`, saved: `${PEFT_PREFIX}${module}.base_layer.weight` };
    case 'base': {
      const weight = opts.weight ?? `${module}.weight`;
      const saved = opts.wrapped && weight === `${module}.bias` ? `${PEFT_PREFIX}${module}.base_layer.bias` : `${PEFT_PREFIX}${weight}`;
      return { param: weight, saved };
    }
  }
}

/** One tensor an adapter owns, with both of its names. */
export interface TensorSlot {
  kind: TensorKind;
  module: string;
  param: string;
  /** null: peft 0.13.2 does not save it (bias='lora_only') */
  saved: string | null;
  tensor: TrainableTensor;
}

/** Checks that `dir` can hold an adapter before anything is written. */
export function checkOutputDir(dir: string): void {
  if (existsSync(dir) && !statSync(dir).isDirectory())
    throw new AdapterError(`cannot save the adapter to ${dir}: it exists and is not a folder`);
}

export interface WriteAdapterOptions {
  /** store lora_A/lora_B quantized (compress.ts); the report goes into the file's metadata */
  compression?: { spec: CompressionSpec; report: CompressionReport };
  /** extra __metadata__ entries (peft ignores them) */
  metadata?: Record<string, string>;
}

/** Whether a slot is stored compressed when the adapter is saved with compression. */
export function isCompressible(s: TensorSlot): boolean {
  return s.saved !== null && (s.kind === 'lora_A' || s.kind === 'lora_B');
}

/** Counts, bytes and shapes of what compression stores (the drift is measured by the caller). */
export function compressionReport(slots: readonly TensorSlot[], spec: CompressionSpec): CompressionReport {
  const r: CompressionReport = {
    method: spec.method,
    block_size: spec.method === 'int8-row' ? null : spec.blockSize,
    tensors: 0,
    parameters: 0,
    float32_bytes: 0,
    stored_bytes: 0,
    max_abs_logit_diff: null,
    sample: null,
    shapes: {},
  };
  for (const s of slots) {
    if (!isCompressible(s)) continue;
    r.tensors++;
    r.parameters += s.tensor.data.length;
    r.float32_bytes += s.tensor.data.byteLength;
    for (const t of compressTensor(s.saved!, s.tensor, spec).values()) r.stored_bytes += t.data.byteLength;
    r.shapes[s.saved!] = [...s.tensor.shape];
  }
  return r;
}

/** Writes adapter_model.safetensors, adapter_config.json (and a model card if none) in peft's layout. */
export async function writeAdapterFolder(
  dir: string,
  config: LoraConfig,
  slots: readonly TensorSlot[],
  opts: WriteAdapterOptions = {},
): Promise<void> {
  checkOutputDir(dir);
  const tensors = new Map<string, RawTensor>();
  const compression = opts.compression;
  for (const s of slots) {
    if (s.saved === null) continue;
    if (tensors.has(s.saved)) throw new AdapterError(`two adapter tensors would be saved as ${s.saved}`);
    if (compression && isCompressible(s)) {
      for (const [k, t] of compressTensor(s.saved, s.tensor, compression.spec)) tensors.set(k, t);
      continue;
    }
    tensors.set(s.saved, fromTypedArray(s.tensor.data, s.tensor.shape));
  }
  // peft always writes inference_mode=true.
  let text = loraConfigFileText({ ...config, inferenceMode: true });
  if (compression) text = withCompressionEntry(text, compression.spec);
  const metadata: Record<string, string> = { format: 'pt', ...opts.metadata };
  if (compression) metadata[COMPRESSION_METADATA_KEY] = JSON.stringify(compression.report);
  await mkdir(dir, { recursive: true });
  await writeSafetensors(join(dir, 'adapter_model.safetensors'), tensors, metadata);
  await writeFileAtomic(join(dir, 'adapter_config.json'), text);
  const card = join(dir, 'README.md');
  if (!existsSync(card)) await writeFileAtomic(card, modelCard(config));
}

function modelCard(config: LoraConfig): string {
  const base = config.baseModelNameOrPath;
  return [
    '---',
    ...(base ? [`base_model: ${base}`] : []),
    'library_name: peft',
    '---',
    '',
    '# LoRA adapter',
    '',
    `A LoRA adapter (r=${config.r}, lora_alpha=${config.loraAlpha}${config.useDora ? ', DoRA' : ''}${config.useRslora ? ', rsLoRA' : ''})` +
      `${base ? ` for ${base}` : ''}, saved in the Hugging Face peft format (adapter_config.json + adapter_model.safetensors).`,
    '',
    '### Framework versions',
    '',
    '- PEFT 0.13.2 (file format)',
  ].join('\n');
}

/** Reads any adapter's adapter_config.json as a plain object, with errors that say which file is wrong. */
export async function readAdapterConfigFile(dir: string): Promise<Record<string, unknown>> {
  const path = join(dir, 'adapter_config.json');
  if (!existsSync(dir)) throw new AdapterError(`adapter folder ${dir} does not exist`);
  if (!existsSync(path)) throw new AdapterError(`${dir} is not an adapter folder: adapter_config.json is missing`);
  return readJsonObject(path, (reason) => new PeftConfigError(reason));
}

/**
 * The adapter's weights as float32 tensors by saved key, from whichever file peft (or a user) left:
 * adapter_model.safetensors, a sharded adapter_model.safetensors.index.json, adapter_model.bin
 * (torch.save zip, read by a restricted unpickler that never runs code: io/torchbin.ts) or a sharded
 * adapter_model.bin.index.json.
 */
export async function readAdapterTensors(dir: string): Promise<Map<string, TrainableTensor>> {
  const path = join(dir, 'adapter_model.safetensors');
  const toFloat = (t: RawTensor, k: string, file: string): Float32Array => {
    if (!['F32', 'F16', 'BF16', 'F64'].includes(t.dtype))
      throw new AdapterError(`${file}: tensor ${k} has dtype ${t.dtype}; adapter tensors must be floating point`);
    return toFloat32(t);
  };
  const convert = (raw: Map<string, RawTensor>, file: string) => {
    const out = new Map<string, TrainableTensor>();
    for (const [k, t] of raw) out.set(k, { shape: [...t.shape], data: toFloat(t, k, file) });
    return out;
  };
  if (!existsSync(path)) {
    const stIndex = join(dir, 'adapter_model.safetensors.index.json');
    if (existsSync(stIndex)) {
      const sharded = await ShardedSafetensors.open(stIndex);
      try {
        const raw = new Map<string, RawTensor>();
        for (const k of sharded.names()) raw.set(k, await sharded.read(k));
        return convert(raw, stIndex);
      } finally {
        await sharded.close();
      }
    }
    const bin = join(dir, 'adapter_model.bin');
    if (existsSync(bin)) return convert(await readTorchBin(bin), bin);
    const binIndex = join(dir, 'adapter_model.bin.index.json');
    if (existsSync(binIndex)) return convert(await readShardedTorchBin(binIndex), binIndex);
    throw new AdapterError(
      `${dir} has adapter_config.json but no adapter weights (adapter_model.safetensors, adapter_model.bin or a sharded index)`,
    );
  }
  const raw = await readSafetensors(path);
  // A compressed adapter (compress.ts) is dequantized here, so loading it is transparent.
  const metadata = await adapterMetadata(dir);
  const packed = metadata?.[COMPRESSION_METADATA_KEY];
  if (packed !== undefined) return decompressTensors(raw, parseCompressionReport(packed, path), path, (t, k) => toFloat(t, k, path));
  return convert(raw, path);
}

/** A sharded .bin checkpoint: `<name>.bin.index.json` {weight_map: {tensor: shard file}}; every shard read restrictedly. */
async function readShardedTorchBin(indexPath: string): Promise<Map<string, RawTensor>> {
  let index: unknown;
  try {
    index = JSON.parse(await readFile(indexPath, 'utf8'));
  } catch (e) {
    throw new AdapterError(`${indexPath} is not valid JSON: ${(e as Error).message}`);
  }
  const map = (index as { weight_map?: unknown })?.weight_map;
  if (typeof map !== 'object' || map === null || Array.isArray(map)) throw new AdapterError(`${indexPath}: no "weight_map" object`);
  const shards = new Set<string>();
  for (const [k, f] of Object.entries(map)) {
    if (typeof f !== 'string' || f.includes('/') || f.includes('\\') || f.startsWith('.'))
      throw new AdapterError(`${indexPath}: tensor ${k} maps to ${JSON.stringify(f)}, not a file name in this folder`);
    shards.add(f);
  }
  const out = new Map<string, RawTensor>();
  for (const f of shards) {
    const tensors = await readTorchBin(join(dirname(indexPath), f));
    for (const [k, t] of tensors) {
      if ((map as Record<string, string>)[k] !== f)
        throw new AdapterError(`${indexPath}: ${f} holds ${k}, which the index does not place there`);
      out.set(k, t);
    }
  }
  const absent = Object.keys(map).filter((k) => !out.has(k));
  if (absent.length) throw new AdapterError(`${indexPath}: tensors ${absent.slice(0, 5).join(', ')} are not in the shard the index names`);
  return out;
}

/**
 * The 4-bit base a LoRA adapter was trained on, as savePretrained records it for QLoRA adapters
 * (metadata "peft_ts.base_quantization"); undefined for any other adapter.
 */
export async function adapterBaseQuantization(dir: string): Promise<QuantizationConfig | undefined> {
  const file = join(dir, 'adapter_model.safetensors');
  if (!existsSync(file)) return undefined;
  const recorded = (await adapterMetadata(dir))?.[BASE_QUANTIZATION_METADATA_KEY];
  if (recorded === undefined) return undefined;
  let r: { type?: unknown; double_quant?: unknown; block_size?: unknown };
  try {
    r = JSON.parse(recorded) as typeof r;
  } catch {
    throw new AdapterError(`${file}: metadata "${BASE_QUANTIZATION_METADATA_KEY}" is not JSON; the file is damaged`);
  }
  if ((r.type !== 'nf4' && r.type !== 'fp4') || typeof r.double_quant !== 'boolean' || typeof r.block_size !== 'number') {
    throw new AdapterError(
      `${file}: metadata "${BASE_QUANTIZATION_METADATA_KEY}" ${recorded} is not a 4-bit quantization this library wrote`,
    );
  }
  return { bits: 4, type: r.type, doubleQuant: r.double_quant, blockSize: r.block_size };
}

/** The __metadata__ map of adapter_model.safetensors (undefined when it has none). */
export async function adapterMetadata(dir: string): Promise<Record<string, string> | undefined> {
  const f = await SafetensorsFile.open(join(dir, 'adapter_model.safetensors'));
  try {
    return f.metadata;
  } finally {
    await f.close();
  }
}

/**
 * Writes the standard peft form of a compressed adapter folder `src` into `out` (float32 tensors
 * under their peft keys, adapter_config.json without the "compression" entry, metadata kept but
 * the compression report), so Python peft can load it. A folder that is not compressed is refused.
 */
export async function decompressAdapterFolder(src: string, out: string): Promise<{ tensors: number; bytes: number }> {
  const json = await readAdapterConfigFile(src);
  const metadata = await adapterMetadata(src);
  if (metadata?.[COMPRESSION_METADATA_KEY] === undefined)
    throw new AdapterError(
      `${src} is not a compressed adapter (its adapter_model.safetensors has no "${COMPRESSION_METADATA_KEY}" metadata); it already loads in peft`,
    );
  if (json.peft_type !== 'LORA')
    throw new AdapterError(
      `${join(src, 'adapter_config.json')}: peft_type is ${JSON.stringify(json.peft_type)}; only LoRA adapters are compressed`,
    );
  const { [COMPRESSION_CONFIG_KEY]: _entry, ...plain } = json;
  const config = loraConfigFromJson(plain, join(src, 'adapter_config.json'));
  const tensors = await readAdapterTensors(src);
  checkOutputDir(out);
  const raw = new Map<string, RawTensor>();
  let bytes = 0;
  for (const [k, t] of tensors) {
    raw.set(k, fromTypedArray(t.data, t.shape));
    bytes += t.data.byteLength;
  }
  const { [COMPRESSION_METADATA_KEY]: _report, ...rest } = metadata;
  await mkdir(out, { recursive: true });
  await writeSafetensors(join(out, 'adapter_model.safetensors'), raw, { format: 'pt', ...rest });
  await writeFileAtomic(join(out, 'adapter_config.json'), loraConfigFileText({ ...config, inferenceMode: true }));
  const card = join(src, 'README.md');
  if (existsSync(card) && !existsSync(join(out, 'README.md'))) await writeFileAtomic(join(out, 'README.md'), await readFile(card, 'utf8'));
  return { tensors: raw.size, bytes };
}
