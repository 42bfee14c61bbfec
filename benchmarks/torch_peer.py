#!/usr/bin/env python3
"""Our AMX kernels against PyTorch (oneDNN) bf16 matmul, side by side in one run, as ratios, over thread counts.

    pip install torch==2.13.0     # the CPU wheel; torch stays a bench-only dependency
    python benchmarks/torch_peer.py [--variant amx] [--threads 1,4,8,16] [--rounds 3] [--json]

Each round, for each thread count, runs amxforge-kbench on both shapes in one process (which also measures the
bf16 tile peak and the read bandwidth at that thread count) and then torch.matmul on the same shapes; the figures
are medians over rounds, each ratio computed within its round, with its spread. Both sides run pinned, one thread
per core (OMP_PROC_BIND=close, OMP_PLACES=cores, unless OMP_PROC_BIND is set already).
Prefill: M=512, 4096x4096 (the issue's target: >= 60 % of tile peak, >= 1.5x PyTorch). Decode: M=1 over more than
1 GB of weights for both sides.
"""

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

from kbench_run import kbench_cases, thread_counts

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
    ap.add_argument("--threads", default="1", help="a comma list of thread counts, e.g. 1,4,8,16")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    try:
        counts = thread_counts(args.threads)
    except ValueError:
        print(f"--threads {args.threads}: want positive numbers, e.g. 1,4,8,16", file=sys.stderr)
        return 2
    if "OMP_PROC_BIND" not in os.environ:  # before torch loads its OpenMP runtime, as amxforge-kbench does
        os.environ.update(OMP_PROC_BIND="close", OMP_PLACES="cores")
    try:
        import torch
    except ImportError:
        print("torch is not installed: pip install torch==2.13.0 (CPU wheel)", file=sys.stderr)
        return 2
    if not (ROOT / "build" / args.variant / "bin" / "amxforge-kbench").is_file():
        print(f"build the kernels first: scons variant={args.variant}", file=sys.stderr)
        return 2
    shapes = {"prefill": (512, 4096, 4096), "decode": (1, 4096, 4096)}
    cases = [f"dense:bf16:amx:{M}:{N}:{K}" for M, N, K in shapes.values()]
    per = {}  # (shape, threads) -> list of per-round dicts
    for _ in range(args.rounds):
        for threads in counts:
            recs, limits = kbench_cases(args.variant, cases, threads, 1.1e9, ["tile_peak_bf16", "read_bw"])
            if "tile_peak_bf16" not in limits:
                print("the tile peak cannot be measured here: this benchmark needs an AMX host", file=sys.stderr)
                return 2
            for (name, (M, N, K)), rec in zip(shapes.items(), recs):
                theirs = torch_seconds(torch, M, N, K, threads, max(1, rec["copies"]), 3 if M > 16 else 5)
                flops, wbytes = 2.0 * M * N * K, 2.0 * N * K
                per.setdefault((name, threads), []).append({
                    "ours_seconds": rec["seconds"], "torch_seconds": theirs,
                    "speedup_vs_torch": theirs / rec["seconds"],
                    "tile_peak_gflops": limits["tile_peak_bf16"], "read_bw_gbps": limits["read_bw"],
                    "peak_fraction": flops / rec["seconds"] / 1e9 / limits["tile_peak_bf16"],
                    "ours_bw_fraction": wbytes / rec["seconds"] / 1e9 / limits["read_bw"],
                    "torch_bw_fraction": wbytes / theirs / 1e9 / limits["read_bw"]})
    results = []
    for (name, threads), rounds in per.items():
        M, N, K = shapes[name]
        row = {"shape": name, "M": M, "N": N, "K": K, "threads": threads, "torch": torch.__version__,
               "rounds": len(rounds)}
        for field in rounds[0]:
            values = [r[field] for r in rounds]
            row[field] = statistics.median(values)
            row[f"{field}_spread"] = [min(values), max(values)]
        row["ours_gflops"] = 2.0 * M * N * K / row["ours_seconds"] / 1e9
        row["torch_gflops"] = 2.0 * M * N * K / row["torch_seconds"] / 1e9
        results.append(row)
    for row in results:
        if args.json:
            print(json.dumps(row))
            continue
        lo, hi = row["speedup_vs_torch_spread"]
        print(f"{row['shape']:8s} M={row['M']:<4d} {row['N']}x{row['K']} threads={row['threads']:<3d}: "
              f"ours {row['ours_gflops']:.0f} GFLOP/s, torch {row['torch']} {row['torch_gflops']:.0f} GFLOP/s, "
              f"ours/torch {row['speedup_vs_torch']:.2f}x [{lo:.2f}..{hi:.2f}], ours/tile peak "
              f"{100 * row['peak_fraction']:.0f}% (peak {row['tile_peak_gflops']:.0f}), weights read: ours "
              f"{100 * row['ours_bw_fraction']:.0f}% torch {100 * row['torch_bw_fraction']:.0f}% of "
              f"{row['read_bw_gbps']:.1f} GB/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
