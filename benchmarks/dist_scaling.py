#!/usr/bin/env python3
"""Compiles on other hosts, measured side by side in one run: a fork tree built by one host of C cores, then by H
hosts of C cores each through icecream (dist=icecc), every host pinned to its own CPUs with taskset (root).

  one        the builder alone: `scons ... jobs=C` pinned to C cores, no dist (every unit a local compile)
  cluster    the builder and H-1 more daemon hosts, C slots each: `scons ... dist=icecc`, jobs = H*C

The bound for the cluster: max(total compile time / slots, slowest unit), the unit times being those of `one` (each
unit compiled on one core). Target: cluster wall time within 20 % of it. ccache, when installed, runs in both with an
empty cache of its own (all misses). The hosts are network namespaces on a bridge (tests/icecreamlib.py).

    python benchmarks/dist_scaling.py --fork PATH [--variant amx] [--targets llama-bench] [--hosts 4] [--cores 4]
                                      [--cc CC --cxx CXX] [--one FILE] [--json]

The chain's own overhead (every unit compiled on the builder) is measured by benchmarks/shared_cache.py.

Kernels are built first, outside the timing, so that only the fork build is timed."""

import argparse
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "benchmarks"))

from icecreamlib import Cluster, why_not  # noqa: E402
from shared_cache import project, scons_cmd, timed  # noqa: E402


def units(proj: Path, variant: str) -> list:
    path = proj / "build" / variant / "fork" / "ledger.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()]


def cpu_sets(hosts: int, cores: int) -> list:
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < hosts * cores:
        raise SystemExit(f"dist_scaling: cannot run here: {hosts} hosts x {cores} cores need {hosts * cores} CPUs, "
                         f"this machine lets us use {len(cpus)}; pass --hosts/--cores")
    return [",".join(str(c) for c in cpus[i * cores:(i + 1) * cores]) for i in range(hosts)]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--fork", default=str(ROOT / "tests" / "fixtures" / "minifork"))
    ap.add_argument("--variant", default="baseline")
    ap.add_argument("--targets", default="llama-bench")
    ap.add_argument("--hosts", type=int, default=4)
    ap.add_argument("--cores", type=int, default=4, help="cores (and icecream slots) per host")
    ap.add_argument("--cc", default=None, help="CC= for every build (icecream needs the compiler binary, not a "
                                               "wrapper script)")
    ap.add_argument("--cxx", default=None, help="CXX= for every build")
    ap.add_argument("--one", default=None, metavar="JSON",
                    help="the one-host build's results: written after it (then stop), or, when the file exists, read "
                         "instead of building it again (two runs for hosts that limit one command's time)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    why = why_not()
    if why:
        print(f"dist_scaling: cannot run here: {why}", file=sys.stderr)
        return 2
    sets = cpu_sets(args.hosts, args.cores)
    base = [f"variant={args.variant}"] + ([f"CC={args.cc}"] if args.cc else []) + \
        ([f"CXX={args.cxx}"] if args.cxx else [])
    fork = ["fork=tree", f"fork_targets={args.targets}"]
    out = {"fork": args.fork, "variant": args.variant, "targets": args.targets, "hosts": args.hosts,
           "cores": args.cores, "cpus": sets}
    tmp = Path(tempfile.mkdtemp(prefix="amxforge-dist-bench-"))
    try:
        runs = {}
        # one host of C cores: everything pinned to the builder's CPUs
        if args.one and os.path.exists(args.one):
            saved = json.loads(Path(args.one).read_text())
            seconds, one = saved["seconds"], saved["units"]
        else:
            proj = project(tmp / "one", Path(args.fork))
            env = {"CCACHE_DIR": str(tmp / "ccache-one")}
            pin = ["taskset", "-c", sets[0]]
            timed(pin + scons_cmd(base + [f"jobs={args.cores}"]), proj, env, "dist_scaling")  # kernels: untimed
            seconds = timed(pin + scons_cmd(base + fork + [f"jobs={args.cores}"]), proj, env, "dist_scaling")
            one = [{"source": u["source"], "seconds": u["seconds"]} for u in units(proj, args.variant)]
            if args.one:
                Path(args.one).write_text(json.dumps({"seconds": seconds, "units": one}))
                print(f"dist_scaling: one host: {seconds:.1f} s; saved in {args.one}")
                return 0
        total = sum(u["seconds"] for u in one)
        slowest = max(one, key=lambda u: u["seconds"])
        runs["one"] = {"seconds": round(seconds, 2), "units": len(one), "compile_seconds": round(total, 1),
                       "slowest": {"source": slowest["source"], "seconds": round(slowest["seconds"], 1)}}
        # H hosts of C cores: the builder on the first set, a daemon host on each of the others
        names = [f"h{i}" for i in range(1, args.hosts)]
        cpus = {"builder": sets[0], **{n: sets[i + 1] for i, n in enumerate(names)}}
        with Cluster(names, slots=args.cores, cpus=cpus, builder_slots=args.cores,
                     builder_remote=True, redis=False) as cluster:
            proj = project(tmp / "cluster" / "xx", Path(args.fork))
            env = {"CCACHE_DIR": str(tmp / "ccache-cluster")}
            dist = ["dist=icecc", f"dist_scheduler={cluster.scheduler}", f"jobs={args.hosts * args.cores}"]
            timed(cluster.command(proj, *scons_cmd(base + dist)), proj, env, "dist_scaling")  # untimed
            seconds = timed(cluster.command(proj, *scons_cmd(base + fork + dist)), proj, env, "dist_scaling")
            record = json.loads((proj / "build" / args.variant / "fork" / "amxforge-build.json").read_text())
            runs["cluster"] = {"seconds": round(seconds, 2), "dist": {k: v for k, v in record["dist"].items()
                                                                      if k != "toolchain"},
                               "retried": [{"source": u["source"], "why": u["retried"]}
                                           for u in units(proj, args.variant) if u.get("retried")]}
        slots = args.hosts * args.cores
        bound = max(total / slots, slowest["seconds"])
        out.update(runs=runs, slots=slots, bound_seconds=round(bound, 1),
                   cluster_over_bound=round(runs["cluster"]["seconds"] / bound - 1, 3),
                   speedup_vs_one=round(runs["one"]["seconds"] / runs["cluster"]["seconds"], 2))
        lines = [f"one host of {args.cores} cores: {runs['one']['seconds']} s ({len(one)} units, {total:.0f} s of "
                 f"compiles, slowest {slowest['source']} {slowest['seconds']:.0f} s); {args.hosts} hosts: "
                 f"{runs['cluster']['seconds']} s = {100 * out['cluster_over_bound']:+.0f} % vs the bound "
                 f"{bound:.0f} s (x{out['speedup_vs_one']} vs one host); remote {record['dist']['compiled_remote']}, "
                 f"here {record['dist']['compiled_local']}, by host {record['dist']['hosts']}"]
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(json.dumps(out) if args.json else "\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
