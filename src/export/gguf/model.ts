// `peft export --format gguf` (a model, adapters merged) and `--format gguf-lora` (a LoRA adapter
// that llama.cpp applies to the base model's GGUF), in the layout llama.cpp's converters write.

import { basename } from 'node:path';
import type { PretrainedModel } from '../../models/types.js';
import { readAdapterConfigFile } from '../../tuners/lora/save.js';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { readSafetensors, toFloat32 } from '../../io/safetensors.js';
import { ExportError } from '../errors.js';
import { archMetadata, ggufArchOf, ggufTensorName, permuteRotaryRows, qkHeads, ropeFreqs } from './llama.js';
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

/** Checks the model can be written (architecture, tokenizer) and returns the GGUF file as chunks. */
export async function ggufModel(model: PretrainedModel, modelDir: string, type: GgufType, name = basename(modelDir)): Promise<Uint8Array[]> {
  const arch = ggufArchOf(model, '--format gguf');
  const meta = new Map<string, MetaValue>();
  meta.set('general.architecture', str(arch.name));
  meta.set('general.type', str('model'));
  meta.set('general.name', str(name));
  meta.set('general.file_type', u32(FILE_TYPE[TYPE[type]]));
  if (type === 'q8_0') meta.set('general.quantization_version', u32(2));
  for (const [k, v] of archMetadata(model, arch)) meta.set(k, v);
  for (const [k, v] of await tokenizerMetadata(modelDir, model.vocabSize)) meta.set(k, v);

  const tensors: GgufTensor[] = [];
  const freqs = ropeFreqs(model);
  if (freqs) tensors.push({ name: 'rope_freqs.weight', shape: [freqs.length], type: GgmlType.F32, data: new Uint8Array(freqs.buffer) });
  const tied = model.weights.isAlias('lm_head.weight') || model.config.tieWordEmbeddings;
  for (const hf of model.expectedWeights()) {
    if (hf === 'lm_head.weight' && tied) continue;
    const gg = ggufTensorName(hf);
    if (!gg) throw new ExportError(`tensor ${hf} has no llama.cpp name; this model cannot be written as GGUF`);
    const w = model.weights.dequantized(hf);
    let data = w.data;
    const heads = arch.permuteQK ? qkHeads(hf, model) : undefined;
    if (heads !== undefined) data = permuteRotaryRows(data, heads, w.shape.length === 2 ? w.shape[1]! : 1);
    const t = storedType(w.shape, TYPE[type]);
    tensors.push({ name: gg, shape: w.shape, type: t, data: encodeTensor(data, t) });
  }
  return encodeGguf(meta, tensors);
}

const LORA_TENSOR = /^(?:base_model\.model\.)?(.+)\.lora_([AB])\.weight$/;

/**
 * A LoRA adapter as a GGUF adapter: A [r, in] as `<tensor>.lora_a` and B [out, r] as `.lora_b`
 * (ggml ne [in, r] and [r, out], what llama.cpp checks against the base tensor), q/k B rows in
 * the same rotary order as the base GGUF. llama.cpp scales every pair by adapter.lora.alpha / r;
 * where peft's scale differs (rsLoRA, per-module rank or alpha patterns) B carries the difference.
 */
export async function ggufLora(base: PretrainedModel, adapterDir: string): Promise<{ chunks: Uint8Array[]; alpha: number; tensors: number }> {
  const arch = ggufArchOf(base, '--format gguf-lora');
  const config = await readAdapterConfigFile(adapterDir);
  const where = `${adapterDir}/adapter_config.json`;
  if (config.peft_type !== 'LORA') throw new ExportError(`${adapterDir} is a ${String(config.peft_type)} adapter; a GGUF adapter holds LoRA only: export the merged model with --format gguf`);
  if (config.use_dora === true) throw new ExportError(`${adapterDir} is a DoRA adapter (use_dora), which llama.cpp cannot apply as LoRA; export the merged model with --format gguf`);
  if (config.bias !== undefined && config.bias !== 'none') throw new ExportError(`${adapterDir} trains biases (bias "${String(config.bias)}"), which a GGUF LoRA cannot hold; export the merged model with --format gguf`);
  const mts = config.modules_to_save;
  if (Array.isArray(mts) && mts.length > 0) throw new ExportError(`${adapterDir} saves whole modules (modules_to_save ${JSON.stringify(mts)}), which a GGUF LoRA cannot hold; export the merged model with --format gguf`);
  if (config.use_rslora !== true && config.use_rslora !== false && config.use_rslora !== undefined) throw new ExportError(`${where}: use_rslora must be true or false`);
  const r0 = Number(config.r);
  const alpha0 = Number(config.lora_alpha ?? 8);
  const rankPattern = (config.rank_pattern ?? {}) as Record<string, number>;
  const alphaPattern = (config.alpha_pattern ?? {}) as Record<string, number>;
  const pick = (pattern: Record<string, number>, module: string, dflt: number) => {
    const key = Object.keys(pattern).find((k) => module === k || module.endsWith(`.${k}`) || new RegExp(`(^|\\.)${k}$`).test(module));
    return key === undefined ? dflt : Number(pattern[key]);
  };

  const file = join(adapterDir, 'adapter_model.safetensors');
  if (!existsSync(file)) throw new ExportError(`${adapterDir} has no adapter_model.safetensors`);
  const pairs = new Map<string, { A?: Float32Array; B?: Float32Array; aShape?: number[]; bShape?: number[] }>();
  for (const [name, t] of await readSafetensors(file)) {
    const m = LORA_TENSOR.exec(name);
    if (!m) throw new ExportError(`${adapterDir}: tensor ${name} is not a LoRA A/B weight of a linear layer (embedding LoRA and other extras have no GGUF adapter form); export the merged model with --format gguf`);
    const p = pairs.get(m[1]!) ?? {};
    if (m[2] === 'A') [p.A, p.aShape] = [toFloat32(t), [...t.shape]];
    else [p.B, p.bShape] = [toFloat32(t), [...t.shape]];
    pairs.set(m[1]!, p);
  }
  const meta = new Map<string, MetaValue>();
  meta.set('general.architecture', str(arch.name));
  meta.set('general.type', str('adapter'));
  meta.set('general.name', str(basename(adapterDir)));
  meta.set('adapter.type', str('lora'));
  meta.set('adapter.lora.alpha', f32(alpha0));
  const tensors: GgufTensor[] = [];
  for (const [module, p] of [...pairs].sort(([a], [b]) => a.localeCompare(b, 'en', { numeric: true }))) {
    if (!p.A || !p.B) throw new ExportError(`${adapterDir}: ${module} has lora_${p.A ? 'B' : 'A'} missing`);
    const hf = `${module}.weight`;
    if (hf === 'lm_head.weight' && (base.weights.isAlias('lm_head.weight') || base.config.tieWordEmbeddings)) {
      throw new ExportError(`${adapterDir} adapts lm_head, which this model ties to its embedding (llama.cpp has no separate output tensor to apply it to); export the merged model with --format gguf`);
    }
    const gg = ggufTensorName(hf);
    if (!gg || !base.expectedWeights().includes(hf) && hf !== 'lm_head.weight') throw new ExportError(`${adapterDir}: ${module} is not a linear layer of ${base.dir} that llama.cpp names; export the merged model with --format gguf`);
    const [out, inF] = base.weights.shapeOf(hf) as [number, number];
    const r = p.aShape![0]!;
    if (p.aShape![1] !== inF || p.bShape![0] !== out || p.bShape![1] !== r) {
      throw new ExportError(`${adapterDir}: ${module} has A [${p.aShape}] and B [${p.bShape}], which do not fit its weight [${out}, ${inF}]; is --model the base this adapter was trained on?`);
    }
    const rank = pick(rankPattern, module, r0);
    const alpha = pick(alphaPattern, module, alpha0);
    if (rank !== r) throw new ExportError(`${adapterDir}: ${module} has rank ${r} but the config gives ${rank}`);
    const scale = config.use_rslora === true ? alpha / Math.sqrt(r) : alpha / r;
    const applied = alpha0 !== 0 ? alpha0 / r : 1;
    let B = p.B;
    if (Math.abs(scale - applied) > 1e-7 * Math.abs(scale)) B = Float32Array.from(B, (x) => (x * scale) / applied);
    const heads = arch.permuteQK ? qkHeads(hf, base) : undefined;
    if (heads !== undefined) B = permuteRotaryRows(B, heads, r);
    tensors.push({ name: `${gg}.lora_a`, shape: [r, inF], type: GgmlType.F32, data: new Uint8Array(p.A.buffer, p.A.byteOffset, p.A.byteLength) });
    tensors.push({ name: `${gg}.lora_b`, shape: [out, r], type: GgmlType.F32, data: new Uint8Array(B.buffer, B.byteOffset, B.byteLength) });
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
    template = '{{ if .System }}<|im_start|>system\n{{ .System }}<|im_end|>\n{{ end }}{{ if .Prompt }}<|im_start|>user\n{{ .Prompt }}<|im_end|>\n{{ end }}<|im_start|>assistant\n{{ .Response }}<|im_end|>\n';
    stops.push('<|im_end|>');
  } else if (t.includes('<|start_header_id|>')) {
    template = '{{ if .System }}<|start_header_id|>system<|end_header_id|>\n\n{{ .System }}<|eot_id|>{{ end }}{{ if .Prompt }}<|start_header_id|>user<|end_header_id|>\n\n{{ .Prompt }}<|eot_id|>{{ end }}<|start_header_id|>assistant<|end_header_id|>\n\n{{ .Response }}<|eot_id|>';
    stops.push('<|eot_id|>');
  } else if (t.includes('<start_of_turn>')) {
    template = '<start_of_turn>user\n{{ if .System }}{{ .System }}\n\n{{ end }}{{ .Prompt }}<end_of_turn>\n<start_of_turn>model\n{{ .Response }}<end_of_turn>\n';
    stops.push('<end_of_turn>');
  } else if (t.includes('<|user|>') && t.includes('<|assistant|>')) {
    template = '{{ if .System }}<|system|>\n{{ .System }}<|end|>\n{{ end }}{{ if .Prompt }}<|user|>\n{{ .Prompt }}<|end|>\n{{ end }}<|assistant|>\n{{ .Response }}<|end|>\n';
    stops.push('<|end|>');
  }
  const lines = [`FROM ${baseGguf}`, `ADAPTER ${adapterGguf}`, `TEMPLATE """${template}"""`];
  for (const s of [...new Set(stops)]) lines.push(`PARAMETER stop ${JSON.stringify(s)}`);
  return lines.join('\n') + '\n';
}
