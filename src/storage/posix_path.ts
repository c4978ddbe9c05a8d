// POSIX path arithmetic without node:path, for storages that are not the Node file system. Same
// results as node:path.posix for the calls the library makes; the working directory is `cwd`.

import type { PathFunctions } from './types.js';

function normalizeParts(p: string): { abs: boolean; parts: string[] } {
  const abs = p.startsWith('/');
  const parts: string[] = [];
  for (const s of p.split('/')) {
    if (s === '' || s === '.') continue;
    if (s === '..') {
      if (parts.length && parts[parts.length - 1] !== '..') parts.pop();
      else if (!abs) parts.push('..');
    } else parts.push(s);
  }
  return { abs, parts };
}

export function posixPath(cwd = '/'): PathFunctions {
  const normalize = (p: string): string => {
    if (p === '') return '.';
    const { abs, parts } = normalizeParts(p);
    const trailing = p.endsWith('/') && parts.length > 0 ? '/' : '';
    const body = parts.join('/');
    return abs ? `/${body}${body ? trailing : ''}` : (body || '.') + (body ? trailing : '');
  };
  const resolve = (...ps: string[]): string => {
    let acc = '';
    for (let i = ps.length - 1; i >= 0 && !acc.startsWith('/'); i--) if (ps[i]) acc = acc ? `${ps[i]}/${acc}` : ps[i]!;
    if (!acc.startsWith('/')) acc = `${cwd}/${acc}`;
    const { parts } = normalizeParts(acc);
    return `/${parts.join('/')}`;
  };
  const dirname = (p: string): string => {
    if (p === '') return '.';
    const trimmed = p.replace(/\/+$/, '');
    if (trimmed === '') return '/';
    const i = trimmed.lastIndexOf('/');
    if (i < 0) return '.';
    if (i === 0) return '/';
    return trimmed.slice(0, i).replace(/\/+$/, '') || '/';
  };
  const basename = (p: string, ext?: string): string => {
    const trimmed = p.replace(/\/+$/, '');
    const b = trimmed.slice(trimmed.lastIndexOf('/') + 1);
    return ext && b.endsWith(ext) && b !== ext ? b.slice(0, -ext.length) : b;
  };
  const extname = (p: string): string => {
    const b = basename(p);
    const i = b.lastIndexOf('.');
    return i <= 0 ? '' : b.slice(i);
  };
  const relative = (from: string, to: string): string => {
    const a = resolve(from).split('/').filter(Boolean);
    const b = resolve(to).split('/').filter(Boolean);
    let i = 0;
    while (i < a.length && i < b.length && a[i] === b[i]) i++;
    return [...a.slice(i).map(() => '..'), ...b.slice(i)].join('/');
  };
  return {
    sep: '/',
    join: (...parts) => normalize(parts.filter((x) => x !== '').join('/')),
    resolve,
    normalize,
    dirname,
    basename,
    extname,
    isAbsolute: (p) => p.startsWith('/'),
    relative,
  };
}
