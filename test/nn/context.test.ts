// BuildContext.layer / recomputed: which decoder layers a training graph checkpoints for each
// gradientCheckpointing setting (every layer, every k-th from layer 0, none), and that selective
// recomputation applies only outside a checkpointed layer; halfEmbedding's float16 lookup.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { PeftError } from '../../src/errors.js';
import { Graph, type Value } from '../../src/graph/ir.js';
import * as o from '../../src/graph/ops.js';
import { BuildContext, type BuildOptions } from '../../src/nn/context.js';
import { WeightStore } from '../../src/nn/weights.js';
import { RuntimeSession } from '../../src/runtime/session.js';

/** Checkpoint nodes of a 5-layer stack built with `opts`: [layer regions, selective regions]. */
function regions(opts: BuildOptions): [number, number] {
  const g = new Graph();
  const ctx = new BuildContext(g, new WeightStore(), opts);
  let h: Value = g.input('x', 'float32', [2, 3]);
  let selective = 0;
  for (let i = 0; i < 5; i++) {
    h = ctx.layer(i, h, (x) => {
      const before = g.nodes.length;
      const y = ctx.recomputed([x], ([v]) => o.mul(o.tanh(v!), v!));
      if (g.nodes.slice(before).some((n) => n.op === 'Checkpoint')) selective++;
      return o.add(y, x);
    });
  }
  const all = g.nodes.filter((n) => n.op === 'Checkpoint').length;
  return [all - selective, selective];
}

test('gradientCheckpointing: true checkpoints every layer, k every k-th from layer 0, false or 0 none', () => {
  const training = { training: true, selectiveRecompute: false };
  assert.deepEqual(regions({ ...training, gradientCheckpointing: true }), [5, 0]);
  assert.deepEqual(regions({ ...training, gradientCheckpointing: 1 }), [5, 0]);
  assert.deepEqual(regions({ ...training, gradientCheckpointing: 2 }), [3, 0]);
  assert.deepEqual(regions({ ...training, gradientCheckpointing: 3 }), [2, 0]);
  assert.deepEqual(regions({ ...training, gradientCheckpointing: 0 }), [0, 0]);
  assert.deepEqual(regions({ ...training, gradientCheckpointing: false }), [0, 0]);
  assert.deepEqual(regions({ training: false, gradientCheckpointing: true }), [0, 0]);
});

test('selective recomputation applies in the layers that are not checkpointed', () => {
  assert.deepEqual(regions({ training: true, selectiveRecompute: true, gradientCheckpointing: 2 }), [3, 2]);
  assert.deepEqual(regions({ training: true, selectiveRecompute: true, gradientCheckpointing: false }), [0, 5]);
  assert.deepEqual(regions({ training: true, selectiveRecompute: true, gradientCheckpointing: true }), [5, 0]);
});

test('a gradientCheckpointing that is not a whole number of layers is a PeftError', () => {
  for (const bad of [-1, 1.5, Number.NaN])
    assert.throws(
      () => new BuildContext(new Graph(), new WeightStore(), { gradientCheckpointing: bad }),
      (e: unknown) => e instanceof PeftError && /whole number/.test(e.message),
    );
});

test('halfEmbedding: a tied embedding on the int8 base is looked up in a float16 copy (within 2^-11), else undefined', async () => {
  const [V, H] = [37, 8];
  const data = Float32Array.from({ length: V * H }, (_, i) => Math.sin(i * 0.37) * (1 + (i % 5)));
  const weights = new WeightStore();
  weights.set('wte.weight', { shape: [V, H], data });
  weights.alias('lm_head.weight', 'wte.weight');
  const g = new Graph();
  const ids = g.input('ids', 'int64', [2, 3]);
  const ctx = new BuildContext(g, weights, { basePrecision: 'int8' });
  const y = ctx.halfEmbedding('wte.weight', ids);
  assert.ok(y);
  assert.deepEqual(y.shape, [2, 3, H]);
  // one copy per weight array, shared by every graph built over it
  assert.equal(ctx.halfWeight('lm_head.weight'), ctx.halfWeight('wte.weight'));
  // not on the float32 base, nor for an embedding that is not the LM head
  assert.equal(new BuildContext(new Graph(), weights, {}).halfEmbedding('wte.weight', ids), undefined);
  const untied = new WeightStore();
  untied.set('wte.weight', { shape: [V, H], data });
  assert.equal(new BuildContext(new Graph(), untied, { basePrecision: 'int8' }).halfEmbedding('wte.weight', ids), undefined);
  const rows = [0, 5, 36, 5, 12, 1];
  const s = await RuntimeSession.fromGraph(g, { y }, { threads: 1 });
  const out = (await s.run({ ids: { dtype: 'int64', shape: [2, 3], data: BigInt64Array.from(rows.map(BigInt)) } })).y!.data as Float32Array;
  await s.dispose();
  rows.forEach((r, i) => {
    for (let k = 0; k < H; k++) {
      const want = data[r * H + k]!;
      assert.ok(Math.abs(out[i * H + k]! - want) <= Math.abs(want) * 2 ** -11, `row ${r}[${k}]: ${out[i * H + k]} vs ${want}`);
    }
  });
});
