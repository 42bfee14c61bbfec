"""Shared by the peer benchmarks: run build/VARIANT/bin/amxforge-kbench on one case and return its case record and
the limits it measured in the same process ({limit name: GFLOP/s or GB/s})."""

import json
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def kbench(variant: str, case: str, threads: int, min_bytes: float):
    exe = ROOT / "build" / variant / "bin" / "amxforge-kbench"
    out = subprocess.run([str(exe), "--threads", str(threads), "--case", case, "--min-bytes", str(min_bytes)],
                         capture_output=True, text=True, check=True).stdout
    records = [json.loads(line) for line in out.splitlines()]
    case_rec = next(r for r in records if r.get("record") == "case")
    limits = {r["limit"]: r.get("gflops", r.get("gbps")) for r in records if r.get("record") == "limit"}
    return case_rec, limits
