"""Cells of `amxforge bench fork` (a column: source x variant x --amx; a cell: column x threads x type), the command of
one run, one repetition run pinned, and the run order: warm-up passes, then rounds in ABBA order between two runs of
a reference cell."""

import os
import re
import shutil
import signal
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from .. import procfs
from ..children import reaped
from .forktools import bench_tools, parse_output
from .sources import Source


@dataclass
class Column:
    source: Source
    variant: str
    amx: bool = False  # the AMX branch's --amx runtime option given to the tool
    kernels: str = "fork"  # fork: the fork's own kernels; amxforge: ours, through the handler (fork_kernels=amxforge)

    def label(self, many_sources: bool) -> str:
        text = f"{self.source.label}/{self.variant}" if many_sources else self.variant
        return text + (" --amx" if self.amx else "") + (" +ours" if self.kernels == "amxforge" else "")


@dataclass
class Cell:
    column: Column
    threads: int
    qtype: str
    model: Path
    pin: dict
    runs: list = field(default_factory=list)  # {"pp": t/s, "tg": t/s, "amx_buffer": bool}
    error: str = None
    command: list = None
    log: str = None  # the failed run's command, stdout and stderr


def cell_argv(cell: Cell, tool: str, pp: int, tg: int, numa: str):
    """The tool's command line for a cell, and its extra environment."""
    tools = bench_tools()
    argv0, env = cell.column.source.command(cell.column.variant, tool)
    values = {"model": str(cell.model), "threads": str(cell.threads), "pp": str(pp), "tg": str(tg), "numa": numa}
    argv = [argv0] + [a.format(**values) for a in tools["tools"][tool]["args"]]
    if cell.column.amx:
        argv += [a.format(**values) for a in tools["runtime_options"]["amx"]["flag"]]
    if numa != "off":
        argv += [a.format(**values) for a in tools["runtime_options"]["numa"]["flag"]]
    # a binary with our handler runs the fork's kernels under AMXFORGE_KERNELS=fork (one without ignores it); ours
    # report at exit how many calls they took, the evidence that the column measured them
    env = dict(env, **({"AMXFORGE_KERNELS_STATS": "1"} if cell.column.kernels == "amxforge"
                       else {"AMXFORGE_KERNELS": "fork"}))
    return argv, env


_TAKEN = re.compile(r"^amxforge-kernels: taken: \w+ .*: (\d+) calls(?:, [^\n]*)?$", re.M)


def run_cell(cell: Cell, tool: str, pp: int, tg: int, numa: str, timeout: float, workdir: Path) -> dict:
    """One repetition: the tool once, pinned, in a scratch directory (the forks' old logger writes llama.<pid>.log
    files into the current directory); its numbers, or why there are none."""
    argv, env = cell_argv(cell, tool, pp, tg, numa)
    cell.command = argv
    cpus = cell.pin["cpus"]
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)
    try:
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                env=dict(os.environ, **env), cwd=workdir,
                                preexec_fn=(lambda: os.sched_setaffinity(0, cpus)) if cpus else None)
    except OSError as exc:
        return {"error": f"{tool} could not start: {exc.strerror}"}
    seen = set()
    watcher = threading.Thread(target=_watch_cpus, args=(proc, seen, set(cpus or ())), daemon=True)
    watcher.start()
    try:
        with reaped(proc):
            stdout, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"{tool} timed out after {timeout:g} s"}
    finally:
        watcher.join()
    if proc.returncode != 0:
        how = (f"killed by {signal.Signals(-proc.returncode).name}" if proc.returncode < 0
               else f"exit {proc.returncode}")
        last = (stderr.strip().splitlines() or stdout.strip().splitlines() or ["no output"])[-1]
        return {"error": f"{tool} {how}: {last[:200]}", "stdout": stdout, "stderr": stderr}
    skipped = not_computed(stdout + stderr)
    if skipped:
        hint = "; the cells without --amx are the ones to compare (--amx off)" if cell.column.amx else ""
        return {"error": f"{tool} skipped products, its speed measures no computation: {skipped}{hint}",
                "stdout": stdout, "stderr": stderr}
    try:
        got = parse_output(bench_tools()["tools"][tool]["output"], stdout, stderr)
    except ValueError as exc:
        last = (stderr.strip().splitlines() or ["no output on stderr"])[-1]
        return {"error": f"{tool}: {exc}; its last line: {last[:160]}", "stdout": stdout, "stderr": stderr}
    got["amx_buffer"] = bench_tools()["evidence"]["amx_buffer"] in stderr + stdout
    if cell.column.kernels == "amxforge":
        got["kernels_taken"] = sum(int(m) for m in _TAKEN.findall(stderr))
    if cpus and seen - set(cpus):
        got["pinning_held"] = False
        got["ran_on"] = sorted(seen)
    elif cpus:
        got["pinning_held"] = True
    return got


def not_computed(text: str) -> str:
    """What a run printed of products it did not compute (bench.toml's evidence.not_computed): the first such line
    and how many there were, or "" when none."""
    marks = bench_tools()["evidence"]["not_computed"]
    lines = [line.strip() for line in text.splitlines() if any(mark in line for mark in marks)]
    if not lines:
        return ""
    return f"{len(lines)} line(s) like {lines[0][:120]!r}"


def _watch_cpus(proc, seen: set, pinned: set = frozenset(), every: float = 0.05) -> None:
    """Adds to `seen` the CPU each of the process's threads last ran on (proc(5)'s `processor` field of
    /proc/PID/task/TID/stat), every `every` seconds until it exits: the evidence that the pinning held. The watcher
    itself keeps off the `pinned` CPUs where others are allowed, so it does not take time from the measured run."""
    spare = os.sched_getaffinity(0) - pinned
    if pinned and spare:
        os.sched_setaffinity(threading.get_native_id(), spare)  # this thread only
    tasks = Path(f"/proc/{proc.pid}/task")
    while proc.poll() is None:
        try:
            for task in tasks.iterdir():
                seen.add(int(procfs.stat(task / "stat")[1][procfs.PROCESSOR]))
        except (OSError, ValueError, KeyError):
            pass  # the process or a thread ended between the listing and the read
        time.sleep(every)


def failure_log(out: Path, cell: Cell, got: dict) -> str:
    """OUT/logs/failed-<column>-<threads>-<type>.log: what the failed run printed, for the reader of the table."""
    from .. import atomic
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", f"failed-{cell.column.label(True)}-{cell.threads}t-{cell.qtype}.log")
    path = out / "logs" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic.write_text(path, f"$ {' '.join(cell.command or [])}\n# {got['error']}\n--- stdout\n"
                            f"{got.get('stdout', '')}\n--- stderr\n{got.get('stderr', '')}")
    return str(path)


def round_plan(cells: list, r: int, reference: Cell):
    """(kind, cell) of round r: the reference, every cell (ABBA: reversed on odd rounds, so drift within a round hits
    every column alike, and the two cells of a comparison run side by side on average), the reference again."""
    yield "reference", reference
    for cell in (cells if r % 2 == 0 else cells[::-1]):
        yield "measure", cell
    yield "reference", reference


def per_round(runs: list, metric: str, rounds: int) -> list:
    """A cell's t/s of one metric indexed by round (None where that round has no good run): what pairs two cells."""
    out = [None] * rounds
    for run in runs:
        if metric in run and run.get("round") is not None and run["round"] < rounds:
            out[run["round"]] = run[metric]
    return out
