// Full fine-tuning as an AdaptedModel: the selected base weights become graph params (fed at every
// step, with gradients) and the forward pass is the base model's own. Like torch, training updates
// the model's weights in place, and savePretrained writes a Hugging Face model folder.

import { existsSync, mkdir, readFile, join } from '../../storage/index.js';
import type { Value } from '../../graph/ir.js';
import { fromTypedArray, writeSafetensors, type RawTensor } from '../../io/safetensors.js';
import { writeFileAtomic } from '../../io/atomic.js';
import { setConfigDtype } from '../../io/hfconfig.js';
import type { ForwardArgs, ForwardResult, PretrainedModel } from '../../models/types.js';
import type { BuildContext } from '../../nn/context.js';
import { type AdaptedModel, AdapterError, PeftConfigError, type TrainableTensor } from '../types.js';
import { type FullConfig, fullConfig, moduleMatches } from './config.js';

/** transformers' get_decay_parameter_names: no weight decay on biases and normalization weights. */
const NO_DECAY = [/\.bias$/, /(^|\.)(ln_[^.]*|[^.]*norm[^.]*)\.weight$/i];

export class FullFineTuneModel implements AdaptedModel {
  readonly peftType = 'FULL';
  readonly config: FullConfig;
  private readonly names: string[];
  private readonly tensors: Map<string, TrainableTensor>;

  constructor(
    readonly base: PretrainedModel,
    config: FullConfig = fullConfig(),
  ) {
    this.config = config;
    const all = base.weights.names();
    const moduleOf = (w: string) => w.slice(0, w.lastIndexOf('.'));
    this.names = all.filter(
      (w) =>
        (config.targetModules === undefined || moduleMatches(moduleOf(w), config.targetModules)) &&
        (config.excludeModules === undefined || !moduleMatches(moduleOf(w), config.excludeModules)),
    );
    if (this.names.length === 0) {
      const sample = [...new Set(all.map(moduleOf))].slice(0, 6).join(', ');
      throw new PeftConfigError(
        `target modules ${JSON.stringify(config.targetModules)} select no weight of the model; module names look like ${sample}`,
      );
    }
    // The arrays are the model's own: an update is visible to every later graph built from it.
    this.tensors = new Map(this.names.map((n) => [n, { shape: base.weights.get(n).shape, data: base.weights.get(n).data }]));
  }

  forward(ctx: BuildContext, args: ForwardArgs): ForwardResult {
    return this.base.forward(ctx, args);
  }

  loss(logits: Value, labels: Value): Value {
    return this.base.loss(logits, labels);
  }

  parameters(): Map<string, TrainableTensor> {
    return this.tensors;
  }

  decayParameters(): Set<string> {
    return new Set(this.names.filter((n) => !NO_DECAY.some((r) => r.test(n))));
  }

  trainableBaseWeights(): Set<string> {
    return new Set(this.names);
  }

  /** peft's get_nb_trainable_parameters: the trained weights are the model's own, so all = the model's size. */
  numParameters(): { trainable: number; all: number } {
    const { trainable, total } = this.parameterCounts();
    return { trainable, all: total };
  }

  /** Number of trainable and of all parameters (the first of the efficiency criteria). */
  parameterCounts(): { trainable: number; total: number } {
    const trainable = this.names.reduce((s, n) => s + this.tensors.get(n)!.data.length, 0);
    return { trainable, total: this.base.weights.numel() };
  }

  /** A Hugging Face model folder: config.json, generation_config.json when the base has one, model.safetensors. */
  async savePretrained(dir: string): Promise<void> {
    try {
      await mkdir(dir, { recursive: true });
    } catch (e) {
      throw new AdapterError(`cannot create the output folder ${dir}: ${(e as Error).message}`);
    }
    const tensors = new Map<string, RawTensor>();
    for (const name of this.base.weights.names()) {
      const w = this.base.weights.get(name);
      tensors.set(name, fromTypedArray(w.data, w.shape));
    }
    await writeSafetensors(join(dir, 'model.safetensors'), tensors, { format: 'pt' });
    // The trained weights are float32 (a bfloat16 copy would round away most fine-tuning updates),
    // and config.json says so whatever dtype the base checkpoint was.
    const raw = { ...this.base.config.raw };
    setConfigDtype(raw, 'float32');
    const config = JSON.stringify(raw, null, 2) + '\n';
    await writeFileAtomic(join(dir, 'config.json'), config);
    const gen = join(this.base.dir, 'generation_config.json');
    if (existsSync(gen)) {
      const text = await readFile(gen);
      await writeFileAtomic(join(dir, 'generation_config.json'), text);
    }
  }
}
