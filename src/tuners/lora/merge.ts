// One-off weight computations that LoRA does outside training — merged weights (W + s·BA, DoRA's
// rescaling), PiSSA residuals, DoRA's initial magnitudes — built as IR graphs and run once in ONNX
// Runtime rather than as JS loops over model-sized matrices; and saving a merged model as a
// Hugging Face model folder that transformers (and loadModel) read back.

import { firstNonFinite, nonFiniteMessage } from '../../nn/finite.js';
import { existsSync, statSync, mkdir, readFile, join, resolve } from '../../storage/index.js';
import { Graph, type Value } from '../../graph/ir.js';
import { type RawTensor, fromTypedArray, writeShardedSafetensors } from '../../io/safetensors.js';
import type { PretrainedModel } from '../../models/types.js';
import { loadConfig } from '../../models/config.js';
import type { LinearSpec } from '../../nn/context.js';
import {
  type CheckpointDtype,
  CHECKPOINT_DTYPES,
  type QuantizedWeightTensor,
  WeightStore,
  type WeightTensor,
  transpose2d,
} from '../../nn/weights.js';
import { setConfigDtype } from '../../io/hfconfig.js';
import { type Quantized4bit, quantize4bit } from '../../quant/blockwise.js';
import { bnbQuantizationConfig, toBnbTensors } from '../../quant/bnb.js';
import { HEAD_MODULES, isSkipped } from '../../quant/plan.js';
import { type RawJson, RawNumber, dumpRawJson, parseRawJson } from '../../quant/pyjson.js';
import { copyFileAtomic, writeFileAtomic } from '../../io/atomic.js';
import { GENERATION_CONFIG_FILE, copyTokenizerFiles } from '../../io/modelfiles.js';
import { QuantizationError } from '../../quant/errors.js';
import { RuntimeSession } from '../../runtime/session.js';
import { AdapterError } from '../types.js';
import type { LoraEmbeddingState, LoraModuleState, LoraValues } from './layer.js';
import { doraWeightNorm, embeddingDoraNorm, embeddingMerge } from './layer.js';
import * as o from '../../graph/ops.js';

/** Bytes of constants one evaluation session may hold; larger jobs run in several sessions. */
const SESSION_BYTES = 512 << 20;

/**
 * Evaluates `build` for every item, each output a float32 array, running as few ORT sessions as
 * the byte budget allows. `bytes` estimates the constant bytes an item brings into the graph.
 */
async function evaluateOnce<T>(
  items: readonly T[],
  bytes: (item: T) => number,
  build: (g: Graph, item: T) => Value,
): Promise<Float32Array[]> {
  const results: Float32Array[] = new Array(items.length);
  let start = 0;
  while (start < items.length) {
    let end = start;
    let total = 0;
    do {
      total += bytes(items[end]!);
      end++;
    } while (end < items.length && total + bytes(items[end]!) <= SESSION_BYTES);
    const g = new Graph();
    const outputs: Record<string, Value> = {};
    for (let i = start; i < end; i++) outputs[`out_${i}`] = build(g, items[i]!);
    const sess = await RuntimeSession.fromGraph(g, outputs, { name: 'lora-merge', graphOptimization: 'basic' });
    try {
      const r = await sess.run({});
      for (let i = start; i < end; i++) results[i] = Float32Array.from(r[`out_${i}`]!.data as Float32Array);
    } finally {
      await sess.dispose();
    }
    start = end;
  }
  return results;
}

/** Graph constants for a module's LoRA tensors. */
function loraConstants(g: Graph, s: LoraModuleState): LoraValues {
  return {
    A: g.constant('lora_A', 'float32', s.A.shape, s.A.data),
    B: g.constant('lora_B', 'float32', s.B.shape, s.B.data),
    magnitude: s.magnitude ? g.constant('lora_magnitude', 'float32', s.magnitude.shape, s.magnitude.data) : undefined,
    bias: s.bias ? g.constant('lora_B_bias', 'float32', s.bias.shape, s.bias.data) : undefined,
  };
}

export interface MergeJob {
  spec: LinearSpec;
  weight: WeightTensor;
  /** applied in order, as peft merges active adapters one after another */
  states: LoraModuleState[];
  /** overrides the scaling of every state (PiSSA's residual uses -scaling) */
  scaling?: number;
}

/** The merged base weight of each job, in its stored layout. */
export function mergeWeights(jobs: readonly MergeJob[]): Promise<Float32Array[]> {
  return evaluateOnce(
    jobs,
    (j) => 4 * (j.weight.data.length + j.states.reduce((n, s) => n + s.A.data.length + s.B.data.length, 0)),
    (g, j) => {
      let w: Value = g.constant('weight', 'float32', j.weight.shape, j.weight.data);
      for (const s of j.states) w = s.variant.merge(w, j.spec, loraConstants(g, s), j.scaling ?? s.scaling);
      return w;
    },
  );
}

/** DoRA's magnitude at initialisation: the row norms of W + s·BA (peft DoraLinearLayer.update_layer). */
export function doraInitialMagnitudes(
  jobs: readonly { spec: LinearSpec; weight: WeightTensor; state: LoraModuleState }[],
): Promise<Float32Array[]> {
  return evaluateOnce(
    jobs,
    (j) => 4 * j.weight.data.length,
    (g, j) => {
      const t = loraConstants(g, j.state);
      return doraWeightNorm(g.constant('weight', 'float32', j.weight.shape, j.weight.data), j.spec, o.matmul(t.B, t.A), j.state.scaling);
    },
  );
}

/** A model of the same architecture and config as `base` over other weights (merge_and_unload's result). */
export function withWeights(base: PretrainedModel, weights: WeightStore): PretrainedModel {
  // Every architecture class takes (config, weights, dir[, task]); extra arguments are ignored.
  const Ctor = base.constructor as new (...args: unknown[]) => PretrainedModel;
  return new Ctor(base.config, weights, base.dir, base.task);
}

/** A new store sharing `base`'s tensors (never mutated in place; 4-bit ones stay 4-bit) and tied-weight aliases. */
export function copyWeightStore(model: PretrainedModel): WeightStore {
  const src = model.weights;
  const store = new WeightStore();
  for (const n of src.names()) {
    const q = src.getQuantized(n);
    if (q) store.setQuantized(n, q);
    else store.set(n, src.get(n));
  }
  const candidates = new Set([...model.expectedWeights(), ...model.linears().flatMap((s) => [`${s.name}.weight`, `${s.name}.bias`])]);
  for (const n of candidates) if (src.isAlias(n)) store.alias(n, src.resolve(n));
  store.checkpointDtype = src.checkpointDtype;
  return store;
}

/**
 * A merged float32 weight (state-dict layout) quantized as `like` was: same type, block size and
 * double quantization, transposed the same way (GPT-2's Conv1D is quantized as [out, in]).
 */
export function requantizeLike(name: string, w: WeightTensor, like: QuantizedWeightTensor): QuantizedWeightTensor {
  const [rows, cols] = w.shape as [number, number];
  const data = like.transposed ? transpose2d(w.data, rows, cols) : w.data;
  const q = like.quant;
  try {
    const quant = quantize4bit(data, q.shape, {
      type: q.type,
      blockSize: q.blockSize,
      doubleQuant: q.absmax.kind === 'double',
      dtype: q.dtype,
    });
    return { shape: [...w.shape], quant, transposed: like.transposed };
  } catch (e) {
    if (e instanceof QuantizationError) throw new QuantizationError(`${name}: ${e.message}`);
    throw e;
  }
}

export interface SaveModelOptions {
  /** shard size limit, as transformers' max_shard_size (default 5 GB) */
  maxShardBytes?: number;
  /** also copy tokenizer files from the model's folder (transformers' model.save_pretrained does not) */
  copyTokenizer?: boolean;
  /** dtype of the written floating-point weights; default the source checkpoint's (savedDtype) */
  dtype?: CheckpointDtype;
}

const FILE_DTYPE = { float32: 'F32', float16: 'F16', bfloat16: 'BF16' } as const;
/** Magnitudes from here on round to infinity in float16 (its largest finite value is 65504). */
const F16_OVERFLOW = 65520;

/**
 * The dtype a model is saved in by default: the one its checkpoint stores (a float16 or bfloat16
 * folder stays so after a merge), else config.json's dtype / torch_dtype, else float32.
 */
export function savedDtype(model: PretrainedModel): CheckpointDtype {
  const fromConfig = model.config.torchDtype;
  if (model.weights.checkpointDtype) return model.weights.checkpointDtype;
  return fromConfig && (CHECKPOINT_DTYPES as readonly string[]).includes(fromConfig) ? (fromConfig as CheckpointDtype) : 'float32';
}

/**
 * config.json for a saved model: the source's bytes when nothing changes; with 4-bit weights, the
 * bitsandbytes quantization_config transformers writes (full-precision linears listed in
 * llm_int8_skip_modules); a full-precision model saved from a 4-bit checkpoint loses that entry.
 * Other values keep their exact spelling.
 */
async function configFor(
  model: PretrainedModel,
  configPath: string,
  quantized: readonly Quantized4bit[],
  dtype: CheckpointDtype,
): Promise<Uint8Array> {
  const text = await readFile(configPath, 'utf8');
  const hadQuantization = model.config.raw.quantization_config !== undefined;
  const resized = model.vocabSize !== (await loadConfig(model.dir)).vocabSize; // tokens added (resizeTokenEmbeddings)
  const config = parseRawJson(text, configPath) as { [key: string]: RawJson };
  const dtypeChanged = setConfigDtype(config, dtype);
  if (!quantized.length && !hadQuantization && !dtypeChanged && !resized) return new TextEncoder().encode(text);
  if (resized) {
    const textConfig = config.text_config;
    if (config.vocab_size === undefined && textConfig && typeof textConfig === 'object' && !Array.isArray(textConfig))
      (textConfig as { [key: string]: RawJson }).vocab_size = new RawNumber(String(model.vocabSize));
    else config.vocab_size = new RawNumber(String(model.vocabSize));
  }
  if (!quantized.length) {
    delete config.quantization_config;
  } else {
    const kinds = new Set(quantized.map((q) => `${q.type}/${q.absmax.kind}`));
    if (kinds.size > 1)
      throw new AdapterError(
        `cannot save the model: its 4-bit weights mix quantizations (${[...kinds].join(', ')}), which one quantization_config cannot describe`,
      );
    const skip = model
      .linears()
      .filter((s) => !model.weights.isQuantized(`${s.name}.weight`) && !isSkipped(s.name, HEAD_MODULES))
      .map((s) => s.name);
    config.quantization_config = bnbQuantizationConfig({
      type: quantized[0]!.type,
      doubleQuant: quantized[0]!.absmax.kind === 'double',
      skipModules: skip,
    });
  }
  return new TextEncoder().encode(dumpRawJson(config) + '\n');
}

/**
 * Saves a model as transformers' save_pretrained does: config.json (and generation_config.json)
 * from the model's folder, weights as model.safetensors (sharded above the limit) under their
 * Hugging Face names in `opts.dtype` (default: the source checkpoint's dtype, so a bfloat16 model
 * stays bfloat16 after a merge), with config.json's dtype / torch_dtype saying so; tied weights are
 * stored once (GPT-2's lm_head is not written). A value beyond float16's range refuses float16.
 */
export async function saveModelPretrained(model: PretrainedModel, dir: string, opts: SaveModelOptions = {}): Promise<void> {
  if (existsSync(dir) && !statSync(dir).isDirectory())
    throw new AdapterError(`cannot save the model to ${dir}: it exists and is not a folder`);
  if (resolve(dir) === resolve(model.dir))
    throw new AdapterError(`cannot save the model over its own folder ${dir}; choose another output folder`);
  const configPath = join(model.dir, 'config.json');
  if (!existsSync(configPath)) throw new AdapterError(`cannot save the model: ${configPath} (its config.json) is missing`);
  const dtype = opts.dtype ?? savedDtype(model);
  if (!(CHECKPOINT_DTYPES as readonly string[]).includes(dtype))
    throw new AdapterError(`cannot save the model as ${dtype}; choose one of ${CHECKPOINT_DTYPES.join(', ')}`);
  const tensors = new Map<string, RawTensor>();
  const quantized: Quantized4bit[] = [];
  for (const name of model.weights.names()) {
    const q = model.weights.getQuantized(name);
    if (q) {
      // 4-bit weights in the layout transformers saves for load_in_4bit models
      for (const [k, t] of toBnbTensors(name, q.quant)) tensors.set(k, t);
      quantized.push(q.quant);
      continue;
    }
    const w = model.weights.get(name);
    const bad = firstNonFinite(w.data);
    if (bad >= 0)
      throw new AdapterError(`refusing to save the model to ${dir}: ${nonFiniteMessage(`weight ${name}`, bad, w.data[bad] as number)}`);
    if (dtype === 'float16') {
      for (let i = 0; i < w.data.length; i++) {
        if (Math.abs(w.data[i]!) >= F16_OVERFLOW)
          throw new AdapterError(
            `cannot save ${name} as float16: it holds ${w.data[i]}, beyond float16's range (65504); save as bfloat16 or float32`,
          );
      }
    }
    tensors.set(name, fromTypedArray(w.data, w.shape, FILE_DTYPE[dtype]));
  }
  const configBytes = await configFor(model, configPath, quantized, dtype);
  await mkdir(dir, { recursive: true });
  await writeShardedSafetensors(dir, tensors, { metadata: { format: 'pt' }, maxShardBytes: opts.maxShardBytes });
  await writeFileAtomic(join(dir, 'config.json'), configBytes);
  if (opts.copyTokenizer) await copyTokenizerFiles(model.dir, dir);
  else if (existsSync(join(model.dir, GENERATION_CONFIG_FILE)))
    await copyFileAtomic(join(model.dir, GENERATION_CONFIG_FILE), join(dir, GENERATION_CONFIG_FILE));
}

/** DoRA's initial magnitude of embedding LoRAs: column norms of E + s(BA)^T, [dim] each. */
export function embeddingDoraMagnitudes(jobs: readonly { weight: WeightTensor; state: LoraEmbeddingState }[]): Promise<Float32Array[]> {
  return evaluateOnce(
    jobs,
    (j) => 4 * j.weight.data.length,
    (g, j) => {
      const s = j.state;
      return embeddingDoraNorm(
        g.constant('weight', 'float32', j.weight.shape, j.weight.data),
        { A: g.constant('A', 'float32', s.A.shape, s.A.data), B: g.constant('B', 'float32', s.B.shape, s.B.data) },
        s.scaling,
      );
    },
  );
}

/** Merged embedding matrices: each job's LoRAs folded in order into the [V, H] weight. */
export function mergeEmbeddings(jobs: readonly { weight: WeightTensor; states: LoraEmbeddingState[] }[]): Promise<Float32Array[]> {
  return evaluateOnce(
    jobs,
    (j) => 4 * j.weight.data.length,
    (g, j) => {
      let w: Value = g.constant('weight', 'float32', j.weight.shape, j.weight.data);
      for (const s of j.states) {
        const t = {
          A: g.constant('A', 'float32', s.A.shape, s.A.data),
          B: g.constant('B', 'float32', s.B.shape, s.B.data),
          magnitude: s.magnitude ? g.constant('m', 'float32', s.magnitude.shape, s.magnitude.data) : undefined,
        };
        w = embeddingMerge(w, t, s.scaling);
      }
      return w;
    },
  );
}
