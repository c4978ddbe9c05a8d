// GPT-2 (GPT2LMHeadModel): learned positions, fused c_attn in Conv1D layout ([in, out]),
// tanh-GELU MLP, pre-norm blocks, final ln_f and an LM head tied to the token embeddings.

import type { Value } from '../graph/ir.js';
import * as o from '../graph/ops.js';
import { type CommonConfig, type Fields, type ModelConfig, checkDivisible } from '../io/hfconfig.js';
import type { BuildContext } from '../nn/context.js';
import { attentionBias, attentionOf, embedding, layerNorm, linear, mergeHeads, splitHeads } from '../nn/layers.js';
import type { WeightStore } from '../nn/weights.js';
import { activation } from './activations.js';
import { appendPast, applySublayer, causalLmLoss, defaultPositions, inputEmbeddings, modulePaths, ModelBase } from './common.js';
import { type ArchitectureDescriptor, type ForwardArgs, type ForwardResult, type KV, ModelError, type PretrainedModel } from './types.js';

export class GPT2Model extends ModelBase implements PretrainedModel {
  readonly family = 'gpt2' as const;
  readonly task = 'causal-lm' as const;
  readonly causal = true;
  readonly embeddingName = 'transformer.wte';

  constructor(config: ModelConfig, weights: WeightStore, dir: string) {
    super(config, weights, dir);
    if (config.raw.scale_attn_by_inverse_layer_idx || config.raw.reorder_and_upcast_attn) {
      throw new ModelError('GPT-2 options scale_attn_by_inverse_layer_idx / reorder_and_upcast_attn are not supported');
    }
    const C = this.hiddenSize;
    const F = config.intermediateSize;
    for (let i = 0; i < this.numLayers; i++) {
      const p = `transformer.h.${i}`;
      this.addLinear(`${p}.attn.c_attn`, C, 3 * C, true, 'conv1d');
      this.addLinear(`${p}.attn.c_proj`, C, C, true, 'conv1d');
      this.addLinear(`${p}.mlp.c_fc`, C, F, true, 'conv1d');
      this.addLinear(`${p}.mlp.c_proj`, F, C, true, 'conv1d');
    }
    this.addLinear('lm_head', C, this.vocabSize, false);
  }

  expectedWeights(): string[] {
    const names = ['transformer.wte.weight', 'transformer.wpe.weight', 'transformer.ln_f.weight', 'transformer.ln_f.bias'];
    for (let i = 0; i < this.numLayers; i++) {
      for (const ln of ['ln_1', 'ln_2']) names.push(`transformer.h.${i}.${ln}.weight`, `transformer.h.${i}.${ln}.bias`);
    }
    for (const s of this.linears()) if (s.name !== 'lm_head') names.push(`${s.name}.weight`, `${s.name}.bias`);
    return names;
  }

  override moduleNames(): string[] {
    return ['transformer', ...modulePaths([...this.expectedWeights(), 'lm_head.weight']).filter((n) => n !== 'transformer')];
  }

  forward(ctx: BuildContext, args: ForwardArgs): ForwardResult {
    const cfg = this.config;
    const H = cfg.numAttentionHeads;
    const D = this.headDim;
    const tokens = inputEmbeddings(this, ctx, args);
    const { positions, pastLength } = defaultPositions(tokens, args.past);
    const pos = embedding(ctx, 'transformer.wpe', args.positionIds ?? positions);
    let h = o.add(tokens, pos);
    const bias = attentionBias(args.attentionMask, tokens, true, pastLength);
    const hidden: Value[] = [h];
    const presents: KV[] = [];
    const spec = (name: string) => this.spec(name);
    for (let i = 0; i < this.numLayers; i++) {
      const p = `transformer.h.${i}`;
      // a decoder layer; with gradient checkpointing its activations are recomputed in the backward pass
      h = ctx.layer(i, h, (h) =>
        ctx.graph.scope(p, () => {
          const residual = h;
          const x = layerNorm(ctx, `${p}.ln_1`, h, cfg.normEps);
          const qkv = linear(ctx, spec(`${p}.attn.c_attn`), x);
          const [q, k, v] = o.split(qkv, -1, [H * D, H * D, H * D]).map((t) => splitHeads(t, H, D)) as [Value, Value, Value];
          const { key, value } = appendPast(args.past?.[i], k, v, presents);
          const attnOut = linear(ctx, spec(`${p}.attn.c_proj`), mergeHeads(attentionOf(ctx, q, key, value, bias, D), H, D));
          const afterAttn = applySublayer(ctx, `${i}.attn`, i, attnOut, residual);
          const y = layerNorm(ctx, `${p}.ln_2`, afterAttn, cfg.normEps);
          const act = ctx.elementwise([linear(ctx, spec(`${p}.mlp.c_fc`), y)], ([f]) => activation(cfg.hiddenAct, f!));
          const m = linear(ctx, spec(`${p}.mlp.c_proj`), act);
          return applySublayer(ctx, `${i}.ffn`, i, m, afterAttn);
        }),
      );
      hidden.push(h);
    }
    h = layerNorm(ctx, 'transformer.ln_f', h, cfg.normEps);
    hidden[hidden.length - 1] = h;
    const logits = linear(ctx, spec('lm_head'), h);
    return { logits, hiddenStates: hidden, presents };
  }

  loss(logits: Value, labels: Value): Value {
    return causalLmLoss(logits, labels);
  }
}

const BN_TENSOR = '(adapter_down\\.0\\.weight|adapter_down\\.0\\.bias|adapter_up\\.weight|adapter_up\\.bias)';

/** GPT-2 (GPT2LMHeadModel): learned absolute positions, fused c_attn (Conv1D layout), tied head. */
/** GPT2Config: n_embd / n_head / n_layer / n_positions; n_inner null means 4 * n_embd. */
function gpt2Config(f: Fields, common: CommonConfig): ModelConfig {
  const hidden = f.requiredInt('n_embd');
  const heads = f.requiredInt('n_head');
  checkDivisible(f, hidden, heads, 'n_embd', 'n_head');
  return {
    ...common,
    vocabSize: f.requiredInt('vocab_size'),
    hiddenSize: hidden,
    numHiddenLayers: f.requiredInt('n_layer'),
    numAttentionHeads: heads,
    numKeyValueHeads: heads,
    headDim: hidden / heads,
    // n_inner: null means 4 * n_embd in GPT2MLP.
    intermediateSize: f.int('n_inner', 4 * hidden),
    maxPositionEmbeddings: f.requiredInt('n_positions'),
    hiddenAct: f.str('activation_function', 'gelu_new'),
    normType: 'layernorm',
    normEps: f.num('layer_norm_epsilon', 1e-5),
    tieWordEmbeddings: f.bool('tie_word_embeddings', true),
    qkvBias: true,
    attnOutputBias: true,
    mlpBias: true,
    attentionBias: true,
  };
}

export const GPT2: ArchitectureDescriptor = {
  family: 'gpt2',
  displayName: 'GPT-2',
  modelTypes: ['gpt2'],
  readConfig: gpt2Config,
  classes: { GPT2LMHeadModel: (c, w, d) => new GPT2Model(c, w, d) },
  defaultClass: { gpt2: 'GPT2LMHeadModel' },
  basePrefix: 'transformer.',
  positions: 'absolute',
  capabilities: { tiedEmbeddings: 'default', fusedProjections: ['c_attn'] },
  loraTargets: { gpt2: ['c_attn'] },
  ia3Targets: { gpt2: { targets: ['c_attn', 'mlp.c_proj'], feedforward: ['mlp.c_proj'] } },
  bottleneck: {
    module: (layer, location) => `transformer.h.${layer}.${location === 'mh_adapter' ? 'attention_adapters' : 'output_adapters'}`,
    pattern: new RegExp(`^(?:transformer\\.)?h\\.(\\d+)\\.(attention_adapters|output_adapters)\\.adapters\\.(.+)\\.${BN_TENSOR}$`),
    attentionTail: 'attention_adapters',
  },
};
