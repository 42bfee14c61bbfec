#!/usr/bin/env python3
"""The avx2 kernels (any AVX2 machine) against numpy's float32 matmul on the same shape, in one run, as ratios; and
against the fp32 FMA peak that amxforge-kbench measures in the same process.

    python benchmarks/numpy_peer.py [--variant baseline] [--threads 1,2] [--rounds 3] [--json]

Prefill: M=512, 4096x4096 (issue target: >= 60 % of the FMA peak, faster than numpy). Decode: M=1, more than 1 GB of
weights streamed by both sides (bf16 for ours: half numpy's float32 bytes, so the decode row compares bandwidth).
numpy runs in a subprocess per thread count (its BLAS reads the thread count at load); the row says which BLAS.
Rounds alternate ours and numpy so that drift on a shared machine hits both; medians and min-max spread.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

from kbench_run import kbench

ROOT = Path(__file__).resolve().parents[1]

NUMPY_TIMER = r"""
import json, sys, time
import numpy as np
M, N, K, copies, reps = map(int, sys.argv[1:6])
cfg = np.show_config(mode="dicts")["Build Dependencies"]["blas"]
rng = np.random.default_rng(0)
a = rng.standard_normal((M, K), dtype=np.float32)
ws = [rng.standard_normal((K, N), dtype=np.float32) for _ in range(copies)]
for w in ws[:2]:
    a @ w
times = []
for _ in range(reps):
    t0 = time.perf_counter()
    for w in ws:
        a @ w
    times.append((time.perf_counter() - t0) / copies)
times.sort()
print(json.dumps({"seconds": times[len(times) // 2], "blas": f"{cfg.get('name')} {cfg.get('version')}"}))
"""


def numpy_run(M, N, K, threads, copies, reps):
    env = dict(os.environ, OPENBLAS_NUM_THREADS=str(threads), OMP_NUM_THREADS=str(threads),
               MKL_NUM_THREADS=str(threads))
    out = subprocess.run([sys.executable, "-c", NUMPY_TIMER, str(M), str(N), str(K), str(copies), str(reps)],
                         capture_output=True, text=True, check=True, env=env).stdout
    return json.loads(out)


def spread(xs):
    return [min(xs), max(xs)]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--variant", default="baseline")
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    if not (ROOT / "build" / args.variant / "bin" / "amxforge-kbench").is_file():
        print(f"build the kernels first: scons variant={args.variant}", file=sys.stderr)
        return 2
    shapes = {"prefill": (512, 4096, 4096, 0), "decode": (1, 4096, 4096, int(1.1e9))}
    for threads in [int(t) for t in args.threads.split(",")]:
        for name, (M, N, K, min_bytes) in shapes.items():
            ours, theirs, peaks, bws, blas = [], [], [], [], None
            for _ in range(args.rounds):
                rec, limits = kbench(args.variant, f"dense:bf16:avx2:{M}:{N}:{K}", threads, min_bytes)
                ours.append(rec["seconds"])
                peaks.append(limits.get("fma_peak_fp32"))
                bws.append(limits.get("read_bw"))
                copies = max(1, rec["copies"] // 2)  # float32 weights: half as many copies stream the same bytes
                np_rec = numpy_run(M, N, K, threads, copies, 3 if M > 16 else 5)
                theirs.append(np_rec["seconds"])
                blas = np_rec["blas"]
            flops = 2.0 * M * N * K
            row = {"shape": name, "M": M, "N": N, "K": K, "threads": threads, "rounds": args.rounds,
                   "numpy_blas": blas,
                   "ours_gflops": flops / statistics.median(ours) / 1e9,
                   "numpy_gflops": flops / statistics.median(theirs) / 1e9,
                   "speedup_vs_numpy": statistics.median(theirs) / statistics.median(ours),
                   "speedup_spread": spread([t / o for t, o in zip(theirs, ours)]),
                   "fma_peak_gflops": statistics.median(peaks), "read_bw_gbps": statistics.median(bws)}
            fractions = [flops / o / 1e9 / p for o, p in zip(ours, peaks)]
            row["peak_fraction"], row["peak_fraction_spread"] = statistics.median(fractions), spread(fractions)
            bwf = [2.0 * N * K / o / 1e9 / b for o, b in zip(ours, bws)]
            row["bw_fraction"], row["bw_fraction_spread"] = statistics.median(bwf), spread(bwf)
            if args.json:
                print(json.dumps(row))
            else:
                print(f"{name:8s} M={M:<4d} threads={threads}: ours {row['ours_gflops']:.1f} GFLOP/s = "
                      f"{100 * row['peak_fraction']:.0f}% of the FMA peak ({row['fma_peak_gflops']:.0f}); numpy "
                      f"({blas}) {row['numpy_gflops']:.1f} GFLOP/s; ours/numpy {row['speedup_vs_numpy']:.2f}x "
                      f"(spread {row['speedup_spread'][0]:.2f}-{row['speedup_spread'][1]:.2f}); weights read at "
                      f"{100 * row['bw_fraction']:.0f}% of {row['read_bw_gbps']:.1f} GB/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
