#!/usr/bin/env python3
"""What the fork launcher (shim) costs: tests/fixtures/minifork built through amxforge (shim, ledger) against the
same tree configured with plain CMake and the same ISA flags given directly, clean rebuilds alternating in one run.

    python benchmarks/shim_overhead.py [--rounds 5] [--variant avx512]
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


def timed(cmd, env) -> float:
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    return time.perf_counter() - t0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--variant", default="avx512")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="amxforge-shim-") as tmp:
        project = Path(tmp)
        shutil.copy(ROOT / "SConstruct", project)
        shutil.copytree(ROOT / "kernels", project / "kernels")
        env = dict(os.environ, CCACHE_DISABLE="1")  # both sides compile every unit
        subprocess.run([str(BIN / "scons"), "-Q", f"--site-dir={ROOT / 'site_scons'}", f"variant={args.variant}",
                        f"fork={ROOT / 'tests/fixtures/minifork'}"], cwd=project, check=True, env=env,
                       stdout=subprocess.DEVNULL)
        shimmed = next((project / "build" / args.variant / "fork-work").iterdir())  # the tree's CMake binary dir
        config = next(shimmed.glob("amxforge-shim-*.conf")).read_text().splitlines()
        flags = next(line.split("\t")[2:] for line in config if line.startswith("class\tdefault\t"))
        plain = project / "plain"
        subprocess.run([str(BIN / "cmake"), "-S", str(ROOT / "tests/fixtures/minifork"), "-B", str(plain), "-G",
                        "Ninja", f"-DCMAKE_MAKE_PROGRAM={BIN / 'ninja'}", "-DCMAKE_BUILD_TYPE=Release",
                        "-DGGML_NATIVE=OFF", "-DGGML_CCACHE=OFF", f"-DGGML_ARCH_FLAGS={';'.join(flags)}"],
                       check=True, stdout=subprocess.DEVNULL)
        ninja = str(BIN / "ninja")
        times = {"shim": [], "plain": []}
        for _ in range(args.rounds):
            for name, d in (("shim", shimmed), ("plain", plain)):
                subprocess.run([ninja, "-C", str(d), "-t", "clean"], check=True, stdout=subprocess.DEVNULL)
                times[name].append(timed([ninja, "-C", str(d), "llama-bench"], env))
        shim, base = statistics.median(times["shim"]), statistics.median(times["plain"])
        units = sum(1 for _ in open(shimmed / "ledger.live.jsonl")) // (args.rounds + 1)
    print(json.dumps({"fixture": "minifork", "units": units, "rounds": args.rounds, "plain_seconds": round(base, 3),
                      "shim_seconds": round(shim, 3), "overhead_fraction": round(shim / base - 1, 4),
                      "per_unit_ms": round(1000 * (shim - base) / max(units, 1), 1)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
