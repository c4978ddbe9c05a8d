// Load test for `peft serve`: starts the CLI server (a child process, so its peak RSS is its own) on
// 127.0.0.1 with three adapters over a base model, then C concurrent `openai` clients send a fixed
// number of greedy completion requests spread over the base and the adapters. Records throughput,
// p50/p99 latency and the server's peak RSS (VmHWM), then sends every distinct request again ALONE
// (one at a time) and checks each loaded answer equals its alone answer: batching never mixes rows.
//
//   npx tsc -p . && node dist/bench/serve_load.js [--model models/tiny-llama] [--clients 64]
//       [--requests 256] [--max-tokens 24] [--max-batch 32] [--threads 2] [--no-write]

import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { cpus, loadavg, tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import OpenAI from 'openai';
import { loadModel } from '../src/models/load.js';
import { LoraModel } from '../src/tuners/lora/index.js';
import { IA3Model } from '../src/tuners/ia3/index.js';
import { writeResultsSection } from './results.js';

const REPO = resolve(fileURLToPath(new URL('.', import.meta.url)), '../..');
const HEADING = '## Serve: load test (peft serve, continuous batching, 3 adapters)';

function arg(name: string, dflt: string): string {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? process.argv[i + 1]! : dflt;
}
const MODEL = resolve(REPO, arg('model', 'models/tiny-llama'));
const CLIENTS = Number(arg('clients', '64'));
const REQUESTS = Number(arg('requests', '256'));
const MAX_TOKENS = Number(arg('max-tokens', '24'));
const MAX_BATCH = Number(arg('max-batch', '32'));
const THREADS = Number(arg('threads', '2'));
const WRITE = !process.argv.includes('--no-write');

const PROMPTS = [
  'The food was',
  'We went to the',
  'It was a',
  'The service',
  'My friend said',
  'Nothing about the',
  'I would never',
  'The best part',
  'After dinner we',
  'The staff',
  'Our table was',
  'I ordered the',
  'The price',
  'On Sunday',
  'The dessert',
  'Next time',
];

const pct = (xs: number[], p: number) => {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.ceil((p / 100) * s.length) - 1)]!;
};

async function startServer(args: string[]): Promise<{ url: string; pid: number; stop: () => Promise<void> }> {
  const child = spawn(process.execPath, [join(REPO, 'dist/src/cli/main.js'), 'serve', ...args], { stdio: ['ignore', 'ignore', 'pipe'] });
  let err = '';
  const url = await new Promise<string>((res, rej) => {
    child.stderr!.on('data', (d: Buffer) => {
      err += d.toString();
      const m = /at (http:\/\/[^\s]+)\/v1/.exec(err);
      if (m) res(m[1]!);
    });
    child.on('exit', (code) => rej(new Error(`server exited (${code}): ${err}`)));
  });
  return {
    url,
    pid: child.pid!,
    stop: () =>
      new Promise<void>((res) => {
        child.once('exit', () => res());
        child.kill('SIGTERM');
      }),
  };
}

function peakRssMiB(pid: number): number {
  const m = /VmHWM:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m ? Number(m[1]) / 1024 : NaN;
}

async function main(): Promise<void> {
  const dir = await mkdtemp(join(tmpdir(), 'peft-serve-load-'));
  try {
    const base = await loadModel(MODEL);
    const linears = base.linears().map((s) => s.name.split('.').pop()!);
    const attn = ['q_proj', 'v_proj'].filter((t) => linears.includes(t));
    const all = [...new Set(linears)].filter((t) => t !== 'lm_head');
    const a = await LoraModel.create(
      base,
      { r: 8, loraAlpha: 16, targetModules: attn.length ? attn : ['c_attn'], initLoraWeights: false },
      { seed: 1 },
    );
    await a.savePretrained(join(dir, 'a'));
    const b = await LoraModel.create(base, { r: 16, loraAlpha: 16, targetModules: all, initLoraWeights: false }, { seed: 2 });
    await b.savePretrained(join(dir, 'b'));
    const c = IA3Model.create(base, { initIa3Weights: false, seed: 3 });
    await c.savePretrained(join(dir, 'c'));
    const models = [base.dir.split('/').pop()!, 'a', 'b', 'c'];

    const server = await startServer([
      '--model',
      MODEL,
      '--adapter',
      `a=${join(dir, 'a')}`,
      '--adapter',
      `b=${join(dir, 'b')}`,
      '--adapter',
      `c=${join(dir, 'c')}`,
      '--port',
      '0',
      '--max-batch',
      String(MAX_BATCH),
      '--max-queue',
      String(CLIENTS * 2),
      '--threads',
      String(THREADS),
    ]);
    const client = new OpenAI({ baseURL: `${server.url}/v1`, apiKey: 'unused', maxRetries: 0, timeout: 600_000 });
    const jobs = Array.from({ length: REQUESTS }, (_, i) => ({
      prompt: PROMPTS[i % PROMPTS.length]!,
      model: models[Math.floor(i / PROMPTS.length) % models.length]!,
    }));
    const answers = new Map<string, string[]>();
    const latencies: number[] = [];
    let tokens = 0;
    let next = 0;
    const t0 = performance.now();
    await Promise.all(
      Array.from({ length: CLIENTS }, async () => {
        while (next < jobs.length) {
          const job = jobs[next++]!;
          const s = performance.now();
          const r = await client.completions.create({ model: job.model, prompt: job.prompt, max_tokens: MAX_TOKENS, temperature: 0 });
          latencies.push(performance.now() - s);
          tokens += r.usage!.completion_tokens;
          const key = `${job.model}|${job.prompt}`;
          answers.set(key, [...(answers.get(key) ?? []), r.choices[0]!.text]);
        }
      }),
    );
    const wall = (performance.now() - t0) / 1000;
    const rss = peakRssMiB(server.pid);
    // Every distinct request again, alone.
    let mismatches = 0;
    for (const [key, got] of answers) {
      const [model, prompt] = key.split('|') as [string, string];
      const r = await client.completions.create({ model, prompt, max_tokens: MAX_TOKENS, temperature: 0 });
      for (const g of got) if (g !== r.choices[0]!.text) mismatches++;
    }
    const distinctByModel = new Set([...answers.keys()].map((k) => k.split('|')[0]));
    await server.stop();
    const lines = [
      HEADING,
      '',
      `Run ${new Date().toISOString().slice(0, 16).replace('T', ' ')} UTC by \`node dist/bench/serve_load.js\` (bench/serve_load.ts) on ${cpus().length} logical CPUs, load average (1/5/15 min) ${loadavg()
        .map((x) => x.toFixed(2))
        .join(
          ' / ',
        )} at the end. Server: \`peft serve --model ${MODEL.replace(REPO + '/', '')}\` with 3 adapters (LoRA r8 on attention, LoRA r16 on every linear layer, IA3 on the default targets; random weights), \`--max-batch ${MAX_BATCH} --threads ${THREADS}\`, a child process. ${CLIENTS} concurrent \`openai\` clients sent ${REQUESTS} greedy completion requests (${PROMPTS.length} prompts x base + 3 adapters, max_tokens ${MAX_TOKENS}).`,
      '',
      '| requests | clients | wall s | requests/s | completion tokens/s | p50 latency ms | p99 latency ms | server peak RSS MiB | answers != alone |',
      '| --- | --- | --- | --- | --- | --- | --- | --- | --- |',
      `| ${REQUESTS} | ${CLIENTS} | ${wall.toFixed(1)} | ${(REQUESTS / wall).toFixed(2)} | ${(tokens / wall).toFixed(1)} | ${pct(latencies, 50).toFixed(0)} | ${pct(latencies, 99).toFixed(0)} | ${rss.toFixed(0)} | ${mismatches} of ${REQUESTS} |`,
      '',
      `Every one of the ${REQUESTS} answers was compared with the same request sent alone afterwards (greedy, ${answers.size} distinct requests over ${distinctByModel.size} models): ${mismatches === 0 ? 'all equal' : `${mismatches} differ`}.`,
      '',
    ];
    console.log(lines.join('\n'));
    if (WRITE) writeResultsSection(HEADING, lines.join('\n'));
    if (mismatches) process.exitCode = 1;
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

await main();
