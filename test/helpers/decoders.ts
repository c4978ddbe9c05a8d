// The decoder families of the 2026 fixture set and the cases each has: shared by the model,
// CLI and training tests, so adding a family is one line here.

export interface DecoderFixture {
  /** LoRA adapter cases under adapters/<model>/ with logits, loss and merged_logits */
  adapters: string[];
  /** its LoRA gradient trace under grad_traces/ */
  trace: string;
  /** LoRA target_modules for a training run (null: the model type's default) */
  trainTargets: string[] | null;
}

export const DECODERS_2026: Record<string, DecoderFixture> = {
  qwen3: { adapters: ['lora_attn', 'lora_all_linear_rslora', 'lora_dora'], trace: 'qwen3_lora', trainTargets: null },
  llama3: { adapters: ['lora_attn', 'lora_all_linear_rslora', 'lora_dora'], trace: 'llama3_lora', trainTargets: null },
  gemma3_text: { adapters: ['lora_attn', 'lora_all_linear_rslora', 'lora_dora'], trace: 'gemma3_text_lora', trainTargets: null },
  phi3: {
    adapters: ['lora_attn', 'lora_all_linear_rslora', 'lora_dora'],
    trace: 'phi3_lora_fused',
    trainTargets: ['qkv_proj', 'gate_up_proj'],
  },
  smollm3: { adapters: ['lora_attn', 'lora_all_linear_rslora', 'lora_dora'], trace: 'smollm3_lora', trainTargets: ['q_proj', 'v_proj'] },
};

/**
 * Positions whose outputs are defined the same way as transformers': every one, except for models
 * whose padded queries may see no key at all (gemma3_text's sliding window), where SDPA returns 0
 * rows; there only attention_mask == 1 positions count (fixtures-2026 README, logits_at_padding).
 */
export function comparedPositions(model: string, mask: BigInt64Array, width: number): (i: number) => boolean {
  if (model !== 'gemma3_text') return () => true;
  return (i) => mask[Math.floor(i / width)] === 1n;
}
