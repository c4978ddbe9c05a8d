#!/usr/bin/env python3
"""PyTorch peer of bench/lowrank_stack.ts: forward + backward of L frozen linear layers, each with a
trainable low-rank pair, y = x W^T + (x A^T) B^T * scale, loss = mean(y_L^2).

Reads the same data the TypeScript bench writes into --dir:
  weights.safetensors  layers.{l}.weight [d, d] float32 (parsed here with the json module;
                       torch 1.13 from Debian has no safetensors package)
  inputs.bin           x [batch*seq*d], then per layer A [r*d], B [d*r], float32 little-endian

Timing follows ../shared/bench/peer_torch.py: torch.set_num_threads(--threads), warm-up steps
excluded, median of --steps; run with OMP_WAIT_POLICY=PASSIVE (the TS bench sets it). Prints one
JSON line on stdout and a readable line on stderr.

  OMP_WAIT_POLICY=PASSIVE /usr/bin/python3 bench/lowrank_stack_torch.py --dir DIR --layers 12 --d 768
"""
import argparse, ctypes, json, os, resource, statistics, sys, time

import numpy as np
import torch
import torch.nn.functional as F


def status_mib():
    out = {}
    with open("/proc/self/status") as f:
        for line in f:
            k, _, v = line.partition(":")
            if k in ("VmRSS", "VmHWM", "RssAnon", "RssFile"):
                out[k] = int(v.split()[0]) / 1024.0
    return {"rss": out.get("VmRSS"), "hwm": out.get("VmHWM"), "anon": out.get("RssAnon"), "file": out.get("RssFile")}


def busy_seconds():
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    return (sum(v[:8]) - v[3] - v[4]) / os.sysconf("SC_CLK_TCK")


def blas_info():
    try:
        with open("/proc/self/maps") as f:
            if "libopenblas" not in f.read():
                return {"blas": "not OpenBLAS"}
        lib = ctypes.CDLL("libopenblas.so.0")
        lib.openblas_get_config.restype = ctypes.c_char_p
        return {"blas": lib.openblas_get_config().decode(), "blas_threads": lib.openblas_get_num_threads()}
    except Exception as e:  # noqa: BLE001
        return {"blas": "unknown (%s)" % e}


def load_weights(path, L, d):
    with open(path, "rb") as f:
        n = int.from_bytes(f.read(8), "little")
        header = json.loads(f.read(n))
    ws = []
    for l in range(L):
        info = header["layers.%d.weight" % l]
        assert info["dtype"] == "F32" and info["shape"] == [d, d], info
        a, b = info["data_offsets"]
        arr = np.fromfile(path, dtype="<f4", count=(b - a) // 4, offset=8 + n + a).reshape(d, d)
        ws.append(torch.from_numpy(arr))  # frozen: requires_grad False
    return ws


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dir", required=True)
    ap.add_argument("--layers", type=int, default=12)
    ap.add_argument("--d", type=int, default=768)
    ap.add_argument("--rank", type=int, default=8)
    ap.add_argument("--alpha", type=float, default=16.0)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--seq", type=int, default=256)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--serve", action="store_true",
                    help="paired mode: print 'ready' after warm-up, then wait for a line on stdin before each timed run")
    args = ap.parse_args()

    def gate():
        if args.serve:
            sys.stdin.readline()

    def done(sec):
        if args.serve:
            print("done %.3f" % (sec * 1000), flush=True)
    torch.set_num_threads(args.threads)
    L, d, r, N = args.layers, args.d, args.rank, args.batch * args.seq
    scale = args.alpha / r
    mem = {"baseline": status_mib()}

    Ws = load_weights(os.path.join(args.dir, "weights.safetensors"), L, d)
    mem["weights"] = status_mib()
    raw = np.fromfile(os.path.join(args.dir, "inputs.bin"), dtype="<f4")
    x = torch.from_numpy(raw[: N * d].copy()).view(args.batch, args.seq, d)
    params, off = [], N * d
    for _ in range(L):
        A = torch.from_numpy(raw[off: off + r * d].copy()).view(r, d).requires_grad_(True)
        off += r * d
        B = torch.from_numpy(raw[off: off + d * r].copy()).view(d, r).requires_grad_(True)
        off += d * r
        params.append((A, B))

    def forward(h):
        for W, (A, B) in zip(Ws, params):  # peft lora.Linear: base(x) + lora_B(lora_A(x)) * scaling
            h = F.linear(h, W) + F.linear(F.linear(h, A), B) * scale
        return (h * h).mean()

    times, step_other, step_cpu, loss = [], [], [], None  # step_other: cores other processes used per step
    cpu0 = wall0 = busy0 = None
    for i in range(args.warmup + args.steps):
        if i == args.warmup:
            if args.serve:
                print("ready", flush=True)
            cpu0, wall0, busy0 = time.process_time(), time.perf_counter(), busy_seconds()
        if i >= args.warmup:
            gate()
        b0, c0 = busy_seconds(), time.process_time()
        t0 = time.perf_counter()
        loss = forward(x)
        loss.backward()
        t1 = time.perf_counter()
        if i >= args.warmup:
            done(t1 - t0)
            times.append(t1 - t0)
            c = time.process_time() - c0
            step_cpu.append(c * 1000)
            step_other.append(max(0.0, busy_seconds() - b0 - c) / (t1 - t0))
        if i < args.warmup + args.steps - 1:
            for A, B in params:
                A.grad = None
                B.grad = None
    wall = time.perf_counter() - wall0
    cpu = time.process_time() - cpu0
    other = max(0.0, (busy_seconds() - busy0) - cpu) / wall
    mem["after_steps"] = status_mib()
    grad_sq = {"A0": float((params[0][0].grad.double() ** 2).sum()), "BLast": float((params[-1][1].grad.double() ** 2).sum())}
    fwd = []
    with torch.no_grad():
        for i in range(args.steps + 1):
            gate()
            t0 = time.perf_counter()
            forward(x)
            e = time.perf_counter() - t0
            done(e)
            if i > 0:
                fwd.append(e)
    med = statistics.median(times)
    clean = [t for t, o in zip(times, step_other) if o < 0.25]  # same threshold as the TS bench
    res = dict(kind="torch", torch=torch.__version__, threads=args.threads, torch_threads=torch.get_num_threads(),
               env={k: os.environ[k] for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "OMP_WAIT_POLICY") if k in os.environ},
               **blas_info(), frozen_params=L * d * d, trainable_params=L * 2 * r * d, tokens=N,
               warmup=args.warmup, steps=args.steps,
               median_ms=med * 1000, min_ms=min(times) * 1000, max_ms=max(times) * 1000,
               fwd_median_ms=statistics.median(fwd) * 1000, step_ms=[t * 1000 for t in times],
               clean_median_ms=statistics.median(clean) * 1000 if clean else None, clean_steps=len(clean),
               step_other_cpu=[round(o, 2) for o in step_other], step_cpu_ms=step_cpu,
               loss=float(loss), grad_sq=grad_sq, mem=mem,
               peak_rss_mib=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0,
               other_cpu=round(other, 2), cpu_util=round(cpu / wall, 2))
    print(json.dumps(res), flush=True)
    print("torch %s: median %.1f ms/step (min %.1f max %.1f), fwd %.1f ms, loss %.6f, peak rss %.0f MiB, cpu %.2f, other %.2f"
          % (torch.__version__, med * 1000, min(times) * 1000, max(times) * 1000, res["fwd_median_ms"], res["loss"],
             res["peak_rss_mib"], res["cpu_util"], res["other_cpu"]), file=sys.stderr)


if __name__ == "__main__":
    main()
