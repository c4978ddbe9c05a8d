// The one mapping between IA3 module paths and tensor names, used by save, load and the graph:
// peft saves "base_model.model.<module>.ia3_l" and holds it in memory with the adapter name
// appended; modules_to_save copies are saved under the module's plain name.

const PEFT_PREFIX = 'base_model.model.';

/** 'ia3_l': peft's scaling vector; 'ia3_m': the additive variant's vector (not a peft name). */
export type IA3TensorKind = 'ia3_l' | 'ia3_m';

export function ia3SavedName(module: string, kind: IA3TensorKind): string {
  return `${PEFT_PREFIX}${module}.${kind}`;
}

/** The in-memory peft name, which is also the graph param name. */
export function ia3ParamName(module: string, kind: IA3TensorKind, adapterName: string): string {
  return `${ia3SavedName(module, kind)}.${adapterName}`;
}

/** A modules_to_save weight ("classifier.weight") as peft saves it. */
export function savedWeightName(weight: string): string {
  return `${PEFT_PREFIX}${weight}`;
}
