// adapter_config.json as peft writes it: Python's json.dumps(config, indent=2, sort_keys=True),
// byte for byte. Python keeps ints and floats apart (0.0 is written "0.0", 1e-05 as "1e-05"), so
// values that are floats on the Python side are wrapped in PyFloat before serialising.

/** A number Python holds as a float: written with repr(float) rules. */
export class PyFloat {
  constructor(readonly value: number) {}
}

export type PyJson = null | boolean | number | string | PyFloat | PyJson[] | { [key: string]: PyJson };

/** repr(float) of CPython: shortest round-trip digits, scientific below 1e-4 and from 1e16. */
export function pyFloatRepr(x: number): string {
  if (Number.isNaN(x)) return 'NaN';
  if (x === Infinity) return 'Infinity';
  if (x === -Infinity) return '-Infinity';
  if (x === 0) return Object.is(x, -0) ? '-0.0' : '0.0';
  const [mant, expStr] = x.toExponential().split('e') as [string, string];
  const exp = Number(expStr);
  const neg = mant.startsWith('-');
  const digits = mant.replace('-', '').replace('.', '');
  const sign = neg ? '-' : '';
  if (exp < -4 || exp >= 16) {
    const m = digits.length > 1 ? `${digits[0]}.${digits.slice(1)}` : digits;
    const e = Math.abs(exp).toString().padStart(2, '0');
    return `${sign}${m}e${exp < 0 ? '-' : '+'}${e}`;
  }
  if (exp < 0) return `${sign}0.${'0'.repeat(-exp - 1)}${digits}`;
  const intLen = exp + 1;
  if (digits.length <= intLen) return `${sign}${digits}${'0'.repeat(intLen - digits.length)}.0`;
  return `${sign}${digits.slice(0, intLen)}.${digits.slice(intLen)}`;
}

/** json.dumps string escaping with ensure_ascii=True. */
function pyString(s: string): string {
  return JSON.stringify(s).replace(/[\u007f-\uffff]/g, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`);
}

function dump(v: PyJson, indent: number, level: number): string {
  if (v === null) return 'null';
  if (v instanceof PyFloat) return pyFloatRepr(v.value);
  if (typeof v === 'boolean') return v ? 'true' : 'false';
  if (typeof v === 'number') return Number.isInteger(v) ? String(v) : pyFloatRepr(v);
  if (typeof v === 'string') return pyString(v);
  const pad = ' '.repeat(indent * (level + 1));
  const close = ' '.repeat(indent * level);
  if (Array.isArray(v)) {
    if (v.length === 0) return '[]';
    return `[\n${v.map((x) => pad + dump(x, indent, level + 1)).join(',\n')}\n${close}]`;
  }
  const keys = Object.keys(v).sort();
  if (keys.length === 0) return '{}';
  return `{\n${keys.map((k) => `${pad}${pyString(k)}: ${dump(v[k]!, indent, level + 1)}`).join(',\n')}\n${close}}`;
}

/** json.dumps(value, indent=2, sort_keys=True) */
export function pythonJsonDumps(value: PyJson, indent = 2): string {
  return dump(value, indent, 0);
}
