#!/usr/bin/env python3
"""The shared compile cache and the compiler chain, measured side by side in one run (root: redis-server and the
icecream scheduler run on a network-namespace host, the builds on a builder host with its own iceccd; see
tests/icecreamlib.py):

  cold       builder one: empty local cache, empty remote cache (every unit a miss; the remote is filled)
  second     builder two: another checkout path, an empty local cache, the same remote (target: >= 95 % remote hits,
             wall time <= 15 % of cold)
  overhead   --reps pairs, alternating: `plain` (the shim and a cold local ccache) and `chain` (the shim, a cold
             local ccache, remote storage on an empty Redis database, icecc in front of the compiler, every unit
             compiled on the builder: the scheduler knows no other host). Target: chain <= 5 % over plain, judged on
             the median of the pairs' ratios, with their spread.

    python benchmarks/shared_cache.py [--fork tests/fixtures/minifork] [--variant baseline] [--targets llama-bench]
                                      [--jobs N] [--reps 5] [--runs second,overhead] [--json]

Each build is a fresh copy of the project (SConstruct, kernels/) with the fork tree copied inside it, so the paths
differ between builds. Kernels are built first (outside the timing) so that only the fork build is timed."""

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
sys.path.insert(0, str(ROOT / "tests"))
BIN = Path(sys.executable).parent

from icecreamlib import Cluster, why_not  # noqa: E402


def project(parent: Path, fork: Path) -> Path:
    """A fresh project (SConstruct, kernels/) with the fork tree copied inside it as tree/."""
    proj = parent / "proj"
    proj.mkdir(parents=True)
    shutil.copy(ROOT / "SConstruct", proj)
    shutil.copytree(ROOT / "kernels", proj / "kernels")
    shutil.copytree(fork, proj / "tree", symlinks=True, ignore=shutil.ignore_patterns(".git"))
    return proj


def scons_cmd(args) -> list:
    scons = BIN / "scons" if (BIN / "scons").exists() else shutil.which("scons")
    return [str(scons), "-Q", f"--site-dir={ROOT / 'site_scons'}", *args]


def timed(cmd, cwd, env, tag="shared_cache") -> float:
    """Run a build, return its wall time; its amxforge summary lines go to stderr; a failure stops the benchmark."""
    t0 = time.perf_counter()
    res = subprocess.run(cmd, cwd=cwd, env=dict(os.environ, **env), capture_output=True, text=True)
    if res.returncode != 0:
        raise SystemExit(f"{tag}: build failed in {cwd}:\n" + "\n".join((res.stdout + res.stderr).strip()
                                                                         .splitlines()[-12:]))
    for line in res.stdout.splitlines():
        if line.startswith(("amxforge: icecc:", "amxforge: ccache:", "amxforge: dist=")):
            print(f"{tag}: {line}", file=sys.stderr)
    return time.perf_counter() - t0


def record(proj: Path, variant: str) -> dict:
    return json.loads((proj / "build" / variant / "fork" / "amxforge-build.json").read_text())


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--fork", default=str(ROOT / "tests" / "fixtures" / "minifork"))
    ap.add_argument("--variant", default="baseline")
    ap.add_argument("--targets", default="llama-bench")
    ap.add_argument("--jobs", type=int, default=os.cpu_count())
    ap.add_argument("--reps", type=int, default=5, help="plain/chain pairs for the overhead (at most 15)")
    ap.add_argument("--runs", default="second,overhead", help="second (cold + second builder), overhead")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    why = why_not() or (None if shutil.which("redis-server") and shutil.which("ccache") else
                        "redis-server and ccache are needed")
    if why or not 1 <= args.reps <= 15:
        print(f"shared_cache: cannot run here: {why or '--reps must be 1..15 (one Redis database each)'}",
              file=sys.stderr)
        return 2
    base = ["variant=" + args.variant, f"jobs={args.jobs}"]
    fork = ["fork=tree", f"fork_targets={args.targets}"]
    out = {"fork": args.fork, "variant": args.variant, "targets": args.targets, "jobs": args.jobs}
    wanted = set(args.runs.split(","))
    tmp = Path(tempfile.mkdtemp(prefix="amxforge-cache-bench-"))
    lines = []
    try:
        # the builder's own iceccd takes jobs: with no other host, icecc compiles every unit on the builder
        with Cluster([], builder_slots=args.jobs, builder_remote=True) as cluster:
            def build(name, extra):
                proj = project(tmp / name / ("x" * len(name)), Path(args.fork))  # other paths, other depths
                env = {"CCACHE_DIR": str(tmp / f"ccache-{name}")}
                timed(cluster.command(proj, *scons_cmd(base + extra)), proj, env)  # the kernels: not timed
                seconds = timed(cluster.command(proj, *scons_cmd(base + fork + extra)), proj, env)
                rec = record(proj, args.variant)
                return {"seconds": round(seconds, 2), "units": rec["ledger"]["units"], **rec.get("ccache", {})}

            runs = {}
            if "second" in wanted:
                for name in ("cold", "second"):
                    runs[name] = build(name, [f"cache={cluster.redis}"])
                second, cold = runs["second"], runs["cold"]
                out["second_remote_hit_fraction"] = round(second["remote_hits"] / second["units"], 3)
                out["second_time_fraction_of_cold"] = round(second["seconds"] / cold["seconds"], 3)
                lines.append(f"second builder: {100 * out['second_remote_hit_fraction']:.0f} % remote hits, "
                             f"{100 * out['second_time_fraction_of_cold']:.0f} % of the cold build's wall time "
                             f"({second['seconds']} s vs {cold['seconds']} s)")
            if "overhead" in wanted:
                ratios = []
                for rep in range(1, args.reps + 1):  # alternating, so drift on a shared machine hits both alike
                    plain = build(f"plain{rep}", [])
                    chain = build(f"chain{rep}", [f"cache={cluster.redis}/{rep}", "dist=icecc",
                                                  f"dist_scheduler={cluster.scheduler}"])
                    runs[f"plain{rep}"], runs[f"chain{rep}"] = plain, chain
                    ratios.append(chain["seconds"] / plain["seconds"])
                med = statistics.median(ratios)
                out["chain_overhead_vs_plain"] = {"median": round(med - 1, 3), "min": round(min(ratios) - 1, 3),
                                                  "max": round(max(ratios) - 1, 3), "pairs": len(ratios)}
                lines.append(f"chain (shim, ccache with remote storage, icecc; every unit a miss compiled here) vs "
                             f"plain ccache: median {100 * (med - 1):+.1f} % [{100 * (min(ratios) - 1):+.1f} .. "
                             f"{100 * (max(ratios) - 1):+.1f}] over {len(ratios)} pairs")
            out["runs"] = runs
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(json.dumps(out) if args.json else "\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
