// A minimal protobuf wire-format writer for the few ONNX messages we emit. Nested messages are
// kept as chunk lists and only concatenated once at the end, so multi-megabyte initializers are
// copied a single time into the model bytes (see docs/ARCHITECTURE.md for why not protobufjs).

export class PbWriter {
  readonly chunks: Uint8Array[] = [];
  length = 0;
  private scratch: number[] = [];

  private flushScratch(): void {
    if (this.scratch.length) {
      const b = Uint8Array.from(this.scratch);
      this.chunks.push(b);
      this.length += b.length;
      this.scratch = [];
    }
  }

  private rawVarint(v: number | bigint): void {
    let x = BigInt.asUintN(64, BigInt(v));
    while (x >= 0x80n) {
      this.scratch.push(Number((x & 0x7fn) | 0x80n));
      x >>= 7n;
    }
    this.scratch.push(Number(x));
  }

  private tag(field: number, wire: number): void {
    this.rawVarint((field << 3) | wire);
  }

  varint(field: number, v: number | bigint): this {
    this.tag(field, 0);
    this.rawVarint(v);
    return this;
  }

  float(field: number, v: number): this {
    this.tag(field, 5);
    const b = new Uint8Array(4);
    new DataView(b.buffer).setFloat32(0, v, true);
    this.scratch.push(...b);
    return this;
  }

  double(field: number, v: number): this {
    this.tag(field, 1);
    const b = new Uint8Array(8);
    new DataView(b.buffer).setFloat64(0, v, true);
    this.scratch.push(...b);
    return this;
  }

  bytes(field: number, data: Uint8Array): this {
    this.tag(field, 2);
    this.rawVarint(data.length);
    this.flushScratch();
    if (data.length) {
      this.chunks.push(data);
      this.length += data.length;
    }
    return this;
  }

  string(field: number, s: string): this {
    return this.bytes(field, new TextEncoder().encode(s));
  }

  message(field: number, m: PbWriter): this {
    m.flushScratch();
    this.tag(field, 2);
    this.rawVarint(m.length);
    this.flushScratch();
    // a loop, not push(...chunks): a large graph has more chunks than a call may take arguments
    for (const c of m.chunks) this.chunks.push(c);
    this.length += m.length;
    return this;
  }

  packedVarints(field: number, values: readonly (number | bigint)[]): this {
    const inner = new PbWriter();
    for (const v of values) inner.rawVarint(v);
    inner.flushScratch();
    return this.message(field, inner);
  }

  packedFloats(field: number, values: readonly number[]): this {
    const b = new Uint8Array(values.length * 4);
    const dv = new DataView(b.buffer);
    values.forEach((v, i) => dv.setFloat32(i * 4, v, true));
    return this.bytes(field, b);
  }

  finish(): Uint8Array {
    this.flushScratch();
    if (this.chunks.length === 1) return this.chunks[0]!;
    const out = new Uint8Array(this.length);
    let off = 0;
    for (const c of this.chunks) {
      out.set(c, off);
      off += c.length;
    }
    return out;
  }
}
