// Chat templates come from the model folder (the Hub): untrusted code. @huggingface/jinja runs them
// with no limits, so `{% for i in range(1000000000) %}` builds a billion-element array and kills the
// process (V8 out of memory). transformers renders templates in jinja2's ImmutableSandboxedEnvironment,
// whose range() refuses more than 100000 items; we render with the library's interpreter, subclassed
// to enforce the same range limit plus bounds on time, on the size of every string and list a
// template builds, and on the widths given to the filters that allocate from them (indent, tojson's
// indent). Crossing one is a ChatTemplateLimitError, never a crash or a hang.

import { Environment, Interpreter, Template } from '@huggingface/jinja';

/** Limits on one rendering; defaults in CHAT_TEMPLATE_LIMITS. */
export interface ChatTemplateLimits {
  /** Most items range() may produce (jinja2's sandbox: 100000). */
  maxRange: number;
  /** Longest string (and longest output) a template may build, in UTF-16 code units. */
  maxChars: number;
  /** Longest list a template may build. */
  maxItems: number;
  /** Wall-clock limit for one rendering, in milliseconds. */
  timeoutMs: number;
  /** Largest width given to indent() or tojson(indent=...). */
  maxIndent: number;
  /** Longest template source accepted, in characters. */
  maxSourceChars: number;
}

export const CHAT_TEMPLATE_LIMITS: Readonly<ChatTemplateLimits> = Object.freeze({
  maxRange: 100_000,
  maxChars: 16_000_000,
  maxItems: 1_000_000,
  timeoutMs: 5_000,
  maxIndent: 256,
  maxSourceChars: 1_000_000,
});

/** A limit was crossed; `limit` names it. The caller wraps it into a ChatTemplateError. */
export class TemplateLimitExceeded extends Error {
  readonly limit: keyof ChatTemplateLimits;
  constructor(limit: keyof ChatTemplateLimits, message: string) {
    super(message);
    this.name = 'TemplateLimitExceeded';
    this.limit = limit;
  }
}

// jinja2's strftime_now global as @huggingface/jinja defines it (its helper is not exported).
function strftimeNow(format: string): string {
  const d = new Date();
  const pad2 = (n: number) => (n < 10 ? `0${n}` : String(n));
  return String(format).replace(/%[YmdbBHM%]/g, (t) => {
    switch (t) {
      case '%Y':
        return String(d.getFullYear());
      case '%m':
        return pad2(d.getMonth() + 1);
      case '%d':
        return pad2(d.getDate());
      case '%b':
        return new Intl.DateTimeFormat(undefined, { month: 'short' }).format(d);
      case '%B':
        return new Intl.DateTimeFormat(undefined, { month: 'long' }).format(d);
      case '%H':
        return pad2(d.getHours());
      case '%M':
        return pad2(d.getMinutes());
      default:
        return '%';
    }
  });
}

// The package's typings import "./runtime" without an extension, which this project's module
// resolution cannot follow, so the few members used here are declared by hand.
interface RuntimeValue {
  type: string;
  value: unknown;
}
interface Env {
  set(name: string, value: unknown): unknown;
}
interface InterpreterLike {
  run(program: unknown): RuntimeValue;
  evaluate(statement: unknown, environment: Env): RuntimeValue;
}
const InterpreterBase = Interpreter as unknown as new (env: Env) => InterpreterLike;
const EnvironmentClass = Environment as unknown as new () => Env;
type Node = unknown;
type Environment = Env;
interface Internals {
  applyFilter(operand: RuntimeValue, filterNode: unknown, env: Environment): RuntimeValue;
  evaluateArguments(args: unknown[], env: Environment): [RuntimeValue[], Map<string, RuntimeValue>];
}
const WIDTH_FILTERS = new Set(['indent', 'tojson']);

class GuardedInterpreter extends InterpreterBase {
  private steps = 0;
  private readonly deadline: number;
  private readonly filters: string[] = [];

  constructor(
    env: Environment,
    private readonly limits: ChatTemplateLimits,
  ) {
    super(env);
    this.deadline = Date.now() + limits.timeoutMs;
    // applyFilter and evaluateArguments are private in the library's typings; wrap them on the instance.
    const self = this as unknown as Internals;
    const proto = Interpreter.prototype as unknown as Internals;
    self.applyFilter = (operand, filterNode, e) => {
      const f = filterNode as { type?: string; value?: unknown; callee?: { value?: unknown } };
      const name = f.type === 'Identifier' ? f.value : f.callee?.value;
      this.filters.push(typeof name === 'string' ? name : '');
      try {
        return proto.applyFilter.call(this, operand, filterNode, e);
      } finally {
        this.filters.pop();
      }
    };
    self.evaluateArguments = (args, e) => {
      const current = this.filters[this.filters.length - 1];
      const out = proto.evaluateArguments.call(this, args, e);
      if (current !== undefined && WIDTH_FILTERS.has(current)) {
        for (const v of [...out[0], ...out[1].values()]) {
          if (v.type === 'IntegerValue' && Math.abs(v.value as number) > this.limits.maxIndent) {
            throw new TemplateLimitExceeded(
              'maxIndent',
              `${current}() was given ${v.value as number}, above the limit of ${this.limits.maxIndent}`,
            );
          }
        }
      }
      return out;
    };
  }

  override evaluate(statement: Node, environment: Environment): RuntimeValue {
    if ((++this.steps & 255) === 0 && Date.now() > this.deadline) {
      throw new TemplateLimitExceeded('timeoutMs', `rendering took longer than ${this.limits.timeoutMs} ms`);
    }
    const v = super.evaluate(statement, environment);
    if (v.type === 'StringValue' && (v.value as string).length > this.limits.maxChars) {
      throw new TemplateLimitExceeded(
        'maxChars',
        `the template built a string of ${(v.value as string).length} characters, above the limit of ${this.limits.maxChars}`,
      );
    }
    if (v.type === 'ArrayValue' && (v.value as unknown[]).length > this.limits.maxItems) {
      throw new TemplateLimitExceeded(
        'maxItems',
        `the template built a list of ${(v.value as unknown[]).length} items, above the limit of ${this.limits.maxItems}`,
      );
    }
    return v;
  }
}

/** Parses a template, refusing sources above the size limit. Parse errors propagate as the library throws them. */
export function compileChatTemplate(source: string, limits: ChatTemplateLimits = CHAT_TEMPLATE_LIMITS): Template {
  if (source.length > limits.maxSourceChars) {
    throw new TemplateLimitExceeded(
      'maxSourceChars',
      `the template is ${source.length} characters long, above the limit of ${limits.maxSourceChars}`,
    );
  }
  return new Template(source);
}

/** Renders `template` with the variables in `context`, within `limits` (the globals of Template.render). */
export function renderChatTemplate(
  template: Template,
  context: Record<string, unknown>,
  limits: ChatTemplateLimits = CHAT_TEMPLATE_LIMITS,
): string {
  const env = new EnvironmentClass();
  env.set('false', false);
  env.set('true', true);
  env.set('none', null);
  env.set('False', false);
  env.set('True', true);
  env.set('None', null);
  env.set('raise_exception', (message: unknown) => {
    throw new Error(String(message));
  });
  env.set('strftime_now', strftimeNow);
  env.set('range', (start: number, stop?: number, step = 1) => {
    if (stop === undefined) {
      stop = start;
      start = 0;
    }
    for (const x of [start, stop, step])
      if (typeof x !== 'number' || !Number.isFinite(x)) throw new Error(`range() needs numbers, got ${String(x)}`);
    if (step === 0) throw new Error('range() step must not be zero');
    const n = Math.max(0, Math.ceil((stop - start) / step));
    if (n > limits.maxRange) {
      throw new TemplateLimitExceeded(
        'maxRange',
        `range() of ${n} items is above the limit of ${limits.maxRange} (as in transformers' sandbox)`,
      );
    }
    return Array.from({ length: n }, (_, i) => start + i * step);
  });
  for (const [key, value] of Object.entries(context)) env.set(key, value);
  const result = new GuardedInterpreter(env, limits).run((template as unknown as { parsed: unknown }).parsed);
  const out = result.value;
  if (typeof out !== 'string') return String(out);
  return out;
}
