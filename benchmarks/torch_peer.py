#!/usr/bin/env python3
"""Our AMX kernels against PyTorch (oneDNN) bf16 matmul, side by side in one run, as ratios.

    pip install torch==2.13.0     # the CPU wheel; torch stays a bench-only dependency
    python benchmarks/torch_peer.py [--variant amx] [--threads 1] [--rounds 3] [--json]

Each round runs amxforge-kbench on the shape (which also measures the tile peak in the same process) and then
torch.matmul on the same shape; the reported figures are medians over rounds, so both sides see the same noise.
Prefill: M=512, 4096x4096 (the issue's target: >= 60 % of tile peak, >= 1.5x PyTorch). Decode: M=1 over more than
1 GB of weights for both sides.
"""

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

from kbench_run import kbench

ROOT = Path(__file__).resolve().parents[1]


def torch_seconds(torch, M, N, K, threads, copies, reps):
    torch.set_num_threads(threads)
    a = torch.randn(M, K, dtype=torch.bfloat16)
    ws = [torch.randn(K, N, dtype=torch.bfloat16) for _ in range(copies)]
    for w in ws[:2]:
        torch.matmul(a, w)
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        for w in ws:
            torch.matmul(a, w)
        times.append((time.perf_counter() - t0) / copies)
    return statistics.median(times)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--variant", default="amx")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    try:
        import torch
    except ImportError:
        print("torch is not installed: pip install torch==2.13.0 (CPU wheel)", file=sys.stderr)
        return 2
    if not (ROOT / "build" / args.variant / "bin" / "amxforge-kbench").is_file():
        print(f"build the kernels first: scons variant={args.variant}", file=sys.stderr)
        return 2
    shapes = {"prefill": (512, 4096, 4096, 0), "decode": (1, 4096, 4096, int(1.1e9))}
    results = []
    for name, (M, N, K, min_bytes) in shapes.items():
        ours, theirs, peaks, bws = [], [], [], []
        for _ in range(args.rounds):
            rec, limits = kbench(args.variant, f"dense:bf16:amx:{M}:{N}:{K}", args.threads, min_bytes)
            peak, bw = limits.get("tile_peak_bf16"), limits.get("read_bw")
            ours.append(rec["seconds"])
            peaks.append(peak)
            bws.append(bw)
            copies = max(1, rec["copies"])
            theirs.append(torch_seconds(torch, M, N, K, args.threads, copies, 3 if M > 16 else 5))
        s_ours, s_torch = statistics.median(ours), statistics.median(theirs)
        flops, wbytes = 2.0 * M * N * K, 2.0 * N * K
        row = {"shape": name, "M": M, "N": N, "K": K, "threads": args.threads, "torch": torch.__version__,
               "ours_seconds": s_ours, "torch_seconds": s_torch, "ours_gflops": flops / s_ours / 1e9,
               "torch_gflops": flops / s_torch / 1e9, "speedup_vs_torch": s_torch / s_ours,
               "tile_peak_gflops": statistics.median(peaks), "read_bw_gbps": statistics.median(bws),
               "rounds": args.rounds}
        row["peak_fraction"] = row["ours_gflops"] / row["tile_peak_gflops"]
        row["ours_bw_fraction"] = wbytes / s_ours / 1e9 / row["read_bw_gbps"]
        row["torch_bw_fraction"] = wbytes / s_torch / 1e9 / row["read_bw_gbps"]
        results.append(row)
    for row in results:
        if args.json:
            print(json.dumps(row))
        else:
            print(f"{row['shape']:8s} M={row['M']:<4d} {row['N']}x{row['K']} threads={row['threads']}: "
                  f"ours {row['ours_gflops']:.0f} GFLOP/s, torch {row['torch']} {row['torch_gflops']:.0f} GFLOP/s, "
                  f"ours/torch {row['speedup_vs_torch']:.2f}x, ours/tile peak {100 * row['peak_fraction']:.0f}% "
                  f"(peak {row['tile_peak_gflops']:.0f}), weights read: ours {100 * row['ours_bw_fraction']:.0f}% "
                  f"torch {100 * row['torch_bw_fraction']:.0f}% of {row['read_bw_gbps']:.1f} GB/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
