// PyTorch checkpoint files (torch.save's zip format: `<archive>/data.pkl` + `<archive>/data/<key>`
// storages), as peft writes adapter_model.bin, read WITHOUT executing anything: a restricted
// unpickler that knows only the opcodes torch.save emits, builds plain containers (dict /
// OrderedDict / list / tuple) and tensors (torch._utils._rebuild_tensor_v2 / _rebuild_parameter over
// storages of the usual dtypes), and refuses every other global with a typed error naming it.
// Memory is bounded by the file: every length, storage size, offset and stride is checked against
// the zip entries before a byte is copied, and the pickle itself may hold at most MAX_PICKLE_BYTES.

import { host, readFile, stat } from '../storage/index.js';
import { PeftError } from '../errors.js';
import type { RawTensor, SafetensorsDtype } from './safetensors/dtype.js';
import { DTYPE_BYTES } from './safetensors/dtype.js';

/** A .bin file that is malformed, or holds something other than tensors in plain containers. */
export class TorchBinError extends PeftError {
  constructor(
    readonly file: string,
    detail: string,
  ) {
    super(`${file}: ${detail}`);
    this.name = 'TorchBinError';
  }
}

/** The pickle may not be larger than this (adapter state dicts are a few kB of pickle). */
const MAX_PICKLE_BYTES = 64 << 20;
/** Largest .bin file read (the whole file is held in memory once). */
const MAX_BIN_BYTES = 8 * 2 ** 30;

// ---- zip ----------------------------------------------------------------------------------------

interface ZipEntry {
  name: string;
  method: number;
  compressedSize: number;
  size: number;
  localOffset: number;
}

function readZip(buf: Buffer, fail: (m: string) => never): Map<string, ZipEntry> {
  const min = Math.max(0, buf.length - 22 - 65535);
  let eocd = -1;
  for (let i = buf.length - 22; i >= min; i--) {
    if (buf.readUInt32LE(i) === 0x06054b50) {
      eocd = i;
      break;
    }
  }
  if (eocd < 0)
    fail(
      'not a zip archive (no end-of-central-directory record); legacy (pre-1.6) torch.save files are not read, re-save with torch >= 1.6 or as safetensors',
    );
  let count = buf.readUInt16LE(eocd + 10);
  let cdSize = buf.readUInt32LE(eocd + 12);
  let cdOffset = buf.readUInt32LE(eocd + 16);
  // zip64: locator right before the EOCD
  if ((cdOffset === 0xffffffff || count === 0xffff || cdSize === 0xffffffff) && eocd >= 20 && buf.readUInt32LE(eocd - 20) === 0x07064b50) {
    const z = Number(buf.readBigUInt64LE(eocd - 20 + 8));
    if (!(z >= 0 && z + 56 <= buf.length) || buf.readUInt32LE(z) !== 0x06064b50) fail('damaged zip64 end-of-central-directory record');
    count = Number(buf.readBigUInt64LE(z + 32));
    cdSize = Number(buf.readBigUInt64LE(z + 40));
    cdOffset = Number(buf.readBigUInt64LE(z + 48));
  }
  if (cdOffset + cdSize > buf.length || count > cdSize / 46) fail('damaged zip central directory');
  const entries = new Map<string, ZipEntry>();
  let p = cdOffset;
  for (let k = 0; k < count; k++) {
    if (p + 46 > cdOffset + cdSize || buf.readUInt32LE(p) !== 0x02014b50) fail('damaged zip central directory entry');
    const method = buf.readUInt16LE(p + 10);
    let compressedSize = buf.readUInt32LE(p + 20);
    let size = buf.readUInt32LE(p + 24);
    const nameLen = buf.readUInt16LE(p + 28);
    const extraLen = buf.readUInt16LE(p + 30);
    const commentLen = buf.readUInt16LE(p + 32);
    let localOffset = buf.readUInt32LE(p + 42);
    if (p + 46 + nameLen + extraLen + commentLen > cdOffset + cdSize) fail('damaged zip central directory entry');
    const name = buf.toString('utf8', p + 46, p + 46 + nameLen);
    // zip64 extra field: the 0xffffffff fields, in order size, compressed size, offset
    let e = p + 46 + nameLen;
    const eEnd = e + extraLen;
    while (e + 4 <= eEnd) {
      const id = buf.readUInt16LE(e);
      const len = buf.readUInt16LE(e + 2);
      if (e + 4 + len > eEnd) fail(`damaged zip extra field of ${name}`);
      if (id === 0x0001) {
        let q = e + 4;
        const next = (): number => {
          if (q + 8 > e + 4 + len) fail(`damaged zip64 field of ${name}`);
          const v = Number(buf.readBigUInt64LE(q));
          q += 8;
          return v;
        };
        if (size === 0xffffffff) size = next();
        if (compressedSize === 0xffffffff) compressedSize = next();
        if (localOffset === 0xffffffff) localOffset = next();
      }
      e += 4 + len;
    }
    if (entries.has(name)) fail(`zip entry ${name} appears twice`);
    entries.set(name, { name, method, compressedSize, size, localOffset });
    p += 46 + nameLen + extraLen + commentLen;
  }
  return entries;
}

function entryData(buf: Buffer, e: ZipEntry, fail: (m: string) => never): Buffer {
  const h = e.localOffset;
  if (h + 30 > buf.length || buf.readUInt32LE(h) !== 0x04034b50) fail(`damaged local header of zip entry ${e.name}`);
  const start = h + 30 + buf.readUInt16LE(h + 26) + buf.readUInt16LE(h + 28);
  if (start + e.compressedSize > buf.length) fail(`zip entry ${e.name} runs past the end of the file (truncated?)`);
  const raw = buf.subarray(start, start + e.compressedSize);
  if (e.method === 0) {
    if (e.size !== e.compressedSize) fail(`stored zip entry ${e.name} has two sizes`);
    return raw;
  }
  if (e.method === 8) {
    try {
      const inflated = host.inflateRaw(raw, Math.max(1, e.size));
      const out = Buffer.from(inflated.buffer, inflated.byteOffset, inflated.byteLength);
      if (out.length !== e.size) fail(`zip entry ${e.name} inflates to ${out.length} bytes, not ${e.size}`);
      return out;
    } catch (err) {
      if (err instanceof TorchBinError) throw err;
      fail(`zip entry ${e.name} does not inflate: ${(err as Error).message}`);
    }
  }
  fail(`zip entry ${e.name} uses compression method ${e.method}; only stored and deflate entries are read`);
}

// ---- pickle -------------------------------------------------------------------------------------

const STORAGE_DTYPES: Readonly<Record<string, SafetensorsDtype>> = {
  FloatStorage: 'F32',
  HalfStorage: 'F16',
  BFloat16Storage: 'BF16',
  DoubleStorage: 'F64',
  LongStorage: 'I64',
  IntStorage: 'I32',
  CharStorage: 'I8',
  ByteStorage: 'U8',
  BoolStorage: 'BOOL',
};

class Global {
  constructor(
    readonly module: string,
    readonly name: string,
  ) {}
  get full(): string {
    return `${this.module}.${this.name}`;
  }
}
const MARK = Symbol('mark');
class Storage {
  constructor(
    readonly dtype: SafetensorsDtype,
    readonly key: string,
    readonly numel: number,
  ) {}
}
/** A tensor read from the file (already copied out of its storage, row-major). */
class PickledTensor {
  constructor(readonly tensor: RawTensor) {}
}
type Obj =
  null | boolean | number | bigint | string | Uint8Array | Obj[] | Tuple | Map<Obj, Obj> | Global | Storage | PickledTensor | typeof MARK;
class Tuple {
  constructor(readonly items: Obj[]) {}
}

const ALLOWED_GLOBALS = new Set([
  'collections.OrderedDict',
  'torch._utils._rebuild_tensor_v2',
  'torch._utils._rebuild_parameter',
  ...Object.keys(STORAGE_DTYPES).map((s) => `torch.${s}`),
]);

interface UnpickleContext {
  fail: (m: string) => never;
  storage: (key: string, dtype: SafetensorsDtype, numel: number) => Uint8Array;
  /** called with each tensor's byte size before it is allocated (the total is bounded) */
  reserve: (bytes: number) => void;
}

function unpickle(data: Uint8Array, ctx: UnpickleContext): Obj {
  const fail: (m: string) => never = ctx.fail;
  const dv = new DataView(data.buffer, data.byteOffset, data.byteLength);
  let pos = 0;
  const stack: Obj[] = [];
  const memo = new Map<number, Obj>();
  const need = (n: number) => {
    if (!(n >= 0) || pos + n > data.length) fail('the pickle ends early (truncated or damaged data.pkl)');
  };
  const u8 = () => (need(1), data[pos++]!);
  const u16 = () => (need(2), (pos += 2), dv.getUint16(pos - 2, true));
  const u32 = () => (need(4), (pos += 4), dv.getUint32(pos - 4, true));
  const bytes = (n: number) => (need(n), (pos += n), data.subarray(pos - n, pos));
  const text = (n: number) => new TextDecoder('utf-8', { fatal: false }).decode(bytes(n));
  const line = () => {
    const end = data.indexOf(0x0a, pos);
    if (end < 0) fail('the pickle ends early (unterminated line)');
    const s = new TextDecoder().decode(data.subarray(pos, end));
    pos = end + 1;
    return s;
  };
  const pop = (): Obj => {
    if (!stack.length) fail('damaged pickle (stack underflow)');
    return stack.pop()!;
  };
  const top = (): Obj => {
    if (!stack.length) fail('damaged pickle (stack underflow)');
    return stack[stack.length - 1]!;
  };
  const popMark = (): Obj[] => {
    const i = stack.lastIndexOf(MARK);
    if (i < 0) fail('damaged pickle (no MARK)');
    const items = stack.splice(i);
    items.shift();
    return items;
  };
  const global = (module: string, name: string): Global => {
    const g = new Global(module, name);
    if (!ALLOWED_GLOBALS.has(g.full)) {
      fail(
        `refusing to load: the pickle references ${g.full}, which is not a tensor or a plain container (only ${[...ALLOWED_GLOBALS].join(', ')} are allowed); this file may run code in Python, convert it with a trusted tool or use adapter_model.safetensors`,
      );
    }
    return g;
  };
  const setItem = (d: Obj, k: Obj, v: Obj) => {
    if (!(d instanceof Map)) fail('damaged pickle (SETITEM on a non-dict)');
    d.set(k, v);
  };
  const asList = (o: Obj, what: string): Obj[] => {
    if (Array.isArray(o)) return o;
    fail(`damaged pickle (${what} on a non-list)`);
  };
  for (;;) {
    const op = u8();
    switch (op) {
      case 0x80: // PROTO
        if (u8() > 5) fail('unsupported pickle protocol');
        break;
      case 0x95: // FRAME
        bytes(0);
        need(8);
        pos += 8;
        break;
      case 0x2e: // STOP
        if (stack.length !== 1) fail('damaged pickle (stack not empty at STOP)');
        return stack[0]!;
      case 0x7d: // EMPTY_DICT
        stack.push(new Map());
        break;
      case 0x5d: // EMPTY_LIST
        stack.push([]);
        break;
      case 0x29: // EMPTY_TUPLE
        stack.push(new Tuple([]));
        break;
      case 0x28: // MARK
        stack.push(MARK);
        break;
      case 0x4e: // NONE
        stack.push(null);
        break;
      case 0x88: // NEWTRUE
        stack.push(true);
        break;
      case 0x89: // NEWFALSE
        stack.push(false);
        break;
      case 0x4b: // BININT1
        stack.push(u8());
        break;
      case 0x4d: // BININT2
        stack.push(u16());
        break;
      case 0x4a: // BININT
        need(4);
        stack.push(dv.getInt32(pos, true));
        pos += 4;
        break;
      case 0x8a: {
        // LONG1
        const n = u8();
        const b = bytes(n);
        let v = 0n;
        for (let i = n - 1; i >= 0; i--) v = (v << 8n) | BigInt(b[i]!);
        if (n > 0 && b[n - 1]! & 0x80) v -= 1n << BigInt(8 * n);
        stack.push(v >= BigInt(Number.MIN_SAFE_INTEGER) && v <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(v) : v);
        break;
      }
      case 0x47: // BINFLOAT (big-endian)
        need(8);
        stack.push(dv.getFloat64(pos, false));
        pos += 8;
        break;
      case 0x58: // BINUNICODE
        stack.push(text(u32()));
        break;
      case 0x8c: // SHORT_BINUNICODE
        stack.push(text(u8()));
        break;
      case 0x8d: {
        // BINUNICODE8
        need(8);
        const n = Number(dv.getBigUint64(pos, true));
        pos += 8;
        stack.push(text(n));
        break;
      }
      case 0x55: // SHORT_BINSTRING
        stack.push(text(u8()));
        break;
      case 0x54: // BINSTRING
        stack.push(text(u32()));
        break;
      case 0x43: // SHORT_BINBYTES
        stack.push(bytes(u8()).slice());
        break;
      case 0x42: // BINBYTES
        stack.push(bytes(u32()).slice());
        break;
      case 0x74: // TUPLE
        stack.push(new Tuple(popMark()));
        break;
      case 0x85: // TUPLE1
        stack.push(new Tuple([pop()]));
        break;
      case 0x86: {
        // TUPLE2
        const b = pop();
        stack.push(new Tuple([pop(), b]));
        break;
      }
      case 0x87: {
        // TUPLE3
        const c = pop();
        const b = pop();
        stack.push(new Tuple([pop(), b, c]));
        break;
      }
      case 0x6c: // LIST
        stack.push(popMark());
        break;
      case 0x61: {
        // APPEND
        const v = pop();
        asList(top(), 'APPEND').push(v);
        break;
      }
      case 0x65: {
        // APPENDS
        const items = popMark();
        asList(top(), 'APPENDS').push(...items);
        break;
      }
      case 0x64: {
        // DICT
        const items = popMark();
        if (items.length % 2) fail('damaged pickle (odd DICT)');
        const d = new Map<Obj, Obj>();
        for (let i = 0; i < items.length; i += 2) d.set(items[i]!, items[i + 1]!);
        stack.push(d);
        break;
      }
      case 0x73: {
        // SETITEM
        const v = pop();
        const k = pop();
        setItem(top(), k, v);
        break;
      }
      case 0x75: {
        // SETITEMS
        const items = popMark();
        if (items.length % 2) fail('damaged pickle (odd SETITEMS)');
        const d = top();
        for (let i = 0; i < items.length; i += 2) setItem(d, items[i]!, items[i + 1]!);
        break;
      }
      case 0x71: // BINPUT
        memo.set(u8(), top());
        break;
      case 0x72: // LONG_BINPUT
        memo.set(u32(), top());
        break;
      case 0x94: // MEMOIZE
        memo.set(memo.size, top());
        break;
      case 0x68: {
        // BINGET
        const k = u8();
        if (!memo.has(k)) fail('damaged pickle (unknown memo key)');
        stack.push(memo.get(k)!);
        break;
      }
      case 0x6a: {
        // LONG_BINGET
        const k = u32();
        if (!memo.has(k)) fail('damaged pickle (unknown memo key)');
        stack.push(memo.get(k)!);
        break;
      }
      case 0x63: {
        // GLOBAL "module\nname\n"
        const module = line();
        stack.push(global(module, line()));
        break;
      }
      case 0x93: {
        // STACK_GLOBAL
        const name = pop();
        const module = pop();
        if (typeof module !== 'string' || typeof name !== 'string') fail('damaged pickle (STACK_GLOBAL)');
        stack.push(global(module, name));
        break;
      }
      case 0x51: {
        // BINPERSID: ('storage', <storage class>, key, location, numel)
        const pid = pop();
        if (!(pid instanceof Tuple) || pid.items[0] !== 'storage' || pid.items.length < 5)
          fail('unsupported persistent id (only torch storages are read)');
        const [, cls, key, , numel] = pid.items;
        if (
          !(cls instanceof Global) ||
          !(cls.name in STORAGE_DTYPES) ||
          typeof key !== 'string' ||
          typeof numel !== 'number' ||
          !Number.isSafeInteger(numel) ||
          numel < 0
        )
          fail('damaged storage reference');
        stack.push(new Storage(STORAGE_DTYPES[cls.name]!, key, numel));
        break;
      }
      case 0x52: {
        // REDUCE
        const args = pop();
        const fn = pop();
        if (!(fn instanceof Global) || !(args instanceof Tuple))
          fail('refusing to load: REDUCE of something that is not an allowed callable');
        stack.push(reduce(fn, args.items, ctx));
        break;
      }
      case 0x62: {
        // BUILD: only an OrderedDict's attribute dict (state_dict()._metadata), which is dropped
        const state = pop();
        if (!(top() instanceof Map) || !(state instanceof Map || state === null))
          fail('refusing to load: BUILD on an object that is not a plain dict');
        break;
      }
      default:
        fail(
          `refusing to load: pickle opcode 0x${op.toString(16).padStart(2, '0')} at byte ${pos - 1} is not one torch.save uses for tensors and plain containers`,
        );
    }
  }
}

function dims(v: Obj, what: string, fail: (m: string) => never): number[] {
  if (!(v instanceof Tuple) || !v.items.every((x) => typeof x === 'number' && Number.isSafeInteger(x) && x >= 0))
    fail(`damaged tensor ${what}`);
  return v.items as number[];
}

function reduce(fn: Global, args: Obj[], ctx: UnpickleContext): Obj {
  const fail: (m: string) => never = ctx.fail;
  switch (fn.full) {
    case 'collections.OrderedDict':
      if (args.length) fail('OrderedDict with arguments is not read');
      return new Map();
    case 'torch._utils._rebuild_parameter': {
      // (tensor, requires_grad, backward_hooks)
      if (!(args[0] instanceof PickledTensor)) fail('damaged parameter');
      return args[0];
    }
    case 'torch._utils._rebuild_tensor_v2': {
      // (storage, storage_offset, size, stride, requires_grad, backward_hooks[, metadata])
      const [storage, offset] = args;
      if (!(storage instanceof Storage) || typeof offset !== 'number' || !Number.isSafeInteger(offset) || offset < 0)
        fail('damaged tensor (storage or offset)');
      const shape = dims(args[2]!, 'size', fail);
      const stride = dims(args[3]!, 'stride', fail);
      if (shape.length !== stride.length) fail('damaged tensor (size and stride differ in length)');
      const numel = shape.reduce((a, b) => a * b, 1);
      if (!Number.isSafeInteger(numel)) fail('damaged tensor (too many elements)');
      if (numel > storage.numel) fail(`tensor of ${numel} elements over a storage of ${storage.numel} (broadcast views are not read)`);
      const src = ctx.storage(storage.key, storage.dtype, storage.numel);
      const bytes = DTYPE_BYTES[storage.dtype];
      ctx.reserve(numel * bytes);
      const out = new Uint8Array(numel * bytes);
      if (numel > 0) {
        let maxIndex = offset;
        shape.forEach((d, i) => (maxIndex += (d - 1) * stride[i]!));
        if (maxIndex >= storage.numel) fail(`tensor reads element ${maxIndex} of a storage of ${storage.numel}`);
        const contiguous = stride.every((s, i) => shape[i] === 1 || s === shape.slice(i + 1).reduce((a, b) => a * b, 1));
        if (contiguous) out.set(src.subarray(offset * bytes, (offset + numel) * bytes));
        else {
          const idx = new Array<number>(shape.length).fill(0);
          for (let n = 0; n < numel; n++) {
            let e = offset;
            for (let i = 0; i < shape.length; i++) e += idx[i]! * stride[i]!;
            out.set(src.subarray(e * bytes, (e + 1) * bytes), n * bytes);
            for (let i = shape.length - 1; i >= 0; i--) {
              if (++idx[i]! < shape[i]!) break;
              idx[i] = 0;
            }
          }
        }
      }
      return new PickledTensor({ dtype: storage.dtype, shape, data: out });
    }
    default:
      fail(`refusing to load: ${fn.full} cannot be called here`);
  }
}

/** Flattens the unpickled object into tensors by name (nested dicts join keys with '.'). */
function collect(obj: Obj, prefix: string, out: Map<string, RawTensor>, fail: (m: string) => never): void {
  if (obj instanceof PickledTensor) {
    if (out.has(prefix)) fail(`tensor ${prefix} appears twice`);
    out.set(prefix, obj.tensor);
    return;
  }
  if (obj instanceof Map) {
    for (const [k, v] of obj) {
      if (typeof k !== 'string') fail('a state dict key is not a string');
      collect(v, prefix ? `${prefix}.${k}` : k, out, fail);
    }
    return;
  }
  if (obj === null) return;
  fail(
    `expected a dict of tensors, found ${Array.isArray(obj) ? 'a list' : obj instanceof Tuple ? 'a tuple' : typeof obj === 'object' ? 'an object' : typeof obj} at ${prefix || 'the top level'}`,
  );
}

/**
 * The tensors of a torch.save'd state dict (zip format), by key, never running code from the file.
 * Anything but tensors in dicts is refused with a TorchBinError.
 */
export function parseTorchBin(buf: Buffer, file = '<memory>'): Map<string, RawTensor> {
  const fail: (m: string) => never = (m) => {
    throw new TorchBinError(file, m);
  };
  if (buf.length < 22) fail('too short to be a torch.save zip archive');
  const entries = readZip(buf, fail);
  const pkl = [...entries.values()].find((e) => /^[^/]+\/data\.pkl$/.test(e.name) || e.name === 'data.pkl');
  if (!pkl) fail('no <archive>/data.pkl in the zip: not a torch.save file');
  const root = pkl.name.slice(0, pkl.name.length - 'data.pkl'.length);
  const order = entries.get(`${root}byteorder`);
  if (order && entryData(buf, order, fail).toString('latin1') !== 'little') fail('big-endian checkpoints are not read');
  if (pkl.size > MAX_PICKLE_BYTES) fail(`data.pkl is ${pkl.size} bytes; more than ${MAX_PICKLE_BYTES} is refused`);
  const pickle = entryData(buf, pkl, fail);
  const storages = new Map<string, Uint8Array>();
  // Tensors sharing a storage (tied weights) are copied apart: allow a few times the file, no more.
  let budget = 4 * buf.length + (1 << 20);
  const obj = unpickle(pickle, {
    fail,
    reserve: (n) => {
      budget -= n;
      if (budget < 0) fail('the tensors would take more than 4 times the file size (shared storages copied again and again); refused');
    },
    storage: (key, dtype, numel) => {
      const e = entries.get(`${root}data/${key}`);
      if (!e) fail(`storage ${key} is referenced but ${root}data/${key} is not in the zip`);
      const bytes = numel * DTYPE_BYTES[dtype];
      if (e.size < bytes) fail(`storage ${key} holds ${e.size} bytes, not the ${bytes} its ${numel} ${dtype} elements need`);
      let d = storages.get(key);
      if (!d) storages.set(key, (d = entryData(buf, e, fail)));
      return d;
    },
  });
  const out = new Map<string, RawTensor>();
  collect(obj, '', out, fail);
  return out;
}

/** Reads a .bin file (see parseTorchBin). */
export async function readTorchBin(path: string): Promise<Map<string, RawTensor>> {
  let size: number;
  try {
    size = (await stat(path)).size;
  } catch (e) {
    throw new TorchBinError(path, `cannot read: ${(e as Error).message}`);
  }
  if (size > MAX_BIN_BYTES)
    throw new TorchBinError(path, `${size} bytes is more than the ${MAX_BIN_BYTES} read; convert it to safetensors`);
  // the parser reads with Buffer's little-endian accessors, which only Node has
  if (typeof Buffer === 'undefined') throw new TorchBinError(path, 'PyTorch .bin files are read on Node only; convert it to safetensors');
  const bytes = await readFile(path);
  return parseTorchBin(Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength), path);
}
