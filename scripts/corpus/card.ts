// The model card (README.md) written next to the bundled model's weights: how it was made, from
// which corpus, at what size, and the numbers the pretraining run measured, so anyone can rerun
// scripts/pretrain.ts and compare.

import type { TinyLlamaShape } from './init.js';

export interface PretrainReport {
  command: string;
  seed: number;
  shape: TinyLlamaShape;
  parameters: number;
  fileBytes: number;
  corpus: {
    trainDocuments: number;
    trainTokens: number;
    evalDocuments: number;
    evalTokens: number;
    bpeDocuments: number;
    characters: number;
  };
  tokenizer: { merges: number; specialTokens: string[]; tokensPerWord: number };
  training: {
    steps: number;
    batchSize: number;
    blockSize: number;
    learningRate: number;
    warmupSteps: number;
    weightDecay: number;
    schedule: string;
    threads: number;
    initialEvalLoss: number;
    finalTrainLoss: number;
    finalEvalLoss: number;
    float16EvalLoss: number;
    seconds: number;
    tokensPerSecond: number;
  };
  totalSeconds: number;
  machine: string;
  samples: { prompt: string; completion: string }[];
}

function minutes(s: number): string {
  return `${(s / 60).toFixed(1)} min`;
}

export function modelCard(r: PretrainReport): string {
  const s = r.shape;
  const t = r.training;
  const c = r.corpus;
  const sample = r.samples.map((x) => `| ${md(x.prompt)} | ${md(x.completion)} |`).join('\n');
  return `---
license: apache-2.0
library_name: peft-ts
pipeline_tag: text-generation
tags: [llama, tiny, synthetic-data]
---

# tiny-llama

A ${(r.parameters / 1e6).toFixed(2)}M-parameter Llama-architecture decoder pretrained from scratch by this
repository's own engine (graph IR + autodiff lowered to ONNX, run by onnxruntime-node), on a synthetic
English-like corpus. It is the base model \`peft quickstart\` fine-tunes: small enough to train LoRA
adapters on a laptop CPU in minutes, and trained on text that contains the *language* of the bundled
downstream tasks (\`data/tasks/\`) but never their prompt -> answer formats, so it is poor at them before
tuning.

It is a toy: it knows a few hundred words and the sentence patterns of its generator, nothing else.

## How it was made

\`\`\`sh
${r.command}
\`\`\`

\`scripts/pretrain.ts\` does everything below from seed ${r.seed}; a rerun with the same seed and flags
produces the same corpus, tokenizer and initialization (timings and the last bits of the weights can
differ with the machine's thread scheduling).

1. **Corpus** (\`scripts/corpus/text.ts\`, \`scripts/corpus/lexicon.ts\`): short documents of templated
   sentences over word lists of names, cities, places, objects, colors, jobs, animals and foods:
   small stories, reviews that praise or blame a place (food, service, staff, room, price, ...),
   \`key: value\` records, JSON objects, arithmetic statements in words ("23 plus 45 is 68.", sums of
   three numbers, differences, products, counting), and lists. ${c.trainDocuments.toLocaleString('en-US')} training documents
   (${c.trainTokens.toLocaleString('en-US')} tokens, ${(c.characters / 1e6).toFixed(1)}M characters) and ${c.evalDocuments.toLocaleString('en-US')} held-out evaluation documents
   (${c.evalTokens.toLocaleString('en-US')} tokens) from independent random streams.
2. **Tokenizer** (\`scripts/corpus/bpe.ts\`): byte-level BPE as GPT-2 builds it (GPT-2's byte->unicode
   table and pre-tokenizer regex, greedy most-frequent-pair merges), trained on the first
   ${c.bpeDocuments.toLocaleString('en-US')} training documents: ${r.tokenizer.specialTokens.length} special tokens (${r.tokenizer.specialTokens.map((x) => `\`${x}\``).join(', ')}), 256 byte symbols and
   ${r.tokenizer.merges} merges. Digits are never merged, so a number is one token per digit (as in Llama's
   tokenizer). ${r.tokenizer.tokensPerWord.toFixed(2)} tokens per whitespace-separated word on the corpus. Every sequence
   starts with \`<s>\`; documents end with \`</s>\`.
3. **Model**: LlamaForCausalLM, hidden size ${s.hiddenSize}, ${s.numHiddenLayers} layers, ${s.numAttentionHeads} attention heads
   and ${s.numKeyValueHeads} key/value heads (head dim ${s.hiddenSize / s.numAttentionHeads}), SwiGLU MLP of ${s.intermediateSize}, RMSNorm, rotary
   positions (theta 10000), vocabulary ${s.vocabSize}, tied input/output embeddings, ${s.maxPositionEmbeddings} positions;
   ${r.parameters.toLocaleString('en-US')} parameters, initialized as transformers does (normal, std 0.02; norms 1).
4. **Pretraining**: full-parameter training with \`src/tuners/full\` and the library's \`Trainer\`
   (one ONNX Runtime session per step computes the loss and every gradient): ${t.steps} steps of
   ${t.batchSize} packed blocks of ${t.blockSize} tokens (${(t.steps * t.batchSize * t.blockSize).toLocaleString('en-US')} tokens, one pass over the corpus),
   AdamW (lr ${t.learningRate}, betas 0.9/0.999, weight decay ${t.weightDecay} on matrices), ${t.warmupSteps} warmup steps then
   ${t.schedule} decay, gradient norm clipped to 1, ${t.threads} ONNX Runtime threads.
5. **Saved** as float16 safetensors (${(r.fileBytes / 1e6).toFixed(2)} MB); our loader upcasts to float32.

## Measured

| | |
| --- | --- |
| machine | ${r.machine} |
| pretraining time | ${minutes(t.seconds)} (${Math.round(t.tokensPerSecond).toLocaleString('en-US')} tokens/s); whole script ${minutes(r.totalSeconds)} |
| eval loss before training | ${t.initialEvalLoss.toFixed(3)} (ln ${s.vocabSize} = ${Math.log(s.vocabSize).toFixed(3)}) |
| final train loss (last step) | ${t.finalTrainLoss.toFixed(3)} |
| final eval loss (float32) | ${t.finalEvalLoss.toFixed(3)} (perplexity ${Math.exp(t.finalEvalLoss).toFixed(2)}) |
| eval loss of the saved float16 weights | ${t.float16EvalLoss.toFixed(3)} |

Greedy continuations of the saved model:

| prompt | continuation |
| --- | --- |
${sample}

The downstream tasks and the base model's (poor) scores on them are in \`docs/QUICKSTART.md\`.

## Files

\`config.json\`, \`generation_config.json\`, \`model.safetensors\` (float16), \`tokenizer.json\` (Hugging Face
tokenizers format), \`tokenizer_config.json\`, \`special_tokens_map.json\`. The folder loads with
\`loadModel\` / \`Tokenizer.fromDir\` here, and with transformers' \`AutoModelForCausalLM\` /
\`AutoTokenizer\` in Python.
`;
}

function md(s: string): string {
  return s.replace(/\|/g, '\\|').replace(/\n/g, '\\n');
}
