// config.json as transformers writes it (json.dumps(indent=2, sort_keys=True)), keeping every number
// of the original file exactly as it was spelled: the file is parsed with its number tokens kept as
// text, so adding quantization_config does not turn 10000.0 into 10000 or 1e-05 into 0.00001.

import { QuantizationError } from './errors.js';

/** A number held as its JSON spelling. */
export class RawNumber {
  constructor(readonly text: string) {}
}

export type RawJson = null | boolean | string | RawNumber | RawJson[] | { [key: string]: RawJson };

/** Parses JSON text, keeping numbers as their source text (strict JSON; throws on anything else). */
export function parseRawJson(text: string, file = 'config.json'): RawJson {
  let i = 0;
  const fail = (what: string): never => {
    throw new QuantizationError(`${file} is not valid JSON (${what} at character ${i}); fix or re-download it`);
  };
  const ws = (): void => {
    while (i < text.length && ' \t\n\r'.includes(text[i]!)) i++;
  };
  const value = (): RawJson => {
    ws();
    const c = text[i];
    if (c === '{') {
      i++;
      const obj: { [key: string]: RawJson } = {};
      ws();
      if (text[i] === '}') {
        i++;
        return obj;
      }
      for (;;) {
        ws();
        if (text[i] !== '"') fail('expected a key');
        const k = str();
        ws();
        if (text[i++] !== ':') fail('expected ":"');
        obj[k] = value();
        ws();
        const d = text[i++];
        if (d === '}') return obj;
        if (d !== ',') fail('expected "," or "}"');
      }
    }
    if (c === '[') {
      i++;
      const arr: RawJson[] = [];
      ws();
      if (text[i] === ']') {
        i++;
        return arr;
      }
      for (;;) {
        arr.push(value());
        ws();
        const d = text[i++];
        if (d === ']') return arr;
        if (d !== ',') fail('expected "," or "]"');
      }
    }
    if (c === '"') return str();
    for (const [lit, v] of [
      ['true', true],
      ['false', false],
      ['null', null],
      ['NaN', new RawNumber('NaN')],
      ['Infinity', new RawNumber('Infinity')],
      ['-Infinity', new RawNumber('-Infinity')],
    ] as const) {
      if (text.startsWith(lit, i)) {
        i += lit.length;
        return v;
      }
    }
    const m = /^-?(0|[1-9]\d*)(\.\d+)?([eE][+-]?\d+)?/.exec(text.slice(i, i + 64));
    if (!m) return fail('unexpected token');
    i += m[0].length;
    return new RawNumber(m[0]);
  };
  const str = (): string => {
    const start = i;
    i++;
    while (i < text.length && text[i] !== '"') i += text[i] === '\\' ? 2 : 1;
    if (i >= text.length) fail('unterminated string');
    i++;
    return JSON.parse(text.slice(start, i)) as string;
  };
  const v = value();
  ws();
  if (i !== text.length) fail('trailing characters');
  return v;
}

/** json.dumps string escaping with ensure_ascii=True. */
function pyString(s: string): string {
  return JSON.stringify(s).replace(/[\u007f-\uffff]/g, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`);
}

/** json.dumps(value, indent=2, sort_keys=True) over parsed raw JSON. */
export function dumpRawJson(v: RawJson, indent = 2, level = 0): string {
  if (v === null) return 'null';
  if (v instanceof RawNumber) return v.text;
  if (typeof v === 'boolean') return v ? 'true' : 'false';
  if (typeof v === 'string') return pyString(v);
  const pad = ' '.repeat(indent * (level + 1));
  const close = ' '.repeat(indent * level);
  if (Array.isArray(v)) {
    if (v.length === 0) return '[]';
    return `[\n${v.map((x) => pad + dumpRawJson(x, indent, level + 1)).join(',\n')}\n${close}]`;
  }
  const keys = Object.keys(v).sort();
  if (keys.length === 0) return '{}';
  return `{\n${keys.map((k) => `${pad}${pyString(k)}: ${dumpRawJson(v[k]!, indent, level + 1)}`).join(',\n')}\n${close}}`;
}

export { pyFloatRepr } from '../io/pyjson.js';
