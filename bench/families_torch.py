"""PyTorch peer of bench/families.ts (forward rows): the six issue-13 families in plain torch
(transformers is not installed here), with the shapes and features of families.ts's FAMILIES and the
ops transformers' eager code runs: RMSNorm in float32, rotary with rotate_half, repeat_kv for GQA,
float additive masks and float32 softmax.

  qwen3      llama + per-head q/k RMSNorm before rotary
  gemma3_text (1 + w) RMSNorm, embeddings * sqrt(hidden), q/k norm, sandwich norms around attention and
             MLP, gelu_tanh gated MLP, query_pre_attn_scalar, sliding-window layers (local rope base)
             and every 6th layer global
  phi3       fused qkv_proj and gate_up_proj, untied head
  llama3     llama with llama3 rope scaling of the inverse frequencies
  smollm3    llama with no rotary on every 4th layer
  modernbert bidirectional encoder, LayerNorm without bias, fused Wqkv, GLU MLP (gelu), local (128
             window) and global (every 3rd) layers with their rope bases, CLS pooling head, 2 labels

One forward pass over batch x seq random tokens (decoders: logits at every position; ModernBERT: class
logits) under inference_mode, float32. Prints one JSON line per family.

  OMP_WAIT_POLICY=PASSIVE PYTHONPATH=$HOME/torch213 python3 bench/families_torch.py --family qwen3 --layers 8
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

H, HEADS, KV, HD, INTER, VOCAB = 576, 9, 3, 64, 1536, 49152


class RMSNorm(nn.Module):
    def __init__(self, d, eps=1e-5, gemma=False):
        super().__init__()
        self.eps, self.gemma = eps, gemma
        self.weight = nn.Parameter(torch.zeros(d) if gemma else torch.ones(d))

    def forward(self, x):
        dt = x.dtype
        x = x.float()
        x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)
        if self.gemma:
            return (x * (1.0 + self.weight.float())).to(dt)
        return self.weight * x.to(dt)


def inv_freq(theta, dim=HD, llama3=None):
    f = 1.0 / (theta ** (torch.arange(0, dim, 2, dtype=torch.int64).float() / dim))
    if llama3:
        factor, lo, hi, old = llama3
        lo_wl, hi_wl = old / lo, old / hi
        wl = 2 * math.pi / f
        f_l = torch.where(wl > lo_wl, f / factor, f)
        smooth = (old / wl - lo) / (hi - lo)
        smoothed = (1 - smooth) * f_l / factor + smooth * f_l
        med = ~(wl < hi_wl) * ~(wl > lo_wl)
        f = torch.where(med, smoothed, f_l)
    return f


def rope(pos, f):
    fr = pos[:, :, None].float() * f[None, None, :]
    emb = torch.cat((fr, fr), dim=-1)
    return emb.cos()[:, None], emb.sin()[:, None]


def rotate_half(x):
    a, b = x[..., : x.shape[-1] // 2], x[..., x.shape[-1] // 2:]
    return torch.cat((-b, a), dim=-1)


def apply_rope(q, k, cs):
    cos, sin = cs
    return q * cos + rotate_half(q) * sin, k * cos + rotate_half(k) * sin


def repeat_kv(x, n):
    if n == 1:
        return x
    b, h, s, d = x.shape
    return x[:, :, None].expand(b, h, n, s, d).reshape(b, h * n, s, d)


def attention(q, k, v, mask, scale):
    k, v = repeat_kv(k, q.shape[1] // k.shape[1]), repeat_kv(v, q.shape[1] // v.shape[1])
    w = torch.matmul(q, k.transpose(2, 3)) * scale + mask
    w = F.softmax(w, dim=-1, dtype=torch.float32).to(q.dtype)
    return torch.matmul(w, v)


def causal_mask(s, window=None):
    i = torch.arange(s)
    ok = i[None, :] <= i[:, None]
    if window:
        ok = ok & (i[:, None] - i[None, :] < window)
    return torch.where(ok, 0.0, torch.finfo(torch.float32).min)[None, None]


class DecoderLayer(nn.Module):
    def __init__(self, fam, i):
        super().__init__()
        self.fam, self.i = fam, i
        gemma = fam == 'gemma3_text'
        eps = 1e-6 if gemma else 1e-5
        if fam == 'phi3':
            self.qkv_proj = nn.Linear(H, (HEADS + 2 * KV) * HD, bias=False)
            self.gate_up_proj = nn.Linear(H, 2 * INTER, bias=False)
        else:
            self.q_proj = nn.Linear(H, HEADS * HD, bias=False)
            self.k_proj = nn.Linear(H, KV * HD, bias=False)
            self.v_proj = nn.Linear(H, KV * HD, bias=False)
            self.gate_proj = nn.Linear(H, INTER, bias=False)
            self.up_proj = nn.Linear(H, INTER, bias=False)
        self.o_proj = nn.Linear(HEADS * HD, H, bias=False)
        self.down_proj = nn.Linear(INTER, H, bias=False)
        self.input_layernorm = RMSNorm(H, eps, gemma)
        self.post_attention_layernorm = RMSNorm(H, eps, gemma)
        if fam in ('qwen3', 'gemma3_text'):
            self.q_norm, self.k_norm = RMSNorm(HD, eps, gemma), RMSNorm(HD, eps, gemma)
        if gemma:
            self.pre_feedforward_layernorm = RMSNorm(H, eps, True)
            self.post_feedforward_layernorm = RMSNorm(H, eps, True)
            self.sliding = (i + 1) % 6 != 0
        self.use_rope = not (fam == 'smollm3' and (i + 1) % 4 == 0)
        self.scale = 64 ** -0.5 if gemma else HD ** -0.5

    def forward(self, x, cs, mask):
        b, s, _ = x.shape
        h = self.input_layernorm(x)
        if self.fam == 'phi3':
            qkv = self.qkv_proj(h)
            q, k, v = qkv.split([HEADS * HD, KV * HD, KV * HD], dim=-1)
        else:
            q, k, v = self.q_proj(h), self.k_proj(h), self.v_proj(h)
        q = q.view(b, s, HEADS, HD).transpose(1, 2)
        k = k.view(b, s, KV, HD).transpose(1, 2)
        v = v.view(b, s, KV, HD).transpose(1, 2)
        if hasattr(self, 'q_norm'):
            q, k = self.q_norm(q), self.k_norm(k)
        if self.use_rope:
            q, k = apply_rope(q, k, cs)
        a = attention(q, k, v, mask, self.scale).transpose(1, 2).reshape(b, s, HEADS * HD)
        a = self.o_proj(a)
        if self.fam == 'gemma3_text':
            x = x + self.post_attention_layernorm(a)
            h = self.pre_feedforward_layernorm(x)
            m = self.down_proj(F.gelu(self.gate_proj(h), approximate='tanh') * self.up_proj(h))
            return x + self.post_feedforward_layernorm(m)
        x = x + a
        h = self.post_attention_layernorm(x)
        if self.fam == 'phi3':
            g, u = self.gate_up_proj(h).chunk(2, dim=-1)
        else:
            g, u = self.gate_proj(h), self.up_proj(h)
        return x + self.down_proj(F.silu(g) * u)


class Decoder(nn.Module):
    def __init__(self, fam, layers):
        super().__init__()
        self.fam = fam
        self.embed_tokens = nn.Embedding(VOCAB, H)
        self.layers = nn.ModuleList(DecoderLayer(fam, i) for i in range(layers))
        self.norm = RMSNorm(H, 1e-6 if fam == 'gemma3_text' else 1e-5, fam == 'gemma3_text')
        self.lm_head = nn.Linear(H, VOCAB, bias=False)
        if fam != 'phi3':
            self.lm_head.weight = self.embed_tokens.weight
        theta = {'qwen3': 1e6, 'gemma3_text': 1e6, 'phi3': 1e4, 'llama3': 5e5, 'smollm3': 2e6}[fam]
        self.f = inv_freq(theta, llama3=(32.0, 1.0, 4.0, 8192) if fam == 'llama3' else None)
        self.f_local = inv_freq(1e4)

    def forward(self, ids):
        b, s = ids.shape
        x = self.embed_tokens(ids)
        if self.fam == 'gemma3_text':
            x = x * torch.tensor(H ** 0.5, dtype=x.dtype)
        pos = torch.arange(s)[None].expand(b, s)
        cs = rope(pos, self.f)
        full = causal_mask(s)
        if self.fam == 'gemma3_text':
            cs_local, sliding = rope(pos, self.f_local), causal_mask(s, 128)
        for layer in self.layers:
            if self.fam == 'gemma3_text' and layer.sliding:
                x = layer(x, cs_local, sliding)
            else:
                x = layer(x, cs, full)
        return self.lm_head(self.norm(x))


class BertLayer(nn.Module):
    def __init__(self, i):
        super().__init__()
        self.attn_norm = nn.Identity() if i == 0 else nn.LayerNorm(H, eps=1e-5, bias=False)
        self.Wqkv = nn.Linear(H, 3 * H, bias=False)
        self.Wo = nn.Linear(H, H, bias=False)
        self.mlp_norm = nn.LayerNorm(H, eps=1e-5, bias=False)
        self.Wi = nn.Linear(H, 2 * INTER, bias=False)
        self.mlp_Wo = nn.Linear(INTER, H, bias=False)
        self.is_global = i % 3 == 0

    def forward(self, x, cs, mask):
        b, s, _ = x.shape
        qkv = self.Wqkv(self.attn_norm(x)).view(b, s, 3, HEADS, HD)
        q, k, v = qkv.transpose(3, 1).unbind(dim=2)
        q, k = apply_rope(q, k, cs)
        a = attention(q, k, v, mask, HD ** -0.5).transpose(1, 2).reshape(b, s, H)
        x = x + self.Wo(a)
        inp, gate = self.Wi(self.mlp_norm(x)).chunk(2, dim=-1)
        return x + self.mlp_Wo(F.gelu(inp) * gate)


class ModernBert(nn.Module):
    def __init__(self, layers):
        super().__init__()
        self.tok_embeddings = nn.Embedding(50368, H)
        self.emb_norm = nn.LayerNorm(H, eps=1e-5, bias=False)
        self.layers = nn.ModuleList(BertLayer(i) for i in range(layers))
        self.final_norm = nn.LayerNorm(H, eps=1e-5, bias=False)
        self.head_dense = nn.Linear(H, H, bias=False)
        self.head_norm = nn.LayerNorm(H, eps=1e-5, bias=False)
        self.classifier = nn.Linear(H, 2)
        self.f_global, self.f_local = inv_freq(160000.0), inv_freq(10000.0)

    def forward(self, ids):
        b, s = ids.shape
        x = self.emb_norm(self.tok_embeddings(ids))
        pos = torch.arange(s)[None].expand(b, s)
        cs_g, cs_l = rope(pos, self.f_global), rope(pos, self.f_local)
        full = torch.zeros(1, 1, s, s)
        i = torch.arange(s)
        local = torch.where((i[None, :] - i[:, None]).abs() <= 64, 0.0, torch.finfo(torch.float32).min)[None, None]
        for layer in self.layers:
            x = layer(x, cs_g, full) if layer.is_global else layer(x, cs_l, local)
        x = self.final_norm(x)[:, 0]
        return self.classifier(self.head_norm(F.gelu(self.head_dense(x))))


def busy_cores():
    with open('/proc/stat') as f:
        v = [int(x) for x in f.readline().split()[1:9]]
    return (sum(v) - v[3] - v[4]) / os.sysconf('SC_CLK_TCK')


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--family', required=True, choices=['qwen3', 'gemma3_text', 'phi3', 'llama3', 'smollm3', 'modernbert'])
    ap.add_argument('--layers', type=int, default=30)
    ap.add_argument('--batch', type=int, default=2)
    ap.add_argument('--seq', type=int, default=256)
    ap.add_argument('--warmup', type=int, default=1)
    ap.add_argument('--runs', type=int, default=3)
    ap.add_argument('--threads', type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = (ModernBert(args.layers) if args.family == 'modernbert' else Decoder(args.family, args.layers)).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() == 2:
                p.normal_(0, 0.02)
    params = sum(p.numel() for p in model.parameters())
    vocab = 50368 if args.family == 'modernbert' else VOCAB
    ids = torch.randint(0, vocab, (args.batch, args.seq), generator=torch.Generator().manual_seed(7))
    with torch.inference_mode():
        for _ in range(args.warmup):
            out = model(ids)
        if not torch.isfinite(out).all():
            sys.exit('non-finite output')
        times = []
        c0, b0, w0 = time.process_time(), busy_cores(), time.perf_counter()
        for _ in range(args.runs):
            t = time.perf_counter()
            model(ids)
            times.append(time.perf_counter() - t)
        cpu, wall = time.process_time() - c0, time.perf_counter() - w0
    other = max(0.0, (busy_cores() - b0 - cpu) / wall)
    med = sorted(times)[len(times) // 2]
    n = args.batch * args.seq
    res = dict(family=args.family, layers=args.layers, params=params, batch=args.batch, seq=args.seq, torch=torch.__version__, threads=args.threads,
               median_s=med, times_s=times, tokens_per_s=n / med, other_cpu=other, out_shape=list(out.shape))
    print(json.dumps(res))
    print('torch %s %s forward %dx%d: %.1f tok/s (median %.3f s; other cpu %.2f)' % (torch.__version__, args.family, args.batch, args.seq, n / med, med, other), file=sys.stderr)


if __name__ == '__main__':
    main()
