// The one mapping between bottleneck adapter locations and AdapterHub tensor names: full
// state-dict names of the model the adapter was saved from, with the adapter name inside
// ("transformer.h.3.output_adapters.adapters.<name>.adapter_down.0.weight"). Load accepts the
// same names without the base-model prefix (an adapter saved from a bare GPT2Model).

import { descriptorOf } from '../../models/registry.js';
import type { BottleneckLayout, PretrainedModel } from '../../models/types.js';
import { PeftConfigError } from '../types.js';

/** adapters' two locations: after attention (mh_adapter) and after the feed-forward block (output_adapter). */
export type BnLocation = 'mh_adapter' | 'output_adapter';
export const BN_LOCATIONS: readonly BnLocation[] = ['mh_adapter', 'output_adapter'];

export type BnTensor = 'adapter_down.0.weight' | 'adapter_down.0.bias' | 'adapter_up.weight' | 'adapter_up.bias';

/** The descriptor's bottleneck layout, or a config error naming the model type it is missing for. */
function layoutOf(base: Pick<PretrainedModel, 'config' | 'family'>): BottleneckLayout {
  const d = descriptorOf(base);
  if (!d.bottleneck) {
    throw new PeftConfigError(
      `bottleneck adapters are not implemented for ${d.displayName} (model_type "${base.config.modelType}"); use LoRA, DoRA, IA3 or prompt tuning`,
    );
  }
  return d.bottleneck;
}

/** Refuses architectures whose descriptor has no bottleneck locations, before anything is built. */
export function checkBottleneckSupported(base: Pick<PretrainedModel, 'config' | 'family'>): void {
  layoutOf(base);
}

/** The base-model prefix of the task model's state dict. */
export function basePrefixOf(base: Pick<PretrainedModel, 'config' | 'family'>): string {
  return descriptorOf(base).basePrefix;
}

/** The module holding the adapter at (layer, location), without the ".adapters.<name>" part. */
function locationModule(base: Pick<PretrainedModel, 'config' | 'family'>, layer: number, location: BnLocation): string {
  return layoutOf(base).module(layer, location);
}

export function bnTensorName(
  base: Pick<PretrainedModel, 'config' | 'family'>,
  layer: number,
  location: BnLocation,
  adapterName: string,
  tensor: BnTensor,
): string {
  return `${locationModule(base, layer, location)}.adapters.${adapterName}.${tensor}`;
}

/** A saved key back to (layer, location, adapter name, tensor); null when it is not a bottleneck tensor of this architecture. */
export function parseBnTensorName(
  base: Pick<PretrainedModel, 'config' | 'family'>,
  key: string,
): { layer: number; location: BnLocation; adapterName: string; tensor: BnTensor } | null {
  const layout = layoutOf(base);
  const m = layout.pattern.exec(key);
  if (!m) return null;
  const location: BnLocation = m[2] === layout.attentionTail ? 'mh_adapter' : 'output_adapter';
  return { layer: Number(m[1]), location, adapterName: m[3]!, tensor: m[4] as BnTensor };
}

/** The sub-layer hook key (nn/context.ts) of a location. */
export function sublayerKey(layer: number, location: BnLocation): string {
  return `${layer}.${location === 'mh_adapter' ? 'attn' : 'ffn'}`;
}
