// DoRA on every layer kind peft 0.20 gives it that our architectures have: nn.Linear (Llama), GPT-2's
// Conv1D (weights stored [in, out]) and nn.Embedding (one magnitude per embedding column). Conv2d,
// peft's fourth DoRA layer, occurs in none of our models. The fixtures check the forward pass
// (linear: every fixtures-2026 family's lora_dora and the llama_dora grad trace; Conv1D:
// fixtures/adapters/gpt2/lora_dora); here every trained tensor's gradient is checked against central
// differences of the loss. peft detaches DoRA's weight norm, so d loss / d A and d loss / d B are not
// the derivatives of the plain forward: they are the derivatives with m / ||W + s·B·A|| held fixed,
// which a finite difference reproduces exactly by rescaling the magnitude with the norm (computed
// here in float64, independently of the library) at each displaced point.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { loadModel } from '../../../src/models/load.js';
import { getPeftModel } from '../../../src/tuners/load.js';
import type { LoraModel } from '../../../src/tuners/lora/index.js';
import type { TrainableTensor } from '../../../src/tuners/types.js';
import { fixtureBatch, fixturePath } from '../../helpers/fixtures.js';
import { compile } from '../lora_support.js';

type Kind = 'linear' | 'conv1d' | 'embedding';

/** Central-difference step: the loss curves strongly along embedding-LoRA entries, so 1e-2 is too coarse there. */
const H = 3e-3;

interface Site {
  kind: Kind;
  name: string;
  W: Float32Array;
  /** [rows, cols] of W as stored */
  shape: [number, number];
  A: TrainableTensor;
  B: TrainableTensor;
  magnitude: TrainableTensor;
  scaling: number;
}

/** DoRA's norm per output (linear/Conv1D) or per embedding column, in float64. */
function norms(s: Site): Float64Array {
  const [R, C] = s.shape;
  const r = s.A.shape[0]!;
  const A = s.A.data;
  const B = s.B.data;
  if (s.kind === 'linear') {
    // W [out, in]; B [out, r], A [r, in]
    return Float64Array.from({ length: R }, (_, o) => {
      let t = 0;
      for (let i = 0; i < C; i++) {
        let d = 0;
        for (let k = 0; k < r; k++) d += B[o * r + k]! * A[k * C + i]!;
        t += (s.W[o * C + i]! + s.scaling * d) ** 2;
      }
      return Math.sqrt(t);
    });
  }
  if (s.kind === 'conv1d') {
    // W [in, out]; B [out, r], A [r, in]
    return Float64Array.from({ length: C }, (_, o) => {
      let t = 0;
      for (let i = 0; i < R; i++) {
        let d = 0;
        for (let k = 0; k < r; k++) d += B[o * r + k]! * A[k * R + i]!;
        t += (s.W[i * C + o]! + s.scaling * d) ** 2;
      }
      return Math.sqrt(t);
    });
  }
  // embedding: W [V, D]; lora_embedding_A [r, V], lora_embedding_B [D, r]; one norm per column d
  return Float64Array.from({ length: C }, (_, d) => {
    let t = 0;
    for (let v = 0; v < R; v++) {
      let x = 0;
      for (let k = 0; k < r; k++) x += B[d * r + k]! * A[k * R + v]!;
      t += (s.W[v * C + d]! + s.scaling * x) ** 2;
    }
    return Math.sqrt(t);
  });
}

function sites(lm: LoraModel): Site[] {
  const a = lm.adapter('default');
  const out: Site[] = [];
  for (const [name, st] of a.modules) {
    const w = lm.base.weights.get(`${name}.weight`);
    out.push({
      kind: st.spec.layout === 'conv1d' ? 'conv1d' : 'linear',
      name,
      W: w.data,
      shape: w.shape as [number, number],
      A: st.A,
      B: st.B,
      magnitude: st.magnitude!,
      scaling: st.scaling,
    });
  }
  for (const [name, st] of a.embeddings) {
    const w = lm.base.weights.get(`${name}.weight`);
    out.push({
      kind: 'embedding',
      name,
      W: w.data,
      shape: w.shape as [number, number],
      A: st.A,
      B: st.B,
      magnitude: st.magnitude!,
      scaling: st.scaling,
    });
  }
  return out;
}

const CASES: { kind: Kind; model: string; targets: string[] }[] = [
  { kind: 'linear', model: 'llama', targets: ['q_proj', 'down_proj'] },
  { kind: 'conv1d', model: 'gpt2', targets: ['c_attn', 'c_fc'] },
  { kind: 'embedding', model: 'llama', targets: ['embed_tokens'] },
];

for (const c of CASES) {
  test(`DoRA on ${c.kind} (${c.model} ${c.targets.join(', ')}): gradients of A, B and the magnitude match central differences (norm held as peft detaches it)`, async () => {
    const b = await fixtureBatch(c.model);
    const lm = (await getPeftModel(
      await loadModel(fixturePath('models', c.model)),
      { r: 4, loraAlpha: 8, targetModules: c.targets, useDora: true, taskType: 'CAUSAL_LM' },
      { seed: 3 },
    )) as LoraModel;
    // Move away from the initial point: B non-zero, magnitudes off the norms.
    let seed = 11;
    const rand = () => (seed = (seed * 1103515245 + 12345) % 2147483648) / 2147483648 - 0.5;
    for (const [, t] of lm.parameters()) for (let i = 0; i < t.data.length; i++) t.data[i] += rand() * (t.data.length > 1000 ? 0.1 : 0.2);
    const all = sites(lm);
    assert.ok(all.length >= 1 && all.every((s) => s.kind === c.kind && s.magnitude), `every site is a DoRA ${c.kind}`);
    const params = lm.parameters();
    const nameOf = new Map([...params].map(([n, t]) => [t, n]));
    const comp = await compile(lm, b, { grads: true });
    try {
      const r = await comp.run(b, params);
      const loss = async () => (await comp.run(b, params)).loss!.data[0] as number;
      let checked = 0;
      for (const s of all.slice(0, 2)) {
        for (const [what, t] of [
          ['A', s.A],
          ['B', s.B],
          ['magnitude', s.magnitude],
        ] as const) {
          const g = r[`grad:${nameOf.get(t)}`]!.data as Float32Array;
          const idx = Array.from(g.keys())
            .sort((x, y) => Math.abs(g[y]!) - Math.abs(g[x]!))
            .slice(0, 2);
          for (const i of idx) {
            const h = H;
            const orig = t.data[i]!;
            const n0 = norms(s);
            const m0 = Float32Array.from(s.magnitude.data);
            const at = async (x: number) => {
              t.data[i] = x;
              // A and B: keep m / ||W + s·B·A|| as it was (peft's detached norm); the magnitude itself moves freely.
              if (what !== 'magnitude') {
                const n1 = norms(s);
                for (let j = 0; j < m0.length; j++) s.magnitude.data[j] = (m0[j]! * n1[j]!) / n0[j]!;
              }
              const v = await loss();
              s.magnitude.data.set(m0);
              return v;
            };
            const fd = ((await at(orig + h)) - (await at(orig - h))) / (2 * h);
            t.data[i] = orig;
            assert.ok(
              Math.abs(fd - g[i]!) <= 2e-4 + 3e-2 * Math.abs(g[i]!),
              `${s.name} ${what}[${i}]: autodiff ${g[i]} vs central difference ${fd}`,
            );
            checked++;
          }
        }
      }
      assert.ok(checked >= 6, `checked ${checked} entries`);
      // Without the rescaling, A's finite difference is NOT the gradient (the norm is detached): the check can fail.
      const s = all[0]!;
      const g = r[`grad:${nameOf.get(s.A)}`]!.data as Float32Array;
      const i = Array.from(g.keys()).sort((x, y) => Math.abs(g[y]!) - Math.abs(g[x]!))[0]!;
      const orig = s.A.data[i]!;
      s.A.data[i] = orig + H;
      const up = await loss();
      s.A.data[i] = orig - H;
      const down = await loss();
      s.A.data[i] = orig;
      const plain = (up - down) / (2 * H);
      assert.ok(
        Math.abs(plain - g[i]!) > 1e-3 * Math.abs(g[i]!),
        `plain finite difference ${plain} vs ${g[i]}: the detached norm should show`,
      );
    } finally {
      await comp.dispose();
    }
  });
}
