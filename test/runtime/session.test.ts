// How frozen constants reach ONNX Runtime (RuntimeOptions.weights): file-backed constants as
// memory-mapped external data shared by several sessions, large JS arrays fed as inputs or handed
// over as in-memory external data (the path that keeps models above 2 GB out of the ModelProto),
// and the folder/location rules ONNX Runtime enforces on external data.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { Graph, type Value } from '../../src/graph/ir.js';
import * as o from '../../src/graph/ops.js';
import { grad } from '../../src/autodiff/grad.js';
import { lowerGraph } from '../../src/onnx/export.js';
import { encodeModel } from '../../src/onnx/model.js';
import { RuntimeError, RuntimeSession, externalDataFolder, type RuntimeOptions } from '../../src/runtime/session.js';
import { rng } from '../helpers/gradcheck.js';

function uniform(n: number, seed: number, bound = 1): Float32Array {
  const r = rng(seed);
  const a = new Float32Array(n);
  for (let i = 0; i < n; i++) a[i] = (r() * 2 - 1) * bound;
  return a;
}

/** Writes tensors after a header of `headerBytes` (not a page multiple, as in a safetensors file). */
function writeWeights(file: string, tensors: Float32Array[], headerBytes = 88): { offset: number; length: number }[] {
  const fd = fs.openSync(file, 'w');
  fs.writeSync(fd, new Uint8Array(headerBytes).fill(32));
  const locs: { offset: number; length: number }[] = [];
  let off = headerBytes;
  for (const t of tensors) {
    fs.writeSync(fd, new Uint8Array(t.buffer, t.byteOffset, t.byteLength));
    locs.push({ offset: off, length: t.byteLength });
    off += t.byteLength;
  }
  fs.closeSync(fd);
  return locs;
}

/** y = x W^T per layer (W [out, in]), plain float64 reference. */
function refStack(x: Float32Array, rows: number, d: number, ws: Float32Array[]): Float64Array {
  let h = Float64Array.from(x);
  for (const w of ws) {
    const out = new Float64Array(rows * d);
    for (let r = 0; r < rows; r++) {
      for (let j = 0; j < d; j++) {
        let s = 0;
        for (let i = 0; i < d; i++) s += h[r * d + i]! * w[j * d + i]!;
        out[r * d + j] = s;
      }
    }
    h = out;
  }
  return h;
}

function tmpDir(): string {
  return fs.mkdtempSync(path.join(os.tmpdir(), 'peft-session-test-'));
}

function pssMiB(): number {
  const m = /^Pss:\s+(\d+)/m.exec(fs.readFileSync('/proc/self/smaps_rollup', 'utf8'));
  return Number(m![1]) / 1024;
}

function stack(g: Graph, x: Value, ws: Value[]): Value {
  let h = x;
  for (const w of ws) h = o.linear(h, w);
  return h;
}

for (const weights of ['shared', 'prepacked'] as const) {
  test(`two sessions over the same file-backed constants compute the right values (weights: ${weights})`, async () => {
    const dir = tmpDir();
    try {
      const d = 24,
        L = 3,
        rows = 5;
      const ws = Array.from({ length: L }, (_, l) => uniform(d * d, 10 + l, 0.3));
      const file = path.join(dir, 'model.safetensors');
      const locs = writeWeights(file, ws);
      const xs = uniform(rows * d, 3);
      const ref = refStack(xs, rows, d, ws);
      const build = (): { g: Graph; y: Value; x: Value } => {
        const g = new Graph();
        const x = g.input('x', 'float32', ['n', d]);
        const consts = locs.map((loc, l) => g.constant(`w${l}`, 'float32', [d, d], { kind: 'file', path: file, ...loc }));
        return { g, x, y: stack(g, x, consts) };
      };
      const a = build();
      const b = build();
      const opts: RuntimeOptions = { threads: 1, weights };
      const s1 = await RuntimeSession.fromGraph(a.g, { y: a.y }, opts);
      const s2 = await RuntimeSession.fromGraph(b.g, { y: b.y }, opts);
      assert.equal(s1.memory.weights, weights);
      assert.equal(s1.memory.prepacking, weights === 'prepacked');
      assert.deepEqual(s1.memory.mappedFiles, [fs.realpathSync(file)]);
      for (const s of [s1, s2, s1]) {
        const y = (await s.run({ x: { dtype: 'float32', shape: [rows, d], data: xs } })).y!;
        for (let i = 0; i < ref.length; i++)
          assert.ok(Math.abs((y.data[i] as number) - ref[i]!) < 1e-4, `y[${i}] ${y.data[i]} vs ${ref[i]}`);
      }
      await s1.dispose();
      await s2.dispose();
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
}

test('a training session and a forward session share file-backed weights; gradients are right', async () => {
  const dir = tmpDir();
  try {
    const d = 16,
      r = 2,
      rows = 6;
    const w = uniform(d * d, 1, 0.4);
    const file = path.join(dir, 'w.bin');
    const [loc] = writeWeights(file, [w], 13 * 8);
    const A0 = uniform(r * d, 2, 0.3),
      B0 = uniform(d * r, 3, 0.3),
      xs = uniform(rows * d, 4);
    const build = (withGrad: boolean) => {
      const g = new Graph();
      const x = g.input('x', 'float32', ['n', d]);
      const W = g.constant('w', 'float32', [d, d], { kind: 'file', path: file, ...loc! });
      const A = g.param('A', 'float32', [r, d]);
      const B = g.param('B', 'float32', [d, r]);
      const y = o.add(o.linear(x, W), o.mul(o.linear(o.linear(x, A), B), 2));
      const loss = o.mean(o.mul(y, y));
      const outs: Record<string, Value> = { loss };
      if (withGrad) [outs.gA, outs.gB] = grad(loss, [A, B]) as [Value, Value];
      return { g, outs };
    };
    const t = build(true),
      f = build(false);
    const st = await RuntimeSession.fromGraph(t.g, t.outs, { threads: 1 });
    const sf = await RuntimeSession.fromGraph(f.g, f.outs, { threads: 1 });
    const feeds = (a: Float32Array) => ({
      x: { dtype: 'float32' as const, shape: [rows, d], data: xs },
      A: { dtype: 'float32' as const, shape: [r, d], data: a },
      B: { dtype: 'float32' as const, shape: [d, r], data: B0 },
    });
    const res = await st.run(feeds(A0));
    const fl = (await sf.run(feeds(A0))).loss!.data[0] as number;
    assert.ok(Math.abs((res.loss!.data[0] as number) - fl) < 1e-6);
    // central differences on a few entries of A through the forward session
    for (const idx of [0, 5, 17]) {
      const eps = 1e-2;
      const up = Float32Array.from(A0),
        dn = Float32Array.from(A0);
      up[idx]! += eps;
      dn[idx]! -= eps;
      const lu = (await sf.run(feeds(up))).loss!.data[0] as number;
      const ld = (await sf.run(feeds(dn))).loss!.data[0] as number;
      const fd = (lu - ld) / (2 * eps);
      const an = res.gA!.data[idx] as number;
      assert.ok(Math.abs(fd - an) < 2e-3 + 2e-2 * Math.abs(an), `gA[${idx}] ${an} vs ${fd}`);
    }
    await st.dispose();
    await sf.dispose();
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test(
  'shared file-backed weights: a second session adds far less resident memory than the weights',
  { skip: process.platform !== 'linux' },
  async () => {
    const dir = tmpDir();
    try {
      const d = 1024,
        L = 8; // 32 MiB of weights
      const file = path.join(dir, 'big.bin');
      const locs = writeWeights(
        file,
        Array.from({ length: L }, (_, l) => uniform(d * d, 100 + l, 0.05)),
      );
      const weightMiB = (L * d * d * 4) / 2 ** 20;
      const build = () => {
        const g = new Graph();
        const x = g.input('x', 'float32', ['n', d]);
        const y = stack(
          g,
          x,
          locs.map((loc, l) => g.constant(`w${l}`, 'float32', [d, d], { kind: 'file', path: file, ...loc })),
        );
        return RuntimeSession.fromGraph(g, { y }, { threads: 1 });
      };
      const feeds = { x: { dtype: 'float32' as const, shape: [2, d], data: uniform(2 * d, 5) } };
      const s1 = await build();
      await s1.run(feeds); // faults the mapped weights in
      const before = pssMiB();
      const s2 = await build();
      await s2.run(feeds);
      const grown = pssMiB() - before;
      assert.ok(
        grown < weightMiB / 4,
        `second session added ${grown.toFixed(1)} MiB of proportional resident memory for ${weightMiB} MiB of weights`,
      );
      await s1.dispose();
      await s2.dispose();
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  },
);

test('large JS-array constants: fed as inputs (shared) or in-memory external data (prepacked), never inlined', async () => {
  const d = 32,
    rows = 3;
  const ws = [uniform(d * d, 7, 0.3), uniform(d * d, 8, 0.3)];
  const small = uniform(d, 9);
  const xs = uniform(rows * d, 10);
  const ref = refStack(xs, rows, d, ws);
  for (const weights of ['shared', 'prepacked'] as const) {
    const g = new Graph();
    const x = g.input('x', 'float32', ['n', d]);
    const bias = g.constant('bias', 'float32', [d], small);
    const y = o.add(
      stack(
        g,
        x,
        ws.map((w, l) => g.constant(`w${l}`, 'float32', [d, d], w)),
      ),
      bias,
    );
    // threshold 1 KiB: the 4 KiB weights count as large, the 128-byte bias stays inline
    const s = await RuntimeSession.fromGraph(g, { y }, { threads: 1, weights, largeConstantBytes: 1024 });
    assert.equal(s.memory.constantInputs, weights === 'shared' ? 2 : 0);
    assert.equal(s.memory.externalBlobs, weights === 'prepacked' ? 2 : 0);
    assert.ok(s.memory.modelBytes < 2 * d * d * 4, `model is ${s.memory.modelBytes} bytes: the weights went inline`);
    assert.deepEqual(
      s.feeds.map((v) => v.name),
      ['x'],
      'constants fed as inputs are not asked of the caller',
    );
    for (let rep = 0; rep < 2; rep++) {
      const out = (await s.run({ x: { dtype: 'float32', shape: [rows, d], data: xs } })).y!;
      for (let i = 0; i < ref.length; i++) {
        const want = ref[i]! + small[i % d]!;
        assert.ok(Math.abs((out.data[i] as number) - want) < 1e-4, `${weights}: y[${i}] ${out.data[i]} vs ${want}`);
      }
    }
    await s.dispose();
  }
});

test('lowering sends constants above the threshold to external data (the >2 GB model path)', () => {
  const g = new Graph();
  const x = g.input('x', 'float32', ['n', 64]);
  const w = g.constant('w', 'float32', [64, 64], uniform(64 * 64, 1));
  const y = o.linear(x, w);
  const inline = lowerGraph(g, { y }, 'm', { largeConstants: 'inline' });
  const ext = lowerGraph(g, { y }, 'm', { largeConstantBytes: 256, largeConstants: 'external' });
  assert.equal(inline.externalData.length, 0);
  assert.ok(inline.inlineBytes >= 64 * 64 * 4);
  assert.equal(ext.externalData.length, 1);
  assert.equal(ext.externalData[0]!.data.byteLength, 64 * 64 * 4);
  assert.equal(ext.inlineBytes, 0);
  assert.ok(encodeModel(ext.spec).byteLength < 4096, 'the ModelProto carries only a reference');
  const t = ext.spec.initializers.find((i) => i.name === 'w')!;
  assert.deepEqual(t.external, { location: ext.externalData[0]!.path, offset: 0, length: 64 * 64 * 4 });
});

test('a large JS array next to mapped files: inlined, since ONNX Runtime cannot mix blobs and files', async () => {
  const dir = tmpDir();
  try {
    const d = 16,
      rows = 2;
    const wf = uniform(d * d, 21, 0.3),
      wa = uniform(d * d, 22, 0.3);
    const file = path.join(dir, 'a.bin');
    const [loc] = writeWeights(file, [wf], 40);
    const g = new Graph();
    const x = g.input('x', 'float32', ['n', d]);
    const y = stack(g, x, [
      g.constant('wf', 'float32', [d, d], { kind: 'file', path: file, ...loc! }),
      g.constant('wa', 'float32', [d, d], wa),
    ]);
    const s = await RuntimeSession.fromGraph(g, { y }, { threads: 1, weights: 'prepacked', largeConstantBytes: 64 });
    assert.equal(s.memory.externalBlobs, 0);
    assert.ok(s.memory.modelBytes > d * d * 4);
    assert.equal(s.memory.mappedFiles.length, 1);
    const xs = uniform(rows * d, 23);
    const ref = refStack(xs, rows, d, [wf, wa]);
    const out = (await s.run({ x: { dtype: 'float32', shape: [rows, d], data: xs } })).y!;
    for (let i = 0; i < ref.length; i++) assert.ok(Math.abs((out.data[i] as number) - ref[i]!) < 1e-4);
    await s.dispose();
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('external data in several folders, through a symlink, from any working directory', async () => {
  const dir = tmpDir();
  const cwd = process.cwd();
  try {
    const d = 8,
      rows = 2;
    fs.mkdirSync(path.join(dir, 'a', 'deep'), { recursive: true });
    fs.mkdirSync(path.join(dir, 'b'));
    const w1 = uniform(d * d, 31, 0.5),
      w2 = uniform(d * d, 32, 0.5);
    const [l1] = writeWeights(path.join(dir, 'a', 'deep', 'one.bin'), [w1], 24);
    const [l2] = writeWeights(path.join(dir, 'b', 'two.bin'), [w2], 8);
    fs.symlinkSync(path.join(dir, 'b'), path.join(dir, 'link'));
    const f1 = path.join(dir, 'a', 'deep', 'one.bin');
    const f2 = path.join(dir, 'link', 'two.bin'); // reached through the symlink
    const ext = externalDataFolder([f1, f2]);
    assert.equal(ext.folder, fs.realpathSync(dir));
    assert.equal(ext.location(f2), 'b/two.bin');
    process.chdir(os.tmpdir()); // locations must not depend on the working directory
    const g = new Graph();
    const x = g.input('x', 'float32', ['n', d]);
    const y = stack(g, x, [
      g.constant('w1', 'float32', [d, d], { kind: 'file', path: f1, ...l1! }),
      g.constant('w2', 'float32', [d, d], { kind: 'file', path: f2, ...l2! }),
    ]);
    const s = await RuntimeSession.fromGraph(g, { y }, { threads: 1 });
    const xs = uniform(rows * d, 33);
    const ref = refStack(xs, rows, d, [w1, w2]);
    const out = (await s.run({ x: { dtype: 'float32', shape: [rows, d], data: xs } })).y!;
    for (let i = 0; i < ref.length; i++) assert.ok(Math.abs((out.data[i] as number) - ref[i]!) < 1e-4);
    await s.dispose();
  } finally {
    process.chdir(cwd);
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('a constant that reads from a missing file is a RuntimeError naming the file', async () => {
  const g = new Graph();
  const x = g.input('x', 'float32', ['n', 4]);
  const missing = path.join(os.tmpdir(), 'peft-no-such-dir', 'weights.safetensors');
  const w = g.constant('w', 'float32', [4, 4], { kind: 'file', path: missing, offset: 8, length: 64 });
  await assert.rejects(
    RuntimeSession.fromGraph(g, { y: o.linear(x, w) }),
    (e: unknown) => e instanceof RuntimeError && e.message.includes(missing),
  );
});

test('an unavailable execution provider is a RuntimeError whose advice names no flag that does not exist', async (t) => {
  const { availableProviders } = await import('../../src/runtime/session.js');
  const missing = (['cuda', 'webgpu'] as const).find((p) => !availableProviders().includes(p));
  if (!missing) return t.skip('every provider is available on this machine');
  const g = new Graph();
  const x = g.input('x', 'float32', [2]);
  await assert.rejects(RuntimeSession.fromGraph(g, { y: o.add(x, x) }, { executionProvider: missing }), (e: unknown) => {
    assert.ok(e instanceof RuntimeError);
    assert.doesNotMatch(e.message, /--device/);
    assert.match(e.message, /leave executionProvider unset to run on the CPU/);
    return true;
  });
});

test('graph outputs are their producing nodes, renamed: an Identity only for an input, a constant or a second name', async () => {
  const g = new Graph();
  const x = g.input('x', 'float32', [2, 3]);
  const c = g.constant('c', 'float32', [2, 3], Float32Array.from([1, 2, 3, 4, 5, 6]));
  const s = o.add(x, c);
  const t = o.mul(s, 2);
  const outs = { sum: s, twice: t, twiceAgain: t, echo: x, constant: c };
  const lowered = lowerGraph(g, outs, 'm', { largeConstants: 'inline' });
  const identities = lowered.spec.nodes.filter((n) => n.opType === 'Identity').map((n) => n.outputs[0]);
  assert.deepEqual(identities.sort(), ['constant', 'echo', 'twiceAgain']);
  // the renamed outputs are produced by their own nodes, and `sum` still feeds the Mul
  const producer = (name: string) => lowered.spec.nodes.find((n) => n.outputs.includes(name))!;
  assert.equal(producer('sum').opType, 'Add');
  assert.equal(producer('twice').opType, 'Mul');
  assert.ok(producer('twice').inputs.includes('sum'));
  const session = await RuntimeSession.fromGraph(g, outs, { threads: 1 });
  const xs = Float32Array.from([0.5, -1, 2, 0, 3, -2]);
  const r = await session.run({ x: { dtype: 'float32', shape: [2, 3], data: xs } });
  const sum = Array.from(xs, (v, i) => v + i + 1);
  assert.deepEqual(Array.from(r.sum!.data as Float32Array), sum);
  assert.deepEqual(
    Array.from(r.twice!.data as Float32Array),
    sum.map((v) => 2 * v),
  );
  assert.deepEqual(
    Array.from(r.twiceAgain!.data as Float32Array),
    sum.map((v) => 2 * v),
  );
  assert.deepEqual(Array.from(r.echo!.data as Float32Array), Array.from(xs));
  assert.deepEqual(Array.from(r.constant!.data as Float32Array), [1, 2, 3, 4, 5, 6]);
  await session.dispose();
});
