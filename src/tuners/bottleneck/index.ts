// Bottleneck adapters (Houlsby et al. 2019, Pfeiffer et al. 2020, He et al. 2022) in AdapterHub
// `adapters` 0.2.2's format and semantics: the public surface. docs/ADAPTERS.md has the details.

import type { PretrainedModel } from '../../models/types.js';
import type { Tuner } from '../registry.js';
import { bnConfigFromJson, bnConfigToJson, seqBnConfig } from './config.js';
import { BottleneckModel } from './model.js';
import { isAdapterHubFolder, loadBottleneck } from './load.js';
import { PyFloat } from '../../io/pyjson.js';

export { type BnConfig, bottleneckSize, doubleSeqBnConfig, parBnConfig, seqBnConfig } from './config.js';
export { adapterFunction, bottleneckLocation } from './layer.js';
export { BottleneckModel } from './model.js';

export { AdapterFormatError, isAdapterHubFolder, loadBottleneck, readAdapterHubConfig } from './load.js';
export { pythonFloatRepr } from '../../io/pyjson.js';

/** The registry entry: AdapterHub bottleneck adapters (no peft_type on disk: the folder layout is detected). */
export const bottleneckTuner = {
  peftType: 'BOTTLENECK',
  label: 'bottleneck adapter',
  mergeable: {
    why: 'a bottleneck adapter adds a non-linear block (down-projection, activation, up-projection) that no base weight can absorb',
    folder: 'an AdapterHub bottleneck',
  },
  saves: 'adapter (adapter_config.json, adapter.safetensors: the AdapterHub format)',
  presets: [
    {
      name: 'adapter',
      label: 'Bottleneck adapter',
      learningRate: 3e-3,
      fields: { peft_type: 'BOTTLENECK', reduction_factor: 16 },
      settings: 'Pfeiffer (seq_bn) after each feed-forward block, reduction factor 16',
      folklore: { parameter: 'Medium', compute: 'Medium', space: 'Medium', performance: 'High', flexibility: 'High' },
    },
  ],
  /** Fields are AdapterHub BnConfig keys (reduction_factor, mh_adapter, ...) over the Pfeiffer (seq_bn) preset. */
  create: async (
    base: PretrainedModel,
    fields: Record<string, unknown>,
    opts: { adapterName?: string; seed?: number } = {},
  ): Promise<BottleneckModel> => {
    const rest: Record<string, unknown> = { ...fields };
    const name = rest.base_model_name_or_path;
    for (const k of ['peft_type', 'task_type', 'base_model_name_or_path']) delete rest[k];
    // The preset's file fields as plain JSON values (floats unwrapped from their Python spelling).
    const preset = JSON.parse(
      JSON.stringify(bnConfigToJson(seqBnConfig()), (_, v: unknown) => (v instanceof PyFloat ? v.value : v)),
    ) as Record<string, unknown>;
    const config = bnConfigFromJson({ ...preset, ...rest }, 'bottleneck config');
    return BottleneckModel.create(base, {
      config,
      seed: opts.seed,
      name: opts.adapterName,
      modelName: typeof name === 'string' ? name : undefined,
    });
  },
  fromPretrained: (base: PretrainedModel, dir: string, opts: { adapterName?: string } = {}): Promise<BottleneckModel> =>
    loadBottleneck(base, dir, { loadAs: opts.adapterName }),
  detectFolder: (dir: string): Promise<boolean> => isAdapterHubFolder(dir),
} satisfies Tuner;
