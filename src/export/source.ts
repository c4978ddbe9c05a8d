// What an export starts from: the base model folder with its --adapter folders applied, merged into
// the weights (peft merge_and_unload) or kept as a live adapter whose tensors the exported graph
// holds as separate initializers. Everything is loaded and checked before any output is touched.

import { existsSync, statSync } from '../storage/index.js';
import { resolveModelDir } from '../io/hub.js';
import { loadModel } from '../models/load.js';
import type { PretrainedModel } from '../models/types.js';
import type { InferenceModel } from '../generate/model.js';
import { loadAdapter } from '../tuners/load.js';
import type { AdaptedModel } from '../tuners/types.js';
import { ExportError } from './errors.js';

export interface ExportSource {
  /** the base model folder (config.json, tokenizer files) */
  dir: string;
  base: PretrainedModel;
  /** what the exported graph runs: the base with merged adapters, or a live adapter on it */
  model: InferenceModel;
  /** peft_type of every adapter applied, in order */
  adapterTypes: string[];
}

/** Methods that change the sequence (virtual tokens, prefix keys/values): an exported runtime feeds plain token ids. */
const SEQUENCE_METHODS = new Set(['PROMPT_TUNING', 'PREFIX_TUNING', 'P_TUNING']);

type Mergeable = AdaptedModel & { mergeAndUnload?: () => PretrainedModel | Promise<PretrainedModel> };

/**
 * Loads `modelDir` and applies `adapters` in order. Every adapter but the last is merged; the last
 * is merged too unless `unmerged` (then the graph holds its tensors as initializers of their own).
 * A base stored 4-bit is dequantized first (the adapter was trained on exactly those weights).
 */
export async function loadExportSource(
  modelArg: string,
  adapters: readonly string[],
  opts: { unmerged?: boolean; format: string },
): Promise<ExportSource> {
  for (const a of adapters) {
    if (!existsSync(a) || !statSync(a).isDirectory()) throw new ExportError(`--adapter ${a} is not a folder`);
  }
  if (opts.unmerged && adapters.length === 0) throw new ExportError('--unmerged keeps an adapter separate; give it with --adapter DIR');
  const dir = await resolveModelDir(modelArg);
  const base = await loadModel(dir);
  for (const name of base.weights.quantizedNames()) base.weights.set(name, base.weights.dequantized(name));
  let current: PretrainedModel = base;
  const adapterTypes: string[] = [];
  for (const [i, a] of adapters.entries()) {
    const adapted = (await loadAdapter(current, a)) as Mergeable;
    adapterTypes.push(adapted.peftType);
    if (SEQUENCE_METHODS.has(adapted.peftType)) {
      throw new ExportError(
        `${a} is a ${adapted.peftType} adapter: it feeds virtual tokens or prefix keys/values that a ${opts.format} runtime does not know how to prepend; export a LoRA or IA3 adapter (or a merged model)`,
      );
    }
    const last = i === adapters.length - 1;
    if (last && opts.unmerged) return { dir, base, model: adapted, adapterTypes };
    if (typeof adapted.mergeAndUnload !== 'function') {
      throw new ExportError(
        `${a} is a ${adapted.peftType} adapter, which cannot be merged into the weights${opts.format === 'transformers.js' && last ? '; pass --unmerged to export it as a separate part of the graph' : ''}`,
      );
    }
    current = await adapted.mergeAndUnload();
  }
  return { dir, base: current, model: current, adapterTypes };
}
