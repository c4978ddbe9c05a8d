#!/usr/bin/env python3
"""The PyTorch peer of peft-ts's benchmarks (CPU): fine-tuning and greedy decoding speed of
GPT-2 small and a SmolLM-135M-shaped Llama, random seeded weights, in float32 or bfloat16.

Written for this repository so every table in bench/RESULTS.md can be rerun from a clone. It needs
only torch (no transformers, no peft): the models run the ops transformers' eager GPT2/Llama code
runs, and the methods are applied the way peft applies them (the bottleneck adapter as the
`adapters` library's SeqBn / Pfeiffer). Same models and methods as ../shared/bench/peer_torch.py.

  python3 bench/peer_torch.py --model gpt2 --method lora-qv --batch 4 --seq 256 --warmup 2 --steps 3 --sdpa --dtype bfloat16
  python3 bench/peer_torch.py --model llama --method lora-qv --infer
  python3 bench/peer_torch.py --model tiny --method prefix --batch 2 --seq 32 --steps 2      # smoke test

Training prints one JSON line on stdout per run, --infer one per variant; a summary goes to stderr.
"""
import argparse
import json
import math
import os
import resource
import statistics
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

# Hugging Face configs of the benchmark models (parameter counts as the real checkpoints).
CONFIGS = {
    "gpt2": dict(family="gpt2", vocab=50257, n_layer=12, hidden=768, n_head=12, n_kv=12, inner=3072, n_pos=1024, eps=1e-5),
    "llama": dict(family="llama", vocab=49152, n_layer=30, hidden=576, n_head=9, n_kv=3, inner=1536, n_pos=2048, eps=1e-5, theta=10000.0),
    "tiny": dict(family="gpt2", vocab=1000, n_layer=2, hidden=64, n_head=4, n_kv=4, inner=256, n_pos=512, eps=1e-5),
    "tiny-llama": dict(family="llama", vocab=1000, n_layer=2, hidden=64, n_head=4, n_kv=2, inner=172, n_pos=512, eps=1e-5, theta=10000.0),
}
METHODS = ("lora-qv", "lora-all", "ia3", "prompt", "prefix", "adapter", "full")
# Modules (relative to a block) each method wraps: peft's defaults for lora-qv / ia3 on these model
# types; lora-all = every attention and MLP projection. ia3_ff: IA3 scales their input instead.
WRAPPED = {
    "gpt2": dict(lora_qv=["attn.c_attn"], lora_all=["attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj"],
                 ia3=["attn.c_attn"], ia3_ff=["mlp.c_proj"]),
    "llama": dict(lora_qv=["attn.q_proj", "attn.v_proj"],
                  lora_all=["attn.q_proj", "attn.k_proj", "attn.v_proj", "attn.o_proj", "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"],
                  ia3=["attn.k_proj", "attn.v_proj"], ia3_ff=["mlp.down_proj"]),
}


# ------------------------------------------------------------------------------------ modules
class Conv1D(nn.Module):
    """GPT-2's Conv1D: weight [in, out], y = x @ W + b via addmm."""

    def __init__(self, n_in, n_out, std=0.02):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(n_in, n_out) * std)
        self.bias = nn.Parameter(torch.zeros(n_out))

    @property
    def in_features(self):
        return self.weight.shape[0]

    @property
    def out_features(self):
        return self.weight.shape[1]

    def forward(self, x):
        flat = torch.addmm(self.bias, x.reshape(-1, x.shape[-1]), self.weight)
        return flat.reshape(*x.shape[:-1], self.weight.shape[1])


def dense(n_in, n_out):
    layer = nn.Linear(n_in, n_out, bias=False)
    nn.init.normal_(layer.weight, std=0.02)
    return layer


def new_gelu(x):  # transformers' "gelu_new", written out as GPT-2 runs it
    return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * torch.pow(x, 3.0))))


class LlamaRMSNorm(nn.Module):
    def __init__(self, d, eps):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(d))
        self.eps = eps

    def forward(self, x):
        in_dtype = x.dtype
        h = x.float()
        h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * h.to(in_dtype)


def attend(q, k, v, scale, mask, use_sdpa, float_softmax):
    """Causal attention of q [B, H, T, hd] over k, v [B, H, S, hd]; mask: bool [T, S] (True = visible)."""
    T, S = q.shape[-2], k.shape[-2]
    if use_sdpa:
        if T == S and T > 1:
            return F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    scores = torch.matmul(q, k.transpose(-1, -2)) * scale
    scores = scores.masked_fill(~mask, torch.finfo(scores.dtype).min)
    probs = F.softmax(scores, dim=-1, dtype=torch.float32 if float_softmax else None).to(v.dtype)
    return torch.matmul(probs, v)


class GPT2Attention(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.d, self.heads = c["hidden"], c["n_head"]
        self.c_attn = Conv1D(self.d, 3 * self.d)
        self.c_proj = Conv1D(self.d, self.d, std=0.02 / math.sqrt(2 * c["n_layer"]))

    def forward(self, x, ctx, past):
        B, T, _ = x.shape
        hd = self.d // self.heads
        q, k, v = (t.reshape(B, T, self.heads, hd).transpose(1, 2) for t in self.c_attn(x).split(self.d, dim=-1))
        if past is not None:
            k, v = torch.cat((past[0], k), dim=2), torch.cat((past[1], v), dim=2)
        o = attend(q, k, v, hd ** -0.5, ctx["mask"], ctx["sdpa"], False)
        return self.c_proj(o.transpose(1, 2).reshape(B, T, self.d)), (k, v)


class LlamaAttention(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.heads, self.kv = c["n_head"], c["n_kv"]
        self.hd = c["hidden"] // c["n_head"]
        self.q_proj = dense(c["hidden"], self.heads * self.hd)
        self.k_proj = dense(c["hidden"], self.kv * self.hd)
        self.v_proj = dense(c["hidden"], self.kv * self.hd)
        self.o_proj = dense(self.heads * self.hd, c["hidden"])

    @staticmethod
    def rope(x, cos, sin):
        half = x.shape[-1] // 2
        return x * cos + torch.cat((-x[..., half:], x[..., :half]), dim=-1) * sin

    def forward(self, x, ctx, past):
        B, T, _ = x.shape
        q = self.q_proj(x).reshape(B, T, self.heads, self.hd).transpose(1, 2)
        k = self.k_proj(x).reshape(B, T, self.kv, self.hd).transpose(1, 2)
        v = self.v_proj(x).reshape(B, T, self.kv, self.hd).transpose(1, 2)
        cos, sin = ctx["rope"]
        q, k = self.rope(q, cos, sin), self.rope(k, cos, sin)
        if past is not None:
            k, v = torch.cat((past[0], k), dim=2), torch.cat((past[1], v), dim=2)
        present = (k, v)  # the cache holds the KV heads after RoPE, as transformers' does
        rep = self.heads // self.kv
        if rep > 1:  # transformers' repeat_kv
            S = k.shape[2]
            k = k[:, :, None].expand(B, self.kv, rep, S, self.hd).reshape(B, self.heads, S, self.hd)
            v = v[:, :, None].expand(B, self.kv, rep, S, self.hd).reshape(B, self.heads, S, self.hd)
        o = attend(q, k, v, self.hd ** -0.5, ctx["mask"], ctx["sdpa"], True)
        return self.o_proj(o.transpose(1, 2).reshape(B, T, -1)), present


class GPT2MLP(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.c_fc = Conv1D(c["hidden"], c["inner"])
        self.c_proj = Conv1D(c["inner"], c["hidden"], std=0.02 / math.sqrt(2 * c["n_layer"]))

    def forward(self, x):
        return self.c_proj(new_gelu(self.c_fc(x)))


class LlamaMLP(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.gate_proj = dense(c["hidden"], c["inner"])
        self.up_proj = dense(c["hidden"], c["inner"])
        self.down_proj = dense(c["inner"], c["hidden"])

    def forward(self, x):
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class DecoderBlock(nn.Module):
    def __init__(self, c):
        super().__init__()
        gpt2 = c["family"] == "gpt2"
        self.ln_1 = nn.LayerNorm(c["hidden"], eps=c["eps"]) if gpt2 else LlamaRMSNorm(c["hidden"], c["eps"])
        self.ln_2 = nn.LayerNorm(c["hidden"], eps=c["eps"]) if gpt2 else LlamaRMSNorm(c["hidden"], c["eps"])
        self.attn = GPT2Attention(c) if gpt2 else LlamaAttention(c)
        self.mlp = GPT2MLP(c) if gpt2 else LlamaMLP(c)
        self.adapter = nn.Identity()  # the bottleneck adapter replaces this (method "adapter")

    def forward(self, h, ctx, past):
        a, present = self.attn(self.ln_1(h), ctx, past)
        h = h + a
        return h + self.adapter(self.mlp(self.ln_2(h))), present


class CausalLM(nn.Module):
    """GPT2LMHeadModel / LlamaForCausalLM with tied embeddings and dropout 0."""

    def __init__(self, c, use_sdpa):
        super().__init__()
        self.c, self.use_sdpa = c, use_sdpa
        self.wte = nn.Embedding(c["vocab"], c["hidden"])
        nn.init.normal_(self.wte.weight, std=0.02)
        if c["family"] == "gpt2":
            self.wpe = nn.Embedding(c["n_pos"], c["hidden"])
            nn.init.normal_(self.wpe.weight, std=0.02)
            self.ln_f = nn.LayerNorm(c["hidden"], eps=c["eps"])
        else:
            hd = c["hidden"] // c["n_head"]
            self.register_buffer("inv_freq", 1.0 / c["theta"] ** (torch.arange(0, hd, 2).float() / hd), persistent=False)
            self.ln_f = LlamaRMSNorm(c["hidden"], c["eps"])
        self.h = nn.ModuleList(DecoderBlock(c) for _ in range(c["n_layer"]))
        self.prompt_embeddings = None  # peft PromptEmbedding (prompt tuning)
        self.prefix_embeddings = None  # peft PrefixEncoder without projection (prefix tuning)

    def prefix_cache(self, B):
        """peft's get_prompt for prefix tuning: per layer (key, value) [B, kv_heads, n_virtual, hd]."""
        c, n = self.c, self.prefix_embeddings.num_embeddings
        hd = c["hidden"] // c["n_head"]
        kv = self.prefix_embeddings.weight.unsqueeze(0).expand(B, -1, -1)
        kv = kv.reshape(B, n, c["n_layer"] * 2, c["n_kv"], hd).permute(2, 0, 3, 1, 4)
        return [(kv[2 * i], kv[2 * i + 1]) for i in range(c["n_layer"])]

    def forward(self, ids, labels=None, cache=None, last_only=False):
        B = ids.shape[0]
        x = self.wte(ids)
        if self.prompt_embeddings is not None:  # virtual tokens in front, their labels -100
            virt = self.prompt_embeddings.weight.unsqueeze(0).expand(B, -1, -1).to(x.dtype)
            x = torch.cat((virt, x), dim=1)
            if labels is not None:
                labels = torch.cat((torch.full((B, virt.shape[1]), -100, dtype=labels.dtype), labels), dim=1)
        if cache is None and self.prefix_embeddings is not None:
            cache = self.prefix_cache(B)
        T = x.shape[1]
        offset = cache[0][0].shape[2] if cache else 0
        positions = torch.arange(offset, offset + T)
        ctx = {"sdpa": self.use_sdpa, "mask": torch.ones(T, offset + T, dtype=torch.bool).tril(offset), "rope": None}
        if self.c["family"] == "gpt2":
            x = x + self.wpe(positions)
        else:
            angles = positions.float()[:, None] * self.inv_freq[None]
            angles = torch.cat((angles, angles), dim=-1)
            ctx["rope"] = (angles.cos().to(x.dtype), angles.sin().to(x.dtype))
        presents = []
        for i, block in enumerate(self.h):
            x, kv = block(x, ctx, cache[i] if cache else None)
            presents.append(kv)
        x = self.ln_f(x)
        if last_only:
            x = x[:, -1:]
        logits = F.linear(x, self.wte.weight)  # the tied LM head
        if labels is None:
            return logits, presents
        # transformers' ForCausalLMLoss: float32 logits, labels shifted left, -100 ignored
        target = F.pad(labels[:, 1:], (0, 1), value=-100)
        return F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), target.reshape(-1), ignore_index=-100)


# -------------------------------------------------------------------------------------- PEFT
class LoraLayer(nn.Module):
    """peft's lora.Linear with dropout 0: base(x) + B(A(x)) * alpha / r; A kaiming-uniform, B zeros."""

    def __init__(self, base, r, alpha):
        super().__init__()
        self.base_layer, self.scaling, self.merged = base, alpha / r, False
        self.lora_A = nn.Linear(base.in_features, r, bias=False)
        self.lora_B = nn.Linear(r, base.out_features, bias=False)
        nn.init.zeros_(self.lora_B.weight)

    def forward(self, x):
        y = self.base_layer(x)
        return y if self.merged else y + self.lora_B(self.lora_A(x)) * self.scaling

    @torch.no_grad()
    def merge(self):
        delta = self.lora_B.weight @ self.lora_A.weight * self.scaling  # [out, in]
        w = self.base_layer.weight
        w += delta.T if isinstance(self.base_layer, Conv1D) else delta
        self.merged = True


class IA3Layer(nn.Module):
    """peft's ia3.Linear: a learned vector scales the output, or the input of feed-forward modules."""

    def __init__(self, base, feedforward):
        super().__init__()
        self.base_layer, self.feedforward = base, feedforward
        self.ia3_l = nn.Parameter(torch.ones(base.in_features if feedforward else base.out_features))

    def forward(self, x):
        return self.base_layer(x * self.ia3_l) if self.feedforward else self.base_layer(x) * self.ia3_l


class SeqBnAdapter(nn.Module):
    """Sequential bottleneck (Pfeiffer) on the MLP output: x + up(relu(down(x))), "bert" init."""

    def __init__(self, d, reduction):
        super().__init__()
        self.adapter_down = nn.Linear(d, d // reduction)
        self.adapter_up = nn.Linear(d // reduction, d)
        for layer in (self.adapter_down, self.adapter_up):
            nn.init.normal_(layer.weight, std=0.02)
            nn.init.zeros_(layer.bias)

    def forward(self, x):
        return x + self.adapter_up(torch.relu(self.adapter_down(x)))


def wrap(block, dotted, make):
    owner_path, name = dotted.rsplit(".", 1)
    owner = block.get_submodule(owner_path)
    setattr(owner, name, make(getattr(owner, name)))


def apply_method(model, args):
    if args.method == "full":
        return
    model.requires_grad_(False)
    c, where = model.c, WRAPPED[model.c["family"]]
    for block in model.h:
        if args.method in ("lora-qv", "lora-all"):
            for m in where[args.method.replace("-", "_")]:
                wrap(block, m, lambda base: LoraLayer(base, args.lora_r, args.lora_alpha))
        elif args.method == "ia3":
            for m in where["ia3"]:
                wrap(block, m, lambda base: IA3Layer(base, False))
            for m in where["ia3_ff"]:
                wrap(block, m, lambda base: IA3Layer(base, True))
        elif args.method == "adapter":
            block.adapter = SeqBnAdapter(c["hidden"], args.adapter_reduction)
    if args.method == "prompt":  # peft PromptEmbedding, RANDOM init = nn.Embedding's N(0, 1)
        model.prompt_embeddings = nn.Embedding(args.virtual_tokens, c["hidden"])
    elif args.method == "prefix":  # KV heads per layer for GQA models (peft #1901)
        model.prefix_embeddings = nn.Embedding(args.virtual_tokens, c["n_layer"] * 2 * c["n_kv"] * (c["hidden"] // c["n_head"]))


def build_model(args):
    torch.manual_seed(args.seed)
    model = CausalLM(CONFIGS[args.model], use_sdpa=args.sdpa)
    apply_method(model, args)
    return model.to(getattr(torch, args.dtype))


# -------------------------------------------------------------------------------- measuring
def busy_cpu_seconds():
    """CPU seconds every process on the machine has used (/proc/stat, all but idle and iowait)."""
    try:
        with open("/proc/stat") as f:
            v = [int(x) for x in f.readline().split()[1:]]
        return (sum(v[:8]) - v[3] - v[4]) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError):
        return float("nan")


class Window:
    """A timed window: wall time, this process's CPU time and the cores others used meanwhile."""

    def __init__(self):
        self.wall, self.cpu, self.busy = time.perf_counter(), time.process_time(), busy_cpu_seconds()

    def report(self):
        wall = time.perf_counter() - self.wall
        cpu = time.process_time() - self.cpu
        other = max(0.0, busy_cpu_seconds() - self.busy - cpu) / wall
        return dict(cpu_util=round(cpu / wall, 2), other_cpu=round(other, 2))


def peak_rss_mib():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def environment(args):
    torch.set_num_threads(args.threads)
    return dict(threads=args.threads, torch=torch.__version__, dtype=args.dtype, attn="sdpa" if args.sdpa else "eager",
                mkldnn_bf16=bool(getattr(torch.backends.mkldnn, "is_available", lambda: False)()),
                env={k: os.environ[k] for k in ("OMP_NUM_THREADS", "OMP_WAIT_POLICY") if k in os.environ},
                loadavg_start=os.getloadavg()[0])


def emit(result, summary):
    result["peak_rss_mib"] = round(peak_rss_mib(), 1)
    result["loadavg_end"] = os.getloadavg()[0]
    print(json.dumps(result), flush=True)
    print(summary, file=sys.stderr)


# --------------------------------------------------------------------------------- training
def train(args, env):
    model = build_model(args).train()
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=args.lr, weight_decay=0.01)
    rng = torch.Generator().manual_seed(args.seed + 1)
    times, fwd, bwd, opt, losses = [], [], [], [], []
    window = None
    for i in range(args.warmup + args.steps):
        ids = torch.randint(0, model.c["vocab"], (args.batch, args.seq), generator=rng)
        if i == args.warmup:
            window = Window()
        t0 = time.perf_counter()
        loss = model(ids, labels=ids)
        t1 = time.perf_counter()
        loss.backward()
        t2 = time.perf_counter()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        t3 = time.perf_counter()
        losses.append(loss.item())
        if i >= args.warmup:
            times.append(t3 - t0), fwd.append(t1 - t0), bwd.append(t2 - t1), opt.append(t3 - t2)
        print("  step %d%s: %.3f s (forward %.3f, backward %.3f, AdamW %.3f) loss %.4f"
              % (i, " (warmup)" if i < args.warmup else "", t3 - t0, t1 - t0, t2 - t1, t3 - t2, losses[-1]), file=sys.stderr)
    med = statistics.median(times)
    res = dict(mode="train", model=args.model, method=args.method, batch=args.batch, seq=args.seq,
               virtual_tokens=args.virtual_tokens if args.method in ("prompt", "prefix") else 0, **env,
               trainable_params=sum(p.numel() for p in trainable), total_params=sum(p.numel() for p in model.parameters()),
               warmup=args.warmup, steps=args.steps, steps_s=[round(t, 4) for t in times],
               median_step_s=round(med, 4), min_step_s=round(min(times), 4), max_step_s=round(max(times), 4),
               tokens_per_s=round(args.batch * args.seq / med, 1), median_fwd_s=round(statistics.median(fwd), 4),
               median_bwd_s=round(statistics.median(bwd), 4), median_opt_s=round(statistics.median(opt), 4),
               **window.report(), loss_first=round(losses[0], 4), loss_last=round(losses[-1], 4),
               optimizer="AdamW(lr=%g, weight_decay=0.01)" % args.lr)
    if args.method.startswith("lora"):
        res.update(lora_r=args.lora_r, lora_alpha=args.lora_alpha)
    emit(res, "%s %s %s b%d s%d: median %.3f s/step, %.1f tok/s, peak RSS %.0f MiB, other cpu %.2f"
         % (args.model, args.method, args.dtype, args.batch, args.seq, med, res["tokens_per_s"], peak_rss_mib(), res["other_cpu"]))


# -------------------------------------------------------------------------------- inference
@torch.inference_mode()
def greedy(model, prompt, n_new):
    """Prefill, then one token per forward with the KV cache; logits of the last position only."""
    t0 = time.perf_counter()
    logits, cache = model(prompt, last_only=True)
    token = logits[:, -1].argmax(-1, keepdim=True)
    prefill = time.perf_counter() - t0
    tokens = [token]
    for _ in range(n_new - 1):
        logits, cache = model(token, cache=cache, last_only=True)
        token = logits[:, -1].argmax(-1, keepdim=True)
        tokens.append(token)
    return torch.cat(tokens, dim=1), logits[:, -1], prefill, time.perf_counter() - t0


def infer(args, env):
    if args.method not in ("lora-qv", "lora-all", "full"):
        sys.exit("--infer takes --method lora-qv or lora-all (unmerged, then merged) or full (the plain model)")
    model = build_model(args).eval()
    loras = [m for m in model.modules() if isinstance(m, LoraLayer)]
    for m in loras:  # a non-zero B, so that merging changes the weights
        nn.init.normal_(m.lora_B.weight, std=0.02)
    prompt = torch.randint(0, model.c["vocab"], (1, args.prompt_len), generator=torch.Generator().manual_seed(args.seed + 2))
    first = None
    for variant in ("unmerged", "merged") if loras else ("plain",):
        if variant == "merged":
            for m in loras:
                m.merge()
        totals, prefills, window = [], [], None
        for i in range(args.warmup + args.steps):
            if i == args.warmup:
                window = Window()
            tokens, last, prefill, total = greedy(model, prompt, args.new_tokens)
            if i >= args.warmup:
                totals.append(total), prefills.append(prefill)
        med, pre = statistics.median(totals), statistics.median(prefills)
        res = dict(mode="infer", model=args.model, method=args.method, variant=variant, batch=1, prompt_len=args.prompt_len,
                   new_tokens=args.new_tokens, **env, warmup=args.warmup, steps=args.steps, median_s=round(med, 4),
                   min_s=round(min(totals), 4), max_s=round(max(totals), 4), tokens_per_s=round(args.new_tokens / med, 2),
                   prefill_ms=round(pre * 1000, 1), decode_tokens_per_s=round((args.new_tokens - 1) / (med - pre), 2), **window.report())
        with torch.inference_mode():  # the cached logits must match a full forward over the same tokens
            full, _ = model(torch.cat((prompt, tokens[:, :-1]), dim=1), last_only=True)
        res["cache_check_max_abs_diff"] = float((full[:, -1] - last).abs().max())
        if first is None:
            first = tokens
        else:
            res["same_tokens_as_unmerged"] = bool(torch.equal(first, tokens))
        emit(res, "%s %s %s %s: %.2f new tok/s (prefill %.1f ms, decode %.2f tok/s)"
             % (args.model, args.method, variant, args.dtype, res["tokens_per_s"], res["prefill_ms"], res["decode_tokens_per_s"]))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", choices=sorted(CONFIGS), default="tiny")
    ap.add_argument("--method", choices=METHODS, default="lora-qv")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--seq", type=int, default=256)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--steps", type=int, default=5, help="timed training steps, or generations with --infer")
    ap.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
    ap.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32")
    ap.add_argument("--sdpa", action="store_true", help="F.scaled_dot_product_attention instead of eager attention")
    ap.add_argument("--lora-r", type=int, default=8)
    ap.add_argument("--lora-alpha", type=float, default=16.0)
    ap.add_argument("--virtual-tokens", type=int, default=20)
    ap.add_argument("--adapter-reduction", type=int, default=16)
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--infer", action="store_true", help="greedy generation with a KV cache, batch 1")
    ap.add_argument("--prompt-len", type=int, default=32)
    ap.add_argument("--new-tokens", type=int, default=64)
    args = ap.parse_args()
    if args.sdpa and not hasattr(F, "scaled_dot_product_attention"):
        sys.exit("--sdpa needs torch 2.0 or newer (this is torch %s)" % torch.__version__)
    env = environment(args)
    (infer if args.infer else train)(args, env)


if __name__ == "__main__":
    main()
