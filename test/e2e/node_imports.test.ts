// The browser build's contract, checked two ways:
// 1. Nothing in src/ outside src/runtime/ and src/storage/ imports a Node built-in module (node:*,
//    fs, path, ...): not the library, not the CLI, not the server. Files go through src/storage,
//    processes, machine facts and ONNX Runtime through src/runtime. There is no allow-list.
//    (eslint.config.js's no-restricted-imports says the same for static imports.)
// 2. Nothing the browser bundle reaches (src/browser/index.ts and the page's worker, with the
//    browser versions of storage/ and runtime/ swapped in as scripts/build_browser.mjs does)
//    imports a Node built-in or a Node-only npm package (onnxruntime-node, commander, fastify,
//    cli-progress: the CLI and the server may use those, the library may not).

import { strict as assert } from 'node:assert';
import { existsSync, readFileSync, readdirSync, statSync } from 'node:fs';
import { builtinModules } from 'node:module';
import { dirname, join, relative } from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';

const ROOT = fileURLToPath(new URL('../../../', import.meta.url));
const SRC = join(ROOT, 'src');

/** npm packages that only run on Node. */
const NODE_PACKAGES = ['onnxruntime-node', 'cli-progress', 'fastify', 'commander'];

/** The only folders (relative to src/) whose modules may import Node built-ins. */
const HOST_FOLDERS = ['runtime/', 'storage/'];

/** Entry points of the browser bundle (scripts/build_browser.mjs). */
const BROWSER_ENTRIES = [join(ROOT, 'src/browser/index.ts'), join(ROOT, 'examples/browser/worker.ts')];

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

const isBuiltin = (spec: string): boolean => NODE_BUILTINS.has(spec) || spec.startsWith('node:');
const isNodePackage = (spec: string): boolean => NODE_PACKAGES.some((p) => spec === p || spec.startsWith(`${p}/`));

/** The .ts file a relative specifier names from `file`, as the browser bundle resolves it. */
function resolveForBrowser(file: string, spec: string): string {
  const dir = dirname(file);
  const rel = relative(SRC, dir).split('\\').join('/');
  if (spec === './node.js' && rel === 'storage') return join(dir, 'browser.ts');
  if (spec === './node.js' && rel === 'runtime') return join(dir, 'web.ts');
  const ts = join(dir, spec.replace(/\.js$/, '.ts'));
  if (existsSync(ts)) return ts;
  return join(dir, spec, 'index.ts');
}

test('the import scanner sees value imports and skips type-only ones', () => {
  assert.deepEqual(
    runtimeImports(
      "import { readFile } from 'node:fs/promises';\nimport type { Stats } from 'node:fs';\nimport { type A } from 'os';\nconst z = await import('node:zlib');\n// import x from 'path'\n",
    ),
    ['node:fs/promises', 'node:zlib'],
  );
  assert.ok(isBuiltin('fs') && isBuiltin('node:path') && isBuiltin('node:test') && !isBuiltin('./fs.js') && !isBuiltin('fastify'));
  assert.ok(isNodePackage('onnxruntime-node') && isNodePackage('commander') && !isNodePackage('onnxruntime-web'));
});

test('no module in src/ outside runtime/ and storage/ imports a Node built-in', () => {
  const offenders: string[] = [];
  for (const file of tsFiles(SRC)) {
    const rel = relative(SRC, file).split('\\').join('/');
    if (HOST_FOLDERS.some((f) => rel.startsWith(f))) continue;
    const bad = runtimeImports(readFileSync(file, 'utf8')).filter(isBuiltin);
    if (bad.length) offenders.push(`src/${rel}: ${bad.join(', ')}`);
  }
  assert.deepEqual(
    offenders,
    [],
    `these modules import Node; go through src/storage (files, paths, temp folders) or src/runtime (ONNX Runtime, src/runtime/node/ for processes and machine facts) instead:\n${offenders.join('\n')}`,
  );
});

test('the browser bundle reaches no Node built-in and no Node-only package', () => {
  const seen = new Set<string>();
  const offenders: string[] = [];
  const todo = [...BROWSER_ENTRIES];
  while (todo.length) {
    const file = todo.pop()!;
    if (seen.has(file)) continue;
    seen.add(file);
    assert.ok(existsSync(file), `the browser bundle imports ${relative(ROOT, file)}, which does not exist`);
    for (const spec of runtimeImports(readFileSync(file, 'utf8'))) {
      if (spec.startsWith('.')) todo.push(resolveForBrowser(file, spec));
      else if (isBuiltin(spec) || isNodePackage(spec)) offenders.push(`${relative(ROOT, file)}: ${spec}`);
    }
  }
  // the walk must have gone through the core, or it proves nothing
  const reached = [...seen].map((f) => relative(SRC, f).split('\\').join('/'));
  for (const core of ['train/trainer.ts', 'tuners/registry.ts', 'io/safetensors.ts', 'storage/browser.ts', 'runtime/web.ts'])
    assert.ok(reached.includes(core), `the browser bundle should reach src/${core}`);
  assert.ok(!reached.includes('storage/node.ts') && !reached.includes('runtime/node.ts'));
  assert.deepEqual(offenders, [], `the browser bundle would pull in Node:\n${offenders.join('\n')}`);
});
