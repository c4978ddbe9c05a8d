// `peft export --format gguf` (a model, adapters merged) and `--format gguf-lora` (a LoRA adapter
// that llama.cpp applies to the base model's GGUF), in the layout llama.cpp's converters write.

import { basename } from '../../storage/index.js';
import type { PretrainedModel } from '../../models/types.js';
import { LoraModel } from '../../tuners/lora/model.js';
import type { AdaptedModel } from '../../tuners/types.js';
import { ExportError } from '../errors.js';
import { archMetadata, ggufArchOf, ggufTensorName, ggufValues, permuteRotaryRows, qkHeads, ropeTensors } from './llama.js';
import { tokenizerMetadata } from './tokenizer.js';
import { FILE_TYPE, GgmlType, type GgufTensor, type MetaValue, encodeGguf, encodeTensor, f32, str, u32 } from './writer.js';

export type GgufType = 'f32' | 'f16' | 'q8_0';
export const GGUF_TYPES: readonly GgufType[] = ['f32', 'f16', 'q8_0'];
const TYPE: Record<GgufType, GgmlType> = { f32: GgmlType.F32, f16: GgmlType.F16, q8_0: GgmlType.Q8_0 };

/** The type a tensor is stored in: vectors stay F32 (as llama.cpp's converter keeps them); Q8_0 needs rows of whole blocks. */
function storedType(shape: readonly number[], want: GgmlType): GgmlType {
  if (shape.length < 2) return GgmlType.F32;
  if (want === GgmlType.Q8_0 && shape[shape.length - 1]! % 32 !== 0) return GgmlType.F16;
  return want;
}

/** Tokens llama.cpp's vocabulary loader looks up (and fails without) when general.name contains "phi-3" or "phi3". */
const PHI3_NAME_TOKENS = ['</s>', '<unk>', '<s>', '<|endoftext|>'];

/**
 * general.name as written: the model's name, except that llama.cpp keys Phi-3 token attributes on a
 * name containing "phi-3" / "phi3" and then requires PHI3_NAME_TOKENS in the vocabulary; a model
 * without them is named "Phi 3 ..." instead, which llama.cpp leaves alone.
 */
function safeName(name: string, tokens: MetaValue | undefined): string {
  if (!/phi-?3/i.test(name)) return name;
  const have = new Set(tokens && Array.isArray(tokens.value) ? (tokens.value as unknown[]) : []);
  return PHI3_NAME_TOKENS.every((t) => have.has(t)) ? name : name.replace(/phi-?3/gi, 'Phi 3');
}

/** Checks the model can be written (architecture, tokenizer) and returns the GGUF file as chunks. */
export async function ggufModel(
  model: PretrainedModel,
  modelDir: string,
  type: GgufType,
  name = basename(modelDir),
): Promise<Uint8Array[]> {
  const arch = ggufArchOf(model, '--format gguf');
  const meta = new Map<string, MetaValue>();
  meta.set('general.architecture', str(arch.name));
  meta.set('general.type', str('model'));
  meta.set('general.file_type', u32(FILE_TYPE[TYPE[type]]));
  if (type === 'q8_0') meta.set('general.quantization_version', u32(2));
  for (const [k, v] of archMetadata(model, arch)) meta.set(k, v);
  const tok = await tokenizerMetadata(modelDir, model.vocabSize);
  for (const [k, v] of tok) meta.set(k, v);
  meta.set('general.name', str(safeName(name, tok.get('tokenizer.ggml.tokens'))));

  const tensors: GgufTensor[] = [];
  for (const r of ropeTensors(model))
    tensors.push({ name: r.name, shape: [r.data.length], type: GgmlType.F32, data: new Uint8Array(r.data.buffer) });
  // A head held as the embedding matrix itself is left out (llama.cpp then reuses token_embd); one
  // that differs (untied, or changed by a merged adapter) is written as output.weight.
  const names = model.expectedWeights().filter((n) => n !== 'lm_head.weight');
  if (model.weights.has('lm_head.weight') && !model.weights.isAlias('lm_head.weight')) names.push('lm_head.weight');
  for (const hf of names) {
    const gg = ggufTensorName(hf, arch);
    if (!gg) throw new ExportError(`tensor ${hf} has no llama.cpp name; this model cannot be written as GGUF`);
    const w = model.weights.dequantized(hf);
    let data = ggufValues(hf, w.data, model, arch);
    const heads = arch.permuteQK ? qkHeads(hf, model) : undefined;
    if (heads !== undefined) data = permuteRotaryRows(data, heads, w.shape.length === 2 ? w.shape[1]! : 1);
    const t = storedType(w.shape, TYPE[type]);
    tensors.push({ name: gg, shape: w.shape, type: t, data: encodeTensor(data, t) });
  }
  return encodeGguf(meta, tensors);
}

/**
 * A LoRA adapter as a GGUF adapter: A [r, in] as `<tensor>.lora_a` and B [out, r] as `.lora_b`
 * (ggml ne [in, r] and [r, out], what llama.cpp checks against the base tensor), q/k B rows in
 * the same rotary order as the base GGUF. llama.cpp scales every pair by adapter.lora.alpha / r;
 * where peft's scale differs (rsLoRA, per-module rank or alpha patterns) B carries the difference.
 * `adapted` is the adapter loaded on `base` (so every per-module rank, alpha and shape is peft's).
 */
export function ggufLora(
  base: PretrainedModel,
  adapted: AdaptedModel,
  adapterDir: string,
): { chunks: Uint8Array[]; alpha: number; tensors: number } {
  const arch = ggufArchOf(base, '--format gguf-lora');
  if (!(adapted instanceof LoraModel))
    throw new ExportError(
      `${adapterDir} is a ${adapted.peftType} adapter; a GGUF adapter holds LoRA only: export the merged model with --format gguf`,
    );
  const a = adapted.adapter(adapted.activeAdapter!);
  const c = a.config;
  const merged = '; export the merged model with --format gguf';
  if (c.useDora) throw new ExportError(`${adapterDir} is a DoRA adapter (use_dora), which llama.cpp cannot apply as LoRA${merged}`);
  if (c.bias !== 'none') throw new ExportError(`${adapterDir} trains biases (bias "${c.bias}"), which a GGUF LoRA cannot hold${merged}`);
  if (a.modulesToSave.length > 0 || a.overrides.size > 0) {
    throw new ExportError(
      `${adapterDir} replaces whole base weights (modules_to_save ${JSON.stringify(a.modulesToSave)}), which a GGUF LoRA cannot hold${merged}`,
    );
  }
  if (typeof c.initLoraWeights === 'string' && /pissa|olora|corda|loftq|eva/i.test(c.initLoraWeights)) {
    throw new ExportError(`${adapterDir} was initialized with ${c.initLoraWeights}, which changes the base weights it applies to${merged}`);
  }
  const alpha0 = c.loraAlpha;
  const meta = new Map<string, MetaValue>();
  meta.set('general.architecture', str(arch.name));
  meta.set('general.type', str('adapter'));
  meta.set('general.name', str(basename(adapterDir)));
  meta.set('adapter.type', str('lora'));
  meta.set('adapter.lora.alpha', f32(alpha0));
  const tied = base.weights.isAlias('lm_head.weight') || base.config.tieWordEmbeddings;
  const tensors: GgufTensor[] = [];
  for (const [module, m] of a.modules) {
    const hf = `${module}.weight`;
    if (hf === 'lm_head.weight' && tied)
      throw new ExportError(
        `${adapterDir} adapts lm_head, which this model ties to its embedding (llama.cpp has no separate output tensor to apply it to)${merged}`,
      );
    const gg = ggufTensorName(hf, arch);
    if (!gg || m.spec.layout !== 'linear' || hf === 'model.embed_tokens.weight')
      throw new ExportError(`${adapterDir} adapts ${module}, which has no GGUF LoRA form${merged}`);
    const { r, scaling } = m;
    const applied = alpha0 !== 0 ? alpha0 / r : 1;
    let B = m.B.data;
    if (Math.abs(scaling - applied) > 1e-7 * Math.abs(scaling)) B = Float32Array.from(B, (x) => (x * scaling) / applied);
    const heads = arch.permuteQK ? qkHeads(hf, base) : undefined;
    if (heads !== undefined) B = permuteRotaryRows(B, heads, r);
    const A = m.A.data;
    tensors.push({
      name: `${gg}.lora_a`,
      shape: [r, m.spec.inFeatures],
      type: GgmlType.F32,
      data: new Uint8Array(A.buffer, A.byteOffset, A.byteLength),
    });
    tensors.push({
      name: `${gg}.lora_b`,
      shape: [m.spec.outFeatures, r],
      type: GgmlType.F32,
      data: new Uint8Array(B.buffer, B.byteOffset, B.byteLength),
    });
  }
  if (tensors.length === 0) throw new ExportError(`${adapterDir} holds no LoRA tensors`);
  return { chunks: encodeGguf(meta, tensors), alpha: alpha0, tensors: tensors.length / 2 };
}

/**
 * An Ollama Modelfile: FROM the base GGUF, ADAPTER the LoRA GGUF, and a TEMPLATE in Ollama's Go
 * template syntax for the chat formats recognized in the Jinja chat template (ChatML, Llama 3,
 * Gemma, Phi-3), else the plain prompt.
 */
export function modelfile(baseGguf: string, adapterGguf: string, chatTemplate: string | undefined, stop: string[]): string {
  let template = '{{ .Prompt }}';
  const stops = [...stop];
  const t = chatTemplate ?? '';
  if (t.includes('<|im_start|>')) {
    template =
      '{{ if .System }}<|im_start|>system\n{{ .System }}<|im_end|>\n{{ end }}{{ if .Prompt }}<|im_start|>user\n{{ .Prompt }}<|im_end|>\n{{ end }}<|im_start|>assistant\n{{ .Response }}<|im_end|>\n';
    stops.push('<|im_end|>');
  } else if (t.includes('<|start_header_id|>')) {
    template =
      '{{ if .System }}<|start_header_id|>system<|end_header_id|>\n\n{{ .System }}<|eot_id|>{{ end }}{{ if .Prompt }}<|start_header_id|>user<|end_header_id|>\n\n{{ .Prompt }}<|eot_id|>{{ end }}<|start_header_id|>assistant<|end_header_id|>\n\n{{ .Response }}<|eot_id|>';
    stops.push('<|eot_id|>');
  } else if (t.includes('<start_of_turn>')) {
    template =
      '<start_of_turn>user\n{{ if .System }}{{ .System }}\n\n{{ end }}{{ .Prompt }}<end_of_turn>\n<start_of_turn>model\n{{ .Response }}<end_of_turn>\n';
    stops.push('<end_of_turn>');
  } else if (t.includes('<|user|>') && t.includes('<|assistant|>')) {
    template =
      '{{ if .System }}<|system|>\n{{ .System }}<|end|>\n{{ end }}{{ if .Prompt }}<|user|>\n{{ .Prompt }}<|end|>\n{{ end }}<|assistant|>\n{{ .Response }}<|end|>\n';
    stops.push('<|end|>');
  }
  const lines = [`FROM ${baseGguf}`, `ADAPTER ${adapterGguf}`, `TEMPLATE """${template}"""`];
  for (const s of [...new Set(stops)]) lines.push(`PARAMETER stop ${JSON.stringify(s)}`);
  return lines.join('\n') + '\n';
}
