// JSON text exactly as Python's json.dumps(obj, indent=2, sort_keys=True) writes it, which is how
// peft and AdapterHub write their config files: sorted keys, ASCII-only escapes, and floats that
// stay floats ("1.0", "0.0001", "1e-05"), marked here by wrapping them in PyFloat.

import { writeFileAtomic } from './atomic.js';

/** A number Python holds as a float: written with a decimal point or exponent even when integral. */
export class PyFloat {
  constructor(readonly value: number) {}
}

export type PyJson = null | boolean | number | string | PyFloat | PyJson[] | { [key: string]: PyJson };

/** Python's repr() of a float (the shortest round-tripping digits, as CPython's float_repr_style 'short'). */
export function pythonFloatRepr(x: number): string {
  if (Number.isNaN(x)) return 'NaN';
  if (x === Infinity) return 'Infinity';
  if (x === -Infinity) return '-Infinity';
  if (x === 0) return Object.is(x, -0) ? '-0.0' : '0.0';
  // toExponential() without digits gives the shortest round-trip mantissa, as repr does.
  const [mant, expText] = x.toExponential().split('e') as [string, string];
  const exp = Number(expText);
  const neg = mant.startsWith('-');
  const digits = mant.replace('-', '').replace('.', '');
  const sign = neg ? '-' : '';
  if (exp < -4 || exp >= 16) {
    const m = digits.length > 1 ? `${digits[0]}.${digits.slice(1)}` : digits;
    const e = Math.abs(exp) < 10 ? `0${Math.abs(exp)}` : `${Math.abs(exp)}`;
    return `${sign}${m}e${exp < 0 ? '-' : '+'}${e}`;
  }
  if (exp < 0) return `${sign}0.${'0'.repeat(-exp - 1)}${digits}`;
  const intLen = exp + 1;
  if (digits.length <= intLen) return `${sign}${digits}${'0'.repeat(intLen - digits.length)}.0`;
  return `${sign}${digits.slice(0, intLen)}.${digits.slice(intLen)}`;
}

/** A JSON string literal with Python's ensure_ascii escaping. */
function pyString(s: string): string {
  let out = '"';
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    const ch = s[i]!;
    if (ch === '"') out += '\\"';
    else if (ch === '\\') out += '\\\\';
    else if (ch === '\n') out += '\\n';
    else if (ch === '\r') out += '\\r';
    else if (ch === '\t') out += '\\t';
    else if (ch === '\b') out += '\\b';
    else if (ch === '\f') out += '\\f';
    else if (c < 0x20 || c > 0x7e) out += `\\u${c.toString(16).padStart(4, '0')}`;
    else out += ch;
  }
  return out + '"';
}

function compareKeys(a: string, b: string): number {
  // Python sorts str keys by code point; JS's default sort compares UTF-16 units, which agrees
  // except for astral characters, rare enough in config keys to accept.
  return a < b ? -1 : a > b ? 1 : 0;
}

function dump(v: PyJson, indent: string): string {
  if (v === null) return 'null';
  if (v instanceof PyFloat) return pythonFloatRepr(v.value);
  if (typeof v === 'boolean') return v ? 'true' : 'false';
  if (typeof v === 'number') return Number.isInteger(v) ? String(v) : pythonFloatRepr(v);
  if (typeof v === 'string') return pyString(v);
  const inner = indent + '  ';
  if (Array.isArray(v)) {
    if (v.length === 0) return '[]';
    return `[\n${v.map((x) => inner + dump(x, inner)).join(',\n')}\n${indent}]`;
  }
  const keys = Object.keys(v).sort(compareKeys);
  if (keys.length === 0) return '{}';
  return `{\n${keys.map((k) => `${inner}${pyString(k)}: ${dump(v[k]!, inner)}`).join(',\n')}\n${indent}}`;
}

/** json.dumps(value, indent=2, sort_keys=True) */
export function pythonJsonDumps(value: PyJson): string {
  return dump(value, '');
}

export { pythonFloatRepr as pyFloatRepr };

/** Writes `value` as Python's json.dumps(indent=2, sort_keys=True) text, atomically (temp file + rename). */
export async function writePythonJson(path: string, value: PyJson): Promise<void> {
  const bytes = new TextEncoder().encode(pythonJsonDumps(value));
  await writeFileAtomic(path, bytes);
}
