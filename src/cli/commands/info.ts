// `peft info DIR`: says what a folder holds, from its config files and safetensors headers only
// (no weights are read): a Hugging Face model (shape, parameter count, dtype and size on disk) or
// an adapter (peft or AdapterHub; method settings, parameter count and share of its base model).

import { dirname, existsSync, isAbsolute, join, readdirSync, resolve, statSync } from '../../storage/index.js';
import type { Command } from 'commander';
import { parseConfig } from '../../models/config.js';
import { describeModernBert } from '../../models/modernbert.js';
import { hubCacheDir, isValidRepoId, snapshotDownload } from '../../io/hub.js';
import { SafetensorsFile, openCheckpoint } from '../../io/safetensors.js';
import {
  BASE_QUANTIZATION_METADATA_KEY,
  COMPRESSION_METADATA_KEY,
  type CompressionReport,
  parseCompressionReport,
} from '../../tuners/lora/compress.js';
import { isBnbComponent, parseBnbQuantizationConfig, quantStateKey } from '../../quant/bnb.js';
import { tunerOf } from '../../tuners/registry.js';
import { bottleneckSize, isAdapterHubFolder, readAdapterHubConfig, type BnConfig } from '../../tuners/bottleneck/index.js';
import { TOKENIZER_FILES } from '../../io/modelfiles.js';
import { CliError } from '../errors.js';
import { readJsonObject } from '../../io/files.js';

interface InfoFlags {
  model?: string;
  json?: boolean;
}

/** What the safetensors headers of a checkpoint say, without reading tensor data. */
export interface WeightsSummary {
  files: string[];
  tensors: number;
  parameters: number;
  /** parameters per dtype on disk (4-bit weights counted as "NF4"/"FP4") */
  dtypes: Record<string, number>;
  bytes: number;
}

export interface ModelInfo {
  kind: 'model';
  path: string;
  architecture: string | null;
  model_type: string;
  supported: boolean;
  layers: number | null;
  hidden_size: number | null;
  attention_heads: number | null;
  kv_heads: number | null;
  head_dim: number | null;
  intermediate_size: number | null;
  vocab_size: number | null;
  max_positions: number | null;
  tied_embeddings: boolean | null;
  num_labels: number | null;
  /** attention layout beyond plain full attention (ModernBERT's local/global layers), else null */
  attention: string | null;
  torch_dtype: string | null;
  quantization: string | null;
  weights: WeightsSummary | null;
  tokenizer: { files: string[]; chat_template: boolean };
  folder_bytes: number;
}

export interface BaseInfo {
  name: string | null;
  path: string | null;
  /** how the folder was found: --model, a path relative to the adapter or cwd, or the Hub cache */
  found_by: string | null;
  parameters: number | null;
}

export interface AdapterInfo {
  kind: 'adapter';
  path: string;
  format: 'peft' | 'adapterhub';
  peft_type: string;
  method: string;
  task_type: string | null;
  settings: Record<string, unknown>;
  /** parameters stored in the weights file */
  stored_parameters: number | null;
  /** parameters trained (stored ones plus prompt-encoder / projection weights peft does not save) */
  trainable_parameters: number | null;
  /** trainable parameters as a percentage of the base model's */
  share_of_base_percent: number | null;
  base: BaseInfo;
  weights: WeightsSummary | null;
  folder_bytes: number;
  note?: string;
  /** a compressed LoRA adapter (peft compress): method, sizes and the output drift measured when it was written */
  compression?: {
    method: string;
    block_size: number | null;
    tensors: number;
    float32_bytes: number;
    stored_bytes: number;
    ratio: number;
    max_abs_logit_diff: number | null;
    sample: string | null;
  };
  /** the 4-bit base a QLoRA adapter was trained on, as recorded in its file */
  base_quantization?: { bits: number; type: string; double_quant: boolean; block_size: number };
}

/** Buffers some checkpoints carry that are not parameters (transformers does not count them). */
const BUFFERS = [/\.attn\.bias$/, /\.attn\.masked_bias$/, /\.rotary_emb\.inv_freq$/, /position_ids$/];

export function register(program: Command): void {
  program
    .command('info')
    .description('describe a model folder (architecture, size, parameters) or an adapter folder (method, settings, trainable parameters)')
    .argument('<dir>', 'model or adapter folder')
    .option(
      '--model <dir>',
      'for an adapter: its base model folder (default: base_model_name_or_path, relative to the adapter folder, its parents or the current folder)',
    )
    .option('--json', 'print one JSON object instead of text')
    .action(async (dir: string, flags: InfoFlags) => {
      const info = await describe(dir, flags);
      process.stdout.write(flags.json ? `${JSON.stringify(info, null, 2)}\n` : render(info));
    });
}

// -------------------------------------------------------------------------------------- reading

function readJson(file: string): Promise<Record<string, unknown>> {
  return readJsonObject(file, (reason) => new CliError(reason));
}

function folderBytes(dir: string): number {
  let n = 0;
  for (const e of readdirSync(dir, { withFileTypes: true })) if (e.isFile()) n += statSync(join(dir, e.name)).size;
  return n;
}

/** Parameter count, dtypes and bytes of a checkpoint (a file, or a folder with a single or sharded file) from its headers. */
async function summarizeWeights(path: string, weightsName?: string): Promise<WeightsSummary> {
  const src = await openCheckpoint(path, { weightsName });
  try {
    const names = src.names();
    const has = (k: string) => src.has(k);
    const dtypes: Record<string, number> = {};
    let parameters = 0;
    let tensors = 0;
    for (const name of names) {
      if (BUFFERS.some((r) => r.test(name))) continue;
      if (isBnbComponent(name) && !quantStateKey(name, has)) continue;
      const info = src.info(name);
      let n = info.shape.reduce((p, q) => p * q, 1);
      let dtype: string = info.dtype;
      const q = quantStateKey(name, has);
      if (q) {
        // bitsandbytes packs two 4-bit values per byte.
        n *= 2;
        dtype = q.endsWith('fp4') ? 'FP4' : 'NF4';
      }
      dtypes[dtype] = (dtypes[dtype] ?? 0) + n;
      parameters += n;
      tensors++;
    }
    const files =
      'shardOf' in src
        ? [...new Set(names.map((n) => (src as { shardOf(n: string): string }).shardOf(n)))]
        : [(src as { path: string }).path];
    const bytes = files.reduce((s, f) => s + statSync(f).size, 0);
    return { files: files.map((f) => f.split('/').pop()!), tensors, parameters, dtypes, bytes };
  } finally {
    await src.close();
  }
}

function hasWeights(dir: string): boolean {
  return existsSync(join(dir, 'model.safetensors')) || existsSync(join(dir, 'model.safetensors.index.json'));
}

const num = (raw: Record<string, unknown>, ...keys: string[]): number | null => {
  for (const k of keys) if (typeof raw[k] === 'number') return raw[k] as number;
  return null;
};

async function describeModel(dir: string): Promise<ModelInfo> {
  const raw = await readJson(join(dir, 'config.json'));
  const architectures = Array.isArray(raw.architectures) ? raw.architectures.filter((a): a is string => typeof a === 'string') : [];
  const modelType = typeof raw.model_type === 'string' ? raw.model_type : 'unknown';
  let parsed: ReturnType<typeof parseConfig> | undefined;
  try {
    parsed = parseConfig(raw, join(dir, 'config.json'));
  } catch {
    parsed = undefined;
  }
  const quant = raw.quantization_config;
  let quantization: string | null = null;
  if (quant && typeof quant === 'object') {
    const bnb = (() => {
      try {
        return parseBnbQuantizationConfig(quant);
      } catch {
        return undefined;
      }
    })();
    quantization = bnb
      ? `bitsandbytes 4-bit ${bnb.type}${bnb.doubleQuant ? ', double quantization' : ''}`
      : String((quant as Record<string, unknown>).quant_method ?? 'yes');
  }
  const heads = parsed?.numAttentionHeads ?? num(raw, 'num_attention_heads', 'n_head');
  const tokFiles = TOKENIZER_FILES.filter((f) => existsSync(join(dir, f)));
  let chatTemplate = existsSync(join(dir, 'chat_template.jinja'));
  if (!chatTemplate && existsSync(join(dir, 'tokenizer_config.json'))) {
    const tc = await readJson(join(dir, 'tokenizer_config.json')).catch(() => ({}) as Record<string, unknown>);
    chatTemplate = tc.chat_template !== undefined && tc.chat_template !== null;
  }
  const task = architectures[0] ?? '';
  return {
    kind: 'model',
    path: dir,
    architecture: architectures[0] ?? null,
    model_type: modelType,
    supported: parsed !== undefined,
    layers: parsed?.numHiddenLayers ?? num(raw, 'num_hidden_layers', 'n_layer', 'num_layers'),
    hidden_size: parsed?.hiddenSize ?? num(raw, 'hidden_size', 'n_embd', 'd_model'),
    attention_heads: heads,
    kv_heads: parsed?.numKeyValueHeads ?? num(raw, 'num_key_value_heads') ?? heads,
    head_dim: parsed?.headDim ?? null,
    intermediate_size: parsed?.intermediateSize ?? num(raw, 'intermediate_size', 'n_inner'),
    vocab_size: parsed?.vocabSize ?? num(raw, 'vocab_size'),
    max_positions: parsed?.maxPositionEmbeddings ?? num(raw, 'max_position_embeddings', 'n_positions'),
    tied_embeddings: parsed ? parsed.tieWordEmbeddings : typeof raw.tie_word_embeddings === 'boolean' ? raw.tie_word_embeddings : null,
    num_labels: /ForSequenceClassification|ForTokenClassification/.test(task) ? (parsed?.numLabels ?? null) : null,
    attention: parsed?.family === 'modernbert' ? describeModernBert(parsed) : null,
    // transformers >= 4.56 writes "dtype", earlier versions "torch_dtype"
    torch_dtype: typeof raw.torch_dtype === 'string' ? raw.torch_dtype : typeof raw.dtype === 'string' ? raw.dtype : null,
    quantization,
    weights: hasWeights(dir) ? await summarizeWeights(dir) : null,
    tokenizer: { files: tokFiles, chat_template: chatTemplate },
    folder_bytes: folderBytes(dir),
  };
}

// ------------------------------------------------------------------------------------ the base

/**
 * The base model folder of an adapter: --model, else `name` as an absolute path, relative to the
 * adapter folder or any folder above it, relative to the current folder, or a Hub snapshot that is
 * already in the cache (never downloaded).
 */
async function findBase(name: string | null, adapterDir: string, explicit: string | undefined): Promise<BaseInfo> {
  const withCount = async (path: string, how: string): Promise<BaseInfo> => ({
    name,
    path,
    found_by: how,
    parameters: hasWeights(path) ? (await summarizeWeights(path)).parameters : null,
  });
  if (explicit !== undefined) {
    if (!existsSync(join(explicit, 'config.json'))) throw new CliError(`--model ${explicit} is not a model folder: config.json is missing`);
    return withCount(explicit, '--model');
  }
  if (!name) return { name, path: null, found_by: null, parameters: null };
  const isModel = (p: string) => existsSync(join(p, 'config.json')) && hasWeights(p);
  if (isAbsolute(name)) return isModel(name) ? withCount(name, 'absolute path') : { name, path: null, found_by: null, parameters: null };
  for (let d = resolve(adapterDir); ; d = dirname(d)) {
    const p = join(d, name);
    if (isModel(p)) return withCount(p, d === resolve(adapterDir) ? 'relative to the adapter folder' : `relative to ${d}`);
    if (dirname(d) === d) break;
  }
  if (isModel(resolve(name))) return withCount(resolve(name), 'relative to the current folder');
  if (isValidRepoId(name) && existsSync(hubCacheDir())) {
    const snap = await snapshotDownload(name, { offline: true }).catch(() => undefined);
    if (snap && isModel(snap)) return withCount(snap, 'Hub cache');
  }
  return { name, path: null, found_by: null, parameters: null };
}

// ---------------------------------------------------------------------------------- adapters

function bnPreset(c: BnConfig): string {
  if (c.isParallel) return 'parallel (ParBn)';
  if (c.mhAdapter && c.outputAdapter) return 'Houlsby (DoubleSeqBn)';
  if (c.outputAdapter && !c.mhAdapter) return 'Pfeiffer (SeqBn)';
  return 'custom';
}

async function describePeftAdapter(dir: string, flags: InfoFlags): Promise<AdapterInfo> {
  const c = await readJson(join(dir, 'adapter_config.json'));
  const type = typeof c.peft_type === 'string' ? c.peft_type : 'unknown';
  const tuner = tunerOf(type);
  const settings: Record<string, unknown> = {};
  for (const k of tuner?.infoSettings ??
    Object.keys(c)
      .filter((k) => !['peft_type', 'task_type', 'base_model_name_or_path', 'revision', 'inference_mode', 'auto_mapping'].includes(k))
      .sort()) {
    const v = c[k];
    if (v === undefined || v === null) continue;
    if (typeof v === 'object' && !Array.isArray(v) && Object.keys(v as object).length === 0) continue;
    settings[k] = v;
  }
  Object.assign(settings, tuner?.infoExtras?.(c) ?? {});
  const file = join(dir, 'adapter_model.safetensors');
  const weights = existsSync(file) ? await summarizeWeights(file) : null;
  const meta = weights ? await safetensorsMetadata(file) : undefined;
  const packed = meta?.[COMPRESSION_METADATA_KEY];
  const report = packed !== undefined ? parseCompressionReport(packed, file) : undefined;
  // A compressed file holds codes and scales; count the parameters they stand for.
  const stored =
    weights && report ? weights.parameters - countCompressedStorage(weights, report) + report.parameters : (weights?.parameters ?? null);
  const baseQuant = meta?.[BASE_QUANTIZATION_METADATA_KEY];
  const frozen = tuner?.frozenTensors && weights ? await countMatching(file, tuner.frozenTensors) : 0;
  const learned = stored === null ? null : stored - frozen;
  const trainable = tuner?.trainableParameters ? tuner.trainableParameters(c, learned) : learned;
  const base = await findBase(typeof c.base_model_name_or_path === 'string' ? c.base_model_name_or_path : null, dir, flags.model);
  let note: string | undefined;
  if (!weights)
    note = existsSync(join(dir, 'adapter_model.bin'))
      ? 'weights are in adapter_model.bin (a pickle, not read); convert it to adapter_model.safetensors to load it'
      : 'no adapter_model.safetensors in the folder';
  else if (frozen)
    note = `${group(frozen)} of the stored parameters are frozen buffers the adapter saves (${tuner!.frozenTensors!.source}), not trained`;
  else if (trainable !== stored)
    note = 'peft saves only the prompt embeddings the encoder produces; the encoder weights are trained but not stored';
  return {
    kind: 'adapter',
    path: dir,
    format: 'peft',
    peft_type: type,
    method: tuner?.label ?? type,
    task_type: typeof c.task_type === 'string' ? c.task_type : null,
    settings,
    stored_parameters: stored,
    trainable_parameters: trainable,
    share_of_base_percent: trainable !== null && base.parameters ? (100 * trainable) / base.parameters : null,
    base,
    weights,
    folder_bytes: folderBytes(dir),
    ...(note ? { note } : {}),
    ...(report
      ? {
          compression: {
            method: report.method,
            block_size: report.block_size,
            tensors: report.tensors,
            float32_bytes: report.float32_bytes,
            stored_bytes: report.stored_bytes,
            ratio: report.float32_bytes / report.stored_bytes,
            max_abs_logit_diff: report.max_abs_logit_diff,
            sample: report.sample,
          },
        }
      : {}),
    ...(baseQuant ? { base_quantization: parseOr(baseQuant) as AdapterInfo['base_quantization'] } : {}),
  };
}

function parseOr(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return undefined;
  }
}

/** Elements of the tensors whose names match `re`, from the header alone. */
async function countMatching(file: string, re: RegExp): Promise<number> {
  const f = await SafetensorsFile.open(file);
  try {
    return f
      .names()
      .filter((n) => re.test(n))
      .reduce((s, n) => s + f.info(n).shape.reduce((a, b) => a * b, 1), 0);
  } finally {
    await f.close();
  }
}

async function safetensorsMetadata(file: string): Promise<Record<string, string> | undefined> {
  const f = await SafetensorsFile.open(file);
  try {
    return f.metadata;
  } finally {
    await f.close();
  }
}

/** Elements summarizeWeights counted for the codes and scales of compressed tensors. */
function countCompressedStorage(w: WeightsSummary, r: CompressionReport): number {
  // codes: int8 one per parameter, NF4 one byte per two; scales: one float per row or block
  let n = 0;
  for (const shape of Object.values(r.shapes)) {
    const p = shape.reduce((a, b) => a * b, 1);
    const groups = r.method === 'int8-row' ? p / shape[shape.length - 1]! : Math.ceil(p / (r.block_size ?? 64));
    n += (r.method === 'nf4' ? Math.ceil(p / 2) : p) + groups;
  }
  return Math.min(n, w.parameters);
}

async function describeAdapterHub(dir: string, flags: InfoFlags): Promise<AdapterInfo> {
  const { config, name, meta } = await readAdapterHubConfig(dir);
  const settings: Record<string, unknown> = {
    name,
    architecture: bnPreset(config),
    reduction_factor: config.reductionFactor,
    non_linearity: config.nonLinearity,
    mh_adapter: config.mhAdapter,
    output_adapter: config.outputAdapter,
    is_parallel: config.isParallel,
    scaling: config.scaling,
  };
  if (config.leaveOut.length) settings.leave_out = config.leaveOut;
  if (meta.hiddenSize !== undefined) {
    try {
      settings.bottleneck_size = bottleneckSize(config, 0, meta.hiddenSize);
    } catch {
      // a per-layer reduction map without layer 0 or a default: nothing to show
    }
    settings.hidden_size = meta.hiddenSize;
  }
  if (meta.modelClass) settings.model_class = meta.modelClass;
  if (meta.version) settings.adapters_version = meta.version;
  const file = join(dir, 'adapter.safetensors');
  const weights = existsSync(file) ? await summarizeWeights(file) : null;
  const headFile = join(dir, 'model_head.safetensors');
  let stored = weights?.parameters ?? null;
  if (existsSync(headFile)) {
    const head = await summarizeWeights(headFile);
    settings.head_parameters = head.parameters;
    if (stored !== null) stored += head.parameters;
  }
  const base = await findBase(meta.modelName ?? null, dir, flags.model);
  const note = weights
    ? undefined
    : existsSync(join(dir, 'pytorch_adapter.bin'))
      ? 'weights are in pytorch_adapter.bin (a pickle, not read); save them as adapter.safetensors to load the adapter'
      : 'no adapter.safetensors in the folder';
  return {
    kind: 'adapter',
    path: dir,
    format: 'adapterhub',
    peft_type: 'BOTTLENECK',
    method: 'bottleneck adapter',
    task_type: null,
    settings,
    stored_parameters: stored,
    trainable_parameters: weights?.parameters ?? null,
    share_of_base_percent: weights && base.parameters ? (100 * weights.parameters) / base.parameters : null,
    base,
    weights,
    folder_bytes: folderBytes(dir),
    ...(note ? { note } : {}),
  };
}

/** What `dir` is. Reads configs and safetensors headers only. */
export async function describe(dir: string, flags: InfoFlags = {}): Promise<ModelInfo | AdapterInfo> {
  if (!existsSync(dir)) throw new CliError(`${dir} does not exist`);
  if (!statSync(dir).isDirectory()) throw new CliError(`${dir} is a file; pass the folder that holds config.json or adapter_config.json`);
  if (await isAdapterHubFolder(dir)) return describeAdapterHub(dir, flags);
  if (existsSync(join(dir, 'adapter_config.json'))) return describePeftAdapter(dir, flags);
  if (flags.model !== undefined) throw new CliError(`--model is for adapter folders; ${dir} has no adapter_config.json`);
  if (existsSync(join(dir, 'config.json'))) return describeModel(dir);
  throw new CliError(`${dir} is neither a model folder (config.json) nor an adapter folder (adapter_config.json)`);
}

// ------------------------------------------------------------------------------------ display

const group = (n: number): string => String(n).replace(/\B(?=(\d{3})+(?!\d))/g, ',');
function count(n: number): string {
  const short = n >= 1e9 ? `${(n / 1e9).toFixed(2)}B` : n >= 1e6 ? `${(n / 1e6).toFixed(1)}M` : n >= 1e3 ? `${(n / 1e3).toFixed(1)}K` : '';
  return short ? `${group(n)} (${short})` : group(n);
}
function size(bytes: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let v = bytes;
  let i = 0;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return i === 0 ? `${bytes} B` : `${v.toFixed(1)} ${units[i]}`;
}
function dtypes(w: WeightsSummary): string {
  const entries = Object.entries(w.dtypes).sort((a, b) => b[1] - a[1]);
  if (entries.length === 1) return entries[0]![0];
  return entries.map(([d, n]) => `${d} ${((100 * n) / w.parameters).toFixed(1)}%`).join(', ');
}
function value(v: unknown): string {
  if (Array.isArray(v)) return v.join(', ');
  if (typeof v === 'boolean') return v ? 'yes' : 'no';
  if (typeof v === 'object' && v !== null) return JSON.stringify(v);
  if (typeof v === 'number' && Number.isInteger(v)) return group(v);
  return String(v);
}

function table(title: string, rows: [string, string][]): string {
  const width = Math.max(...rows.map(([k]) => k.length));
  return `${title}\n${rows.map(([k, v]) => `  ${k.padEnd(width)}  ${v}`).join('\n')}\n`;
}

function render(info: ModelInfo | AdapterInfo): string {
  const rows: [string, string][] = [];
  if (info.kind === 'model') {
    const m = info;
    rows.push([
      'architecture',
      `${m.architecture ?? '(none listed)'} (model_type ${m.model_type})${m.supported ? '' : ', not supported by this library'}`,
    ]);
    if (m.layers !== null) rows.push(['layers', String(m.layers)]);
    if (m.hidden_size !== null) rows.push(['hidden size', String(m.hidden_size)]);
    if (m.attention_heads !== null)
      rows.push([
        'attention heads',
        `${m.attention_heads}${m.kv_heads !== null ? `, key/value heads ${m.kv_heads}` : ''}${m.head_dim !== null ? `, head dim ${m.head_dim}` : ''}`,
      ]);
    if (m.intermediate_size !== null) rows.push(['intermediate size', String(m.intermediate_size)]);
    if (m.vocab_size !== null) rows.push(['vocabulary', group(m.vocab_size)]);
    if (m.max_positions !== null) rows.push(['max positions', group(m.max_positions)]);
    if (m.tied_embeddings !== null) rows.push(['tied embeddings', m.tied_embeddings ? 'yes' : 'no']);
    if (m.num_labels !== null) rows.push(['labels', String(m.num_labels)]);
    if (m.attention !== null) rows.push(['attention', m.attention]);
    if (m.quantization) rows.push(['quantization', m.quantization]);
    if (m.weights) {
      rows.push(['parameters', count(m.weights.parameters)]);
      rows.push(['dtype on disk', dtypes(m.weights)]);
      rows.push(['weights', `${size(m.weights.bytes)} in ${m.weights.files.join(', ')}`]);
    } else rows.push(['weights', 'none (no model.safetensors or model.safetensors.index.json)']);
    rows.push([
      'tokenizer',
      m.tokenizer.files.length ? `${m.tokenizer.files.join(', ')}${m.tokenizer.chat_template ? '; chat template' : ''}` : 'none',
    ]);
    rows.push(['folder size', size(m.folder_bytes)]);
    return table(`${m.path}: Hugging Face model`, rows);
  }
  const a = info;
  rows.push(['method', `${a.method} (${a.format === 'peft' ? `peft_type ${a.peft_type}` : 'AdapterHub adapters format'})`]);
  if (a.task_type) rows.push(['task type', a.task_type]);
  for (const [k, v] of Object.entries(a.settings)) rows.push([k, value(v)]);
  const base = a.base;
  rows.push([
    'base model',
    base.path
      ? `${base.name ?? base.path} -> ${base.path} (${base.found_by})`
      : `${base.name ?? '(not recorded)'} (not found; pass --model DIR)`,
  ]);
  if (a.stored_parameters !== null) rows.push(['stored parameters', count(a.stored_parameters)]);
  if (a.trainable_parameters !== null) {
    const share =
      a.share_of_base_percent !== null && base.parameters
        ? ` = ${a.share_of_base_percent.toPrecision(3)}% of the base model's ${group(base.parameters)}`
        : '';
    rows.push(['trainable parameters', `${count(a.trainable_parameters)}${share}`]);
  }
  if (a.weights)
    rows.push([
      'weights',
      `${size(a.weights.bytes)} in ${a.weights.files.join(', ')} (${dtypes(a.weights)}, ${a.weights.tensors} tensors)`,
    ]);
  if (a.base_quantization)
    rows.push([
      'trained on',
      `a 4-bit base (${a.base_quantization.type}${a.base_quantization.double_quant ? ', double quantization' : ''}, blocks of ${a.base_quantization.block_size}): QLoRA`,
    ]);
  if (a.compression) {
    const c = a.compression;
    rows.push([
      'compression',
      `${c.method}${c.block_size ? ` (blocks of ${c.block_size})` : ' (absmax per row)'}: ${c.tensors} LoRA matrices ${size(c.float32_bytes)} -> ${size(c.stored_bytes)}, ${c.ratio.toFixed(2)}x smaller`,
    ]);
    rows.push([
      'output drift',
      c.max_abs_logit_diff === null
        ? 'not measured'
        : `max |logit diff| ${c.max_abs_logit_diff.toExponential(2)} vs the float32 adapter, on ${c.sample}`,
    ]);
    rows.push([
      'peft compatibility',
      'Python peft cannot load this compressed form; `peft decompress --adapter DIR --out DIR` writes the standard one',
    ]);
  }
  rows.push(['folder size', size(a.folder_bytes)]);
  if (a.note) rows.push(['note', a.note]);
  return table(`${a.path}: ${a.format === 'adapterhub' ? 'AdapterHub bottleneck adapter' : `${a.method} adapter`}`, rows);
}
