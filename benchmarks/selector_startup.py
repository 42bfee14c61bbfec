#!/usr/bin/env python3
"""What a release's selector costs at start-up: bin/<target> ARGS (the selector: reads the table, judges the variants,
checks the chosen one's files, then execs) against the variant it picks run directly (variants/<v>/libexec/<target>
ARGS), alternating in one run, after one warm-up of each. The verification stamp is in place from the warm-up (the
case every start but the first after an install or a change); --verify measures AMXFORGE_VERIFY=1 too (every file's
CRC-32 at every start, as before the stamp). Target: within 1 ms of the direct exec (median).

    python benchmarks/selector_startup.py --release dist/ik --target llama-cli [--runs 50] [--verify] -- --version
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def one(cmd, env) -> float:
    t0 = time.perf_counter()
    subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - t0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--release", required=True, type=Path)
    ap.add_argument("--target", required=True)
    ap.add_argument("--runs", type=int, default=50)
    ap.add_argument("--verify", action="store_true", help="also measure with AMXFORGE_VERIFY=1 (CRC at every start)")
    ap.add_argument("args", nargs="*", help="the target's arguments (after --)")
    args = ap.parse_args()
    selector = [str(args.release / "bin" / args.target), *args.args]
    with tempfile.TemporaryDirectory(prefix="amxforge-startup-") as cache:
        env = dict(os.environ, XDG_CACHE_HOME=cache, AMXFORGE_EXPLAIN="1")
        explained = subprocess.run(selector, env=env, capture_output=True, text=True).stderr
        chosen = next((line.split("running variant ")[1].split(":")[0] for line in explained.splitlines()
                       if "running variant " in line), None)
        if chosen is None:
            print(f"{selector[0]} chose no variant:\n{explained}", file=sys.stderr)
            return 2
        direct = [str(args.release / "variants" / chosen / "libexec" / args.target), *args.args]
        env.pop("AMXFORGE_EXPLAIN")
        modes = {"selector": (selector, env), "direct": (direct, env)}
        if args.verify:
            modes["selector_verify"] = (selector, dict(env, AMXFORGE_VERIFY="1"))
        times = {name: [] for name in modes}
        for cmd, e in modes.values():
            one(cmd, e)  # warm-up: caches, and the stamp
        for _ in range(args.runs):
            for name, (cmd, e) in modes.items():
                times[name].append(one(cmd, e))
    size = sum(p.stat().st_size for p in (args.release / "variants" / chosen).rglob("*") if p.is_file())
    out = {"release": str(args.release), "target": args.target, "variant": chosen, "variant_bytes": size,
           "runs": args.runs}
    for name, values in times.items():
        out[f"{name}_ms"] = round(1000 * statistics.median(values), 3)
        out[f"{name}_ms_min_max"] = [round(1000 * min(values), 3), round(1000 * max(values), 3)]
    out["added_ms"] = round(out["selector_ms"] - out["direct_ms"], 3)
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
