#!/usr/bin/env python3
"""PyTorch peer for forward throughput: the models of ../shared/bench/peer_torch.py (random, seeded
weights; GPT-2 small or SmolLM-135M shaped), one inference forward over a [batch, seq] batch of
random token ids with logits for every position, as bench/model_throughput.ts times ours.

  OMP_WAIT_POLICY=PASSIVE /usr/bin/python3 bench/forward_torch.py --model gpt2 --batch 4 --seq 256

Prints one JSON line on stdout (median seconds per forward, tokens/s, environment).
"""
import argparse, json, os, statistics, sys, time

HERE = os.path.dirname(os.path.abspath(__file__))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="gpt2", help="gpt2, llama, tiny, tiny-llama (peer_torch.py SHAPES)")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--seq", type=int, default=256)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--peer-dir", default=os.environ.get("PEER_DIR", os.path.join(HERE, "..", "..", "shared", "bench")))
    args = ap.parse_args()
    sys.path.insert(0, os.path.abspath(args.peer_dir))
    import torch
    import peer_torch as peer

    ns = argparse.Namespace(model=args.model, method="full", threads=args.threads, blas_threads=None, sdpa=False,
                            dtype="float32", seed=0, lora_r=8, lora_alpha=16.0, virtual_tokens=20, adapter_reduction=16)
    info = peer.env_info(ns)
    model = peer.build(ns)
    model.eval()
    gen = torch.Generator().manual_seed(1)
    ids = torch.randint(0, model.c["vocab"], (args.batch, args.seq), generator=gen)
    times = []
    with torch.inference_mode():
        for i in range(args.warmup + args.steps):
            if i == args.warmup:
                other = peer.OtherLoad()
            t0 = time.perf_counter()
            logits, _ = model(ids)
            dt = time.perf_counter() - t0
            if i >= args.warmup:
                times.append(dt)
    med = statistics.median(times)
    res = dict(mode="forward", model=args.model, batch=args.batch, seq=args.seq, logits=list(logits.shape), **info,
               warmup=args.warmup, steps=args.steps, times_s=[round(t, 4) for t in times], median_s=round(med, 4),
               tokens_per_s=round(args.batch * args.seq / med, 1), other_cpu=other.cores(), torch=torch.__version__)
    print(json.dumps(res), flush=True)


if __name__ == "__main__":
    main()
