"""PyTorch peer of bench/decode.ts: batch-1 greedy decoding with a KV cache on a GPT-2-small-shaped
model (random seeded weights; 124,439,808 params, tied head), written in plain torch the way
transformers' GPT2LMHeadModel computes it in eager mode: fused c_attn, matmul / sqrt(d) attention
with a causal torch.where mask, softmax, gelu_new as the tanh formula, LayerNorm, LM head on the
last position only (as our decode session). The loop is leaner than model.generate (no logits
processors), so its tok/s is an upper bound for HF generate on the same torch.

Prints one JSON line: new tok/s = new tokens / (prefill + steps), decode-only tok/s, prefill ms,
process CPU seconds per new token, and the cores other processes used while timing.

  OMP_WAIT_POLICY=PASSIVE PYTHONPATH=$HOME/torch213 python3 bench/decode_torch.py --dtype float32
  ... --dtype bfloat16          # weights and activations bf16 (oneDNN AVX512_BF16)
  ... --dtype int8              # torch.ao dynamic int8 quantization of every nn.Linear (peer of --int8)
  ... --sdpa                    # F.scaled_dot_product_attention instead of the eager attention
"""
import argparse
import json
import math
import os
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


class Block(nn.Module):
    def __init__(self, d, heads, sdpa):
        super().__init__()
        self.heads, self.hd, self.sdpa = heads, d // heads, sdpa
        self.ln_1 = nn.LayerNorm(d, eps=1e-5)
        self.c_attn = nn.Linear(d, 3 * d)
        self.c_proj = nn.Linear(d, d)
        self.ln_2 = nn.LayerNorm(d, eps=1e-5)
        self.c_fc = nn.Linear(d, 4 * d)
        self.mlp_proj = nn.Linear(4 * d, d)

    def forward(self, x, past):
        b, s, d = x.shape
        q, k, v = self.c_attn(self.ln_1(x)).split(d, dim=2)
        q, k, v = (t.view(b, s, self.heads, self.hd).transpose(1, 2) for t in (q, k, v))
        if past is not None:
            k = torch.cat([past[0], k], dim=2)
            v = torch.cat([past[1], v], dim=2)
        total = k.shape[2]
        if self.sdpa:
            a = F.scaled_dot_product_attention(q, k, v, is_causal=s > 1)
        else:
            w = torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(self.hd)
            causal = torch.ones(s, total, dtype=torch.bool, device=x.device).tril(total - s)
            w = torch.where(causal, w, torch.finfo(w.dtype).min)
            a = torch.matmul(F.softmax(w, dim=-1).to(v.dtype), v)
        a = a.transpose(1, 2).reshape(b, s, d)
        x = x + self.c_proj(a)
        h = self.c_fc(self.ln_2(x))
        h = 0.5 * h * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (h + 0.044715 * torch.pow(h, 3.0))))
        return x + self.mlp_proj(h), (k, v)


class GPT2(nn.Module):
    def __init__(self, vocab=50257, d=768, layers=12, heads=12, positions=1024, sdpa=False):
        super().__init__()
        self.wte = nn.Embedding(vocab, d)
        self.wpe = nn.Embedding(positions, d)
        self.h = nn.ModuleList(Block(d, heads, sdpa) for _ in range(layers))
        self.ln_f = nn.LayerNorm(d, eps=1e-5)
        self.lm_head = nn.Linear(d, vocab, bias=False)
        self.lm_head.weight = self.wte.weight  # tied

    def forward(self, ids, pos, past):
        x = self.wte(ids) + self.wpe(pos)
        presents = []
        for i, blk in enumerate(self.h):
            x, kv = blk(x, None if past is None else past[i])
            presents.append(kv)
        return self.lm_head(self.ln_f(x[:, -1:, :])), presents


def busy_cores():
    with open('/proc/stat') as f:
        v = [int(x) for x in f.readline().split()[1:9]]
    return (sum(v) - v[3] - v[4]) / os.sysconf('SC_CLK_TCK')


@torch.inference_mode()
def generate(model, prompt, new):
    t0 = time.perf_counter()
    ids = prompt
    logits, past = model(ids, torch.arange(ids.shape[1]).unsqueeze(0), None)
    t1 = time.perf_counter()
    out = []
    n = ids.shape[1]
    for i in range(new):
        nxt = logits[:, -1, :].float().argmax(-1, keepdim=True)
        out.append(int(nxt))
        if i == new - 1:
            break
        logits, past = model(nxt, torch.tensor([[n + i]]), past)
    t2 = time.perf_counter()
    return out, t1 - t0, t2 - t0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--dtype', choices=['float32', 'bfloat16', 'int8'], default='float32')
    ap.add_argument('--sdpa', action='store_true')
    ap.add_argument('--threads', type=int, default=2)
    ap.add_argument('--prompt', type=int, default=32)
    ap.add_argument('--new', type=int, default=64)
    ap.add_argument('--warmup', type=int, default=1)
    ap.add_argument('--runs', type=int, default=3)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = GPT2(sdpa=args.sdpa).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.02)
    if args.dtype == 'bfloat16':
        model = model.to(torch.bfloat16)
    elif args.dtype == 'int8':
        model = torch.ao.quantization.quantize_dynamic(model, {nn.Linear}, dtype=torch.qint8)
    params = sum(p.numel() for p in GPT2().parameters())
    g = torch.Generator().manual_seed(11)
    prompt = torch.randint(0, 50257, (1, args.prompt), generator=g)
    for _ in range(args.warmup):
        generate(model, prompt, args.new)
    totals, prefills, tokens = [], [], None
    c0, b0, w0 = time.process_time(), busy_cores(), time.perf_counter()
    for _ in range(args.runs):
        toks, pre, tot = generate(model, prompt, args.new)
        if tokens is not None and toks != tokens:
            sys.exit('greedy decoding is not deterministic across runs')
        tokens = toks
        totals.append(tot)
        prefills.append(pre)
    cpu, wall = time.process_time() - c0, time.perf_counter() - w0
    other = max(0.0, (busy_cores() - b0 - cpu) / wall)
    med = sorted(totals)[len(totals) // 2]
    pre = sorted(prefills)[len(prefills) // 2]
    res = dict(model='gpt2', params=params, dtype=args.dtype, sdpa=args.sdpa, threads=args.threads, torch=torch.__version__,
               prompt=args.prompt, new_tokens=args.new, runs=args.runs, median_s=med, times_s=totals,
               tokens_per_s=args.new / med, decode_tokens_per_s=(args.new - 1) / (med - pre), prefill_ms=pre * 1000,
               cpu_ms_per_token=cpu * 1000 / (args.runs * args.new), other_cpu=other)
    print(json.dumps(res))
    print('torch %s gpt2 %s%s: %.2f new tok/s (prefill %.1f ms, decode-only %.2f tok/s, %.1f CPU ms/token, other cpu %.2f)'
          % (torch.__version__, args.dtype, ' sdpa' if args.sdpa else '', res['tokens_per_s'], res['prefill_ms'],
             res['decode_tokens_per_s'], res['cpu_ms_per_token'], other), file=sys.stderr)


if __name__ == '__main__':
    main()
