// Writes torch.save-format files (zip of `<archive>/data.pkl` + `<archive>/data/<key>` storages) from
// the pickle protocol, so tests of the restricted .bin reader need no Python. The pickle is what
// torch.save(state_dict) emits with protocol 2: an OrderedDict (or dict) of tensors, each
// torch._utils._rebuild_tensor_v2(persistent storage, offset, size, stride, False, OrderedDict()).
// `raw` lets a test put arbitrary pickle bytes (hostile globals, damaged opcodes) into the archive.

/** CRC-32 (zip's), so Python's zipfile / torch.load accept the archive too. */
function crc32(data: Uint8Array): number {
  let c = ~0;
  for (const b of data) {
    c ^= b;
    for (let k = 0; k < 8; k++) c = c & 1 ? (c >>> 1) ^ 0xedb88320 : c >>> 1;
  }
  return ~c >>> 0;
}

export interface BinTensor {
  dtype: 'F32' | 'F16' | 'BF16' | 'F64' | 'I64' | 'I32' | 'I8' | 'U8' | 'BOOL';
  shape: number[];
  data: Uint8Array;
  /** a strided view of another storage (e.g. a transpose): the storage key and stride */
  view?: { storageKey: string; stride: number[]; offset: number };
}

const STORAGE: Record<BinTensor['dtype'], string> = {
  F32: 'FloatStorage',
  F16: 'HalfStorage',
  BF16: 'BFloat16Storage',
  F64: 'DoubleStorage',
  I64: 'LongStorage',
  I32: 'IntStorage',
  I8: 'CharStorage',
  U8: 'ByteStorage',
  BOOL: 'BoolStorage',
};
const BYTES: Record<BinTensor['dtype'], number> = { F32: 4, F16: 2, BF16: 2, F64: 8, I64: 8, I32: 4, I8: 1, U8: 1, BOOL: 1 };

/** A pickle byte builder with the opcodes torch.save's protocol-2 pickles use. */
export class Pickle {
  private readonly parts: number[] = [];
  private memo = 0;
  op(...b: number[]): this {
    this.parts.push(...b);
    return this;
  }
  u32(n: number): this {
    return this.op(n & 0xff, (n >>> 8) & 0xff, (n >>> 16) & 0xff, (n >>> 24) & 0xff);
  }
  str(s: string): this {
    const b = Buffer.from(s, 'utf8');
    return this.op(0x58)
      .u32(b.length)
      .op(...b); // BINUNICODE
  }
  int(n: number): this {
    if (n >= 0 && n < 256) return this.op(0x4b, n); // BININT1
    if (n >= 0 && n < 65536) return this.op(0x4d, n & 0xff, n >> 8); // BININT2
    return this.op(0x4a).u32(n); // BININT
  }
  global(module: string, name: string): this {
    return this.op(0x63, ...Buffer.from(`${module}\n${name}\n`, 'latin1')); // GLOBAL
  }
  put(): this {
    return this.op(0x71, this.memo++ & 0xff); // BINPUT
  }
  tuple(items: ((p: Pickle) => void)[]): this {
    this.op(0x28); // MARK
    for (const f of items) f(this);
    return this.op(0x74); // TUPLE
  }
  bytes(): Uint8Array {
    return Uint8Array.from(this.parts);
  }
}

/** The protocol-2 pickle torch.save writes for a dict of tensors (storage keys "0", "1", ...). */
export function statePickle(
  tensors: Record<string, BinTensor>,
  opts: { ordered?: boolean; parameter?: boolean } = {},
): { pickle: Uint8Array; storages: Map<string, Uint8Array> } {
  const p = new Pickle().op(0x80, 2);
  const storages = new Map<string, Uint8Array>();
  if (opts.ordered ?? true)
    p.global('collections', 'OrderedDict').put().op(0x29, 0x52).put(); // OrderedDict()
  else p.op(0x7d).put(); // EMPTY_DICT
  p.op(0x28); // MARK for SETITEMS
  let key = 0;
  for (const [name, t] of Object.entries(tensors)) {
    p.str(name).put();
    const sk = t.view ? t.view.storageKey : String(key++);
    if (!t.view) storages.set(sk, t.data);
    const numel = t.view ? storages.get(sk)!.length / BYTES[t.dtype] : t.shape.reduce((a, b) => a * b, 1);
    const stride = t.view?.stride ?? t.shape.map((_, i) => t.shape.slice(i + 1).reduce((a, b) => a * b, 1));
    if (opts.parameter) p.global('torch._utils', '_rebuild_parameter');
    p.global('torch._utils', '_rebuild_tensor_v2').put();
    p.op(0x28); // MARK: args tuple
    // persistent id ('storage', torch.XStorage, key, 'cpu', numel)
    p.tuple([
      (q) => q.str('storage'),
      (q) => q.global('torch', STORAGE[t.dtype]),
      (q) => q.str(sk),
      (q) => q.str('cpu'),
      (q) => q.int(numel),
    ]).op(0x51); // BINPERSID
    p.int(t.view?.offset ?? 0);
    p.tuple(t.shape.map((d) => (q: Pickle) => q.int(d)));
    p.tuple(stride.map((d) => (q: Pickle) => q.int(d)));
    p.op(0x89); // False
    p.global('collections', 'OrderedDict').op(0x29, 0x52); // OrderedDict()
    p.op(0x74, 0x52).put(); // TUPLE, REDUCE
    if (opts.parameter) p.op(0x89, 0x7d, 0x87, 0x52); // (tensor, False, {}) -> _rebuild_parameter
  }
  p.op(0x75, 0x2e); // SETITEMS, STOP
  return { pickle: p.bytes(), storages };
}

/** A zip archive (stored entries, as torch.save's miniz writer) of `files`, in order. */
export function zipStored(files: [string, Uint8Array][]): Uint8Array {
  const local: Buffer[] = [];
  const central: Buffer[] = [];
  let offset = 0;
  for (const [name, data] of files) {
    const n = Buffer.from(name, 'utf8');
    const crc = crc32(data);
    const h = Buffer.alloc(30);
    h.writeUInt32LE(0x04034b50, 0);
    h.writeUInt16LE(20, 4);
    h.writeUInt32LE(crc, 14);
    h.writeUInt32LE(data.length, 18);
    h.writeUInt32LE(data.length, 22);
    h.writeUInt16LE(n.length, 26);
    local.push(h, n, Buffer.from(data));
    const c = Buffer.alloc(46);
    c.writeUInt32LE(0x02014b50, 0);
    c.writeUInt16LE(20, 4);
    c.writeUInt16LE(20, 6);
    c.writeUInt32LE(crc, 16);
    c.writeUInt32LE(data.length, 20);
    c.writeUInt32LE(data.length, 24);
    c.writeUInt16LE(n.length, 28);
    c.writeUInt32LE(offset, 42);
    central.push(c, n);
    offset += 30 + n.length + data.length;
  }
  const cd = Buffer.concat(central);
  const e = Buffer.alloc(22);
  e.writeUInt32LE(0x06054b50, 0);
  e.writeUInt16LE(files.length, 8);
  e.writeUInt16LE(files.length, 10);
  e.writeUInt32LE(cd.length, 12);
  e.writeUInt32LE(offset, 16);
  return new Uint8Array(Buffer.concat([...local, cd, e]));
}

/** A torch.save file of the state dict (or of a raw pickle with the given storages). */
export function torchSaveBytes(
  tensors: Record<string, BinTensor>,
  opts: { ordered?: boolean; parameter?: boolean; raw?: Uint8Array; rawStorages?: Map<string, Uint8Array> } = {},
): Uint8Array {
  const { pickle, storages } = opts.raw
    ? { pickle: opts.raw, storages: opts.rawStorages ?? new Map<string, Uint8Array>() }
    : statePickle(tensors, opts);
  const files: [string, Uint8Array][] = [
    ['archive/data.pkl', pickle],
    ['archive/byteorder', Buffer.from('little')],
  ];
  for (const [k, d] of storages) files.push([`archive/data/${k}`, d]);
  files.push(['archive/version', Buffer.from('3\n')]);
  return zipStored(files);
}
