// peft's PromptEncoder built in the graph IR. MLP: Linear-ReLU-Linear-ReLU-Linear (token_dim ->
// hidden -> hidden -> token_dim). LSTM: a bidirectional multi-layer LSTM unrolled over the P
// virtual tokens (torch gate order i, f, g, o; zero initial state), then Linear-ReLU-Linear.

import type { Value } from '../../graph/ir.js';
import * as o from '../../graph/ops.js';
import type { TrainableTensor } from '../types.js';
import { type SeededRandom, uniforms } from '../../nn/random.js';
import { linearInit } from '../prompt_learning/init.js';
import type { PromptEncoderConfig } from './config.js';

/** Encoder tensors by their names under prompt_encoder.<adapter>. (torch's module names). */
export function encoderShapes(cfg: PromptEncoderConfig): Map<string, number[]> {
  const D = cfg.tokenDim;
  const H = cfg.encoderHiddenSize;
  const shapes = new Map<string, number[]>();
  const linear = (name: string, out: number, inp: number) => shapes.set(`${name}.weight`, [out, inp]).set(`${name}.bias`, [out]);
  if (cfg.encoderReparameterizationType === 'MLP') {
    linear('mlp_head.0', H, D);
    linear('mlp_head.2', H, H);
    linear('mlp_head.4', D, H);
    return shapes;
  }
  for (let l = 0; l < cfg.encoderNumLayers; l++) {
    const inp = l === 0 ? D : 2 * H;
    for (const sfx of ['', '_reverse']) {
      shapes.set(`lstm_head.weight_ih_l${l}${sfx}`, [4 * H, inp]);
      shapes.set(`lstm_head.weight_hh_l${l}${sfx}`, [4 * H, H]);
      shapes.set(`lstm_head.bias_ih_l${l}${sfx}`, [4 * H]);
      shapes.set(`lstm_head.bias_hh_l${l}${sfx}`, [4 * H]);
    }
  }
  linear('mlp_head.0', 2 * H, 2 * H);
  linear('mlp_head.2', D, 2 * H);
  return shapes;
}

/** torch's default initial values: Linear ~ U(+-1/sqrt(fan_in)), LSTM ~ U(+-1/sqrt(hidden)). */
export function initialEncoder(cfg: PromptEncoderConfig, rng: SeededRandom): Map<string, TrainableTensor> {
  const out = new Map<string, TrainableTensor>();
  const shapes = encoderShapes(cfg);
  for (const [name, shape] of shapes) {
    if (out.has(name)) continue;
    if (name.startsWith('lstm_head.')) {
      out.set(name, {
        shape,
        data: uniforms(
          rng,
          shape.reduce((a, b) => a * b, 1),
          1 / Math.sqrt(cfg.encoderHiddenSize),
        ),
      });
    } else if (name.endsWith('.weight')) {
      const { weight, bias } = linearInit(rng, shape[0]!, shape[1]!);
      out.set(name, weight).set(name.replace(/\.weight$/, '.bias'), bias);
    }
  }
  return out;
}

/** One LSTM direction over the rows of x [P, in]: hidden states [P, hidden] in position order. */
function lstmDirection(x: Value, w: { ih: Value; hh: Value; bih: Value; bhh: Value }, hidden: number, reverse: boolean): Value {
  const P = x.shape[0] as number;
  // Input contributions for every step at once; the recurrence only adds h @ W_hh^T.
  const xw = o.add(o.linear(x, w.ih, w.bih), w.bhh);
  const outs: Value[] = new Array<Value>(P);
  let h: Value | undefined;
  let c: Value | undefined;
  for (let s = 0; s < P; s++) {
    const t = reverse ? P - 1 - s : s;
    let gates = o.slice(xw, 0, t, t + 1);
    if (h) gates = o.add(gates, o.matmulT(h, w.hh));
    const [i, f, g, out] = o.split(gates, 1, [hidden, hidden, hidden, hidden]) as [Value, Value, Value, Value];
    const ig = o.mul(o.sigmoid(i), o.tanh(g));
    c = c ? o.add(o.mul(o.sigmoid(f), c), ig) : ig;
    h = o.mul(o.sigmoid(out), o.tanh(c));
    outs[t] = h;
  }
  return o.concat(outs, 0);
}

/**
 * The encoder output [P, token_dim] from the virtual-token embeddings [P, token_dim]. `dropout`
 * applies encoder_dropout to each LSTM layer's output but the last, as torch's nn.LSTM does.
 */
export function encode(
  cfg: PromptEncoderConfig,
  embeddings: Value,
  param: (name: string) => Value,
  dropout: (x: Value, layer: number) => Value = (x) => x,
): Value {
  const lin = (x: Value, name: string) => o.linear(x, param(`${name}.weight`), param(`${name}.bias`));
  if (cfg.encoderReparameterizationType === 'MLP') {
    return lin(o.relu(lin(o.relu(lin(embeddings, 'mlp_head.0')), 'mlp_head.2')), 'mlp_head.4');
  }
  const H = cfg.encoderHiddenSize;
  let x = embeddings;
  for (let l = 0; l < cfg.encoderNumLayers; l++) {
    const dir = (sfx: string) => ({
      ih: param(`lstm_head.weight_ih_l${l}${sfx}`),
      hh: param(`lstm_head.weight_hh_l${l}${sfx}`),
      bih: param(`lstm_head.bias_ih_l${l}${sfx}`),
      bhh: param(`lstm_head.bias_hh_l${l}${sfx}`),
    });
    x = o.concat([lstmDirection(x, dir(''), H, false), lstmDirection(x, dir('_reverse'), H, true)], 1);
    if (l < cfg.encoderNumLayers - 1) x = dropout(x, l);
  }
  return lin(o.relu(lin(x, 'mlp_head.0')), 'mlp_head.2');
}
