// Lists the exports of src/ that nothing outside their own file imports (src/, test/, bench/,
// scripts/, examples/): an export is a promise that someone else uses the name, so one without a
// user should be a plain declaration. Read with the TypeScript parser, no type checking, so it runs in
// about a second. What counts as a use: a named or default import, `export ... from` (a re-export),
// `ns.name` through `import * as ns`, and `import('...').Name` in a type. Kept exported regardless:
// the package entry points (src/index.ts, src/browser/index.ts: the public API), and a type that a
// kept export of the same file names (it is part of that export's signature, so users can name it).
// `node dist/scripts/dead_exports.js` prints one `file: name` line each; test/scripts/dead_exports.test.ts
// fails while there is any.

import { readFileSync, readdirSync, statSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import ts from 'typescript';

/** Files whose exports are the package's public API. */
export const ENTRY_POINTS = ['src/index.ts', 'src/browser/index.ts'];
const ROOTS = ['src', 'test', 'bench', 'scripts', 'examples'];
/** Modules the browser bundle puts in place of another (scripts/build_browser.mjs): they serve that module's importers. */
const SUBSTITUTES: Readonly<Record<string, string>> = {
  'src/storage/browser.ts': 'src/storage/node.ts',
  'src/runtime/web.ts': 'src/runtime/node.ts',
};
const SKIP_DIRS = new Set(['node_modules', 'dist', 'fixtures', 'dist-browser']);

interface ExportDecl {
  name: string;
  /** a type-like declaration (interface, type alias, class, enum): kept when a kept export names it */
  typeLike: boolean;
  /** the text whose identifiers are this export's public surface */
  surface: ts.Node[];
}

function listFiles(dir: string, out: string[]): void {
  for (const e of readdirSync(dir)) {
    if (SKIP_DIRS.has(e)) continue;
    const p = join(dir, e);
    const st = statSync(p);
    if (st.isDirectory()) listFiles(p, out);
    else if (/\.(ts|mts|mjs|js)$/.test(e) && !e.endsWith('.d.ts')) out.push(p);
  }
}

const hasExport = (n: ts.Node): boolean =>
  ts.canHaveModifiers(n) && (ts.getModifiers(n) ?? []).some((m) => m.kind === ts.SyntaxKind.ExportKeyword);

/** What a function or method exposes: its type parameters, parameters and return type, not its body. */
function signatureNodes(n: ts.SignatureDeclaration): ts.Node[] {
  return [...(n.typeParameters ?? []), ...n.parameters, ...(n.type ? [n.type] : [])];
}

function classSurface(c: ts.ClassDeclaration): ts.Node[] {
  const out: ts.Node[] = [...(c.typeParameters ?? []), ...(c.heritageClauses ?? [])];
  for (const m of c.members) {
    const mods = ts.canHaveModifiers(m) ? (ts.getModifiers(m) ?? []) : [];
    if (mods.some((x) => x.kind === ts.SyntaxKind.PrivateKeyword)) continue;
    if (ts.isPropertyDeclaration(m)) out.push(...(m.type ? [m.type] : m.initializer ? [m.initializer] : []));
    else if (ts.isMethodDeclaration(m) || ts.isConstructorDeclaration(m) || ts.isGetAccessor(m) || ts.isSetAccessor(m))
      out.push(...signatureNodes(m));
  }
  return out;
}

function exportsOf(sf: ts.SourceFile): ExportDecl[] {
  const out: ExportDecl[] = [];
  for (const st of sf.statements) {
    if (ts.isExportDeclaration(st)) {
      if (st.exportClause && ts.isNamedExports(st.exportClause))
        for (const e of st.exportClause.elements) out.push({ name: e.name.text, typeLike: false, surface: [] });
      continue;
    }
    if (ts.isExportAssignment(st)) {
      out.push({ name: 'default', typeLike: false, surface: [st.expression] });
      continue;
    }
    if (!hasExport(st)) continue;
    if (ts.isFunctionDeclaration(st) && st.name) out.push({ name: st.name.text, typeLike: false, surface: signatureNodes(st) });
    else if (ts.isClassDeclaration(st) && st.name) out.push({ name: st.name.text, typeLike: true, surface: classSurface(st) });
    else if (ts.isInterfaceDeclaration(st) || ts.isTypeAliasDeclaration(st) || ts.isEnumDeclaration(st))
      out.push({ name: st.name.text, typeLike: true, surface: [st] });
    else if (ts.isVariableStatement(st)) {
      for (const d of st.declarationList.declarations)
        if (ts.isIdentifier(d.name)) out.push({ name: d.name.text, typeLike: false, surface: [d.type ?? d.initializer ?? d] });
    }
  }
  return out;
}

function identifiersIn(nodes: ts.Node[]): Set<string> {
  const out = new Set<string>();
  const visit = (n: ts.Node): void => {
    if (ts.isIdentifier(n)) out.add(n.text);
    // a function's body is not its signature
    if ((ts.isArrowFunction(n) || ts.isFunctionExpression(n) || ts.isMethodDeclaration(n)) && n.body) {
      for (const s of signatureNodes(n)) visit(s);
      return;
    }
    ts.forEachChild(n, visit);
  };
  for (const n of nodes) visit(n);
  return out;
}

/** The repository file a relative module specifier names (dist/*.js back to its source), or null. */
function resolveSpecifier(root: string, from: string, spec: string, known: ReadonlySet<string>): string | null {
  if (!spec.startsWith('.')) return null;
  let p = resolve(dirname(from), spec);
  const rel = relative(root, p);
  if (rel.startsWith(`dist/`)) p = join(root, rel.slice('dist/'.length));
  for (const cand of [p.replace(/\.js$/, '.ts'), p.replace(/\.mjs$/, '.mts'), p, `${p}.ts`, join(p, 'index.ts')])
    if (known.has(cand)) return cand;
  return null;
}

/** The exports of src/ that nothing outside their file uses, as `src/...: name`, sorted. */
export function findDeadExports(root = process.cwd()): string[] {
  root = resolve(root);
  const files: string[] = [];
  for (const r of ROOTS) {
    try {
      listFiles(join(root, r), files);
    } catch {
      // a root that does not exist holds no users
    }
  }
  const known = new Set(files);
  const parsed = new Map<string, ts.SourceFile>();
  for (const f of files) parsed.set(f, ts.createSourceFile(f, readFileSync(f, 'utf8'), ts.ScriptTarget.ES2022, true));
  const used = new Map<string, Set<string>>();
  const all = new Set<string>();
  const use = (file: string, name: string): void => {
    if (!used.has(file)) used.set(file, new Set());
    used.get(file)!.add(name);
  };
  for (const [f, sf] of parsed) {
    const namespaces = new Map<string, string>();
    const visit = (n: ts.Node): void => {
      if ((ts.isImportDeclaration(n) || ts.isExportDeclaration(n)) && n.moduleSpecifier && ts.isStringLiteral(n.moduleSpecifier)) {
        const target = resolveSpecifier(root, f, n.moduleSpecifier.text, known);
        if (target && target !== f) {
          if (ts.isImportDeclaration(n)) {
            const c = n.importClause;
            if (c?.name) use(target, 'default');
            const b = c?.namedBindings;
            if (b && ts.isNamespaceImport(b)) namespaces.set(b.name.text, target);
            else if (b) for (const e of (b as ts.NamedImports).elements) use(target, (e.propertyName ?? e.name).text);
          } else if (!n.exportClause) all.add(target);
          else if (ts.isNamespaceExport(n.exportClause)) all.add(target);
          else for (const e of n.exportClause.elements) use(target, (e.propertyName ?? e.name).text);
        }
      } else if (ts.isImportTypeNode(n) && ts.isLiteralTypeNode(n.argument) && ts.isStringLiteral(n.argument.literal)) {
        const target = resolveSpecifier(root, f, n.argument.literal.text, known);
        if (target && target !== f) {
          if (n.qualifier) use(target, ts.isIdentifier(n.qualifier) ? n.qualifier.text : n.qualifier.left.getText());
          else all.add(target);
        }
      } else if (ts.isCallExpression(n) && n.expression.kind === ts.SyntaxKind.ImportKeyword) {
        const arg = n.arguments[0];
        const target = arg && ts.isStringLiteral(arg) ? resolveSpecifier(root, f, arg.text, known) : null;
        if (target && target !== f) all.add(target); // a dynamic import may take any name
      }
      ts.forEachChild(n, visit);
    };
    visit(sf);
    if (namespaces.size) {
      const visitNs = (n: ts.Node): void => {
        if (ts.isIdentifier(n) && namespaces.has(n.text) && !ts.isNamespaceImport(n.parent)) {
          const target = namespaces.get(n.text)!;
          const p = n.parent;
          if ((ts.isPropertyAccessExpression(p) && p.expression === n) || (ts.isQualifiedName(p) && p.left === n))
            use(target, ts.isPropertyAccessExpression(p) ? p.name.text : p.right.text);
          else all.add(target); // the namespace object itself escapes
        }
        ts.forEachChild(n, visitNs);
      };
      visitNs(sf);
    }
  }
  const dead: string[] = [];
  const entries = new Set(ENTRY_POINTS.map((e) => join(root, e)));
  for (const [f, sf] of parsed) {
    const rel = relative(root, f);
    if (!rel.startsWith('src/') || entries.has(f) || all.has(f)) continue;
    const decls = exportsOf(sf);
    const users = used.get(SUBSTITUTES[rel] ? join(root, SUBSTITUTES[rel]) : f);
    const live = new Set(decls.filter((d) => users?.has(d.name)).map((d) => d.name));
    // a type named by a kept export's surface is kept too (to a fixed point)
    for (let changed = true; changed;) {
      changed = false;
      const named = identifiersIn(decls.filter((d) => live.has(d.name)).flatMap((d) => d.surface));
      for (const d of decls) {
        if (!live.has(d.name) && d.typeLike && named.has(d.name)) {
          live.add(d.name);
          changed = true;
        }
      }
    }
    for (const d of decls) if (!live.has(d.name)) dead.push(`${rel}: ${d.name}`);
  }
  return dead.sort();
}

if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const dead = findDeadExports();
  for (const d of dead) console.log(d);
  console.error(`${dead.length} export${dead.length === 1 ? '' : 's'} without a user outside their file`);
  process.exitCode = dead.length ? 1 : 0;
}
