// Which weights of a model are held 4-bit, as transformers' replace_with_bnb_linear decides it:
// every linear module (nn.Linear and GPT-2's Conv1D, transposed) except the output head and the
// modules named in llm_int8_skip_modules; and the options the user asked for, checked.

import { type QuantizeOptions, checkBlockSize } from './blockwise.js';
import { parseBnbQuantizationConfig } from './bnb.js';
import type { QuantType, Rounding } from './codes.js';
import { QuantizationError } from './errors.js';

/** loadModel's `quantization` option (bitsandbytes' BitsAndBytesConfig, 4-bit part). */
export interface QuantizationConfig {
  /** only 4 is supported */
  bits: 4;
  /** 'nf4' (QLoRA) or 'fp4' */
  type: QuantType;
  /** quantize the absmax values too (bnb_4bit_use_double_quant; default true) */
  doubleQuant?: boolean;
  /** elements per absmax block (default 64, what transformers always uses) */
  blockSize?: number;
  /** code selection (default 'argmin', bitsandbytes' CPU backend; 'midpoint' is its CUDA kernel) */
  rounding?: Rounding;
  /** modules kept in full precision besides the head (llm_int8_skip_modules): short names ("q_proj") or full paths */
  skipModules?: string[];
}

/** Output heads transformers never quantizes (get_keys_to_not_convert: the last module / tied output embeddings). */
export const HEAD_MODULES: readonly string[] = ['lm_head', 'classifier', 'cls.predictions.decoder'];

export interface LinearLike {
  name: string;
  layout: 'linear' | 'conv1d';
}

/** What the weight loader needs: which tensors to quantize (and how), and which stored 4-bit ones are transposed. */
export interface QuantizationPlan {
  quantize?: (name: string, shape: readonly number[]) => (QuantizeOptions & { transpose?: boolean }) | undefined;
  transposed: (name: string) => boolean;
  /** the options in force: the user's, or those of a checkpoint saved quantized */
  config?: QuantizationConfig;
}

/** transformers' test: the short name is listed, or a listed key is the module or one of its parents. */
export function isSkipped(module: string, skip: readonly string[]): boolean {
  const short = module.slice(module.lastIndexOf('.') + 1);
  return skip.some((k) => k === short || k === module || module.includes(`${k}.`));
}

function checkQuantizationConfig(c: QuantizationConfig): Required<Omit<QuantizationConfig, 'skipModules'>> & { skipModules: string[] } {
  if (c.bits !== 4) throw new QuantizationError(`${String(c.bits)}-bit quantization is not supported; use bits: 4 (NF4 or FP4)`);
  if (c.type !== 'nf4' && c.type !== 'fp4')
    throw new QuantizationError(`quantization type "${String(c.type)}" is not supported; use "nf4" or "fp4"`);
  const blockSize = c.blockSize ?? 64;
  checkBlockSize(blockSize);
  const rounding = c.rounding ?? 'argmin';
  if (rounding !== 'argmin' && rounding !== 'midpoint')
    throw new QuantizationError(`rounding "${String(rounding)}" is not supported; use "argmin" or "midpoint"`);
  if (c.skipModules !== undefined && (!Array.isArray(c.skipModules) || !c.skipModules.every((s) => typeof s === 'string' && s !== ''))) {
    throw new QuantizationError('skipModules must be a list of module names');
  }
  return { bits: 4, type: c.type, doubleQuant: c.doubleQuant ?? true, blockSize, rounding, skipModules: [...(c.skipModules ?? [])] };
}

/**
 * The plan for a model whose linear modules are `linears` (state-dict names; `prefix` is what a
 * base-model checkpoint leaves off, e.g. "model."), given the user's options and config.json's
 * quantization_config (a checkpoint saved 4-bit keeps its own quantization).
 */
export function quantizationPlan(
  linears: readonly LinearLike[],
  prefix: string,
  requested: QuantizationConfig | undefined,
  checkpointConfig: unknown,
): QuantizationPlan {
  const saved = parseBnbQuantizationConfig(checkpointConfig);
  const conv1d = new Set(linears.filter((s) => s.layout === 'conv1d').map((s) => `${s.name}.weight`));
  const transposed = (name: string) => conv1d.has(name) || conv1d.has(prefix + name);
  if (!requested) {
    return {
      transposed,
      config: saved ? { bits: 4, type: saved.type, doubleQuant: saved.doubleQuant, skipModules: saved.skipModules } : undefined,
    };
  }
  const c = checkQuantizationConfig(requested);
  if (saved && (saved.type !== c.type || saved.doubleQuant !== c.doubleQuant)) {
    throw new QuantizationError(
      `the checkpoint is already quantized (${saved.type}, double quant ${saved.doubleQuant}) and cannot be re-quantized as ${c.type} (double quant ${c.doubleQuant}); load it without the quantization option, or start from the full-precision model`,
    );
  }
  // A misspelt skip name would silently quantize the module the user meant to keep.
  for (const k of c.skipModules) {
    if (!linears.some((s) => isSkipped(s.name, [k]) || isSkipped(s.name, [prefix + k]))) {
      throw new QuantizationError(
        `skip module "${k}" matches no linear module of this model; nearest names: ${nearestNames(
          k,
          linears.map((s) => s.name),
        ).join(', ')}`,
      );
    }
  }
  const skip = [...HEAD_MODULES, ...c.skipModules];
  const targets = new Map<string, LinearLike>();
  for (const s of linears) if (!isSkipped(s.name, skip)) targets.set(`${s.name}.weight`, s);
  const quantize = (name: string, shape: readonly number[]) => {
    const s = targets.get(name) ?? (prefix && !name.startsWith(prefix) ? targets.get(prefix + name) : undefined);
    if (!s || shape.length !== 2) return undefined;
    return { type: c.type, blockSize: c.blockSize, doubleQuant: c.doubleQuant, rounding: c.rounding, transpose: s.layout === 'conv1d' };
  };
  return { quantize, transposed, config: c };
}

/** The three module names (short "q_proj" or full "model.layers.0.self_attn.q_proj") closest to `name` by edit distance. */
function nearestNames(name: string, modules: readonly string[]): string[] {
  const candidates = new Set<string>();
  for (const m of modules) {
    candidates.add(m.slice(m.lastIndexOf('.') + 1));
    candidates.add(m);
  }
  const distance = (a: string, b: string): number => {
    let prev = Array.from({ length: b.length + 1 }, (_, j) => j);
    for (let i = 1; i <= a.length; i++) {
      const cur = [i];
      for (let j = 1; j <= b.length; j++) cur[j] = Math.min(prev[j]! + 1, cur[j - 1]! + 1, prev[j - 1]! + (a[i - 1] === b[j - 1] ? 0 : 1));
      prev = cur;
    }
    return prev[b.length]!;
  };
  return [...candidates]
    .map((c) => ({ c, d: distance(name.slice(0, 200), c) }))
    .sort((x, y) => x.d - y.d || x.c.length - y.c.length)
    .slice(0, 3)
    .map((x) => `"${x.c}"`);
}
