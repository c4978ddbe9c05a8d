// mlx-lm LoRA adapters <-> peft LoRA adapters. mlx-lm (ml-explore/mlx-lm, mlx_lm/tuner) saves
// `adapters.safetensors` with `<module path>.lora_a` [in, r] and `.lora_b` [r, out] (embeddings:
// lora_a [num_embeddings, r], lora_b [r, dim]) and computes y = W x + scale * (x @ lora_a @ lora_b);
// its `adapter_config.json` holds fine_tune_type, num_layers (LoRA on the last num_layers decoder
// layers, -1 = all) and lora_parameters {rank, scale, dropout, keys?} (keys relative to a decoder
// layer, e.g. "self_attn.q_proj", or full paths for modules outside the layers). peft stores
// lora_A [r, in] = lora_a^T and lora_B [out, r] = lora_b^T with scaling lora_alpha / r, so
// lora_alpha = scale * r. Conversion is exact (a transpose and a renaming).

import { existsSync, join } from '../../storage/index.js';
import { type RawTensor, fromTypedArray, readSafetensors, toFloat32, writeSafetensors } from '../../io/safetensors.js';
import { AdapterError, type TrainableTensor } from '../types.js';
import { loraConfig, loraConfigFromJson } from './config.js';
import { rankAndAlpha } from './targets.js';
import { type TensorSlot, readAdapterConfigFile, readAdapterTensors, tensorNames, writeAdapterFolder } from './save.js';
import { COMPRESSION_CONFIG_KEY } from './compress.js';
import { writeFileAtomic } from '../../io/atomic.js';
import { checkOutputDir, withOutputDir } from '../../io/outdir.js';
import { readJsonObject } from '../../io/files.js';

/** An adapter that cannot be expressed in the other format; the message says what stands in the way. */
class AdapterConversionError extends AdapterError {
  constructor(message: string) {
    super(message);
    this.name = 'AdapterConversionError';
  }
}

/** Module names (last component) mlx-lm and peft treat as token embeddings. */
const EMBEDDING_NAMES = /(^|\.)(embed_tokens|wte|word_embeddings|tok_embeddings|embeddings)$/;

function transpose(t: TrainableTensor): TrainableTensor {
  const [rows, cols] = t.shape as [number, number];
  const out = new Float32Array(rows * cols);
  for (let i = 0; i < rows; i++) for (let j = 0; j < cols; j++) out[j * rows + i] = t.data[i * cols + j]!;
  return { shape: [cols, rows], data: out };
}

/** Options of both conversions for their --out folder. */
export interface ConvertOutOptions {
  /** replace the adapter an earlier `peft convert` wrote to `out` (never anything else) */
  overwrite?: boolean;
}

/** `out` follows the output-folder rule (src/io/outdir.ts): new, empty, or convert's own earlier output with overwrite. */
const outOpts = (src: string, o: ConvertOutOptions) => ({
  command: 'convert',
  overwrite: o.overwrite,
  inputs: [{ path: src, what: 'source adapter' }],
});
function checkOut(src: string, out: string, o: ConvertOutOptions): void {
  checkOutputDir(out, outOpts(src, o));
}

/** Claims `out` (lock, temp clean-up, earlier own output cleared), writes it and marks it complete. */
async function atomically(src: string, out: string, o: ConvertOutOptions, write: (dir: string) => Promise<void>): Promise<void> {
  await withOutputDir(out, outOpts(src, o), write);
}

export interface MlxConversion {
  modules: number;
  r: number;
  scale: number;
}

/**
 * An mlx-lm LoRA adapter folder (adapter_config.json + adapters.safetensors) as a peft LoRA folder:
 * r = rank, lora_alpha = scale * rank, target_modules = the module paths the file holds.
 */
export async function mlxToPeft(
  src: string,
  out: string,
  opts: { baseModelNameOrPath?: string } & ConvertOutOptions = {},
): Promise<MlxConversion> {
  const cfgPath = join(src, 'adapter_config.json');
  const wPath = join(src, 'adapters.safetensors');
  if (!existsSync(cfgPath) || !existsSync(wPath))
    throw new AdapterConversionError(`${src} is not an mlx-lm adapter folder (it needs adapter_config.json and adapters.safetensors)`);
  checkOut(src, out, opts);
  const cfg = await readJsonObject(cfgPath, (reason) => new AdapterConversionError(reason));
  const type = cfg.fine_tune_type ?? 'lora';
  if (type !== 'lora')
    throw new AdapterConversionError(
      `${cfgPath}: fine_tune_type "${String(type)}" cannot be converted; only mlx-lm LoRA adapters ("lora") map onto peft LoRA (DoRA's magnitude layout differs, "full" is not an adapter)`,
    );
  const lp = cfg.lora_parameters as { rank?: unknown; scale?: unknown; dropout?: unknown } | undefined;
  const rank = lp?.rank ?? 8;
  const scale = lp?.scale ?? 20;
  const dropout = lp?.dropout ?? 0;
  if (
    !Number.isInteger(rank) ||
    (rank as number) <= 0 ||
    typeof scale !== 'number' ||
    !Number.isFinite(scale) ||
    typeof dropout !== 'number'
  ) {
    throw new AdapterConversionError(
      `${cfgPath}: lora_parameters must hold an integer rank, a numeric scale and dropout, got ${JSON.stringify(lp)}`,
    );
  }
  const r = rank as number;
  const raw = await readSafetensors(wPath);
  const modules = new Map<string, { a?: RawTensor; b?: RawTensor }>();
  for (const [k, t] of raw) {
    const m = /^(.*)\.(lora_a|lora_b)$/.exec(k);
    if (!m)
      throw new AdapterConversionError(
        `${wPath}: tensor ${k} is not a LoRA matrix (lora_a / lora_b); mlx-lm DoRA or full fine-tuning files cannot be converted`,
      );
    const e = modules.get(m[1]!) ?? {};
    e[m[2] === 'lora_a' ? 'a' : 'b'] = t;
    modules.set(m[1]!, e);
  }
  if (modules.size === 0) throw new AdapterConversionError(`${wPath} holds no LoRA matrices`);
  const slots: TensorSlot[] = [];
  for (const [m, { a, b }] of [...modules].sort(([x], [y]) => (x < y ? -1 : 1))) {
    if (!a || !b) throw new AdapterConversionError(`${wPath}: ${m} has ${a ? 'lora_a' : 'lora_b'} but not ${a ? 'lora_b' : 'lora_a'}`);
    if (a.shape.length !== 2 || b.shape.length !== 2 || a.shape[1] !== r || b.shape[0] !== r) {
      throw new AdapterConversionError(
        `${wPath}: ${m} has lora_a [${a.shape}] and lora_b [${b.shape}], not [in, ${r}] and [${r}, out] for rank ${r}`,
      );
    }
    const A = transpose({ shape: a.shape, data: toFloat32(a) });
    const B = transpose({ shape: b.shape, data: toFloat32(b) });
    const emb = EMBEDDING_NAMES.test(m);
    const kinds = emb ? (['lora_embedding_A', 'lora_embedding_B'] as const) : (['lora_A', 'lora_B'] as const);
    for (const [kind, tensor] of [
      [kinds[0], A],
      [kinds[1], B],
    ] as const) {
      const n = tensorNames(kind, m, 'default');
      slots.push({ kind, module: m, param: n.param, saved: n.saved, tensor });
    }
  }
  const base = opts.baseModelNameOrPath ?? (typeof cfg.model === 'string' ? cfg.model : null);
  const config = loraConfig({
    r,
    loraAlpha: scale * r,
    loraDropout: dropout,
    targetModules: [...modules.keys()].sort(),
    taskType: 'CAUSAL_LM',
    baseModelNameOrPath: base,
    inferenceMode: true,
  });
  await atomically(src, out, opts, (tmp) => writeAdapterFolder(tmp, config, slots));
  return { modules: modules.size, r, scale };
}

/**
 * A peft LoRA folder (adapter_model.safetensors or .bin) as an mlx-lm adapter folder. mlx-lm has one
 * rank and one scale for all modules and nothing but lora_a / lora_b, so DoRA, lora_bias,
 * modules_to_save, trainable tokens and per-module ranks or alphas are refused by name.
 */
export async function peftToMlx(src: string, out: string, opts: ConvertOutOptions = {}): Promise<MlxConversion> {
  const { [COMPRESSION_CONFIG_KEY]: _c, ...json } = await readAdapterConfigFile(src);
  if (json.peft_type !== 'LORA')
    throw new AdapterConversionError(
      `${join(src, 'adapter_config.json')}: peft_type ${JSON.stringify(json.peft_type)} cannot be converted to mlx-lm; only LoRA adapters can`,
    );
  const c = loraConfigFromJson(json, join(src, 'adapter_config.json'));
  checkOut(src, out, opts);
  const refuse = (what: string) => {
    throw new AdapterConversionError(
      `${src}: ${what} has no mlx-lm equivalent (mlx-lm LoRA holds only lora_a / lora_b with one rank and scale); convert an adapter without it`,
    );
  };
  if (c.useDora) refuse('DoRA (use_dora)');
  if (c.loraBias) refuse('lora_bias');
  if (c.trainableTokenIndices !== null) refuse('trainable_token_indices');
  if (c.modulesToSave?.length) refuse('modules_to_save');
  if (c.bias !== 'none') refuse(`bias="${c.bias}"`);
  const tensors = await readAdapterTensors(src);
  const weights = new Map<string, RawTensor>();
  const modules: string[] = [];
  const ranks = new Set<number>();
  for (const [k, t] of tensors) {
    const m = /^base_model\.model\.(.*)\.(lora_A\.weight|lora_B\.weight|lora_embedding_A|lora_embedding_B)$/.exec(k);
    if (!m) refuse(`tensor ${k}`);
    const [, module, kind] = m!;
    const isA = kind!.includes('A');
    const mt = transpose(t);
    weights.set(`${module}.${isA ? 'lora_a' : 'lora_b'}`, fromTypedArray(mt.data, mt.shape));
    if (isA) {
      modules.push(module!);
      ranks.add(t.shape[0]!);
    }
  }
  if (!modules.length) throw new AdapterConversionError(`${src} holds no LoRA matrices`);
  if (ranks.size > 1) refuse(`modules with different ranks (${[...ranks].join(', ')}; rank_pattern)`);
  const r = [...ranks][0]!;
  const alphas = new Set(modules.map((m) => rankAndAlpha(c, m).alpha));
  if (alphas.size > 1) refuse(`modules with different lora_alpha (alpha_pattern)`);
  const alpha = [...alphas][0]!;
  const scale = c.useRslora ? alpha / Math.sqrt(r) : alpha / r;
  // keys relative to a decoder layer ("self_attn.q_proj"), full paths elsewhere; num_layers -1 = every
  // layer: mlx-lm wraps the key in layers the file has no weights for, where lora_b stays zero (a no-op).
  const keys = [...new Set(modules.map((m) => m.replace(/^(.*\.)?layers\.\d+\./, '')))].sort();
  const mlxConfig = {
    fine_tune_type: 'lora',
    model: c.baseModelNameOrPath,
    num_layers: -1,
    lora_parameters: { rank: r, scale, dropout: c.loraDropout, keys },
  };
  await atomically(src, out, opts, async (tmp) => {
    await writeSafetensors(join(tmp, 'adapters.safetensors'), weights, { format: 'mlx' });
    await writeFileAtomic(join(tmp, 'adapter_config.json'), `${JSON.stringify(mlxConfig, null, 4)}\n`);
  });
  return { modules: modules.length, r, scale };
}
