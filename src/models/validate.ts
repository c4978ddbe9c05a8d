// Checks config.json against the shapes in the checkpoint's header before any model is built from
// it. A config is untrusted input (it comes from the Hub): its sizes decide how many layers the
// builders create and what shapes the graph expects, so a config that disagrees with its weights
// must be an error that names both, never a hang (num_hidden_layers: 1e9) or a broadcasting error
// deep in ONNX Runtime (a norm of the wrong length). Only headers are read (a few KB per file).

import type { ModelConfig } from '../io/hfconfig.js';
import { openCheckpoint } from '../io/safetensors.js';
import { ModelError } from './types.js';

/** The shape of every tensor in a checkpoint, by name (from its safetensors header(s)). */
export type WeightShapes = ReadonlyMap<string, readonly number[]>;

/** Stacked-layer containers: "model.layers.3.", "transformer.h.3.", "encoder.layer.3.", "blocks.3.". */
const LAYER = /^(.*?)(?:^|\.)(layers|h|layer|blocks)\.(\d+)\./;
const EMBEDDING = /(?:^|\.)(embed_tokens|wte|word_embeddings|tok_embeddings)\.weight$/;
const POSITIONS = /(?:^|\.)(wpe|position_embeddings)\.weight$/;
const TOKEN_TYPES = /(?:^|\.)token_type_embeddings\.weight$/;
const NORM = /(?:^|\.)[^.]*(norm|ln_\d+|ln_f)[^.]*\.(weight|bias)$/i;
const HEAD_NORM = /(?:^|\.)(q_norm|k_norm)\.weight$/;

function fmt(shape: readonly number[]): string {
  return `[${shape.join(', ')}]`;
}

/**
 * Throws a ModelError when config.json's sizes disagree with the weights: the number of stacked
 * layers, the token/position/segment embedding shapes (vocab_size, hidden_size,
 * max_position_embeddings, type_vocab_size) and every norm's length. Linear layers are checked
 * after loading, against each module's spec.
 */
export function validateAgainstWeights(config: ModelConfig, shapes: WeightShapes, where: string): void {
  const fail = (msg: string): never => {
    throw new ModelError(`${where}: ${msg}; config.json does not belong to these weights (or one of them is corrupt)`);
  };
  // Layers: every container of stacked layers, with the count of layers it holds.
  const containers = new Map<string, Set<number>>();
  for (const name of shapes.keys()) {
    const m = LAYER.exec(name);
    if (!m) continue;
    const key = `${m[1] ? `${m[1]}.` : ''}${m[2]}`;
    let set = containers.get(key);
    if (!set) containers.set(key, (set = new Set()));
    set.add(Number(m[3]));
  }
  if (containers.size > 0) {
    const counts = [...containers].map(([k, s]) => ({ k, n: Math.max(...s) + 1, complete: s.size === Math.max(...s) + 1 }));
    if (!counts.some((c) => c.n === config.numHiddenLayers)) {
      fail(
        `num_hidden_layers is ${config.numHiddenLayers} but the weights hold ${counts.map((c) => `${c.n} layers under ${c.k}`).join(', ')}`,
      );
    }
    const gap = counts.find((c) => c.n === config.numHiddenLayers && !c.complete);
    if (gap) fail(`the weights under ${gap.k} skip some of the layers 0..${gap.n - 1}`);
  }
  const H = config.hiddenSize;
  for (const [name, shape] of shapes) {
    if (EMBEDDING.test(name)) {
      if (shape.length !== 2 || shape[0] !== config.vocabSize || shape[1] !== H) {
        fail(`${name} has shape ${fmt(shape)} but vocab_size ${config.vocabSize} and hidden_size ${H} imply [${config.vocabSize}, ${H}]`);
      }
    } else if (POSITIONS.test(name)) {
      if (shape.length !== 2 || shape[0] !== config.maxPositionEmbeddings || shape[1] !== H) {
        fail(
          `${name} has shape ${fmt(shape)} but max_position_embeddings ${config.maxPositionEmbeddings} and hidden_size ${H} imply [${config.maxPositionEmbeddings}, ${H}]`,
        );
      }
    } else if (TOKEN_TYPES.test(name) && config.typeVocabSize !== undefined) {
      if (shape.length !== 2 || shape[0] !== config.typeVocabSize || shape[1] !== H) {
        fail(
          `${name} has shape ${fmt(shape)} but type_vocab_size ${config.typeVocabSize} and hidden_size ${H} imply [${config.typeVocabSize}, ${H}]`,
        );
      }
    } else if (HEAD_NORM.test(name)) {
      // Per-head norms (Qwen3, Gemma 3) normalise head_dim; some models normalise all heads at once.
      const ok = [config.headDim, config.numAttentionHeads * config.headDim, config.numKeyValueHeads * config.headDim];
      if (shape.length !== 1 || !ok.includes(shape[0]!))
        fail(`${name} has shape ${fmt(shape)} but head_dim ${config.headDim} implies [${config.headDim}]`);
    } else if (NORM.test(name) && !name.endsWith('.running_mean')) {
      if (shape.length !== 1 || shape[0] !== H) fail(`${name} has shape ${fmt(shape)} but hidden_size ${H} implies [${H}]`);
    }
  }
}

/** Reads the checkpoint header(s) in `dir` and runs validateAgainstWeights on them. */
export async function validateCheckpointAgainstConfig(config: ModelConfig, dir: string): Promise<void> {
  const source = await openCheckpoint(dir);
  try {
    const shapes = new Map(source.names().map((n) => [n, source.info(n).shape] as const));
    validateAgainstWeights(config, shapes, dir);
  } finally {
    await source.close();
  }
}
