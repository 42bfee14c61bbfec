"""`amxforge bench fork`: a fork's own tools, run over variants x threads x trees x --amx on/off x tensor types, with
measurement discipline: every cell a separate run of one repetition, warm-up passes, then rounds that run every cell
once in ABBA order between two runs of a reference cell (whose spread is the run's drift); each column against the
first is the per-round ratio of two cells, with an exact interval and a verdict (comparisons), for --reps rounds or,
with --target-ci, until the intervals are that narrow. Threads are pinned to physical cores first.

This module checks the request, builds or opens the sources, makes the models and runs the plan; its parts:
forktools (the tools of toolchain/bench.toml and their parsers), sources (built trees, releases), pinning (the CPUs),
cells (one run, the run order), comparisons (the intervals), conditions (the host's state), verdicts
(statistics, the recommendation, the preference's order)."""

import json
import os
import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from ..errors import AmxforgeError
from .cells import Cell, Column, failure_log, per_round, round_plan, run_cell
from .comparisons import PAIRED, half_width, paired, pairs_needed, text as comparison_text
from .conditions import finish_conditions, host_conditions
from .forktools import accepts, bench_tools, has_our_kernels, help_text, tokens_per_run
from .pinning import cpu_order, cpus_text, physical_cores, pinning
from .sources import BuiltTree, open_release, unique_labels
from .verdicts import METRICS, preference_lines, recommend, stats
from ..model.prune import PRUNABLE


@dataclass
class Request:
    forks: list
    packages: list
    variants: list
    threads: list
    types: list
    model: Path = None
    amx: str = "auto"  # on | off | both | auto (both where the tools take --amx, else off)
    kernels: tuple = ("fork",)  # fork / amxforge (ours, through the handler): a column per choice
    pp: int = 128
    tg: int = 32
    reps: int = 12
    warmup: int = 1
    tool: str = "auto"
    numa: str = "off"
    timeout: float = 600.0
    out: Path = None
    project: Path = None
    jobs: int = None
    prefer: str = "tg"
    shape: tuple = (4, 1024, 2816)  # synthetic models: layers, embedding, feed-forward
    threshold: float = 2.0  # percent: a comparison whose interval lies within +-threshold is "same"
    target_ci: float = None  # percent: add rounds until every interval's half-width is at most this
    max_time: float = None  # seconds: ... or until this is spent


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


PRUNED = re.compile(rf"^({'|'.join(PRUNABLE)})-p([0-9]{{1,2}})$")  # --types bf16-p50: half of each row pruned


def split_type(spec: str) -> tuple:
    """(the tensor type, the pruned fraction) of a --types entry: q8_0 -> (q8_0, 0.0), bf16-p70 -> (bf16, 0.7)."""
    m = PRUNED.match(spec)
    return (m.group(1), int(m.group(2)) / 100) if m else (spec, 0.0)


def check_synth_room(req: Request) -> None:
    """Every synthetic model of --types fits this host's memory and the disk under --out: refused with its size
    before anything is built."""
    from ..model.synth import check_room, gguf_cannot
    shape = synth_shape(req.shape)
    for base in (split_type(t)[0] for t in req.types):
        check_room(req.out / f"synth-{base}.gguf", base, shape, extra_files=1 if gguf_cannot(base) else 0)


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
        base, sparsity = split_type(qtype)
        check_type(base, quantizer if gguf_cannot(base) else None)
        path = req.out / "models" / f"synth-{qtype}-{layers}x{dim}x{ff}.gguf"
        if not path.is_file():
            path.parent.mkdir(parents=True, exist_ok=True)
            log(f"amxforge: bench fork: writing a synthetic {qtype} model ({path})")
            synth(path, base, shape, quantize_with=quantizer if gguf_cannot(base) else None, sparsity=sparsity)
        models[qtype] = path
    return models


OURS = "amxforge-kernels"  # in a tool's `helps`: it was linked with our matmul handler


def columns_for(req: Request, sources, helps) -> list:
    """Source x variant x --amx x --kernels. `auto` measures both where the source's tools take --amx, else without
    it; ours only where the variant's tools were linked with our handler."""
    columns = []
    for src in sources:
        for variant in src.variants:
            ours = any(OURS in helps.get((id(src), variant, t), ()) for t in bench_tools()["order"])
            kernels = [k for k in req.kernels if k == "fork" or ours]
            if "amxforge" in req.kernels and not ours:
                src.skipped[f"{variant} +ours"] = ("its tools have no amxforge kernels: build the tree with "
                                                   "fork_kernels=amxforge (bench fork --fork does when --kernels "
                                                   "names amxforge; a package with --fork-kernels amxforge)")
            can = any("amx" in helps.get((id(src), variant, t), ()) for t in bench_tools()["order"])
            if req.amx == "on" and not can:
                src.skipped[variant] = "--amx on: none of its tools takes --amx (not the AMX branch?)"
                continue
            modes = {"on": [True], "off": [False], "both": [False, True] if can else [False],
                     "auto": [False, True] if can else [False]}[req.amx]
            columns += [Column(src, variant, amx, k) for amx in modes for k in kernels]
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


OUT_MARK = ".amxforge-bench-fork"  # in --out: the directory is a bench run's, whose work/ and builds/ it replaces
OUT_LOCK = ".amxforge-bench-fork.lock"  # in --out: held by the run writing it (until the process exits)


def claim_out(out: Path, log) -> None:
    """--out made, or taken if it is empty or an earlier run's (its mark, or the cells.jsonl of one from before the
    mark): a run replaces work/ and builds/LABEL/VARIANT there, so a directory of the user's (`--out .`) is refused.
    One run at a time per OUT: a second waits for the first (its lock in OUT)."""
    from .. import atomic
    from ..locks import hold_for_life
    if out.exists() and not out.is_dir():
        raise AmxforgeError(f"--out {out} exists and is not a directory; choose a new directory")
    try:
        if out.is_dir() and any(out.iterdir()) and not any((out / n).is_file() for n in (OUT_MARK, "cells.jsonl")):
            raise AmxforgeError(f"--out {out} holds files that are not a `bench fork` output (a run replaces work/ "
                                f"and builds/ in it): choose a new directory, e.g. --out {out / 'bench-fork'}")
        out.mkdir(parents=True, exist_ok=True)
        atomic.write_text(out / OUT_MARK, "amxforge bench fork output: cells.jsonl, summary.json, tps.png, logs/, "
                                          "models/; builds/ and work/ are replaced by each run\n")
        hold_for_life(out / OUT_LOCK, lambda pid: f"amxforge: bench fork: another run (pid {pid}) writes {out}; "
                                                  f"waiting for it to finish", log)
    except OSError as exc:
        raise AmxforgeError(f"--out {out}: cannot be made ({atomic.why(exc)}); choose a writable place") from None


def run_bench(req: Request, log, progress=None) -> dict:
    if not req.forks and not req.packages:
        raise AmxforgeError("give a tree with --fork PATH (built here) or a release with --package DIR")
    if req.model and req.types:
        raise AmxforgeError("--types makes synthetic models; with --model the type is the model's: give one of them")
    req.types = req.types or (["q8_0"] if not req.model else [])
    from ..model.synth import check_known
    for qtype in req.types:  # bad input is refused before anything is built
        if qtype.startswith(tuple(f"{t}-" for t in PRUNABLE)) and not PRUNED.match(qtype):
            raise AmxforgeError(f"--types {qtype}: a pruned type is bf16-pNN or f16-pNN (NN % of each row zero), "
                                f"e.g. bf16-p50")
        check_known(split_type(qtype)[0])
    if req.model:
        check_model(req.model)
    from ..context import VariantContext
    plan = VariantContext("baseline", project_dir=req.project).plan
    ok, why_not = variant_verdicts(plan, req.variants) if req.variants else ([], {})
    sources = []
    labels = unique_labels(list(req.forks) + list(req.packages))
    from ..fork.detect import detect_fork
    from ..fork.kinds import kinds
    from ..model.synth import gguf_cannot
    needs_quantizer = not req.model and any(gguf_cannot(split_type(t)[0]) for t in req.types)
    for path, label in zip(req.forks, labels):
        info = detect_fork(path, base=req.project)
        src = BuiltTree(label=label, kind=info.kind, path=Path(info.root),
                        package_name=kinds().package_name(info.kind))
        src.fork_kernels = "amxforge" if "amxforge" in req.kernels else "fork"
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
    claim_out(req.out, log)  # the trees and releases were checked: nothing is written before
    if not req.model:
        check_synth_room(req)
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
    clock = time.monotonic()  # --max-time counts from here: the models, the warm-up passes and the rounds
    models = make_models(req, quantizer, log)
    helps = {}
    for src in sources:
        for variant in src.variants:
            for tool in bench_tools()["order"]:
                if src.has(variant, tool):
                    argv0, env = src.command(variant, tool)
                    # with --kernels amxforge, the same --help run says whether our handler is linked in
                    text = help_text(argv0, dict(env, AMXFORGE_KERNELS_STATS="1") if "amxforge" in req.kernels
                                     else env)
                    helps[(id(src), variant, tool)] = {o for o in bench_tools()["runtime_options"]
                                                       if accepts(argv0, env, o, text)}
                    if has_our_kernels(text):
                        helps[(id(src), variant, tool)].add(OURS)
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
    conditions = host_conditions()
    per_round_runs = len(cells) + 2
    done = {"runs": 0, "total": (req.warmup + req.reps) * per_round_runs - req.warmup * 2}

    def one(kind, cell, r):
        if progress:
            progress(done["runs"], done["total"], kind, cell)
        done["runs"] += 1
        if cell.error:
            return  # a failed cell is not run again; the others complete
        got = run_cell(cell, tool, req.pp, req.tg, req.numa, req.timeout, req.out / "work")
        if "error" in got:
            cell.error = got["error"]  # the reference failing leaves the noise unknown
            cell.log = failure_log(req.out, cell, got)
            return
        got["round"] = r
        if kind == "measure":
            cell.runs.append(got)
        elif kind == "reference":
            ref_runs.append(got)

    for _ in range(req.warmup):
        for cell in cells:
            one("warmup", cell, None)
    rounds, stop = 0, None
    while stop is None:
        round_started = time.monotonic()
        for kind, cell in round_plan(cells, rounds, reference):
            one(kind, cell, rounds)
        rounds += 1
        stop = enough_rounds(req, columns, cells, rounds, time.monotonic() - clock, time.monotonic() - round_started)
        if stop is None:
            done["total"] += per_round_runs
    if progress:
        progress(done["runs"], done["runs"], "done", None)
    shutil.rmtree(req.out / "work", ignore_errors=True)
    broken = [f"{c.column.label(True)} at {c.threads} threads ran on CPUs {cpus_text(r['ran_on'])}, pinned to "
              f"{cpus_text(c.pin['cpus'])}" for c in cells for r in c.runs if r.get("pinning_held") is False]
    conditions = finish_conditions(conditions, log, broken)
    return finish(req, sources, columns, cells, reference, ref_runs, tool, passed_over, skipped,
                  time.monotonic() - clock, rounds, stop, conditions)


MAX_ROUNDS = 200


def enough_rounds(req: Request, columns, cells, rounds: int, spent: float, last_round: float):
    """Why the run stops after `rounds` rounds, or None to run another: --reps rounds at least; with --target-ci,
    until every comparison's interval is that narrow, --max-time is spent (another round would not fit), or
    MAX_ROUNDS."""
    if rounds < req.reps:
        return None
    if not req.target_ci:
        return f"{rounds} rounds (--reps)"
    wide = [c for c in comparisons_of(req, columns, cells, rounds)
            if c["half_width"] is None or c["half_width"] > req.target_ci]
    if not wide:
        return f"every interval within +-{req.target_ci:g} % after {rounds} rounds"
    if req.max_time and spent + last_round > req.max_time:
        return f"--max-time {req.max_time:g} s spent after {rounds} rounds; {len(wide)} interval(s) still wider"
    if rounds >= MAX_ROUNDS:
        return f"{MAX_ROUNDS} rounds; {len(wide)} interval(s) still wider"
    return None


def comparisons_of(req: Request, columns, cells, rounds: int) -> list:
    """Every comparison the tables show: each column against the first, per thread count, type and metric, paired
    round by round."""
    firsts = {(c.threads, c.qtype): c for c in cells if c.column is columns[0]}
    out = []
    for cell in cells:
        first = firsts.get((cell.threads, cell.qtype))
        if first is None or cell is first:
            continue
        for m in METRICS:
            base, other = per_round(first.runs, m, rounds), per_round(cell.runs, m, rounds)
            comp = paired(base, other, req.threshold / 100.0)
            comp["half_width"] = half_width(comp)
            seen = abs(100 * ((comp["ratio"] or 1) - 1))
            comp["pairs_needed"] = pairs_needed(base, other, req.target_ci or max(req.threshold, seen))
            out.append(comp | {"cell": cell, "metric": m})
    return out


def finish(req, sources, columns, cells, reference, ref_runs, tool, passed_over, skipped, seconds, rounds, stop,
           conditions) -> dict:
    many = len(sources) > 1
    noise = {}
    for m in METRICS:
        st = stats([r[m] for r in ref_runs if m in r])
        noise[m] = st["spread_pct"] if st else None
    comparisons = {(id(c["cell"]), c["metric"]): c for c in comparisons_of(req, columns, cells, rounds)}
    records = []
    for cell in cells:
        rec = {"record": "cell", "type": cell.qtype, "model": str(cell.model), "tree": cell.column.source.label,
               "variant": cell.column.variant, "amx": cell.column.amx, "column": cell.column.label(many),
               "threads": cell.threads, "cpus": cpus_text(cell.pin["cpus"]), "nodes": cell.pin["nodes"],
               "oversubscribed": cell.pin["oversubscribed"], "tool": tool, "command": cell.command,
               "reps": len(cell.runs), "status": "failed: " + cell.error if cell.error else "ok", "log": cell.log,
               "amx_buffer": any(r.get("amx_buffer") for r in cell.runs) if cell.runs else None,
               "kernels": cell.column.kernels,
               # ours: the matmul calls our handler took over the cell's runs (0: the model has no bf16 matmul)
               "kernels_taken": sum(r.get("kernels_taken", 0) for r in cell.runs)
               if cell.column.kernels == "amxforge" else None,
               "foreign_lines": max((r.get("foreign_lines", 0) for r in cell.runs), default=0),
               "pinning_held": all(r.get("pinning_held", True) for r in cell.runs) if cell.runs else None}
        for m in METRICS:
            rec[m] = None if cell.error else stats([r[m] for r in cell.runs if m in r])
            rec[f"{m}_rounds"] = per_round(cell.runs, m, rounds)
            comp = comparisons.get((id(cell), m))
            if comp:
                for key in ("ratio", "ci_low", "ci_high", "pairs", "method", "verdict", "half_width"):
                    rec[f"{m}_{key}"] = comp[key]
        tokens = next((r.get("tokens") for r in cell.runs if r.get("tokens")), None)
        rec["tokens"] = tokens or tokens_per_run(tool, req.pp, req.tg)
        records.append(rec)
    undecided = [{"column": c["cell"].column.label(many), "threads": c["cell"].threads, "type": c["cell"].qtype,
                  "metric": c["metric"], "against": columns[0].label(many), "comparison": comparison_text(c),
                  "pairs": c["pairs"], "pairs_needed": c["pairs_needed"]}
                 for c in comparisons.values() if c["verdict"] == "undecided"]
    order, why = preference_lines(records, sources, req.prefer, req.threshold / 100.0)
    summary = {
        "record": "summary", "tool": tool, "tools_passed_over": passed_over or None,
        "columns": [c.label(many) for c in columns], "threads": req.threads, "types": list(dict.fromkeys(
            r["type"] for r in records)), "reps": req.reps, "warmup": req.warmup, "rounds": rounds, "stopped": stop,
        "threshold_pct": req.threshold, "target_ci_pct": req.target_ci, "max_time_s": req.max_time,
        "method": PAIRED,
        "reference": {"column": reference.column.label(many), "threads": reference.threads, "type": reference.qtype,
                      "runs": len(ref_runs), "noise_pct": noise},
        "verdicts": {v: sum(1 for c in comparisons.values() if c["verdict"] == v)
                     for v in ("faster", "slower", "same", "undecided")},
        "undecided": undecided,
        "conditions": conditions,
        "skipped": skipped, "failed": [f"{r['column']} {r['threads']} threads {r['type']}: {r['status'][8:]}"
                                       for r in records if r["status"] != "ok"],
        "seconds": round(seconds, 1),
        "recommendation": recommend(records, req.threshold / 100.0),
        "preference": order, "preference_why": why,
    }
    return {"cells": records, "summary": summary}


def write_outputs(result: dict, out: Path) -> dict:
    """OUT/cells.jsonl (a line per cell), OUT/summary.json: written atomically."""
    from .. import atomic
    atomic.write_text(out / "cells.jsonl", "".join(json.dumps(r) + "\n" for r in result["cells"]))
    atomic.write_json(out / "summary.json", result["summary"])
    return {"cells": str(out / "cells.jsonl"), "summary": str(out / "summary.json")}


def plot(result: dict, path: Path) -> None:
    """t/s against threads, a line per column, a panel per metric (and per type)."""
    from . import png
    plt = png.pyplot()

    cells = result["cells"]
    types = result["summary"]["types"]
    counts = sorted({r["threads"] for r in cells})  # the axis names the counts measured (not 2^0, 2^1, ...)
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
            ax.set_xticks(counts, [str(t) for t in counts])
            ax.minorticks_off()
            ax.set_xlabel("threads")
            ax.set_ylabel(f"{m} t/s (median, min-max)")
            ax.set_title(f"{m}, {qtype} ({result['summary']['tool']})")
            ax.grid(True, alpha=0.3)
            if ax.get_legend_handles_labels()[0]:
                ax.legend(fontsize=7)
    fig.tight_layout()
    png.save(fig, path, dpi=110)
