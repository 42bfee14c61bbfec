"""Shared by the peer benchmarks: run build/VARIANT/bin/amxforge-kbench on cases and return their case records and
the limits it measured in the same process ({limit name: GFLOP/s or GB/s})."""

import json
import os
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# The CPUs this process may use before a peer library loads: an OpenMP runtime started with OMP_PROC_BIND binds the
# calling thread to one core, and every child would inherit that one core.
CPUS = os.sched_getaffinity(0)


def thread_counts(text: str) -> list:
    """--threads of the benchmarks: a comma list of positive numbers ("1,4,8,16"); ValueError otherwise."""
    counts = [int(t) for t in text.split(",")]
    if min(counts) < 1:
        raise ValueError(text)
    return counts


def kbench_cases(variant: str, cases, threads: int, min_bytes: float, limits=None):
    """Case records in the order given, and the limits (only those named in `limits`, when given)."""
    exe = ROOT / "build" / variant / "bin" / "amxforge-kbench"
    cmd = [str(exe), "--threads", str(threads), "--min-bytes", str(min_bytes)]
    for case in cases:
        cmd += ["--case", case]
    if limits:
        cmd += ["--limits", ",".join(limits)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True,
                         preexec_fn=lambda: os.sched_setaffinity(0, CPUS)).stdout
    records = [json.loads(line) for line in out.splitlines()]
    found = {r["limit"]: r.get("gflops", r.get("gbps")) for r in records if r.get("record") == "limit"}
    return [r for r in records if r.get("record") == "case"], found


def kbench(variant: str, case: str, threads: int, min_bytes: float):
    recs, found = kbench_cases(variant, [case], threads, min_bytes)
    return recs[0], found
