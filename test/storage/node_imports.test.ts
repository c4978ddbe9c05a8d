// The browser build's contract: nothing in src/ imports a Node module (node:*, fs, path, ...) or a
// Node-only package, except the two modules that pick the host (src/storage/node.ts,
// src/runtime/node.ts) and the modules listed in ALLOWED, each inherently Node for the reason given.
// The core folders may hold none of those.

import { strict as assert } from 'node:assert';
import { readFileSync, readdirSync, statSync } from 'node:fs';
import { builtinModules } from 'node:module';
import { join, relative } from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';

const ROOT = fileURLToPath(new URL('../../../', import.meta.url));
const SRC = join(ROOT, 'src');

/** Packages that only run on Node. */
const NODE_PACKAGES = ['onnxruntime-node', 'cli-progress', 'fastify', 'commander'];

/** Files (relative to src/) allowed to import Node, with the reason. */
const ALLOWED: Record<string, string> = {
  'storage/node.ts': 'the Node implementation of the storage interface',
  'runtime/node.ts': 'the Node runtime backend (onnxruntime-node)',
  'cli/': 'the command-line interface: argv, stdout, files named by the user',
  'serve/server.ts': 'the OpenAI-compatible HTTP server (fastify)',
  'io/hub.ts': 'the Hugging Face Hub downloader (HTTP, cache folders, environment variables)',
  'io/hub_dataset.ts': 'hf://datasets/ files: downloaded through io/hub.ts into the Hub cache (CLI --data)',
  'compare/': 'method comparison runs each method in a child process',
  'tasks/': 'bundled tasks and quickstart locate the package folder on disk (import.meta.url) and write reports',
  'export/': 'export writes folders for other runtimes (transformers.js, GGUF) with Node file handles',
  'train/progress_terminal.ts': 'the terminal progress bar (cli-progress on process.stderr)',
  'train/tfevents.ts': 'TensorBoard event files written with synchronous fsync (CLI --report-to tensorboard)',
  'train/runconfig.ts': 'the CLI --config file reader',
  'train/add_tokens.ts': 'peft add-tokens rewrites tokenizer files through a temp folder',
};

/** Folders that must be clean: no entry of ALLOWED may be in them. */
const CORE = [
  'graph/',
  'autodiff/',
  'onnx/',
  'nn/',
  'models/',
  'tuners/',
  'train/trainer.ts',
  'train/step.ts',
  'train/checkpoint.ts',
  'train/data.ts',
  'train/metrics.ts',
  'generate/',
  'io/tokenizer.ts',
  'io/safetensors',
  'io/hfconfig.ts',
  'io/atomic.ts',
  'io/outdir.ts',
  'quant/',
  'storage/index.ts',
  'storage/memory.ts',
  'runtime/session.ts',
  'runtime/backend.ts',
];

const NODE_BUILTINS = new Set(builtinModules.flatMap((m) => [m, `node:${m}`]));

function tsFiles(dir: string): string[] {
  return readdirSync(dir).flatMap((name) => {
    const p = join(dir, name);
    return statSync(p).isDirectory() ? tsFiles(p) : p.endsWith('.ts') ? [p] : [];
  });
}

/** Module specifiers a file loads at run time (type-only imports are erased, so they do not count). */
export function runtimeImports(source: string): string[] {
  const code = source.replace(/\/\*[\s\S]*?\*\//g, '').replace(/^\s*\/\/.*$/gm, '');
  const out: string[] = [];
  for (const m of code.matchAll(/^\s*(import|export)\s+(type\s+)?([^'";]*?)\s*from\s*['"]([^'"]+)['"]/gm)) {
    if (m[2]) continue; // import type / export type
    const names = m[3] ?? '';
    if (
      /^\{[^}]*\}$/.test(names.trim()) &&
      names
        .replace(/[{}\s]/g, '')
        .split(',')
        .filter(Boolean)
        .every((n) => n.startsWith('type'))
    )
      continue;
    out.push(m[4]!);
  }
  for (const m of code.matchAll(/^\s*import\s*['"]([^'"]+)['"]/gm)) out.push(m[1]!);
  for (const m of code.matchAll(/\b(?:import|require)\(\s*['"]([^'"]+)['"]\s*\)/g)) out.push(m[1]!);
  return out;
}

const isNode = (spec: string): boolean => NODE_BUILTINS.has(spec) || NODE_PACKAGES.some((p) => spec === p || spec.startsWith(`${p}/`));
const allowedBy = (rel: string): string | undefined => Object.keys(ALLOWED).find((k) => (k.endsWith('/') ? rel.startsWith(k) : rel === k));

test('the import scanner sees value imports and skips type-only ones', () => {
  assert.deepEqual(
    runtimeImports(
      "import { readFile } from 'node:fs/promises';\nimport type { Stats } from 'node:fs';\nimport { type A } from 'os';\nconst z = await import('node:zlib');\n// import x from 'path'\n",
    ),
    ['node:fs/promises', 'node:zlib'],
  );
  assert.ok(isNode('fs') && isNode('node:path') && isNode('onnxruntime-node') && !isNode('onnxruntime-web') && !isNode('./fs.js'));
});

test('no module in src/ outside the allow-list imports a Node module', () => {
  const offenders: string[] = [];
  for (const file of tsFiles(SRC)) {
    const rel = relative(SRC, file).split('\\').join('/');
    if (allowedBy(rel)) continue;
    const bad = runtimeImports(readFileSync(file, 'utf8')).filter(isNode);
    if (bad.length) offenders.push(`src/${rel}: ${bad.join(', ')}`);
  }
  assert.deepEqual(
    offenders,
    [],
    `these modules import Node; go through src/storage (files) or src/runtime (ONNX Runtime) instead:\n${offenders.join('\n')}`,
  );
});

test('the allow-list holds no core module', () => {
  const core = Object.keys(ALLOWED).filter((k) => !k.endsWith('/node.ts') && CORE.some((c) => k.startsWith(c) || c.startsWith(k)));
  assert.deepEqual(core, []);
});
