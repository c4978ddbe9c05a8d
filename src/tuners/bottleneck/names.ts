// The one mapping between bottleneck adapter locations and AdapterHub tensor names: full
// state-dict names of the model the adapter was saved from, with the adapter name inside
// ("transformer.h.3.output_adapters.adapters.<name>.adapter_down.0.weight"). Load accepts the
// same names without the base-model prefix (an adapter saved from a bare GPT2Model).

import type { PretrainedModel } from '../../models/types.js';
import { PeftConfigError } from '../types.js';

/** adapters' two locations: after attention (mh_adapter) and after the feed-forward block (output_adapter). */
export type BnLocation = 'mh_adapter' | 'output_adapter';
export const BN_LOCATIONS: readonly BnLocation[] = ['mh_adapter', 'output_adapter'];

export type BnTensor = 'adapter_down.0.weight' | 'adapter_down.0.bias' | 'adapter_up.weight' | 'adapter_up.bias';
export const BN_TENSORS: readonly BnTensor[] = ['adapter_down.0.weight', 'adapter_down.0.bias', 'adapter_up.weight', 'adapter_up.bias'];

type Family = PretrainedModel['family'];

export const BN_UNSUPPORTED_MODERNBERT = 'bottleneck adapters are not implemented for ModernBERT; use LoRA, DoRA, IA3 or prompt tuning';

/** The base-model prefix of the task model's state dict. */
export const BASE_PREFIX: Record<Family, string> = { gpt2: 'transformer.', llama: 'model.', bert: 'bert.', modernbert: 'model.' };

/** The module holding the adapter at (layer, location), without the ".adapters.<name>" part. */
export function locationModule(family: Family, layer: number, location: BnLocation): string {
  switch (family) {
    case 'gpt2':
      return `transformer.h.${layer}.${location === 'mh_adapter' ? 'attention_adapters' : 'output_adapters'}`;
    case 'llama':
      return `model.layers.${layer}.${location === 'mh_adapter' ? 'attention_adapters' : 'output_adapters'}`;
    case 'bert':
      return `bert.encoder.layer.${layer}.${location === 'mh_adapter' ? 'attention.output' : 'output'}`;
    case 'modernbert':
      throw new PeftConfigError(BN_UNSUPPORTED_MODERNBERT);
  }
}

export function bnTensorName(family: Family, layer: number, location: BnLocation, adapterName: string, tensor: BnTensor): string {
  return `${locationModule(family, layer, location)}.adapters.${adapterName}.${tensor}`;
}

/** Families AdapterHub's layout is implemented for (ModernBERT has none here). */
const PATTERNS: Partial<Record<Family, RegExp>> = {
  gpt2: /^(?:transformer\.)?h\.(\d+)\.(attention_adapters|output_adapters)\.adapters\.(.+)\.(adapter_down\.0\.weight|adapter_down\.0\.bias|adapter_up\.weight|adapter_up\.bias)$/,
  llama: /^(?:model\.)?layers\.(\d+)\.(attention_adapters|output_adapters)\.adapters\.(.+)\.(adapter_down\.0\.weight|adapter_down\.0\.bias|adapter_up\.weight|adapter_up\.bias)$/,
  bert: /^(?:bert\.)?encoder\.layer\.(\d+)\.(attention\.output|output)\.adapters\.(.+)\.(adapter_down\.0\.weight|adapter_down\.0\.bias|adapter_up\.weight|adapter_up\.bias)$/,
};

/** A saved key back to (layer, location, adapter name, tensor); null when it is not a bottleneck tensor of this family. */
export function parseBnTensorName(family: Family, key: string): { layer: number; location: BnLocation; adapterName: string; tensor: BnTensor } | null {
  const m = PATTERNS[family]?.exec(key);
  if (!m) return null;
  const location: BnLocation = m[2] === 'attention_adapters' || m[2] === 'attention.output' ? 'mh_adapter' : 'output_adapter';
  return { layer: Number(m[1]), location, adapterName: m[3]!, tensor: m[4] as BnTensor };
}

/** The sub-layer hook key (nn/context.ts) of a location. */
export function sublayerKey(layer: number, location: BnLocation): string {
  return `${layer}.${location === 'mh_adapter' ? 'attn' : 'ffn'}`;
}
