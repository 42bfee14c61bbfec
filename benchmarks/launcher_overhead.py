#!/usr/bin/env python3
"""What the launcher in front of every installed binary costs at start-up: a trivial program run through
bin/<name> (amxforge-launch: reads the launch table, CPUID, XCR0, AMX permission, then execs) against the same
program run directly from libexec/, alternating in one run. Target: at most 2 ms added (median).

    python benchmarks/launcher_overhead.py [--variant baseline] [--runs 300]

Builds the kernels of the variant in a temporary copy of the project (so the launcher and its table are the real
ones), then puts a C program that only returns 0 beside the real binaries.
"""

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def run_times(cmd, runs: int, env) -> list:
    out = []
    for _ in range(runs):
        t0 = time.perf_counter()
        subprocess.run(cmd, check=True, env=env)
        out.append(time.perf_counter() - t0)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--variant", default="baseline")
    ap.add_argument("--runs", type=int, default=300)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="amxforge-launch-") as tmp:
        project = Path(tmp)
        shutil.copy(ROOT / "SConstruct", project)
        shutil.copytree(ROOT / "kernels", project / "kernels")
        scons = str(BIN / "scons") if (BIN / "scons").exists() else shutil.which("scons")
        subprocess.run([scons, "-Q", f"--site-dir={ROOT / 'site_scons'}", f"variant={args.variant}"], cwd=project,
                       check=True, stdout=subprocess.DEVNULL)
        build = project / "build" / args.variant
        src = project / "noop.c"
        src.write_text("int main(void) { return 0; }\n")
        subprocess.run(["gcc", "-O2", str(src), "-o", str(build / "libexec" / "noop")], check=True)
        shutil.copy2(build / "libexec" / "amxforge-launch", build / "bin" / "noop")
        env = dict(os.environ)
        env.pop("AMXFORGE_EXPLAIN", None)
        direct, launched = [], []
        for _ in range(5):  # alternate in blocks: drift on a shared machine hits both alike
            direct += run_times([str(build / "libexec" / "noop")], args.runs // 5, env)
            launched += run_times([str(build / "bin" / "noop")], args.runs // 5, env)
    d, l = statistics.median(direct), statistics.median(launched)
    q = lambda xs, p: sorted(xs)[int(p * (len(xs) - 1))]  # noqa: E731
    print(json.dumps({"variant": args.variant, "runs": len(direct), "direct_ms": round(1e3 * d, 3),
                      "launched_ms": round(1e3 * l, 3), "added_ms": round(1e3 * (l - d), 3),
                      "added_p90_ms": round(1e3 * (q(launched, 0.9) - q(direct, 0.9)), 3), "target_ms": 2.0,
                      "met": (l - d) * 1e3 <= 2.0}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
