"""Cells of `amxforge bench fork` (a column: source x variant x --amx; a cell: column x threads x type), the command of
one run, one repetition run pinned, and the run order: warm-up passes, then rounds in ABBA order between two runs of
a reference cell."""

import os
import re
import shutil
import signal
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from .forktools import bench_tools, parse_output
from .sources import Source


@dataclass
class Column:
    source: Source
    variant: str
    amx: bool = False  # the AMX branch's --amx runtime option given to the tool

    def label(self, many_sources: bool) -> str:
        text = f"{self.source.label}/{self.variant}" if many_sources else self.variant
        return text + (" --amx" if self.amx else "")


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
    return argv, env


def run_cell(cell: Cell, tool: str, pp: int, tg: int, numa: str, timeout: float, workdir: Path) -> dict:
    """One repetition: the tool once, pinned, in a scratch directory (the forks' old logger writes llama.<pid>.log
    files into the current directory); its numbers, or why there are none."""
    argv, env = cell_argv(cell, tool, pp, tg, numa)
    cell.command = argv
    cpus = cell.pin["cpus"]
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)
    try:
        res = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=dict(os.environ, **env),
                             cwd=workdir, preexec_fn=(lambda: os.sched_setaffinity(0, cpus)) if cpus else None)
    except subprocess.TimeoutExpired:
        return {"error": f"{tool} timed out after {timeout:g} s"}
    except OSError as exc:
        return {"error": f"{tool} could not start: {exc.strerror}"}
    if res.returncode != 0:
        how = (f"killed by {signal.Signals(-res.returncode).name}" if res.returncode < 0
               else f"exit {res.returncode}")
        last = (res.stderr.strip().splitlines() or res.stdout.strip().splitlines() or ["no output"])[-1]
        return {"error": f"{tool} {how}: {last[:200]}", "stdout": res.stdout, "stderr": res.stderr}
    try:
        got = parse_output(bench_tools()["tools"][tool]["output"], res.stdout, res.stderr)
    except ValueError as exc:
        last = (res.stderr.strip().splitlines() or ["no output on stderr"])[-1]
        return {"error": f"{tool}: {exc}; its last line: {last[:160]}", "stdout": res.stdout, "stderr": res.stderr}
    got["amx_buffer"] = bench_tools()["evidence"]["amx_buffer"] in res.stderr + res.stdout
    return got


def failure_log(out: Path, cell: Cell, got: dict) -> str:
    """OUT/logs/failed-<column>-<threads>-<type>.log: what the failed run printed, for the reader of the table."""
    from .. import atomic
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", f"failed-{cell.column.label(True)}-{cell.threads}t-{cell.qtype}.log")
    path = out / "logs" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic.write_text(path, f"$ {' '.join(cell.command or [])}\n# {got['error']}\n--- stdout\n"
                            f"{got.get('stdout', '')}\n--- stderr\n{got.get('stderr', '')}")
    return str(path)


def schedule(cells: list, reps: int, warmup: int, reference: Cell):
    """(kind, cell) in run order: warm-up passes, then per round the reference, every cell (ABBA: reversed on odd
    rounds, so drift within a round hits every column alike), the reference again."""
    for _ in range(warmup):
        for cell in cells:
            yield "warmup", cell
    for r in range(reps):
        yield "reference", reference
        for cell in (cells if r % 2 == 0 else cells[::-1]):
            yield "measure", cell
        yield "reference", reference
