// ModernBERT (ModernBertForSequenceClassification, transformers 4.57): an encoder with fused Wqkv,
// rotary positions (a global and a local base), pre-norm blocks whose LayerNorms may have no bias,
// layer 0 without attn_norm, a GLU MLP (Wi -> [input | gate], Wo(act(input) * gate)), local
// attention (|i - j| <= local_attention // 2) on every layer whose index is not a multiple of
// global_attn_every_n_layers, a final norm, and the classification head dense -> act -> norm ->
// classifier over the cls token or the masked mean.
//
// hidden states follow transformers' output_hidden_states for this model: [0] the embeddings
// output (tok_embeddings -> norm), [i] the output of layer i - 1, the last one BEFORE final_norm.

import type { Value } from '../graph/ir.js';
import * as o from '../graph/ops.js';
import { type CommonConfig, type Fields, type ModelConfig, encoderFields } from '../io/hfconfig.js';
import type { BuildContext } from '../nn/context.js';
import { MASK_MIN, attention, linear, mergeHeads, splitHeads } from '../nn/layers.js';
import type { WeightStore } from '../nn/weights.js';
import { activation } from './activations.js';
import { applySublayer, inputEmbeddings, sequenceClassificationLoss, ModelBase } from './common.js';
import { type ArchitectureDescriptor, type ForwardArgs, type ForwardResult, ModelError, type PretrainedModel } from './types.js';

/** The config.json fields only ModernBERT has, with ModernBertConfig's defaults. */
export interface ModernBertOptions {
  globalAttnEveryNLayers: number;
  /** the local window: key j is visible to query i when |i - j| <= localAttention // 2 */
  localAttention: number;
  globalRopeTheta: number;
  localRopeTheta: number;
  normBias: boolean;
  classifierPooling: 'cls' | 'mean';
  classifierActivation: string;
  classifierBias: boolean;
}

function modernBertOptions(config: ModelConfig): ModernBertOptions {
  const raw = config.raw;
  const num = (key: string, fallback: number, integer: boolean): number => {
    const v = raw[key];
    if (v === undefined || v === null) return fallback;
    if (typeof v !== 'number' || !Number.isFinite(v) || v <= 0 || (integer && !Number.isInteger(v))) {
      throw new ModelError(`config.json field "${key}" must be a positive ${integer ? 'integer' : 'number'}, found ${JSON.stringify(v)}`);
    }
    return v;
  };
  const bool = (key: string, fallback: boolean): boolean => {
    const v = raw[key];
    if (v === undefined || v === null) return fallback;
    if (typeof v !== 'boolean') throw new ModelError(`config.json field "${key}" must be true or false, found ${JSON.stringify(v)}`);
    return v;
  };
  const pooling = raw.classifier_pooling ?? 'cls';
  if (pooling !== 'cls' && pooling !== 'mean') {
    throw new ModelError(`config.json classifier_pooling must be "cls" or "mean", found ${JSON.stringify(pooling)}`);
  }
  const act = raw.classifier_activation ?? 'gelu';
  if (typeof act !== 'string')
    throw new ModelError(`config.json classifier_activation must be an activation name, found ${JSON.stringify(act)}`);
  // transformers 5 keeps the two bases in rope_parameters by layer type.
  const params = raw.rope_parameters as Record<string, { rope_theta?: unknown; rope_type?: unknown } | undefined> | undefined;
  const theta = (layerType: string, key: string, fallback: number): number => {
    const p = params && typeof params === 'object' ? params[layerType] : undefined;
    if (p && typeof p.rope_type === 'string' && p.rope_type !== 'default') {
      throw new ModelError(`ModernBERT rope_parameters.${layerType}.rope_type "${p.rope_type}" is not supported (only default RoPE)`);
    }
    if (p && typeof p.rope_theta === 'number') return p.rope_theta;
    return num(key, fallback, false);
  };
  return {
    globalAttnEveryNLayers: num('global_attn_every_n_layers', 3, true),
    localAttention: num('local_attention', 128, true),
    globalRopeTheta: theta('full_attention', 'global_rope_theta', 160000),
    localRopeTheta: theta('sliding_attention', 'local_rope_theta', 10000),
    normBias: bool('norm_bias', false),
    classifierPooling: pooling,
    classifierActivation: act,
    classifierBias: bool('classifier_bias', false),
  };
}

/** One line for `peft info`: which layers are local, the window, the rotary bases and the pooling; null when config.json is invalid. */
export function describeModernBert(config: ModelConfig): string | null {
  let m: ModernBertOptions;
  try {
    m = modernBertOptions(config);
  } catch {
    return null;
  }
  const n = m.globalAttnEveryNLayers;
  const layers = Array.from({ length: config.numHiddenLayers }, (_, i) => i).filter((i) => i % n === 0);
  return (
    `global on layers ${layers.join(', ')} (every ${n}), local |i-j| <= ${Math.floor(m.localAttention / 2)} elsewhere; ` +
    `RoPE base ${m.globalRopeTheta} global / ${m.localRopeTheta} local; ${m.classifierPooling} pooling`
  );
}

/** 1 / theta^(2i / dim) for i < dim / 2, as transformers' default RoPE init (float32). */
function invFreq(theta: number, dim: number): Float32Array {
  const out = new Float32Array(dim / 2);
  for (let i = 0; i < dim / 2; i++) out[i] = 1 / Math.pow(theta, Math.fround((2 * i) / dim));
  return out;
}

function rotateHalf(x: Value, half: number): Value {
  const [a, b] = o.split(x, -1, [half, half]) as [Value, Value];
  return o.concat([o.neg(b), a], -1);
}

export class ModernBertModel extends ModelBase implements PretrainedModel {
  readonly family = 'modernbert' as const;
  readonly task = 'seq-cls' as const;
  readonly causal = false;
  readonly embeddingName = 'model.embeddings.tok_embeddings';
  readonly options: ModernBertOptions;

  constructor(config: ModelConfig, weights: WeightStore, dir: string) {
    const options = modernBertOptions(config);
    super(config, weights, dir);
    this.options = options;
    if (this.headDim % 2 !== 0)
      throw new ModelError(`ModernBERT head size ${this.headDim} (hidden_size / num_attention_heads) must be even for rotary positions`);
    const C = this.hiddenSize;
    const F = config.intermediateSize;
    const lin = (name: string, inF: number, outF: number, bias: boolean) => this.addLinear(name, inF, outF, bias);
    for (let i = 0; i < this.numLayers; i++) {
      const p = `model.layers.${i}`;
      lin(`${p}.attn.Wqkv`, C, 3 * C, config.qkvBias);
      lin(`${p}.attn.Wo`, C, C, config.attnOutputBias);
      lin(`${p}.mlp.Wi`, C, 2 * F, config.mlpBias);
      lin(`${p}.mlp.Wo`, F, C, config.mlpBias);
    }
    lin('head.dense', C, C, this.options.classifierBias);
    lin('classifier', C, config.numLabels, true);
  }

  /** Whether layer i attends within the local window (transformers: i % global_attn_every_n_layers != 0). */
  isLocalLayer(i: number): boolean {
    return i % this.options.globalAttnEveryNLayers !== 0;
  }

  private norms(): string[] {
    const names = ['model.embeddings.norm'];
    for (let i = 0; i < this.numLayers; i++) {
      if (i > 0) names.push(`model.layers.${i}.attn_norm`);
      names.push(`model.layers.${i}.mlp_norm`);
    }
    names.push('model.final_norm', 'head.norm');
    return names;
  }

  expectedWeights(): string[] {
    const names = ['model.embeddings.tok_embeddings.weight'];
    for (const n of this.norms()) names.push(`${n}.weight`, ...(this.options.normBias ? [`${n}.bias`] : []));
    for (const s of this.linears()) names.push(`${s.name}.weight`, ...(s.bias ? [`${s.name}.bias`] : []));
    return names;
  }

  /** LayerNorm over the hidden size; `zero` stands in for the bias when norm_bias is false. */
  private layerNorm(ctx: BuildContext, name: string, x: Value, zero: Value | undefined): Value {
    return ctx.graph.scope(name, () =>
      o.layerNorm(x, ctx.weight(`${name}.weight`), zero ?? ctx.weight(`${name}.bias`), this.config.normEps),
    );
  }

  forward(ctx: BuildContext, args: ForwardArgs): ForwardResult {
    if (args.past?.length) {
      throw new ModelError(
        "ModernBERT takes no past keys/values (transformers' ModernBERT has no cache), so prefix tuning does not apply to it; use LoRA, IA3 or prompt tuning",
      );
    }
    const cfg = this.config;
    const opts = this.options;
    const H = cfg.numAttentionHeads;
    const D = this.headDim;
    const spec = (n: string) => this.spec(n);
    const words = inputEmbeddings(this, ctx, args);
    const zero = opts.normBias
      ? undefined
      : ctx.graph.tensor('norm_zero_bias', 'float32', [this.hiddenSize], new Float32Array(this.hiddenSize));
    const norm = (name: string, x: Value) => this.layerNorm(ctx, name, x, zero);
    let h = norm('model.embeddings.norm', words);

    // Rotary cos/sin for each base, over positions arange(seq) (or the given position ids).
    const rotary = (theta: number, tag: string) =>
      ctx.graph.scope(`rotary_emb.${tag}`, () => {
        const pos = o.cast(args.positionIds ?? o.unsqueeze(o.arangeOfDim(words, 1), 0), 'float32');
        const freqs = o.mul(o.unsqueeze(pos, -1), ctx.graph.tensor(`rope_inv_freq_${tag}`, 'float32', [D / 2], invFreq(theta, D)));
        const emb = o.concat([freqs, freqs], -1);
        return { cos: o.unsqueeze(o.cos(emb), 1), sin: o.unsqueeze(o.sin(emb), 1) };
      });
    const anyLocal = Array.from({ length: this.numLayers }, (_, i) => this.isLocalLayer(i)).some(Boolean);
    const globalRope = rotary(opts.globalRopeTheta, 'global');
    const localRope = anyLocal ? rotary(opts.localRopeTheta, 'local') : globalRope;

    // Additive masks as transformers builds them: MASK_MIN at padding keys (global), and also
    // outside |i - j| <= local_attention // 2 (local). A row with no visible key stays all
    // MASK_MIN, which softmax turns into a uniform average, as torch's SDPA does with these masks.
    const keyOk = o.unsqueeze(o.equal(args.attentionMask, o.cast(ctx.graph.scalar(1, 'int64'), args.attentionMask.dtype)), [1, 2]);
    const globalBias = o.where(keyOk, 0, MASK_MIN);
    let localBias = globalBias;
    if (anyLocal) {
      const qPos = o.arangeOfDim(words, 1);
      const kPos = o.arangeOfDim(args.attentionMask, 1);
      const dist = o.sub(o.unsqueeze(kPos, 0), o.unsqueeze(qPos, 1));
      const half = Math.floor(opts.localAttention / 2);
      const inWindow = o.and(o.not(o.greater(dist, half)), o.not(o.less(dist, -half)));
      localBias = o.where(o.and(keyOk, inWindow), 0, MASK_MIN);
    }

    const hidden: Value[] = [h];
    for (let i = 0; i < this.numLayers; i++) {
      const p = `model.layers.${i}`;
      const local = this.isLocalLayer(i);
      const { cos, sin } = local ? localRope : globalRope;
      const rope = (x: Value) => o.add(o.mul(x, cos), o.mul(rotateHalf(x, D / 2), sin));
      h = ctx.layer(i, h, (h) =>
        ctx.graph.scope(p, () => {
          const x = i === 0 ? h : norm(`${p}.attn_norm`, h);
          const qkv = linear(ctx, spec(`${p}.attn.Wqkv`), x);
          const [q, k, v] = o.split(qkv, -1, [H * D, H * D, H * D]).map((t) => splitHeads(t, H, D)) as [Value, Value, Value];
          const ctxOut = attention(rope(q), rope(k), v, local ? localBias : globalBias, D);
          const attnOut = linear(ctx, spec(`${p}.attn.Wo`), mergeHeads(ctxOut, H, D));
          const afterAttn = applySublayer(ctx, `${i}.attn`, i, attnOut, h);
          const y = norm(`${p}.mlp_norm`, afterAttn);
          const [input, gate] = o.split(linear(ctx, spec(`${p}.mlp.Wi`), y), -1, [cfg.intermediateSize, cfg.intermediateSize]) as [
            Value,
            Value,
          ];
          const m = linear(ctx, spec(`${p}.mlp.Wo`), o.mul(activation(cfg.hiddenAct, input), gate));
          return applySublayer(ctx, `${i}.ffn`, i, m, afterAttn);
        }),
      );
      hidden.push(h);
    }
    const last = norm('model.final_norm', h);
    let pooled: Value;
    if (opts.classifierPooling === 'cls') {
      pooled = o.squeeze(o.slice(last, 1, 0, 1), 1);
    } else {
      const mask = o.unsqueeze(o.cast(args.attentionMask, 'float32'), -1);
      pooled = o.div(o.sum(o.mul(last, mask), 1), o.sum(mask, 1));
    }
    const headOut = ctx.graph.scope('head', () =>
      norm('head.norm', activation(opts.classifierActivation, linear(ctx, spec('head.dense'), pooled))),
    );
    const logits = linear(ctx, spec('classifier'), headOut);
    return { logits, hiddenStates: hidden, presents: [] };
  }

  loss(logits: Value, labels: Value): Value {
    return sequenceClassificationLoss(logits, labels);
  }
}

/** ModernBERT sequence classifiers: rotary positions, fused Wqkv and Wi, local/global attention. */
/** ModernBertConfig (transformers 4.57); its own fields (local_attention, rope bases, norm_bias, classifier_*) are read by the model below. */
function modernBertConfig(f: Fields, common: CommonConfig): ModelConfig {
  // ModernBertConfig (transformers 4.57); its own fields (local_attention, rope bases,
  // norm_bias, classifier_*) are read by src/models/modernbert.ts.
  const encoder = encoderFields(f, common, 8192, ['hidden_activation', 'gelu']);
  const attentionBias = f.bool('attention_bias', false);
  return {
    ...encoder,
    padTokenId: common.padTokenId ?? 50283,
    normEps: f.num('norm_eps', 1e-5),
    qkvBias: attentionBias,
    attnOutputBias: attentionBias,
    mlpBias: f.bool('mlp_bias', false),
    attentionBias,
  };
}

export const MODERNBERT: ArchitectureDescriptor = {
  family: 'modernbert',
  displayName: 'ModernBERT',
  modelTypes: ['modernbert'],
  readConfig: modernBertConfig,
  classes: { ModernBertForSequenceClassification: (c, w, d) => new ModernBertModel(c, w, d) },
  defaultClass: {},
  basePrefix: 'model.',
  positions: 'rotary',
  capabilities: { tiedEmbeddings: 'never', slidingWindow: true, fusedProjections: ['Wqkv', 'Wi'] },
  // peft has no default mapping for modernbert; bottleneck adapters are not implemented for it
  loraTargets: {},
  ia3Targets: {},
};
