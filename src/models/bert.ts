// BERT (BertModel, BertForSequenceClassification, BertForMaskedLM): absolute positions, token
// type ids, post-layer-norm blocks, GELU, pooler + classifier or the tied masked-LM head.

import type { Value } from '../graph/ir.js';
import * as o from '../graph/ops.js';
import { type CommonConfig, type Fields, type ModelConfig, encoderFields } from '../io/hfconfig.js';
import type { BuildContext } from '../nn/context.js';
import { attention, attentionBias, embedding, layerNorm, linear, mergeHeads, splitHeads } from '../nn/layers.js';
import type { WeightStore } from '../nn/weights.js';
import { activation } from './activations.js';
import { appendPast, applySublayer, inputEmbeddings, maskedLmLoss, sequenceClassificationLoss, ModelBase } from './common.js';
import {
  type ArchitectureDescriptor,
  type ForwardArgs,
  type ForwardResult,
  type KV,
  ModelError,
  type ModelTask,
  type PretrainedModel,
} from './types.js';

export class BertModel extends ModelBase implements PretrainedModel {
  readonly family = 'bert' as const;
  readonly causal = false;
  readonly embeddingName = 'bert.embeddings.word_embeddings';

  constructor(
    config: ModelConfig,
    weights: WeightStore,
    dir: string,
    readonly task: ModelTask,
  ) {
    super(config, weights, dir);
    if ((config.positionEmbeddingType ?? 'absolute') !== 'absolute') {
      throw new ModelError(`BERT position_embedding_type "${config.positionEmbeddingType}" is not supported (only "absolute")`);
    }
    const C = this.hiddenSize;
    const F = config.intermediateSize;
    const lin = (name: string, i: number, o: number) => this.addLinear(name, i, o, true);
    for (let i = 0; i < this.numLayers; i++) {
      const p = `bert.encoder.layer.${i}`;
      lin(`${p}.attention.self.query`, C, C);
      lin(`${p}.attention.self.key`, C, C);
      lin(`${p}.attention.self.value`, C, C);
      lin(`${p}.attention.output.dense`, C, C);
      lin(`${p}.intermediate.dense`, C, F);
      lin(`${p}.output.dense`, F, C);
    }
    if (task === 'seq-cls' || task === 'base') lin('bert.pooler.dense', C, C);
    if (task === 'seq-cls') lin('classifier', C, config.numLabels);
    if (task === 'masked-lm') {
      lin('cls.predictions.transform.dense', C, C);
      this.addLinear('cls.predictions.decoder', C, this.vocabSize, false);
    }
  }

  expectedWeights(): string[] {
    const names: string[] = [];
    for (const e of ['word_embeddings', 'position_embeddings', 'token_type_embeddings']) names.push(`bert.embeddings.${e}.weight`);
    names.push('bert.embeddings.LayerNorm.weight', 'bert.embeddings.LayerNorm.bias');
    for (let i = 0; i < this.numLayers; i++) {
      for (const ln of ['attention.output.LayerNorm', 'output.LayerNorm'])
        names.push(`bert.encoder.layer.${i}.${ln}.weight`, `bert.encoder.layer.${i}.${ln}.bias`);
    }
    for (const s of this.linears()) {
      if (s.name === 'cls.predictions.decoder') continue;
      names.push(`${s.name}.weight`, `${s.name}.bias`);
    }
    if (this.task === 'masked-lm')
      names.push('cls.predictions.bias', 'cls.predictions.transform.LayerNorm.weight', 'cls.predictions.transform.LayerNorm.bias');
    return names;
  }

  forward(ctx: BuildContext, args: ForwardArgs): ForwardResult {
    const cfg = this.config;
    const H = cfg.numAttentionHeads;
    const D = this.headDim;
    const eps = cfg.normEps;
    if (args.past?.length && this.task !== 'seq-cls' && this.task !== 'base')
      throw new ModelError('BERT masked-LM does not take past keys/values');
    const words = inputEmbeddings(this, ctx, args);
    const h0 = ctx.graph.scope('bert.embeddings', () => {
      const positions = args.positionIds ?? o.unsqueeze(o.arangeOfDim(words, 1), 0);
      const pos = embedding(ctx, 'bert.embeddings.position_embeddings', positions);
      const types = args.tokenTypeIds
        ? embedding(ctx, 'bert.embeddings.token_type_embeddings', args.tokenTypeIds)
        : o.slice(ctx.weight('bert.embeddings.token_type_embeddings.weight'), 0, 0, 1);
      return layerNorm(ctx, 'bert.embeddings.LayerNorm', o.add(o.add(words, types), pos), eps);
    });
    const bias = attentionBias(args.attentionMask, words, false);
    let h = h0;
    const hidden: Value[] = [h];
    const presents: KV[] = [];
    const spec = (n: string) => this.spec(n);
    for (let i = 0; i < this.numLayers; i++) {
      const p = `bert.encoder.layer.${i}`;
      h = ctx.graph.scope(p, () => {
        const x = h;
        const q = splitHeads(linear(ctx, spec(`${p}.attention.self.query`), x), H, D);
        const k = splitHeads(linear(ctx, spec(`${p}.attention.self.key`), x), H, D);
        const v = splitHeads(linear(ctx, spec(`${p}.attention.self.value`), x), H, D);
        const { key, value } = appendPast(args.past?.[i], k, v, presents);
        const attnOut = linear(ctx, spec(`${p}.attention.output.dense`), mergeHeads(attention(q, key, value, bias, D), H, D));
        const attnNorm = (t: Value) => layerNorm(ctx, `${p}.attention.output.LayerNorm`, t, eps);
        const a = applySublayer(ctx, `${i}.attn`, i, attnOut, x, attnNorm);
        const inter = activation(cfg.hiddenAct, linear(ctx, spec(`${p}.intermediate.dense`), a));
        const out = linear(ctx, spec(`${p}.output.dense`), inter);
        return applySublayer(ctx, `${i}.ffn`, i, out, a, (t: Value) => layerNorm(ctx, `${p}.output.LayerNorm`, t, eps));
      });
      hidden.push(h);
    }
    let logits: Value;
    if (this.task === 'masked-lm') {
      const t = layerNorm(
        ctx,
        'cls.predictions.transform.LayerNorm',
        activation(cfg.hiddenAct, linear(ctx, spec('cls.predictions.transform.dense'), h)),
        eps,
      );
      logits = o.add(linear(ctx, spec('cls.predictions.decoder'), t), ctx.weight('cls.predictions.bias'));
    } else if (this.task === 'base') {
      logits = h;
    } else {
      const cls = o.squeeze(o.slice(h, 1, 0, 1), 1);
      const pooled = o.tanh(linear(ctx, spec('bert.pooler.dense'), cls));
      logits = linear(ctx, spec('classifier'), pooled);
    }
    return { logits, hiddenStates: hidden, presents };
  }

  loss(logits: Value, labels: Value): Value {
    if (this.task === 'masked-lm') return maskedLmLoss(logits, labels);
    if (this.task === 'seq-cls') return sequenceClassificationLoss(logits, labels);
    throw new ModelError('BertModel has no head and no loss; load BertForSequenceClassification or BertForMaskedLM');
  }
}

/** BERT and RoBERTa encoders: learned absolute positions, token types, post-norm layers. */
/** BertConfig / RobertaConfig (pad token id defaults differ). */
function bertConfig(f: Fields, common: CommonConfig): ModelConfig {
  return {
    ...encoderFields(f, common, 512, ['hidden_act', 'gelu']),
    // Config class defaults: BERT's [PAD] is id 0, RoBERTa's <pad> id 1.
    padTokenId: common.padTokenId ?? (common.modelType === 'roberta' ? 1 : 0),
    normEps: f.num('layer_norm_eps', 1e-12),
    qkvBias: true,
    attnOutputBias: true,
    mlpBias: true,
    attentionBias: true,
    typeVocabSize: f.int('type_vocab_size', 2),
    positionEmbeddingType: f.str('position_embedding_type', 'absolute'),
  };
}

export const BERT: ArchitectureDescriptor = {
  family: 'bert',
  displayName: 'BERT',
  modelTypes: ['bert', 'roberta'],
  readConfig: bertConfig,
  classes: {
    BertForSequenceClassification: (c, w, d) => new BertModel(c, w, d, 'seq-cls'),
    BertForMaskedLM: (c, w, d) => new BertModel(c, w, d, 'masked-lm'),
    BertModel: (c, w, d) => new BertModel(c, w, d, 'base'),
  },
  defaultClass: { bert: 'BertModel' },
  basePrefix: 'bert.',
  positions: 'absolute',
  capabilities: { tiedEmbeddings: 'default' },
  loraTargets: { bert: ['query', 'value'] },
  ia3Targets: { bert: { targets: ['key', 'value', 'output.dense'], feedforward: ['output.dense'] } },
  bottleneck: {
    module: (layer, location) => `bert.encoder.layer.${layer}.${location === 'mh_adapter' ? 'attention.output' : 'output'}`,
    pattern:
      /^(?:bert\.)?encoder\.layer\.(\d+)\.(attention\.output|output)\.adapters\.(.+)\.(adapter_down\.0\.weight|adapter_down\.0\.bias|adapter_up\.weight|adapter_up\.bias)$/,
    attentionTail: 'attention.output',
  },
};
