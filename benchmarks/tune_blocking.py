#!/usr/bin/env python3
"""Sweep the AMX dense kernel's tuning knobs on this CPU, per thread count, to choose the defaults in
kernels/dense/gemm_amx.c (BLOCKING and DECODE_PF_BYTES):

    python benchmarks/tune_blocking.py [--variant amx] [--threads 1,16] [--what prefill,decode] [--json]

prefill: AKF_TUNE="KC,GA,GB" over a grid (K chunk in tiles, column blocks sharing an A chunk, row pairs sharing a
B chunk) on M=512, 4096x4096, bf16 and int8. decode: AKF_DECODE_PF=BYTES (software prefetch distance in each B
panel) on M=1, 4096x4096 over more than 1 GB of weights. Each point is one amxforge-kbench process (pinned threads,
median of --reps); the current default is measured first and again last, so drift during the sweep shows.
"""

import argparse
import itertools
import json
import os
import subprocess
import sys
from pathlib import Path

from kbench_run import thread_counts

ROOT = Path(__file__).resolve().parents[1]
PREFILL_GRID = {"KC": (8, 16, 32, 64, 128), "GA": (2, 4, 8), "GB": (4, 16)}
DECODE_PF = (0, 1024, 2048, 4096, 8192, 16384)


def point(exe, case, threads, env, reps, min_bytes):
    cmd = [str(exe), "--threads", str(threads), "--only", "dense", "--case", case, "--reps", str(reps)]
    if min_bytes:
        cmd += ["--min-bytes", str(min_bytes)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, env={**os.environ, **env}).stdout
    rec = next(json.loads(line) for line in out.splitlines() if '"case"' in line)
    return {"gflops": rec["flops"] / rec["seconds"] / 1e9, "gbps": rec["weight_bytes"] / rec["seconds"] / 1e9,
            "spread_pct": 100 * (rec["max_seconds"] - rec["min_seconds"]) / rec["seconds"]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--variant", default="amx")
    ap.add_argument("--threads", default="1,16", help="comma list of thread counts")
    ap.add_argument("--what", default="prefill,decode", help="prefill, decode or both")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    exe = ROOT / "build" / args.variant / "bin" / "amxforge-kbench"
    if not exe.is_file():
        print(f"build the kernels first: scons variant={args.variant}", file=sys.stderr)
        return 2
    try:
        counts = thread_counts(args.threads)
    except ValueError:
        print(f"--threads {args.threads}: want a comma list of positive numbers, e.g. 1,16", file=sys.stderr)
        return 2
    rows = []
    for threads in counts:
        sweeps = []
        if "prefill" in args.what:
            grid = [",".join(map(str, p)) for p in itertools.product(*PREFILL_GRID.values())]
            for dtype in ("bf16", "int8"):
                sweeps.append((f"prefill {dtype}", f"dense:{dtype}:amx:512:4096:4096", "AKF_TUNE", grid, 0, "gflops"))
        if "decode" in args.what:
            for dtype in ("bf16", "int8"):
                sweeps.append((f"decode {dtype}", f"dense:{dtype}:amx:1:4096:4096", "AKF_DECODE_PF",
                               [str(b) for b in DECODE_PF], 1.1e9, "gbps"))
        for name, case, var, values, min_bytes, metric in sweeps:
            points = [("default", {})] + [(v, {var: v}) for v in values] + [("default again", {})]
            results = []
            for label, env in points:
                r = point(exe, case, threads, env, args.reps, min_bytes)
                r.update(sweep=name, threads=threads, setting=label, knob=var)
                rows.append(r)
                results.append(r)
                if args.json:
                    print(json.dumps(r), flush=True)
            best = max(results[1:-1], key=lambda r: r[metric])
            default = [r[metric] for r in (results[0], results[-1])]
            print(f"# {name} threads={threads}: best {var}={best['setting']} {best[metric]:.1f} "
                  f"{'GFLOP/s' if metric == 'gflops' else 'GB/s'}; default {default[0]:.1f} then {default[1]:.1f}",
                  file=sys.stderr if args.json else sys.stdout, flush=True)
            if not args.json:
                for r in sorted(results[1:-1], key=lambda r: -r[metric])[:5]:
                    print(f"    {r['setting']:>12}  {r[metric]:8.1f}  spread {r['spread_pct']:.0f} %")
    return 0


if __name__ == "__main__":
    sys.exit(main())
