"""The host's CPUs for `amxforge bench fork`: one CPU per physical core first (by NUMA node), SMT siblings last; which
CPUs a cell of N threads is pinned to, and how a CPU list is written."""

import os
from functools import lru_cache
from pathlib import Path


def _cpulist(text: str) -> list:
    cpus = []
    for part in text.strip().split(","):
        if "-" in part:
            a, b = part.split("-")
            cpus += range(int(a), int(b) + 1)
        elif part:
            cpus.append(int(part))
    return cpus


CPU_SYSFS = Path("/sys/devices/system/cpu")


def _core_key(cpu: int, sysfs: Path) -> int:
    """The physical core a CPU belongs to: the lowest of its SMT siblings."""
    try:
        return min(_cpulist((sysfs / f"cpu{cpu}" / "topology" / "thread_siblings_list").read_text()))
    except OSError:
        return cpu


def cpu_order(sysfs: Path = CPU_SYSFS) -> list:
    """The CPUs this process may use, one per physical core first (by NUMA node, then core), then SMT siblings."""
    first, second, seen = [], [], set()
    for cpu in sorted(os.sched_getaffinity(0)):
        key = _core_key(cpu, sysfs)
        (second if key in seen else first).append(cpu)
        seen.add(key)
    return sorted(first, key=lambda c: (node_of(c), c)) + second


@lru_cache(maxsize=None)
def node_of(cpu: int, sysfs: Path = Path("/sys/devices/system/node")) -> int:
    for node in sorted(sysfs.glob("node[0-9]*")):
        try:
            if cpu in _cpulist((node / "cpulist").read_text()):
                return int(node.name[4:])
        except OSError:
            continue
    return 0


def physical_cores(sysfs: Path = CPU_SYSFS) -> int:
    return len({_core_key(cpu, sysfs) for cpu in os.sched_getaffinity(0)})


def pinning(threads: int, order: list, cores: int) -> dict:
    """Which CPUs a cell of `threads` threads runs on (order: cpu_order(); cores: physical_cores()); above the CPUs
    this process may use: unpinned, marked."""
    if threads > len(order):
        return {"cpus": None, "nodes": sorted({node_of(c) for c in order}), "oversubscribed": True}
    cpus = sorted(order[:threads])
    return {"cpus": cpus, "nodes": sorted({node_of(c) for c in cpus}), "oversubscribed": threads > cores}


def cpus_text(cpus) -> str:
    if not cpus:
        return "unpinned"
    runs, start, prev = [], cpus[0], cpus[0]
    for c in cpus[1:] + [None]:
        if c is not None and c == prev + 1:
            prev = c
            continue
        runs.append(f"{start}-{prev}" if prev != start else f"{start}")
        if c is not None:
            start = prev = c
    return ",".join(runs)
