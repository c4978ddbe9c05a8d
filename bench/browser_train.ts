// Training throughput of the browser build next to Node's, on this machine: the demo page
// (examples/browser) LoRA-tunes the bundled tiny Llama in headless Chromium on onnxruntime-web
// (WebAssembly, threads as the page gets them; WebGPU too when Chromium offers an adapter), and
// src/browser/finetune.ts runs the same settings on onnxruntime-node. Also the page's load time
// (navigation to worker ready: bundle, 28 MB wasm compiled) and the browser's memory.
// Run: npx tsc -p . && node dist/bench/browser_train.js [steps] [--webgpu]

import { readFileSync, readdirSync } from 'node:fs';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir, cpus, loadavg } from 'node:os';
import { join } from 'node:path';
import { finetune } from '../src/browser/finetune.js';
import { ROOT, chromiumMissing, launchChromium, openDemo, startDemo, trainInPage } from '../test/helpers/browser.js';

/** Resident and peak memory of every descendant of this process (the browser's processes), in MiB. */
function descendantsMemory(): { rssMiB: number; peakMiB: number; processes: number } {
  const parent = new Map<number, number>();
  for (const d of readdirSync('/proc')) {
    if (!/^\d+$/.test(d)) continue;
    try {
      const stat = readFileSync(`/proc/${d}/stat`, 'utf8');
      parent.set(Number(d), Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]));
    } catch {
      // gone
    }
  }
  const mine = new Set<number>([process.pid]);
  let grew = true;
  while (grew) {
    grew = false;
    for (const [pid, ppid] of parent) {
      if (!mine.has(pid) && mine.has(ppid)) {
        mine.add(pid);
        grew = true;
      }
    }
  }
  mine.delete(process.pid);
  let rss = 0;
  let peak = 0;
  for (const pid of mine) {
    try {
      const status = readFileSync(`/proc/${pid}/status`, 'utf8');
      rss += Number(/VmRSS:\s+(\d+)/.exec(status)?.[1] ?? 0);
      peak = Math.max(peak, Number(/VmHWM:\s+(\d+)/.exec(status)?.[1] ?? 0));
    } catch {
      // gone
    }
  }
  return { rssMiB: rss / 1024, peakMiB: peak / 1024, processes: mine.size };
}

const steps = Number(process.argv[2] ?? 20);
// WebGPU in headless Chromium runs on SwiftShader (Vulkan emulated on the CPU) unless the machine has a GPU: opt in
const tryWebgpu = process.argv.includes('--webgpu');
const settings = { task: 'sentiment', method: 'lora' as const, steps, batchSize: 8, learningRate: 5e-3, r: 8, seed: 42, maxExamples: 512 };
const missing = chromiumMissing();
if (missing) throw new Error(missing);
console.log(
  `machine: ${cpus().length} x ${cpus()[0]?.model}; load average ${loadavg()
    .map((x) => x.toFixed(2))
    .join(' ')}`,
);
const server = await startDemo();
const browser = await launchChromium();
const tmp = mkdtempSync(join(tmpdir(), 'peft-bench-browser-'));
try {
  const rows: string[] = [];
  for (const query of ['?webgpu=0', '?webgpu=0&threads=1', ...(tryWebgpu ? ['?webgpu=1'] : [])]) {
    const { page, loadMs } = await openDemo(browser, server.url, query);
    const backend = await page.evaluate(() => (window as unknown as { peftDemo: { backend: Record<string, unknown> } }).peftDemo.backend);
    if (query.includes('webgpu=1') && backend.provider !== 'webgpu') {
      rows.push(`| browser, WebGPU | not run: ${String(backend.webgpuReason)} | | |`);
      await page.close();
      continue;
    }
    const { result, errors } = await trainInPage(page, settings);
    const mem = descendantsMemory();
    const label = backend.provider === 'webgpu' ? 'WebGPU' : `wasm, ${String(backend.threads)} thread${backend.threads === 1 ? '' : 's'}`;
    if (errors.length) rows.push(`| browser, ${label} | failed: ${errors[0]} | | |`);
    else
      rows.push(
        `| browser (Chromium ${browser.version()}), ${label} | ${result.tokensPerSecond.toFixed(0)} | ${(loadMs / 1000).toFixed(1)} s | ${mem.rssMiB.toFixed(0)} MiB RSS (${mem.processes} processes), largest peak ${mem.peakMiB.toFixed(0)} MiB |`,
      );
    console.log(rows[rows.length - 1]);
    // the README's screenshot (docs/browser.png is a copy of the first one)
    if (rows.length === 1) await page.screenshot({ path: join(ROOT, 'out/browser-bench.png'), fullPage: true });
    await page.close();
  }
  const node = await finetune({
    method: settings.method,
    steps,
    batchSize: settings.batchSize,
    learningRate: settings.learningRate,
    r: settings.r,
    seed: settings.seed,
    maxExamples: settings.maxExamples,
    prompts: ['Review: the soup was cold\nSentiment:'],
    modelDir: join(ROOT, 'models/tiny-llama'),
    trainFile: join(ROOT, 'data/tasks/sentiment/train.jsonl'),
    outputDir: join(tmp, 'node'),
  });
  rows.push(
    `| Node (onnxruntime-node, CPU) | ${node.tokensPerSecond.toFixed(0)} | | ${(process.memoryUsage().rss / 2 ** 20).toFixed(0)} MiB RSS (this process) |`,
  );
  console.log(`\n${steps} LoRA steps (r ${settings.r}, all linear layers), batch ${settings.batchSize}, sentiment task, tiny Llama\n`);
  console.log('| where | training tokens/s | page ready | memory after training |\n| --- | --- | --- | --- |');
  for (const r of rows) console.log(r);
  console.log(
    `\nload average after: ${loadavg()
      .map((x) => x.toFixed(2))
      .join(' ')}`,
  );
} finally {
  await browser.close();
  await server.close();
  rmSync(tmp, { recursive: true, force: true });
}
