// One check, shared by every command that would otherwise turn non-finite weights into garbage
// output with exit status 0: generate (on the logits it samples from), merge and save (on every
// float tensor written). Training refuses a non-finite loss and quantization a non-finite block on
// their own paths; all say the same thing: the checkpoint holds NaN or infinity.

/** Index of the first NaN or ±Infinity in `data`, or -1. */
export function firstNonFinite(data: ArrayLike<number>): number {
  for (let i = 0; i < data.length; i++) {
    const v = data[i]!;
    // v - v is 0 for finite v and NaN for NaN and ±Infinity.
    if (v - v !== 0) return i;
  }
  return -1;
}

/** The one-line reason used by every refusal. */
export function nonFiniteMessage(what: string, index: number, value: number): string {
  return `${what} holds ${value} at element ${index}: the weights (base model or adapter) contain NaN or infinity; check the checkpoint with peft info, or retrain with a lower learning rate`;
}
