// The demo page in a real browser (Debian's Chromium, headless, through playwright-core): the
// bundled tiny Llama is LoRA-tuned for a few steps in the page's worker on onnxruntime-web, and
// the run is checked against the same run on Node (src/browser/finetune.ts on both sides): the
// loss falls, the first step's loss and gradient norm match Node's, the downloaded adapter loads
// in Node with the logits the page computed, loads back into the page, is saved in the Origin
// Private File System (the same bytes as the download) and loads from there after a reload, and
// nothing was logged as an error. WebGPU is tried too and what happened is reported; the WebAssembly path must pass.
// Skipped when /usr/bin/chromium is missing (.ci/run installs it).

import { strict as assert } from 'node:assert';
import { mkdirSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { finetune, probeLogits } from '../../../src/browser/finetune.js';
import { Tokenizer } from '../../../src/io/tokenizer.js';
import { loadModel } from '../../../src/models/load.js';
import { loadAdapter } from '../../../src/tuners/load.js';
import { ROOT, chromiumMissing, launchChromium, openDemo, startDemo, trainInPage } from '../../helpers/browser.js';

/**
 * WebAssembly and onnxruntime-node run the same graphs with different kernels (summation order,
 * SIMD widths): float32 results agree to about 1e-6 relative, so 1e-4 is a wide but meaningful margin.
 */
const REL_TOL = 1e-4;
const LOGIT_TOL = 1e-4;

const relDiff = (a: number, b: number): number => Math.abs(a - b) / Math.max(Math.abs(b), 1e-12);

test(
  'fine-tuning in Chromium matches Node, and its adapter loads in Node, back in the page, and from OPFS after a reload',
  { skip: chromiumMissing(), timeout: 240_000 },
  async (t) => {
    const server = await startDemo();
    const browser = await launchChromium();
    const tmp = mkdtempSync(join(tmpdir(), 'peft-browser-'));
    try {
      const { page, errors, loadMs } = await openDemo(browser, server.url, '?webgpu=0');
      // WebGPU: whether headless Chromium offers an adapter here (reported, never required; training
      // on SwiftShader's CPU-emulated Vulkan is too slow for a test: bench/browser_train.ts tries it)
      const gpu = await page.evaluate(async () => {
        const g = (
          navigator as unknown as { gpu?: { requestAdapter(): Promise<{ info?: { vendor?: string; architecture?: string } } | null> } }
        ).gpu;
        if (!g) return 'no navigator.gpu';
        const a = await g.requestAdapter().catch((e: Error) => e.message);
        return typeof a === 'string'
          ? `requestAdapter failed: ${a}`
          : a
            ? `an adapter (${a.info?.vendor ?? '?'} ${a.info?.architecture ?? ''})`
            : 'no adapter';
      });
      t.diagnostic(`WebGPU in headless Chromium: ${gpu}`);
      const backend = await page.evaluate(() => (window as unknown as { peftDemo: { backend: Record<string, unknown> } }).peftDemo.backend);
      t.diagnostic(`backend: ${JSON.stringify(backend)}; page ready in ${loadMs} ms`);
      assert.equal(backend.crossOriginIsolated, true, 'the demo server must make the page cross-origin isolated (COOP/COEP)');
      assert.equal(backend.provider, 'wasm');
      assert.match((await page.textContent('#backend')) ?? '', /onnxruntime-web, WebAssembly/);

      const settings = {
        task: 'sentiment',
        method: 'lora' as const,
        steps: 4,
        batchSize: 4,
        learningRate: 5e-3,
        r: 4,
        seed: 7,
        maxExamples: 32,
        prompts: ['Review: The soup was cold and the waiter was rude.\nSentiment:'],
      };
      const { result, options, errors: pageErrors } = await trainInPage(page, settings);
      assert.deepEqual(pageErrors, []);
      assert.equal(result.runtime, 'onnxruntime-web');
      assert.equal(result.records.length, settings.steps);
      assert.ok(result.finalLoss < result.firstLoss, `the loss should fall: ${result.records.map((r) => r.loss.toFixed(4)).join(' → ')}`);
      t.diagnostic(
        `browser: loss ${result.records.map((r) => r.loss.toFixed(4)).join(' → ')}, ${result.tokensPerSecond.toFixed(0)} tokens/s`,
      );

      // the same run on Node (node:fs, onnxruntime-node)
      const node = await finetune({
        ...(options as unknown as Parameters<typeof finetune>[0]),
        modelDir: join(ROOT, 'models/tiny-llama'),
        trainFile: join(ROOT, 'data/tasks', settings.task, 'train.jsonl'),
        outputDir: join(tmp, 'node-run'),
      });
      t.diagnostic(
        `node: first loss ${node.firstLoss}, grad norm ${node.firstGradNorm}; browser: ${result.firstLoss}, ${result.firstGradNorm}`,
      );
      assert.ok(relDiff(result.firstLoss, node.firstLoss) < REL_TOL, `first loss: browser ${result.firstLoss}, node ${node.firstLoss}`);
      assert.ok(
        relDiff(result.firstGradNorm, node.firstGradNorm) < REL_TOL,
        `first gradient norm: browser ${result.firstGradNorm}, node ${node.firstGradNorm}`,
      );

      // download the adapter, load it in Node: the same logits as the page computed
      const dir = join(tmp, 'downloaded');
      mkdirSync(dir);
      const downloads = new Promise<string[]>((resolve) => {
        const names: string[] = [];
        page.on('download', async (d) => {
          await d.saveAs(join(dir, d.suggestedFilename()));
          names.push(d.suggestedFilename());
          if (names.length === 2) resolve(names.sort());
        });
      });
      await page.click('#download');
      assert.deepEqual(await downloads, ['adapter_config.json', 'adapter_model.safetensors']);
      const base = await loadModel(join(ROOT, 'models/tiny-llama'));
      const tokenizer = await Tokenizer.fromDir(join(ROOT, 'models/tiny-llama'));
      const adapted = await loadAdapter(base, dir);
      const prompts = options.prompts as string[];
      const logits = await probeLogits(adapted, tokenizer, prompts[0]!);
      const maxDiff = Math.max(...logits.map((v, i) => Math.abs(v - result.probeLogits[i]!)));
      t.diagnostic(`downloaded adapter in Node: max |logit difference| ${maxDiff.toExponential(2)} over ${logits.length} logits`);
      assert.equal(logits.length, result.probeLogits.length);
      assert.ok(maxDiff < LOGIT_TOL, `logits of the downloaded adapter differ by ${maxDiff}`);

      // and back into the page: the same generations as right after training
      await page.setInputFiles('#adapterFiles', [join(dir, 'adapter_config.json'), join(dir, 'adapter_model.safetensors')]);
      await page.waitForFunction(
        () =>
          (window as unknown as { peftDemo: { loaded: unknown; errors: string[] } }).peftDemo.loaded ||
          (window as unknown as { peftDemo: { errors: string[] } }).peftDemo.errors.length,
        null,
        { timeout: 60_000 },
      );
      const loaded = await page.evaluate(
        () => (window as unknown as { peftDemo: { loaded: { peftType: string; generations: string[] } } }).peftDemo.loaded,
      );
      assert.equal(loaded.peftType, 'LORA');
      assert.deepEqual(loaded.generations, result.after);

      // the screenshot a reviewer looks at (docs/browser.png is a copy of one)
      mkdirSync(join(ROOT, 'out/browser-test'), { recursive: true });
      await page.screenshot({ path: join(ROOT, 'out/browser-test/browser.png'), fullPage: true });

      // the adapter was trained into /opfs/adapter, mirrored into the Origin Private File System:
      // OPFS holds the downloaded bytes, and after a reload the page finds the adapter and loads it
      assert.equal(backend.opfs, true, `OPFS: ${String(backend.opfsReason)}`);
      const inOpfs = await page.evaluate(async () => {
        const root = await navigator.storage.getDirectory();
        const dir = await root.getDirectoryHandle('adapter');
        const read = async (name: string) => [...new Uint8Array(await (await (await dir.getFileHandle(name)).getFile()).arrayBuffer())];
        const names: string[] = [];
        for await (const name of (dir as unknown as { keys(): AsyncIterable<string> }).keys()) names.push(name);
        return { names: names.sort(), config: await read('adapter_config.json'), weights: await read('adapter_model.safetensors') };
      });
      t.diagnostic(`OPFS /adapter: ${inOpfs.names.join(', ')} (${inOpfs.weights.length} bytes of weights)`);
      // the whole output folder the library wrote (README, metrics, tokenizer files, ...), the adapter among them
      for (const name of ['adapter_config.json', 'adapter_model.safetensors', 'metrics.jsonl'])
        assert.ok(inOpfs.names.includes(name), name);
      // atomic writes' temporary files (io/atomic.ts) were renamed away in OPFS too
      assert.ok(!inOpfs.names.some((n) => /\.peft-(tmp|old)-/.test(n)), `temporary files left in OPFS: ${inOpfs.names.join(', ')}`);
      assert.deepEqual(Buffer.from(inOpfs.weights), readFileSync(join(dir, 'adapter_model.safetensors')));
      assert.deepEqual(Buffer.from(inOpfs.config), readFileSync(join(dir, 'adapter_config.json')));
      await page.reload();
      await page.waitForFunction(() => (window as unknown as { peftDemo?: { ready: boolean } }).peftDemo?.ready, null, {
        timeout: 120_000,
      });
      const after = await page.evaluate(() => (window as unknown as { peftDemo: { backend: Record<string, unknown> } }).peftDemo.backend);
      assert.equal(after.savedAdapter, true, 'after a reload the page should find the adapter saved in OPFS');
      assert.equal(await page.isDisabled('#loadSaved'), false);
      // the reloaded page shows the task's default prompts again: ask for the ones trained with
      await page.waitForFunction(() => (document.getElementById('prompts') as HTMLTextAreaElement).value.length > 0);
      await page.fill('#prompts', prompts.map((p) => p.replace(/\n/g, '\\n')).join('\n'));
      await page.click('#loadSaved');
      await page.waitForFunction(
        () =>
          (window as unknown as { peftDemo: { loaded: unknown; errors: string[] } }).peftDemo.loaded ||
          (window as unknown as { peftDemo: { errors: string[] } }).peftDemo.errors.length,
        null,
        { timeout: 60_000 },
      );
      const fromOpfs = await page.evaluate(
        () => (window as unknown as { peftDemo: { loaded: { peftType: string; generations: string[] } } }).peftDemo.loaded,
      );
      assert.equal(fromOpfs.peftType, 'LORA');
      assert.deepEqual(fromOpfs.generations, result.after);
      assert.deepEqual(errors, [], `console errors: ${errors.join('\n')}`);
    } finally {
      await browser.close();
      await server.close();
      rmSync(tmp, { recursive: true, force: true });
    }
  },
);
