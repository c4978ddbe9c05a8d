// Drives the browser demo (examples/browser) in Debian's Chromium through playwright-core: builds
// the bundle, serves the page, opens it, trains. Used by test/e2e/browser and bench/browser_train.ts.

import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { type Browser, type Page, chromium } from 'playwright-core';

export const ROOT = fileURLToPath(new URL('../../../', import.meta.url));
export const CHROMIUM = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium';
export const chromiumMissing = (): string | false =>
  existsSync(CHROMIUM) ? false : `${CHROMIUM} is missing: install Debian's chromium (apt-get install chromium) to run the browser tests`;

interface DemoServer {
  url: string;
  close(): Promise<void>;
}

/** Builds dist-browser/ (esbuild) and starts the demo server on a free port. */
export async function startDemo(): Promise<DemoServer> {
  const build = (await import(pathToFileURL(join(ROOT, 'scripts/build_browser.mjs')).href)) as {
    buildBrowser(o: { quiet: boolean }): Promise<string>;
  };
  await build.buildBrowser({ quiet: true });
  const serve = (await import(pathToFileURL(join(ROOT, 'scripts/serve_browser.mjs')).href)) as {
    startDemoServer(o: { port: number }): Promise<DemoServer>;
  };
  return serve.startDemoServer({ port: 0 });
}

/** Headless Chromium with WebGPU allowed (it runs where the GPU stack, or SwiftShader's Vulkan, offers an adapter). */
export function launchChromium(): Promise<Browser> {
  return chromium.launch({
    executablePath: CHROMIUM,
    args: [
      '--no-sandbox',
      '--enable-unsafe-webgpu',
      '--enable-features=Vulkan',
      '--use-vulkan=swiftshader',
      '--use-webgpu-adapter=swiftshader',
      '--ignore-gpu-blocklist',
    ],
  });
}

export interface DemoPage {
  page: Page;
  /** console errors and uncaught exceptions of the page and its worker */
  errors: string[];
  /** milliseconds from navigation to the worker being ready (wasm compiled, backend chosen) */
  loadMs: number;
}

/** Opens the page (`query` e.g. '?webgpu=0') and waits until its worker is ready. */
export async function openDemo(browser: Browser, url: string, query = ''): Promise<DemoPage> {
  const page = await browser.newPage({ acceptDownloads: true, viewport: { width: 1100, height: 760 } });
  const errors: string[] = [];
  page.on('console', (m) => {
    if (m.type() === 'error') errors.push(m.text());
  });
  page.on('pageerror', (e) => errors.push(e.message));
  page.on('worker', (w) => w.on('console', (m) => m.type() === 'error' && errors.push(`worker: ${m.text()}`)));
  const t0 = Date.now();
  await page.goto(url + query);
  await page.waitForFunction(
    () =>
      (window as unknown as { peftDemo?: { ready: boolean; errors: string[] } }).peftDemo?.ready ||
      (window as unknown as { peftDemo?: { errors: string[] } }).peftDemo?.errors.length,
    null,
    { timeout: 120_000 },
  );
  return { page, errors, loadMs: Date.now() - t0 };
}

export interface PageSettings {
  task: string;
  method: 'lora' | 'ia3' | 'prompt_tuning';
  steps: number;
  batchSize: number;
  learningRate: number;
  r: number;
  seed: number;
  maxExamples: number;
  /** prompts generated from before and after (default: the page's, the task's first eval rows) */
  prompts?: string[];
}

/** Fills the form, clicks Train and waits for the result (or an error shown by the page). */
export async function trainInPage(
  page: Page,
  s: PageSettings,
): Promise<{ result: DemoResult; options: Record<string, unknown>; errors: string[] }> {
  await page.selectOption('#task', s.task);
  await page.waitForFunction(() => (document.getElementById('prompts') as HTMLTextAreaElement).value.length > 0);
  if (s.prompts) await page.fill('#prompts', s.prompts.map((p) => p.replace(/\n/g, '\\n')).join('\n'));
  await page.selectOption('#method', s.method);
  await page.fill('#steps', String(s.steps));
  await page.fill('#batch', String(s.batchSize));
  await page.fill('#lr', String(s.learningRate));
  await page.fill('#rank', String(s.r));
  await page.fill('#seed', String(s.seed));
  await page.fill('#maxExamples', String(s.maxExamples));
  await page.click('#train');
  await page.waitForFunction(
    () => {
      const d = (window as unknown as { peftDemo: { result: unknown; errors: string[] } }).peftDemo;
      return d.result || d.errors.length;
    },
    null,
    { timeout: 300_000 },
  );
  return page.evaluate(() => {
    const d = (window as unknown as { peftDemo: { result: DemoResult; options: Record<string, unknown>; errors: string[] } }).peftDemo;
    return { result: d.result, options: d.options, errors: d.errors };
  });
}

/** What the worker reports (src/browser/finetune.ts FinetuneResult). */
export interface DemoResult {
  runtime: string;
  records: { step: number; loss: number; grad_norm: number; tokens: number; tokens_per_second: number }[];
  firstLoss: number;
  firstGradNorm: number;
  finalLoss: number;
  trainSeconds: number;
  tokensPerSecond: number;
  before: string[];
  after: string[];
  probeLogits: number[];
  trainableParameters: number;
}
