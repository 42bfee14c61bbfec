#!/usr/bin/env python3
"""The shared compile cache, measured side by side in one run (root: the Redis server runs in a network namespace,
a second host reached over a veth pair):

  cold       builder one: empty local cache, empty remote cache (every unit a miss; the remote is filled)
  second     builder two: another checkout path, an empty local cache, the same remote (target: >= 95 % remote hits,
             wall time <= 15 % of cold)
  plain      builder three: plain ccache, no remote, empty local cache (all misses)
  chain      builder four: the chain with an empty remote namespace (all misses, remote writes; target: <= 5 %
             over plain)

    python benchmarks/shared_cache.py [--fork tests/fixtures/minifork] [--variant baseline] [--targets llama-bench]
                                      [--jobs N] [--json]

Each builder is a fresh copy of the project (SConstruct, kernels/) with the fork tree copied inside it, so the paths
differ between builders. Kernels are built first (outside the timing) so that only the fork build is timed."""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
BIN = Path(sys.executable).parent

from netnslib import NamespaceHost, why_not_namespaces  # noqa: E402


def project(parent: Path, fork: Path) -> Path:
    proj = parent / "proj"
    proj.mkdir(parents=True)
    shutil.copy(ROOT / "SConstruct", proj)
    shutil.copytree(ROOT / "kernels", proj / "kernels")
    shutil.copytree(fork, proj / "tree", symlinks=True, ignore=shutil.ignore_patterns(".git"))
    return proj


def scons(proj: Path, args, env) -> float:
    cmd = [str(BIN / "scons"), "-Q", f"--site-dir={ROOT / 'site_scons'}", *args]
    t0 = time.perf_counter()
    res = subprocess.run(cmd, cwd=proj, env=dict(os.environ, **env), capture_output=True, text=True)
    if res.returncode != 0:
        raise SystemExit(f"build failed in {proj}: {res.stderr.strip().splitlines()[-1:]}")
    return time.perf_counter() - t0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--fork", default=str(ROOT / "tests" / "fixtures" / "minifork"))
    ap.add_argument("--variant", default="baseline")
    ap.add_argument("--targets", default="llama-bench")
    ap.add_argument("--jobs", type=int, default=os.cpu_count())
    ap.add_argument("--runs", default="cold,second,plain,chain",
                    help="which builders (cold and second go together; plain and chain go together)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    why = why_not_namespaces()
    if why or not shutil.which("redis-server") or not shutil.which("ccache"):
        print(f"shared_cache: cannot run here: {why or 'redis-server and ccache are needed'}", file=sys.stderr)
        return 2
    base = ["variant=" + args.variant, f"jobs={args.jobs}"]
    fork = ["fork=tree", f"fork_targets={args.targets}"]
    out = {"fork": args.fork, "variant": args.variant, "targets": args.targets, "jobs": args.jobs}
    with tempfile.TemporaryDirectory(prefix="amxforge-cache-bench-") as tmp, \
            NamespaceHost(f"afx-bench-{os.getpid() % 100000}", "10.231.9") as host:
        url = host.redis()
        tmp = Path(tmp)
        runs = {}
        # chain: another Redis database, so the remote is empty and every unit misses (and is written)
        wanted = set(args.runs.split(","))
        for name, cache in (("cold", url), ("second", url), ("plain", None), ("chain", url + "/1")):
            if name not in wanted:
                continue
            proj = project(tmp / name / ("x" * len(name)), Path(args.fork))  # other paths, other depths
            env = {"CCACHE_DIR": str(tmp / f"ccache-{name}")}
            scons(proj, base, env)  # the kernels: not timed
            seconds = scons(proj, base + fork + ([f"cache={cache}"] if cache else []), env)
            record = json.loads((proj / "build" / args.variant / "fork" / "amxforge-build.json").read_text())
            runs[name] = {"seconds": round(seconds, 2), "units": record["ledger"]["units"], **record.get("ccache", {})}
            print(f"shared_cache: {name}: {seconds:.1f} s, {runs[name]}", file=sys.stderr)
        out["runs"] = runs
        lines = []
        if {"cold", "second"} <= set(runs):
            second, cold = runs["second"], runs["cold"]
            out["second_remote_hit_fraction"] = round(second["remote_hits"] / second["units"], 3)
            out["second_time_fraction_of_cold"] = round(second["seconds"] / cold["seconds"], 3)
            lines.append(f"second builder: {100 * out['second_remote_hit_fraction']:.0f} % remote hits, "
                         f"{100 * out['second_time_fraction_of_cold']:.0f} % of the cold build's wall time "
                         f"({second['seconds']} s vs {cold['seconds']} s)")
        if {"plain", "chain"} <= set(runs):
            out["chain_overhead_vs_plain"] = round(runs["chain"]["seconds"] / runs["plain"]["seconds"] - 1, 3)
            lines.append(f"chain with all misses vs plain ccache: {100 * out['chain_overhead_vs_plain']:+.1f} % "
                         f"({runs['chain']['seconds']} s vs {runs['plain']['seconds']} s)")
    print(json.dumps(out) if args.json else "; ".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
