// BnConfig as AdapterHub `adapters` 0.2.2 defines it (every field, so a saved config is the
// library's byte for byte), its three presets (SeqBn = Pfeiffer, DoubleSeqBn = Houlsby, ParBn =
// parallel), and the checks that reject options this implementation does not compute.

import { PeftConfigError } from '../types.js';
import { PyFloat, type PyJson } from '../../io/pyjson.js';

/** Where the pretrained residual comes back in: true = the sub-layer output h, 'post_add' = h + x, false = the adapter input. */
export type ResidualBeforeLn = boolean | 'post_add';

export interface BnConfig {
  /** adapter after the attention sub-layer (adapters' "mh_adapter") */
  mhAdapter: boolean;
  /** adapter after the feed-forward sub-layer (adapters' "output_adapter") */
  outputAdapter: boolean;
  /** bottleneck = floor(hidden / reductionFactor); a map gives per-layer values ("0", "1", ..., "default") */
  reductionFactor: number | Record<string, number>;
  /** relu, gelu (exact erf), swish / silu, tanh, gelu_new, gelu_pytorch_tanh */
  nonLinearity: string;
  /** z = LN(h + x) instead of z = h (sequential adapters) */
  originalLnBefore: boolean;
  /** out = LN(a + x) (the pretrained residual and norm after the adapter) */
  originalLnAfter: boolean;
  residualBeforeLn: ResidualBeforeLn;
  /** only matters with lnAfter, which is not supported: kept for the file */
  adapterResidualBeforeLn: boolean;
  lnBefore: boolean;
  lnAfter: boolean;
  /** 'bert' (N(0, 0.02) down weights) or 'mam_adapter' (Kaiming-uniform down weights), zero biases */
  initWeights: string;
  /** parallel adapter: z = x (the sub-layer input), a = A(x) + h */
  isParallel: boolean;
  /** multiplies the up-projection; adapters also allows "learned"/"channel", not supported here */
  scaling: number | string;
  useGating: boolean;
  dropout: number;
  /** layer indices without an adapter */
  leaveOut: number[];
  phmLayer: boolean;
  invAdapter: string | null;
  invAdapterReductionFactor: number | null;
  crossAdapter: boolean;
  phmDim: number;
  factorizedPhmW: boolean;
  sharedWPhm: boolean;
  sharedPhmRule: boolean;
  factorizedPhmRule: boolean;
  phmCInit: string;
  phmInitRange: number;
  learnPhm: boolean;
  hypercomplexNonlinearity: string;
  phmRank: number;
  phmBias: boolean;
  /** fields of newer adapters versions this one does not know, kept as read (only false/null/0/empty values load) */
  extra?: Record<string, PyJson>;
}

/** adapters' BnConfig dataclass defaults (fields the presets do not set). */
const BN_DEFAULTS: Omit<
  BnConfig,
  'mhAdapter' | 'outputAdapter' | 'reductionFactor' | 'nonLinearity' | 'originalLnBefore' | 'originalLnAfter' | 'residualBeforeLn'
> = {
  adapterResidualBeforeLn: false,
  lnBefore: false,
  lnAfter: false,
  initWeights: 'bert',
  isParallel: false,
  scaling: 1.0,
  useGating: false,
  dropout: 0.0,
  leaveOut: [],
  phmLayer: false,
  invAdapter: null,
  invAdapterReductionFactor: null,
  crossAdapter: false,
  phmDim: 4,
  factorizedPhmW: true,
  sharedWPhm: false,
  sharedPhmRule: true,
  factorizedPhmRule: false,
  phmCInit: 'normal',
  phmInitRange: 0.0001,
  learnPhm: true,
  hypercomplexNonlinearity: 'glorot-uniform',
  phmRank: 1,
  phmBias: true,
};

/** SeqBnConfig: Pfeiffer et al. 2020, one adapter after the feed-forward block. */
export function seqBnConfig(overrides: Partial<BnConfig> = {}): BnConfig {
  return checked({
    ...BN_DEFAULTS,
    mhAdapter: false,
    outputAdapter: true,
    reductionFactor: 16,
    nonLinearity: 'relu',
    originalLnBefore: true,
    originalLnAfter: true,
    residualBeforeLn: true,
    ...overrides,
  });
}

/** DoubleSeqBnConfig: Houlsby et al. 2019, adapters after attention and after the feed-forward block. */
export function doubleSeqBnConfig(overrides: Partial<BnConfig> = {}): BnConfig {
  return checked({
    ...BN_DEFAULTS,
    mhAdapter: true,
    outputAdapter: true,
    reductionFactor: 16,
    nonLinearity: 'swish',
    originalLnBefore: false,
    originalLnAfter: true,
    residualBeforeLn: true,
    ...overrides,
  });
}

/** ParBnConfig: He et al. 2022, a scaled adapter parallel to the feed-forward block. */
export function parBnConfig(overrides: Partial<BnConfig> = {}): BnConfig {
  return checked({
    ...BN_DEFAULTS,
    mhAdapter: false,
    outputAdapter: true,
    reductionFactor: 2,
    nonLinearity: 'relu',
    originalLnBefore: false,
    originalLnAfter: true,
    residualBeforeLn: true,
    initWeights: 'mam_adapter',
    isParallel: true,
    scaling: 4.0,
    ...overrides,
  });
}

export const BN_PRESETS = {
  seq_bn: seqBnConfig,
  double_seq_bn: doubleSeqBnConfig,
  par_bn: parBnConfig,
  pfeiffer: seqBnConfig,
  houlsby: doubleSeqBnConfig,
} as const;

const SUPPORTED_NON_LINEARITIES = ['relu', 'gelu', 'swish', 'silu', 'tanh', 'gelu_new', 'gelu_pytorch_tanh'] as const;
const SUPPORTED_INITS = ['bert', 'mam_adapter'];

function checked(c: BnConfig): BnConfig {
  validateBnConfig(c);
  return c;
}

/** Rejects, with what to change, every option whose computation this implementation does not have. */
export function validateBnConfig(c: BnConfig): void {
  const bad = (msg: string): never => {
    throw new PeftConfigError(`bottleneck adapter config: ${msg}`);
  };
  if (!c.mhAdapter && !c.outputAdapter)
    bad('neither mh_adapter nor output_adapter is set, so the adapter has no location; set output_adapter (Pfeiffer) or both (Houlsby)');
  if (!(SUPPORTED_NON_LINEARITIES as readonly string[]).includes(c.nonLinearity.toLowerCase())) {
    bad(`non_linearity "${c.nonLinearity}" is not supported (supported: ${SUPPORTED_NON_LINEARITIES.join(', ')})`);
  }
  if (!SUPPORTED_INITS.includes(c.initWeights))
    bad(`init_weights "${c.initWeights}" is not supported (supported: ${SUPPORTED_INITS.join(', ')})`);
  if (typeof c.scaling !== 'number' || !Number.isFinite(c.scaling))
    bad(`scaling ${JSON.stringify(c.scaling)} is not supported: use a fixed number (learned scalings are not implemented)`);
  const unsupported: [boolean, string][] = [
    [c.lnBefore, 'ln_before (an extra LayerNorm inside the adapter)'],
    [c.lnAfter, 'ln_after (an extra LayerNorm inside the adapter)'],
    [c.useGating, 'use_gating'],
    [c.phmLayer, 'phm_layer (Compacter)'],
    [c.invAdapter !== null, 'inv_adapter (invertible embedding adapters)'],
    [c.crossAdapter, 'cross_adapter (cross-attention adapters: none of our architectures has cross-attention)'],
  ];
  for (const [on, what] of unsupported) if (on) bad(`${what} is not supported; set it to its default (false / null)`);
  if (c.residualBeforeLn !== true && c.residualBeforeLn !== false && c.residualBeforeLn !== 'post_add')
    bad(`residual_before_ln must be true, false or "post_add", got ${JSON.stringify(c.residualBeforeLn)}`);
  if (c.residualBeforeLn === 'post_add' && !c.originalLnBefore && !c.isParallel)
    bad('residual_before_ln "post_add" needs original_ln_before (there is no h + x before the adapter otherwise)');
  if (!(c.dropout >= 0 && c.dropout < 1)) bad(`dropout must be in [0, 1), got ${c.dropout}`);
  const rfs = typeof c.reductionFactor === 'number' ? [c.reductionFactor] : Object.values(c.reductionFactor);
  if (rfs.length === 0 || rfs.some((r) => typeof r !== 'number' || !(r > 0)))
    bad(`reduction_factor must be a positive number or a map of them, got ${JSON.stringify(c.reductionFactor)}`);
  if (!c.leaveOut.every((i) => Number.isInteger(i) && i >= 0)) bad(`leave_out must list layer indices, got ${JSON.stringify(c.leaveOut)}`);
}

/** Bottleneck width at `layer` for a model of width `hidden` (adapters: int(hidden // reduction_factor)). */
export function bottleneckSize(c: BnConfig, layer: number, hidden: number): number {
  let rf: number | undefined;
  if (typeof c.reductionFactor === 'number') rf = c.reductionFactor;
  else rf = c.reductionFactor[String(layer)] ?? c.reductionFactor.default;
  if (rf === undefined) throw new PeftConfigError(`reduction_factor has no entry for layer ${layer} and no "default"`);
  const size = Math.floor(hidden / rf);
  if (size < 1) throw new PeftConfigError(`reduction_factor ${rf} leaves no bottleneck for hidden size ${hidden}; use at most ${hidden}`);
  return size;
}

const FLOAT_FIELDS = new Set(['dropout', 'phm_init_range']);

/** camelCase field -> the adapters (snake_case) name. */
const FIELD_NAMES: Record<Exclude<keyof BnConfig, 'extra'>, string> = {
  mhAdapter: 'mh_adapter',
  outputAdapter: 'output_adapter',
  reductionFactor: 'reduction_factor',
  nonLinearity: 'non_linearity',
  originalLnBefore: 'original_ln_before',
  originalLnAfter: 'original_ln_after',
  residualBeforeLn: 'residual_before_ln',
  adapterResidualBeforeLn: 'adapter_residual_before_ln',
  lnBefore: 'ln_before',
  lnAfter: 'ln_after',
  initWeights: 'init_weights',
  isParallel: 'is_parallel',
  scaling: 'scaling',
  useGating: 'use_gating',
  dropout: 'dropout',
  leaveOut: 'leave_out',
  phmLayer: 'phm_layer',
  invAdapter: 'inv_adapter',
  invAdapterReductionFactor: 'inv_adapter_reduction_factor',
  crossAdapter: 'cross_adapter',
  phmDim: 'phm_dim',
  factorizedPhmW: 'factorized_phm_W',
  sharedWPhm: 'shared_W_phm',
  sharedPhmRule: 'shared_phm_rule',
  factorizedPhmRule: 'factorized_phm_rule',
  phmCInit: 'phm_c_init',
  phmInitRange: 'phm_init_range',
  learnPhm: 'learn_phm',
  hypercomplexNonlinearity: 'hypercomplex_nonlinearity',
  phmRank: 'phm_rank',
  phmBias: 'phm_bias',
};

/** The "config" object of adapter_config.json (the full BnConfig dict, no "architecture" key, as 0.2.2 writes it). */
export function bnConfigToJson(c: BnConfig): Record<string, PyJson> {
  const out: Record<string, PyJson> = {};
  for (const [k, name] of Object.entries(FIELD_NAMES) as [Exclude<keyof BnConfig, 'extra'>, string][]) {
    const v = c[k];
    if (FLOAT_FIELDS.has(name) || (name === 'scaling' && typeof v === 'number')) out[name] = new PyFloat(v as number);
    else out[name] = v as PyJson;
  }
  for (const [k, v] of Object.entries(c.extra ?? {})) if (!(k in out)) out[k] = v;
  return out;
}

/** Parses the "config" object of an AdapterHub adapter_config.json (a bottleneck adapter's). */
export function bnConfigFromJson(json: Record<string, unknown>, file = 'adapter_config.json'): BnConfig {
  const arch = json.architecture;
  if (arch !== undefined && arch !== null && arch !== 'bottleneck') {
    throw new PeftConfigError(
      `${file}: this is an AdapterHub "${String(arch)}" adapter; only bottleneck adapters (SeqBn, DoubleSeqBn, ParBn) are supported here`,
    );
  }
  const known = new Set(Object.values(FIELD_NAMES));
  const extra: Record<string, PyJson> = {};
  for (const k of Object.keys(json).filter((k) => !known.has(k))) {
    const v = json[k];
    // A later adapters version's field at its off value changes nothing; anything else asks for a computation we lack.
    const off = v === null || v === false || v === 0 || (Array.isArray(v) && v.length === 0) || k === 'architecture';
    if (!off)
      throw new PeftConfigError(
        `${file}: bottleneck config field "${k}" = ${JSON.stringify(v)} is not supported (this reader follows adapters 0.2.2's BnConfig); remove it or set it off`,
      );
    extra[k] = v as PyJson;
  }
  const missing = ['mh_adapter', 'output_adapter', 'reduction_factor', 'non_linearity'].filter((k) => !(k in json));
  if (missing.length) throw new PeftConfigError(`${file}: the bottleneck config lacks ${missing.join(', ')}`);
  const c = { ...BN_DEFAULTS, originalLnBefore: false, originalLnAfter: true, residualBeforeLn: true } as Record<string, unknown>;
  for (const [k, name] of Object.entries(FIELD_NAMES)) if (name in json) c[k] = json[name];
  const typed = c as unknown as BnConfig;
  if (Object.keys(extra).length) typed.extra = extra;
  const types: [Exclude<keyof BnConfig, 'extra'>, string][] = [
    ['mhAdapter', 'boolean'],
    ['outputAdapter', 'boolean'],
    ['nonLinearity', 'string'],
    ['originalLnBefore', 'boolean'],
    ['originalLnAfter', 'boolean'],
    ['isParallel', 'boolean'],
    ['dropout', 'number'],
  ];
  for (const [k, t] of types) {
    if (typeof typed[k] !== t) throw new PeftConfigError(`${file}: "${FIELD_NAMES[k]}" must be a ${t}, got ${JSON.stringify(typed[k])}`);
  }
  if (typed.leaveOut === null) typed.leaveOut = [];
  if (!Array.isArray(typed.leaveOut)) throw new PeftConfigError(`${file}: "leave_out" must be a list of layer indices`);
  try {
    validateBnConfig(typed);
  } catch (e) {
    if (e instanceof PeftConfigError) throw new PeftConfigError(`${file}: ${e.message}`);
    throw e;
  }
  return typed;
}
