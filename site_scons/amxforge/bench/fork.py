"""`amxforge bench fork`: a fork's own tools, run over variants x threads x trees x --amx on/off x tensor types, with
measurement discipline: every cell a separate run of one repetition, cells interleaved (ABBA order across rounds) so
drift hits every column alike, warm-up rounds, medians and spread over --reps, and a reference cell measured at the
start and the end of every round whose spread is the run's noise. A difference between two cells is "equal within
noise" when it is below that spread or the two cells' [min, max] ranges overlap. Threads are pinned to physical
cores first.

Where the cells come from (a Source):
  BuiltTree   a fork tree built through the normal build (`scons variant=V fork=TREE fork_targets=...`, a no-op when
              built), its installed part (bin/ launchers, libexec/, lib/, the launch table) copied to OUT/builds/
  Release     an `amxforge package` release: bin/<tool> with AMXFORGE_VARIANT=V
Tool facts: toolchain/bench.toml."""

import json
import os
import re
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from ..errors import AmxforgeError
from ..paths import toolchain_dir
from ..tomlfile import load_toml

METRICS = ("pp", "tg")
# a line llama-bench's JSON printer writes: a bracket or brace alone, or one "key": value
JSON_LINE = re.compile(r'^\s*([\[\]{}],?|"[^"]+": .*)\s*$')


# --- the tools -----------------------------------------------------------------------------------------------------
@lru_cache(maxsize=1)
def bench_tools() -> dict:
    path = toolchain_dir() / "bench.toml"
    doc = load_toml(path)
    for key in ("order", "tools", "runtime_options", "evidence"):
        if key not in doc:
            raise AmxforgeError(f"{path}: no `{key}`; restore it from git (git checkout -- toolchain/bench.toml)")
    unknown = [t for t in doc["order"] if t not in doc["tools"]]
    if unknown:
        raise AmxforgeError(f"{path}: order names {', '.join(unknown)}, which has no [tools.*] table")
    return doc


def tool_targets() -> list:
    return [bench_tools()["tools"][t]["target"] for t in bench_tools()["order"]]


# --- where the binaries come from ----------------------------------------------------------------------------------
@dataclass
class Source:
    label: str
    kind: str  # the fork's kind (ik_llama.cpp, ik_llama.cpp+amx, llama.cpp, ggml), for the preference's package name
    path: Path
    package_name: str = None  # the name the package selector's preference file uses for it
    variants: list = field(default_factory=list)
    skipped: dict = field(default_factory=dict)  # variant -> why it has no column

    def command(self, variant: str, tool: str):
        """(argv0, extra env) for one of this source's tools in one variant."""
        raise NotImplementedError

    def has(self, variant: str, tool: str) -> bool:
        return Path(self.command(variant, tool)[0]).is_file()


class BuiltTree(Source):
    extra_targets = ()  # llama-quantize, when a type needs the fork's own quantizer
    extra_failed = None  # why the extra targets could not be built (the tools were built without them)
    snapshots = None

    def command(self, variant, tool):
        return str(self.target_path(variant, bench_tools()["tools"][tool]["target"])), {}

    def target_path(self, variant: str, target: str) -> Path:
        return self.snapshots / variant / "bin" / target

    def build(self, variants, project: Path, out: Path, jobs, log) -> None:
        """Every variant through the normal build (incremental: a no-op when up to date), then a copy of what it
        installed, so that two trees built into the same build/VARIANT can be run side by side."""
        self.snapshots = out / "builds" / self.label
        for variant in variants:
            logfile = out / "logs" / f"build-{self.label}-{variant}.log"
            logfile.parent.mkdir(parents=True, exist_ok=True)
            targets = tool_targets() + (list(self.extra_targets) if not self.extra_failed else [])
            res = self._scons(variant, targets, project, jobs, logfile, log)
            if res.returncode != 0 and self.extra_targets and not self.extra_failed:
                self.extra_failed = f"{_tail(logfile)} (log {logfile})"
                targets = tool_targets()
                res = self._scons(variant, targets, project, jobs, logfile, log)
            if res.returncode != 0:
                tail = _tail(logfile)
                self.skipped[variant] = f"the build failed (scons exit {res.returncode}: {tail}; log {logfile})"
                continue
            dest = self.snapshots / variant
            shutil.rmtree(dest, ignore_errors=True)
            build = project / "build" / variant
            for target in targets:
                _copy(build / "bin" / target, dest / "bin" / target)
                _copy(build / "libexec" / target, dest / "libexec" / target)
            for lib in sorted((build / "lib").glob("*")):
                _copy(lib, dest / "lib" / lib.name)
            _copy(build / "share" / "amxforge" / "launch.tsv", dest / "share" / "amxforge" / "launch.tsv")
            self.variants.append(variant)

    def _scons(self, variant, targets, project, jobs, logfile, log):
        from ..package import scons_command
        cmd = scons_command(variant, str(self.path), targets, jobs)
        log(f"amxforge: bench fork: building {self.label} {variant} ({' '.join(cmd[2:])}; log {logfile})")
        with open(logfile, "w") as handle:
            return subprocess.run(cmd, cwd=project, stdout=handle, stderr=subprocess.STDOUT)


class Release(Source):
    def command(self, variant, tool):
        return str(self.path / "bin" / bench_tools()["tools"][tool]["target"]), {"AMXFORGE_VARIANT": variant}


def _copy(src: Path, dest: Path) -> None:
    if not src.is_file():
        return
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(src, dest)


def _tail(path: Path) -> str:
    lines = [ln.strip() for ln in path.read_text(errors="replace").splitlines() if ln.strip()]
    return lines[-1][:200] if lines else "no output"


def open_release(path: Path) -> Release:
    from .. import atomic
    manifest = atomic.read_json(path / "manifest.json", "the release manifest", fix="package the release again")
    try:
        kind = (manifest["source"]["fork"] or {}).get("kind", "amxforge")
        order = list(manifest["selection"])
    except (KeyError, TypeError, AttributeError):
        raise AmxforgeError(f"{path}/manifest.json is not an amxforge package manifest; give a directory that "
                            f"`amxforge package` wrote") from None
    from ..fork.kinds import kinds
    name = (manifest.get("package") or {}).get("name") or kinds().package_name(kind)
    return Release(label=path.name, kind=kind, path=path, package_name=name, variants=order)


def unique_labels(paths) -> list:
    """Short column labels for trees: their directory names, made unique with the parent's name."""
    names = [Path(p).name for p in paths]
    if len(set(names)) == len(names):
        return names
    return [f"{Path(p).parent.name}/{Path(p).name}" if names.count(Path(p).name) > 1 else Path(p).name for p in paths]


# --- what a tool takes ---------------------------------------------------------------------------------------------
def _ask(argv: list, env: dict):
    """A short query of a tool (--help, --version): its CompletedProcess, or None when it would not run."""
    try:
        return subprocess.run(argv, capture_output=True, text=True, timeout=60, env=dict(os.environ, **env),
                              stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired):
        return None


def help_text(argv0: str, env: dict) -> str:
    res = _ask([argv0, "--help"], env)
    return res.stdout + res.stderr if res else ""


def takes(help_out: str, option: str) -> bool:
    flag = bench_tools()["runtime_options"][option]["help"]
    return re.search(rf"(^|[\s,]){re.escape(flag)}(\s|$|,|=)", help_out, re.M) is not None


def accepts(argv0: str, env: dict, option: str, help_out: str) -> bool:
    """Whether the tool takes a runtime option: its --help lists it, or (the forks' common-options tools print only
    an example for --help) it parses `OPTION --version` and exits 0, where an unknown option is an error."""
    if takes(help_out, option):
        return True
    flag = [a.format(numa="distribute") for a in bench_tools()["runtime_options"][option]["flag"]]
    res = _ask([argv0, *flag, "--version"], env)
    return res is not None and res.returncode == 0


# --- the host's CPUs -----------------------------------------------------------------------------------------------
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


# --- one run of one cell -------------------------------------------------------------------------------------------
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


def parse_output(kind: str, stdout: str, stderr: str) -> dict:
    """{"pp": t/s, "tg": t/s} from the tool's structured output (never from its free text)."""
    if kind == "llama-bench-json":
        # The array starts on a line of its own. Forks print their own lines into stdout, even inside the array
        # (the AMX branch: "==== HAVE_FANCY_SIMD is defined" after the "["): lines that cannot be part of the
        # printer's JSON (one key or bracket per line) are dropped and counted.
        lines = stdout.splitlines()
        start = next((i for i, line in enumerate(lines) if line.strip() == "["), None)
        if start is None:
            raise ValueError("no JSON array of tests on stdout (llama-bench -o json)")
        kept = [line for line in lines[start:] if JSON_LINE.match(line)]
        try:
            tests = json.loads("\n".join(kept))
        except json.JSONDecodeError:
            raise ValueError("no JSON array of tests on stdout (llama-bench -o json)") from None
        if not isinstance(tests, list) or not all(isinstance(t, dict) for t in tests):
            raise ValueError("no JSON array of tests on stdout (llama-bench -o json)")
        got = {}
        for t in tests:
            samples = t.get("samples_ts") or [t.get("avg_ts")]
            if t.get("n_prompt", 0) > 0 and t.get("n_gen", 0) == 0:
                got["pp"] = float(samples[0])
            elif t.get("n_gen", 0) > 0 and t.get("n_prompt", 0) == 0:
                got["tg"] = float(samples[0])
        got["foreign_lines"] = len(lines) - start - len(kept)
        return got
    if kind == "sweep-bench-jsonl":
        for line in stderr.splitlines() + stdout.splitlines():
            line = line.strip()
            if line.startswith("{") and '"speed_pp"' in line:
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError:
                    continue
                if rec.get("n_kv") == 0:
                    return {"pp": float(rec["speed_pp"]), "tg": float(rec["speed_tg"]),
                            "tokens": {"pp": rec.get("pp"), "tg": rec.get("tg")}}
        raise ValueError("no JSON line with speed_pp at n_kv 0 (llama-sweep-bench --output-format jsonl)")
    raise AmxforgeError(f"toolchain/bench.toml: unknown output kind {kind!r}")


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


# --- the plan ------------------------------------------------------------------------------------------------------
@dataclass
class Request:
    forks: list
    packages: list
    variants: list
    threads: list
    types: list
    model: Path = None
    amx: str = "auto"  # on | off | both | auto (both where the tools take --amx, else off)
    pp: int = 128
    tg: int = 32
    reps: int = 5
    warmup: int = 1
    tool: str = "auto"
    numa: str = "off"
    timeout: float = 600.0
    out: Path = None
    project: Path = None
    jobs: int = None
    prefer: str = "tg"
    shape: tuple = (4, 1024, 2816)  # synthetic models: layers, embedding, feed-forward


def variant_verdicts(plan: dict, variants, build: bool = True) -> tuple:
    """(variants that run here, and build here when they are to be built; {variant: why not}) from the planner's
    plan, judged with the build's compiler."""
    ok, why = [], {}
    for v in variants:
        entry = plan.get(v)
        if entry is None:
            raise AmxforgeError(f"unknown variant {v!r} in --variants; choose from {', '.join(plan)}")
        if not entry.get("runnable"):
            why[v] = f"it cannot run on this host: {entry.get('why')}"
        elif build and not entry.get("buildable"):
            why[v] = f"it cannot be built here: {entry.get('why_not_buildable') or entry.get('why')}"
        else:
            ok.append(v)
    return ok, why


def check_model(path: Path) -> None:
    """--model parsed before anything is built: a regular file, GGUF's header, its key/value pairs and tensor table
    (gguf's own reader), and every tensor's data within the file."""
    from .. import atomic
    try:
        with atomic.open_regular(path) as handle:
            magic = handle.read(4)
            size = os.fstat(handle.fileno()).st_size
    except FileNotFoundError:
        raise AmxforgeError(f"--model {path}: no such file; give a .gguf file, or leave --model out to bench "
                            f"synthetic models of --types") from None
    except OSError as exc:
        raise AmxforgeError(f"--model {path}: cannot be read ({atomic.why(exc)}); give a .gguf file") from None
    if magic != b"GGUF":
        raise AmxforgeError(f"--model {path}: not a GGUF file (it does not start with 'GGUF'); give a .gguf model")
    try:
        import gguf
        reader = gguf.GGUFReader(str(path))
        tensors = list(reader.tensors)
        end = max((int(t.data_offset) + int(t.n_bytes) for t in tensors), default=0)
    except Exception as exc:  # noqa: BLE001 - gguf's parser raises what numpy and struct raise on a broken file
        raise AmxforgeError(f"--model {path}: a damaged GGUF file ({exc.__class__.__name__}: {exc}); give a whole "
                            f".gguf model") from None
    if not tensors:
        raise AmxforgeError(f"--model {path}: a GGUF file without tensors; give a model")
    if end > size:
        raise AmxforgeError(f"--model {path}: its tensors need {end} bytes, the file has {size} (cut short); give a "
                            f"whole .gguf model")


def synth_shape(shape: tuple):
    """--synth LAYERSxDIMxFF as the model synth makes, checked in --synth's own words."""
    from ..model.synth import ModelShape
    layers, dim, ff = shape
    model = ModelShape(layers=layers, dim=dim, ff=ff)
    model.check({"layers": "LAYERS of --synth", "dim": "DIM of --synth", "ff": "FF of --synth",
                 "heads": f"the {model.heads} heads synth uses", "kv_heads": f"its {model.kv_heads} KV heads"})
    return model


def check_synth_room(req: Request) -> None:
    """Every synthetic model of --types fits this host's memory and the disk under --out: refused with its size
    before anything is built."""
    from ..model.synth import check_room, gguf_cannot
    shape = synth_shape(req.shape)
    for qtype in req.types:
        check_room(req.out / f"synth-{qtype}.gguf", qtype, shape, extra_files=1 if gguf_cannot(qtype) else 0)


def make_models(req: Request, quantizer, log) -> dict:
    """type -> model file: --model as it is (type "model"), else one synthetic model per --types, kept in
    OUT/models/ (the fork's llama-quantize writes the types gguf cannot)."""
    if req.model:  # checked by run_bench before anything was built
        return {"model": req.model}
    from ..model.synth import check_type, gguf_cannot, synth
    layers, dim, ff = req.shape
    shape = synth_shape(req.shape)
    models = {}
    for qtype in req.types:
        check_type(qtype, quantizer if gguf_cannot(qtype) else None)
        path = req.out / "models" / f"synth-{qtype}-{layers}x{dim}x{ff}.gguf"
        if not path.is_file():
            path.parent.mkdir(parents=True, exist_ok=True)
            log(f"amxforge: bench fork: writing a synthetic {qtype} model ({path})")
            synth(path, qtype, shape, quantize_with=quantizer if gguf_cannot(qtype) else None)
        models[qtype] = path
    return models


def columns_for(req: Request, sources, helps) -> list:
    """Source x variant x --amx. `auto` measures both where the source's tools take --amx, else without it."""
    columns = []
    for src in sources:
        for variant in src.variants:
            can = any("amx" in helps.get((id(src), variant, t), ()) for t in bench_tools()["order"])
            if req.amx == "on" and not can:
                src.skipped[variant] = "--amx on: none of its tools takes --amx (not the AMX branch?)"
                continue
            modes = {"on": [True], "off": [False], "both": [False, True] if can else [False],
                     "auto": [False, True] if can else [False]}[req.amx]
            columns += [Column(src, variant, amx) for amx in modes]
    return columns


def choose_tool(req: Request, columns, helps) -> tuple:
    """(tool, why the earlier ones were passed over): the first tool in bench.toml's order that every column has and
    that takes every option a cell needs. One tool measures the whole run, so columns compare like with like."""
    tools = bench_tools()
    if req.tool != "auto" and req.tool not in tools["tools"]:
        raise AmxforgeError(f"--tool {req.tool}: choose auto or one of {', '.join(tools['order'])}")
    candidates = tools["order"] if req.tool == "auto" else [req.tool]
    def needs(column):
        return (["amx"] if column.amx else []) + (["numa"] if req.numa != "off" else [])
    reasons = []
    for tool in candidates:
        target = tools["tools"][tool]["target"]
        lacking = [c for c in columns if not c.source.has(c.variant, tool)]
        if lacking:
            c = lacking[0]
            add = (f"build it with fork_targets including {target}" if isinstance(c.source, BuiltTree) else
                   f"package it again with --fork-targets including {target}")
            reasons.append(f"{c.source.label} {c.variant} has no {target} ({add})")
            continue
        refused = [(c, o) for c in columns for o in needs(c) if o not in helps[(id(c.source), c.variant, tool)]]
        if refused:
            c, o = refused[0]
            reasons.append(f"{target} of {c.source.label} {c.variant} does not take "
                           f"{tools['runtime_options'][o]['help']}")
            continue
        return tool, "; ".join(reasons)
    raise AmxforgeError("no tool can measure every cell: " + "; ".join(reasons))


# --- the run -------------------------------------------------------------------------------------------------------
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


def stats(values: list) -> dict:
    import statistics
    if not values:
        return None
    med = statistics.median(values)
    return {"median": med, "min": min(values), "max": max(values), "n": len(values),
            "spread_pct": 100.0 * (max(values) - min(values)) / med if med else None, "samples": values}


def run_bench(req: Request, log, progress=None) -> dict:
    if not req.forks and not req.packages:
        raise AmxforgeError("give a tree with --fork PATH (built here) or a release with --package DIR")
    if req.model and req.types:
        raise AmxforgeError("--types makes synthetic models; with --model the type is the model's: give one of them")
    req.types = req.types or (["q8_0"] if not req.model else [])
    from ..model.synth import check_known
    for qtype in req.types:  # bad input is refused before anything is built
        check_known(qtype)
    if req.model:
        check_model(req.model)
    try:
        req.out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise AmxforgeError(f"--out {req.out}: cannot be made ({exc.strerror}); choose a writable place") from None
    if not req.model:
        check_synth_room(req)
    from ..context import VariantContext
    plan = VariantContext("baseline", project_dir=req.project).plan
    ok, why_not = variant_verdicts(plan, req.variants) if req.variants else ([], {})
    sources = []
    labels = unique_labels(list(req.forks) + list(req.packages))
    from ..fork.detect import detect_fork
    from ..fork.kinds import kinds
    from ..model.synth import gguf_cannot
    needs_quantizer = not req.model and any(gguf_cannot(t) for t in req.types)
    for path, label in zip(req.forks, labels):
        info = detect_fork(path, base=req.project)
        src = BuiltTree(label=label, kind=info.kind, path=Path(info.root),
                        package_name=kinds().package_name(info.kind))
        src.skipped.update(why_not)
        if needs_quantizer and not any(isinstance(s, BuiltTree) for s in sources):
            src.extra_targets = ("llama-quantize",)
        sources.append(src)
    for path, label in zip(req.packages, labels[len(req.forks):]):
        rel = open_release(Path(path))
        rel.label = label
        wanted = req.variants or rel.variants
        rel.skipped.update({v: "not in this release" for v in wanted if v not in rel.variants})
        rel.variants, why_rel = variant_verdicts(plan, [v for v in rel.variants if v in wanted], build=False)
        rel.skipped.update(why_rel)
        sources.append(rel)
    if req.forks and not ok:
        raise AmxforgeError("no variant of --variants runs here: " +
                            "; ".join(f"{v}: {w}" for v, w in why_not.items()))
    for src in sources:
        if isinstance(src, BuiltTree):
            src.build(ok, req.project, req.out, req.jobs, log)
    quantizer = None
    if needs_quantizer:
        first = next(s for s in sources if isinstance(s, BuiltTree))
        quantizer = next((str(first.target_path(v, "llama-quantize")) for v in first.variants
                          if first.target_path(v, "llama-quantize").is_file()), None)
        if quantizer is None:
            from ..model.synth import writable_types
            why = first.extra_failed or "no variant of it was built"
            raise AmxforgeError(f"--types {','.join(t for t in req.types if gguf_cannot(t))}: gguf cannot write "
                                f"them and {first.label} could not build its llama-quantize ({why}); choose types "
                                f"gguf writes: {', '.join(writable_types())}")
    models = make_models(req, quantizer, log)
    helps = {}
    for src in sources:
        for variant in src.variants:
            for tool in bench_tools()["order"]:
                if src.has(variant, tool):
                    argv0, env = src.command(variant, tool)
                    text = help_text(argv0, env)
                    helps[(id(src), variant, tool)] = {o for o in bench_tools()["runtime_options"]
                                                       if accepts(argv0, env, o, text)}
    columns = columns_for(req, sources, helps)
    skipped = [f"{s.label} {v}: {w}" for s in sources for v, w in s.skipped.items()]
    if not columns:
        raise AmxforgeError("nothing can run here: " + ("; ".join(skipped) or "no variants"))
    tool, passed_over = choose_tool(req, columns, helps)
    order, cores = cpu_order(), physical_cores()
    cells = [Cell(col, t, qtype, model, pinning(t, order, cores)) for qtype, model in models.items()
             for t in req.threads for col in columns]
    for t in req.threads:
        if t > cores:
            log(f"amxforge: bench fork: warning: {t} threads is more than this host's {cores} physical "
                f"cores ({len(order)} CPUs allowed); those cells run and are marked")
    fair = [c for c in cells if not c.pin["oversubscribed"]] or cells
    ref_at = max(c.threads for c in fair)
    reference = Cell(columns[0], ref_at, next(iter(models)), next(iter(models.values())),
                     pinning(ref_at, order, cores))
    ref_runs = []
    plan = list(schedule(cells, req.reps, req.warmup, reference))
    started = time.monotonic()
    for i, (kind, cell) in enumerate(plan):
        if progress:
            progress(i, len(plan), kind, cell)
        if cell.error:
            continue  # a failed cell is not run again; the others complete
        got = run_cell(cell, tool, req.pp, req.tg, req.numa, req.timeout, req.out / "work")
        if "error" in got:
            cell.error = got["error"]  # the reference failing leaves the noise unknown
            cell.log = failure_log(req.out, cell, got)
            continue
        if kind == "measure":
            cell.runs.append(got)
        elif kind == "reference":
            ref_runs.append(got)
    if progress:
        progress(len(plan), len(plan), "done", None)
    shutil.rmtree(req.out / "work", ignore_errors=True)
    return finish(req, sources, columns, cells, reference, ref_runs, tool, passed_over, skipped,
                  time.monotonic() - started)


def finish(req, sources, columns, cells, reference, ref_runs, tool, passed_over, skipped, seconds) -> dict:
    many = len(sources) > 1
    noise = {}
    for m in METRICS:
        st = stats([r[m] for r in ref_runs if m in r])
        noise[m] = st["spread_pct"] if st else None
    summary_of = {id(c): {m: None if c.error else stats([r[m] for r in c.runs if m in r]) for m in METRICS}
                  for c in cells}
    firsts = {(c.threads, c.qtype): c for c in cells if c.column is columns[0]}
    records = []
    for cell in cells:
        first = firsts[(cell.threads, cell.qtype)]
        rec = {"record": "cell", "type": cell.qtype, "model": str(cell.model), "tree": cell.column.source.label,
               "variant": cell.column.variant, "amx": cell.column.amx, "column": cell.column.label(many),
               "threads": cell.threads, "cpus": cpus_text(cell.pin["cpus"]), "nodes": cell.pin["nodes"],
               "oversubscribed": cell.pin["oversubscribed"], "tool": tool, "command": cell.command,
               "reps": len(cell.runs), "status": "failed: " + cell.error if cell.error else "ok", "log": cell.log,
               "amx_buffer": any(r.get("amx_buffer") for r in cell.runs) if cell.runs else None,
               "foreign_lines": max((r.get("foreign_lines", 0) for r in cell.runs), default=0)}
        for m in METRICS:
            st, base = summary_of[id(cell)][m], summary_of[id(first)][m]
            rec[m] = st
            if st and base and cell is not first:
                diff = 100.0 * (st["median"] - base["median"]) / base["median"]
                rec[f"{m}_diff_pct"] = diff
                overlap = st["min"] <= base["max"] and base["min"] <= st["max"]
                rec[f"{m}_within_noise"] = overlap or noise[m] is None or abs(diff) <= noise[m]
        tokens = next((r.get("tokens") for r in cell.runs if r.get("tokens")), None)
        rec["tokens"] = tokens or {"pp": req.pp, "tg": req.tg}
        records.append(rec)
    summary = {
        "record": "summary", "tool": tool, "tools_passed_over": passed_over or None,
        "columns": [c.label(many) for c in columns], "threads": req.threads, "types": list(dict.fromkeys(
            r["type"] for r in records)), "reps": req.reps, "warmup": req.warmup,
        "reference": {"column": reference.column.label(many), "threads": reference.threads, "type": reference.qtype,
                      "runs": len(ref_runs), "noise_pct": noise},
        "skipped": skipped, "failed": [f"{r['column']} {r['threads']} threads {r['type']}: {r['status'][8:]}"
                                       for r in records if r["status"] != "ok"],
        "seconds": round(seconds, 1),
        "recommendation": recommend(records, noise),
        "preference": preference_lines(records, sources, req.prefer),
    }
    return {"cells": records, "summary": summary}


def recommend(records, noise) -> dict:
    """Per type and metric: the best cell, and the cells equal to it within the run's noise."""
    out = {}
    for qtype in dict.fromkeys(r["type"] for r in records):
        for m in METRICS:
            ok = [r for r in records if r["type"] == qtype and r.get(m)]
            if not ok:
                continue
            best = max(ok, key=lambda r: r[m]["median"])
            ties = sorted((r for r in ok if r is not best and noise[m] is not None and
                           100.0 * (best[m]["median"] - r[m]["median"]) / best[m]["median"] <= noise[m]),
                          key=lambda r: -r[m]["median"])
            out.setdefault(qtype, {})[m] = {
                "column": best["column"], "threads": best["threads"], "median": best[m]["median"],
                "oversubscribed": best["oversubscribed"],
                "equal_within_noise": [f"{r['column']} at {r['threads']} threads" for r in ties]}
    return out


def preference_lines(records, sources, metric) -> dict:
    """package name -> its variants best first by `metric` (each variant at its best thread count and --amx mode):
    what the package selector's host preference file takes."""
    lines = {}
    for src in sources:
        best = {}
        for r in records:
            if r["tree"] == src.label and r.get(metric):
                best[r["variant"]] = max(best.get(r["variant"], 0.0), r[metric]["median"])
        if best and src.package_name not in lines:  # two trees of one kind: the first tree's order
            lines[src.package_name] = sorted(best, key=lambda v: -best[v])
    return lines


def preference_path() -> Path:
    env = os.environ.get("AMXFORGE_PREFERENCE")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return Path(base) / "amxforge" / "preference"


def check_preference_writable() -> Path:
    """--save-preference is checked before the benchmark: the file must be a regular file (or absent) in a directory
    amxforge can make and write; one line naming it otherwise."""
    import tempfile

    from .. import atomic
    path = preference_path()
    try:
        if path.exists() or path.is_symlink():
            atomic.read_text(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path.parent, prefix=f".{path.name}.", suffix=".check"):
            pass
    except OSError as exc:
        raise AmxforgeError(f"--save-preference: the host preference file {path} cannot be written "
                            f"({atomic.why(exc)}); set AMXFORGE_PREFERENCE to a writable file, or leave "
                            f"--save-preference out") from None
    return path


def save_preference(lines: dict, note: str) -> Path:
    """Replace this run's packages' lines in the host preference file (the selector's format: PACKAGE VARIANT...),
    keeping every other line; written atomically."""
    from .. import atomic
    path = check_preference_writable()
    kept = []
    if path.is_file():
        for line in atomic.read_text(path).splitlines():
            words = line.split()
            if words and not line.startswith("#") and words[0] in lines:
                continue
            kept.append(line)
    body = kept + [f"# {note}"] + [f"{pkg} {' '.join(order)}" for pkg, order in lines.items()]
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic.write_text(path, "\n".join(body) + "\n")
    return path


def write_outputs(result: dict, out: Path) -> dict:
    """OUT/cells.jsonl (a line per cell), OUT/summary.json: written atomically."""
    from .. import atomic
    atomic.write_text(out / "cells.jsonl", "".join(json.dumps(r) + "\n" for r in result["cells"]))
    atomic.write_json(out / "summary.json", result["summary"])
    return {"cells": str(out / "cells.jsonl"), "summary": str(out / "summary.json")}


def plot(result: dict, path: Path) -> None:
    """t/s against threads, a line per column, a panel per metric (and per type)."""
    try:
        import matplotlib
    except ImportError:
        raise AmxforgeError("the plot needs matplotlib: pip install -e '.[bench]'") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cells = result["cells"]
    types = result["summary"]["types"]
    fig, axes = plt.subplots(len(types), 2, figsize=(11, 4 * len(types)), squeeze=False)
    for row, qtype in enumerate(types):
        for col, m in enumerate(METRICS):
            ax = axes[row][col]
            for label in result["summary"]["columns"]:
                pts = sorted((r["threads"], r[m]) for r in cells if r["column"] == label and r["type"] == qtype
                             and r.get(m))
                if pts:
                    ax.errorbar([p[0] for p in pts], [p[1]["median"] for p in pts],
                                yerr=[[p[1]["median"] - p[1]["min"] for p in pts],
                                      [p[1]["max"] - p[1]["median"] for p in pts]], marker="o", capsize=3,
                                label=label)
            ax.set_xscale("log", base=2)
            ax.set_xlabel("threads")
            ax.set_ylabel(f"{m} t/s (median, min-max)")
            ax.set_title(f"{m}, {qtype} ({result['summary']['tool']})")
            ax.grid(True, alpha=0.3)
            if ax.get_legend_handles_labels()[0]:
                ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
