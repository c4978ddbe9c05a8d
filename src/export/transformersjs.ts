// `peft export --format transformers.js`: the model (adapter merged, or kept as initializers of its
// own) as the ONNX folder @huggingface/transformers loads with from_pretrained(dir, {local_files_only}).
//
// The graph is the one `peft generate` decodes with (the model's own forward in a BuildContext,
// src/generate/sessions.ts), built once with the KV cache as inputs so one session serves the
// prompt (past length 0) and every decode step, as transformers.js runs a "model" session:
//   decoders:  input_ids, attention_mask [batch, past + seq], position_ids,
//              past_key_values.N.key/value [batch, kv_heads, past, head_dim]
//              (position_ids as transformers.js makes them: 1-based for Gemma 3, TJS_POSITION_START)
//              -> logits [batch, seq, vocab], present.N.key/value [batch, kv_heads, past + seq, head_dim]
//   encoders:  input_ids, attention_mask, token_type_ids -> logits (or last_hidden_state)
// Symbolic dims carry the names transformers.js resolves when it makes the empty first cache
// (batch_size; every other symbol, past_sequence_length among them, defaults to 0).

import { copyFile, existsSync, join, mkdir, open, readFile, writeFile } from '../storage/index.js';
import { Graph, type Value } from '../graph/ir.js';
import * as o from '../graph/ops.js';
import type { KV } from '../models/types.js';
import { lowerGraph } from '../onnx/export.js';
import { encodeModel, type ModelSpec, type TensorSpec } from '../onnx/model.js';
import { baseModel, inferenceContext, paramFeeds, type InferenceModel } from '../generate/model.js';
import { onnxDtype } from '../onnx/lower.js';
import { ExportError } from './errors.js';
import { type OnnxDtype, ONNX_FILE_NAMES, applyDtype } from './onnx_dtypes.js';
import { TOKENIZER_FILES } from '../io/modelfiles.js';

/**
 * Where transformers.js starts the position_ids it makes from the attention mask (decoder_forward's
 * create_position_ids: cumsum(mask) - 1 + start): 1 for these model_types, 0 for every other. The
 * exported graph subtracts it again, so it rotates by transformers' own positions (0-based for
 * Gemma3ForCausalLM) and matches `peft forward` exactly rather than up to rotary shift invariance.
 */
export const TJS_POSITION_START: Readonly<Record<string, number>> = { gemma3_text: 1, gemma3: 1, paligemma: 1 };

/** Names transformers.js gives the symbolic dims (only batch_size is resolved for the empty cache). */
const DIM_NAMES: Record<string, string> = {
  batch: 'batch_size',
  seq: 'sequence_length',
  past: 'past_sequence_length',
  'past+seq': 'total_sequence_length',
};

export interface TransformersJsGraph {
  spec: ModelSpec;
  /** graph inputs, in order */
  inputs: string[];
  outputs: string[];
}

/** Builds the exported ONNX model (float32) of `model`: every weight and adapter tensor an initializer. */
export function buildTransformersJsGraph(model: InferenceModel): TransformersJsGraph {
  const base = baseModel(model);
  const g = new Graph();
  const ctx = inferenceContext(model, g);
  const outputs: Record<string, Value> = {};
  if (base.causal) {
    if (base.task !== 'causal-lm')
      throw new ExportError(
        `${base.dir} is a ${base.family} ${base.task} model; transformers.js export handles causal language models and BERT-style encoders`,
      );
    const kvShape = ['batch', base.numKVHeads, 'past', base.headDim];
    const past: KV[] = Array.from({ length: base.numLayers }, (_, i) => ({
      key: g.input(`past_key_values.${i}.key`, 'float32', kvShape),
      value: g.input(`past_key_values.${i}.value`, 'float32', kvShape),
    }));
    const inputIds = g.input('input_ids', 'int64', ['batch', 'seq']);
    const attentionMask = g.input('attention_mask', 'int64', ['batch', 'past+seq']);
    const fed = g.input('position_ids', 'int64', ['batch', 'seq']);
    const start = TJS_POSITION_START[base.config.modelType] ?? 0;
    const positionIds = start === 0 ? fed : o.sub(fed, start);
    const out = model.forward(ctx, { inputIds, attentionMask, positionIds, past });
    outputs.logits = out.logits;
    out.presents.forEach((kv, i) => {
      outputs[`present.${i}.key`] = kv.key;
      outputs[`present.${i}.value`] = kv.value;
    });
  } else {
    const inputIds = g.input('input_ids', 'int64', ['batch', 'seq']);
    const attentionMask = g.input('attention_mask', 'int64', ['batch', 'seq']);
    const tokenTypeIds = base.family === 'bert' ? g.input('token_type_ids', 'int64', ['batch', 'seq']) : undefined;
    const out = model.forward(ctx, { inputIds, attentionMask, tokenTypeIds });
    if (base.task === 'base') outputs.last_hidden_state = out.hiddenStates[out.hiddenStates.length - 1]!;
    else outputs.logits = out.logits;
  }
  // Large constants leave the ModelProto as in-memory blobs (so no 2 GB limit applies here); they
  // are put back as raw bytes, and writeTransformersJs decides what goes to external data files.
  const lowered = lowerGraph(g, outputs, 'peft-export', { largeConstants: 'external', largeConstantBytes: 1024 });
  const spec = lowered.spec;
  const blobs = new Map(lowered.externalData.map((b) => [b.path, b.data]));
  spec.initializers = spec.initializers.map((t) => {
    const raw = t.external ? blobs.get(t.external.location) : undefined;
    if (!t.external) return t;
    if (!raw) throw new ExportError(`initializer ${t.name} refers to ${t.external.location}, which the export cannot read`);
    return { name: t.name, dataType: t.dataType, dims: t.dims, raw };
  });
  // Adapter tensors (and trainable base weights) are graph params: they become initializers.
  const params = paramFeeds(model, ctx)();
  const paramNames = new Set(Object.keys(params));
  spec.inputs = spec.inputs.filter((v) => !paramNames.has(v.name));
  for (const [name, t] of Object.entries(params)) {
    const data = Float32Array.from(t.data as Float32Array);
    spec.initializers.push({ name, dataType: onnxDtype('float32'), dims: [...t.shape], raw: new Uint8Array(data.buffer) });
  }
  const rename = (v: { shape: (number | string | null)[] }, fallback?: string) => {
    v.shape = v.shape.map((d) => (typeof d === 'string' ? (DIM_NAMES[d] ?? d) : d === null ? (fallback ?? null) : d));
  };
  for (const v of spec.inputs) rename(v, v.name === 'attention_mask' ? 'total_sequence_length' : undefined);
  for (const v of spec.outputs) rename(v, v.name.startsWith('present.') ? 'total_sequence_length' : undefined);
  return { spec, inputs: spec.inputs.map((v) => v.name), outputs: spec.outputs.map((v) => v.name) };
}

export interface TransformersJsExportOptions {
  /** dtypes to write (file names as transformers.js looks for them); the first is the folder's default */
  dtypes: OnnxDtype[];
  /**
   * Weights above this many bytes (in one ONNX file) go to external data files beside it
   * (`model.onnx_data`, `model.onnx_data_1`, ...; transformers.js' use_external_data_format),
   * as a ModelProto must stay below 2 GB. Default 1.5 GiB.
   */
  externalDataBytes?: number;
  /** bytes per external data file at most (a tensor larger than this gets a file of its own); default 1.9 GiB */
  chunkBytes?: number;
}

const DEFAULT_EXTERNAL_DATA_BYTES = 1.5 * 2 ** 30;
const DEFAULT_CHUNK_BYTES = 1.9 * 2 ** 30;

/** transformers.js' name for external data chunk i of an ONNX file. */
function dataFileName(onnxFile: string, i: number): string {
  return `${onnxFile}_data${i === 0 ? '' : `_${i}`}`;
}

/** Moves every initializer of 1 KiB or more into external data chunks; returns new initializer specs and the chunks' bytes. */
function externalize(spec: ModelSpec, onnxFile: string, chunkBytes: number): { initializers: TensorSpec[]; chunks: Uint8Array[][] } {
  const chunks: Uint8Array[][] = [[]];
  let offset = 0;
  const initializers = spec.initializers.map((t) => {
    if (!t.raw || t.raw.byteLength < 1024) return t;
    if (offset > 0 && offset + t.raw.byteLength > chunkBytes) {
      chunks.push([]);
      offset = 0;
    }
    const ext: TensorSpec = {
      name: t.name,
      dataType: t.dataType,
      dims: t.dims,
      external: { location: dataFileName(onnxFile, chunks.length - 1), offset, length: t.raw.byteLength },
    };
    chunks[chunks.length - 1]!.push(t.raw);
    offset += t.raw.byteLength;
    // keep the next tensor 64-byte aligned in the file
    const pad = (64 - (offset % 64)) % 64;
    if (pad) {
      chunks[chunks.length - 1]!.push(new Uint8Array(pad));
      offset += pad;
    }
    return ext;
  });
  return { initializers, chunks: chunks.filter((c) => c.length > 0) };
}

export interface ExportedFile {
  path: string;
  bytes: number;
}

/** Writes the transformers.js folder into `dir` (an empty folder the caller publishes atomically). */
export async function writeTransformersJs(
  model: InferenceModel,
  modelDir: string,
  dir: string,
  opts: TransformersJsExportOptions,
): Promise<ExportedFile[]> {
  const base = baseModel(model);
  const fp32 = buildTransformersJsGraph(model);
  const written: ExportedFile[] = [];
  await mkdir(join(dir, 'onnx'));
  const external: Record<string, number> = {};
  for (const dtype of opts.dtypes) {
    const spec = applyDtype(fp32.spec, dtype);
    const name = ONNX_FILE_NAMES[dtype];
    const size = spec.initializers.reduce((n, t) => n + (t.raw?.byteLength ?? 0), 0);
    let data: Uint8Array[][] = [];
    if (size > (opts.externalDataBytes ?? DEFAULT_EXTERNAL_DATA_BYTES)) {
      const split = externalize(spec, name, opts.chunkBytes ?? DEFAULT_CHUNK_BYTES);
      data = split.chunks;
      spec.initializers = split.initializers;
      external[name] = data.length;
    }
    const bytes = encodeModel(spec);
    const path = join('onnx', name);
    await writeFile(join(dir, path), bytes);
    written.push({ path, bytes: bytes.byteLength });
    for (const [i, parts] of data.entries()) {
      const file = join('onnx', dataFileName(name, i));
      const fh = await open(join(dir, file), 'wx');
      try {
        for (const p of parts) await fh.write(p);
      } finally {
        await fh.close();
      }
      written.push({ path: file, bytes: parts.reduce((n, p) => n + p.byteLength, 0) });
    }
  }
  const config = JSON.parse(await readFile(join(modelDir, 'config.json'), 'utf8')) as Record<string, unknown>;
  delete config.quantization_config;
  const tjs = (config['transformers.js_config'] ?? {}) as Record<string, unknown>;
  config['transformers.js_config'] = {
    ...tjs,
    dtype: opts.dtypes[0],
    ...(Object.keys(external).length ? { use_external_data_format: external } : {}),
  };
  await writeFile(join(dir, 'config.json'), JSON.stringify(config, null, 2) + '\n');
  written.push({ path: 'config.json', bytes: 0 });
  if (base.causal) {
    const gen = join(modelDir, 'generation_config.json');
    if (existsSync(gen)) await copyFile(gen, join(dir, 'generation_config.json'));
    else {
      const c = base.config.raw as Record<string, unknown>;
      const fields = Object.fromEntries(
        ['bos_token_id', 'eos_token_id', 'pad_token_id'].filter((k) => c[k] !== undefined && c[k] !== null).map((k) => [k, c[k]]),
      );
      await writeFile(join(dir, 'generation_config.json'), JSON.stringify(fields, null, 2) + '\n');
    }
    written.push({ path: 'generation_config.json', bytes: 0 });
  }
  for (const f of TOKENIZER_FILES) {
    if (!existsSync(join(modelDir, f))) continue;
    await copyFile(join(modelDir, f), join(dir, f));
    written.push({ path: f, bytes: 0 });
  }
  return written;
}
