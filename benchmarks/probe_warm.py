#!/usr/bin/env python3
"""Warm `amxforge probe --json` wall time: one cold run fills the cache, then N timed runs; prints the median.

    python benchmarks/probe_warm.py [--runs 21]
"""

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BUDGET_MS = 150


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=21)
    args = ap.parse_args()
    exe = shutil.which("amxforge", path=str(Path(sys.executable).parent)) or shutil.which("amxforge")
    if not exe:
        print("amxforge is not installed: pip install -e .", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as cache:
        env = {"AMXFORGE_CACHE": cache, "PATH": str(Path(sys.executable).parent) + ":/usr/bin:/bin"}
        t0 = time.perf_counter()
        subprocess.run([exe, "probe", "--json"], env=env, check=True, capture_output=True)
        cold = (time.perf_counter() - t0) * 1000
        times = []
        for _ in range(args.runs):
            t0 = time.perf_counter()
            subprocess.run([exe, "probe", "--json"], env=env, check=True, capture_output=True)
            times.append((time.perf_counter() - t0) * 1000)
    median = statistics.median(times)
    print(json.dumps({"cold_ms": round(cold, 1), "warm_median_ms": round(median, 1),
                      "warm_min_ms": round(min(times), 1), "warm_max_ms": round(max(times), 1),
                      "runs": args.runs, "budget_ms": BUDGET_MS, "within_budget": median <= BUDGET_MS}))
    return 0 if median <= BUDGET_MS else 1


if __name__ == "__main__":
    sys.exit(main())
