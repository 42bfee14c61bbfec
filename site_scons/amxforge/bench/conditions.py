"""The conditions a `bench fork` run measured under, recorded before and after, and the noisy ones named: the CPU
frequency governor and turbo (where sysfs shows them), the load average, steal time (a virtual machine's CPU taken by
its host), other processes that used CPU during the run, and whether each run stayed on the CPUs it was pinned to
(cells.run_cell samples the threads' last CPU)."""

import os
import time
from pathlib import Path

from .. import procfs
from .pinning import CPU_SYSFS as SYS_CPU
BUSY_SHARE = 0.10  # another process using a tenth of a CPU or more during the run is named
STEAL_PCT = 1.0
TICKS = os.sysconf("SC_CLK_TCK")


def _read(path: Path):
    try:
        return path.read_text().strip()
    except OSError:
        return None


def governors() -> dict:
    """{governor: how many CPUs use it}, empty where cpufreq is not exposed (most virtual machines)."""
    out = {}
    for path in sorted(SYS_CPU.glob("cpu[0-9]*/cpufreq/scaling_governor")):
        value = _read(path)
        if value:
            out[value] = out.get(value, 0) + 1
    return out


def turbo():
    """True / False where the driver says whether turbo (boost) is on, else None."""
    no_turbo = _read(SYS_CPU / "intel_pstate" / "no_turbo")
    if no_turbo in ("0", "1"):
        return no_turbo == "0"
    boost = _read(SYS_CPU / "cpufreq" / "boost")
    if boost in ("0", "1"):
        return boost == "1"
    return None


def cpu_times():
    """(steal, total) jiffies of all CPUs from /proc/stat, or None."""
    text = _read(Path("/proc/stat"))
    if not text:
        return None
    fields = text.splitlines()[0].split()
    if fields[0] != "cpu" or len(fields) < 9:
        return None
    values = [int(v) for v in fields[1:]]
    return values[7], sum(values[:8])  # user nice system idle iowait irq softirq steal (guest is inside user)


def process_times() -> dict:
    """{pid: (command name, utime + stime in seconds)} of every process readable in /proc."""
    out = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            name, fields = procfs.stat(entry / "stat")
            out[int(entry.name)] = (name, (int(fields[procfs.UTIME]) + int(fields[procfs.STIME])) / TICKS)
        except (OSError, ValueError, KeyError):
            continue  # gone between the listing and the read, or not ours to read
    return out


def _load():
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return None


def host_conditions() -> dict:
    """What is read before the first run."""
    return {"governor": governors(), "turbo": turbo(), "cpus": os.cpu_count(), "load_before": _load(),
            "_times": cpu_times(), "_processes": process_times(), "_started": time.monotonic()}


def finish_conditions(before: dict, log, pinning_broken: list = ()) -> dict:
    """The record of the run's conditions: the `before` values with the after values, the steal share over the run,
    the other processes that used CPU, and a warning per noisy condition (each also given to `log`)."""
    wall = max(time.monotonic() - before["_started"], 1e-3)
    times = cpu_times()
    steal = None
    if before["_times"] and times and times[1] > before["_times"][1]:
        steal = round(100.0 * (times[0] - before["_times"][0]) / (times[1] - before["_times"][1]), 2)
    ours = {os.getpid(), os.getppid()}
    busy = []
    for pid, (name, cpu) in process_times().items():
        if pid in ours:
            continue
        used = cpu - before["_processes"].get(pid, (name, 0.0))[1]  # all of it for a process started since
        if used / wall >= BUSY_SHARE:
            busy.append({"pid": pid, "name": name, "cpu_share": round(used / wall, 2)})
    busy.sort(key=lambda p: -p["cpu_share"])
    out = {k: v for k, v in before.items() if not k.startswith("_")}
    out |= {"load_after": _load(), "steal_pct": steal, "busy_processes": busy[:10],
            "pinning_held": not pinning_broken}
    warnings = []
    if out["governor"] and set(out["governor"]) != {"performance"}:
        warnings.append(f"CPU frequency governor {', '.join(sorted(out['governor']))}: the clock follows the load "
                        "(set 'performance': cpupower frequency-set -g performance)")
    if out["turbo"]:
        warnings.append("turbo is on: the clock depends on temperature and on how many cores are busy")
    if out["load_before"] and out["cpus"] and out["load_before"][0] > 0.25 * out["cpus"]:
        warnings.append(f"load average {out['load_before'][0]:g} before the run on {out['cpus']} CPUs")
    if steal is not None and steal >= STEAL_PCT:
        warnings.append(f"{steal:g} % of the CPU time was stolen by the hypervisor during the run")
    if busy:
        warnings.append("other processes used CPU during the run: " + ", ".join(
            f"{p['name']} ({p['pid']}, {100 * p['cpu_share']:.0f} % of a CPU)" for p in busy[:3])
            + (f" and {len(busy) - 3} more" if len(busy) > 3 else ""))
    if pinning_broken:
        warnings.append("pinning did not hold: " + "; ".join(pinning_broken[:3]))
    for w in warnings:
        log(f"amxforge: bench fork: warning: {w}")
    out["warnings"] = warnings
    return out
