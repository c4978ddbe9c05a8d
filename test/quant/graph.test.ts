// In-graph dequantization: the float32 weight ONNX Runtime rebuilds from the 4-bit constants equals
// the host dequantization bit for bit (both unpack modes, single and double quantization, partial
// blocks), and ONNX Runtime does not constant-fold it into a float32 initializer.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Graph } from '../../src/graph/ir.js';
import * as o from '../../src/graph/ops.js';
import { RuntimeSession } from '../../src/runtime/session.js';
import { toFloat32 } from '../../src/io/safetensors.js';
import { dequantize4bit, quantize4bit, type Quantized4bit } from '../../src/quant/blockwise.js';
import { dequantizeInGraph, type UnpackMode } from '../../src/quant/graph.js';
import { readTensors } from '../helpers/fixtures.js';

const ref = await readTensors('nf4', 'nf4_reference.safetensors');

async function inGraph(q: Quantized4bit, unpack: UnpackMode): Promise<Float32Array> {
  const g = new Graph();
  const w = dequantizeInGraph(g, 'w', q, { unpack });
  const s = await RuntimeSession.fromGraph(g, { out: o.identity(w) }, { threads: 1 });
  try {
    const r = await s.run({});
    assert.deepEqual(r.out!.shape, q.shape);
    return r.out!.data as Float32Array;
  } finally {
    await s.dispose();
  }
}

const bits = (a: Float32Array) => new Uint32Array(a.buffer, a.byteOffset, a.length);

const cases: { name: string; data: Float32Array; shape: number[] }[] = [];
for (let i = 0; i < 4; i++) cases.push({ name: `m${i}`, data: toFloat32(ref.get(`m${i}.weight`)!), shape: ref.get(`m${i}.weight`)!.shape });
// 301 blocks of 64 and a partial one: two nested blocks, the second partial; odd element count
const n = 64 * 301 + 37;
cases.push({ name: 'odd', data: Float32Array.from({ length: n }, (_, i) => Math.sin(i * 0.37) * (1 + (i % 97) / 10)), shape: [n] });

for (const c of cases) {
  for (const doubleQuant of [true, false]) {
    for (const type of ['nf4', 'fp4'] as const) {
      test(`${c.name} ${type} doubleQuant=${doubleQuant}: in-graph dequantization equals the host's bit for bit`, async () => {
        const q = quantize4bit(c.data, c.shape, { type, doubleQuant });
        const host = dequantize4bit(q);
        for (const unpack of ['pairs', 'bitops'] as const) assert.deepEqual(bits(await inGraph(q, unpack)), bits(host), unpack);
      });
    }
  }
}

test('ONNX Runtime (graph optimization "all") keeps only the 4-bit data: no folded float32 weight', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'peft-quant-'));
  try {
    const N = 512;
    const K = 512;
    const q = quantize4bit(
      Float32Array.from({ length: N * K }, (_, i) => Math.cos(i)),
      [N, K],
    );
    for (const unpack of ['pairs', 'bitops'] as const) {
      const g = new Graph();
      const x = g.input('x', 'float32', ['batch', K]);
      const y = o.matmulT(x, dequantizeInGraph(g, 'w', q, { unpack, after: x }));
      const path = join(dir, `${unpack}.onnx`);
      const s = await RuntimeSession.fromGraph(
        g,
        { y },
        { threads: 1, graphOptimization: 'all', sessionConfig: { 'session.optimized_model_filepath': path } },
      );
      // a folded weight would be N*K*4 = 1 MiB of initializer in the optimized model
      assert.ok(statSync(path).size < 16 * 1024, `${unpack}: optimized model is ${statSync(path).size} bytes`);
      assert.equal(s.memory.constantInputs, 3, 'packed codes, absmax codes and nested absmax are fed from their arrays');
      const r = await s.run({ x: { dtype: 'float32', shape: [1, K], data: new Float32Array(K).fill(1) } });
      const w = dequantize4bit(q);
      for (const row of [0, 17, N - 1]) {
        let sum = 0;
        for (let k = 0; k < K; k++) sum += w[row * K + k]!;
        assert.ok(Math.abs((r.y!.data[row] as number) - sum) < 1e-3);
      }
      await s.dispose();
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
