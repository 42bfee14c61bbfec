"""`amxforge bench`: the kernels against the limits measured in the same run; a fork's own tools over variants x
threads x trees x --amx x types."""

import json
import sys
from pathlib import Path

import click

from .cliargs import VARIANT_HELP, csv_items, duration, positive_counts, resolve_variant
from .errors import AmxforgeError


@click.group()
def bench():
    """Benchmarks that compare against limits measured in the same run."""


@bench.command("kernels")
@click.option("--variant", "-v", default=None, help=VARIANT_HELP + " (it must be built under build/)")
@click.option("--threads", default="1", show_default=True, help="comma-separated thread counts, e.g. 1,2")
@click.option("--quick", is_flag=True, help="a subset that runs in under a minute")
@click.option("--json", "as_json", is_flag=True, help="one JSON object per line (limits, then cases)")
@click.option("--plot", "plot_path", type=click.Path(dir_okay=False), help="write speedup vs sparsity to this PNG")
@click.option("--case", "cases", multiple=True, metavar="KERNEL:DTYPE:IMPL:M:N:K[:SPARSITY]",
              help="run only these cases (repeatable), e.g. sparse:bf16:amx:1:4096:4096:0.7")
@click.option("--min-bytes", type=float, default=None,
              help="weight bytes each decode case streams per rep (default 1.1e9: more than the L3)")
@click.option("--rounds", type=click.IntRange(1, 50), default=1, show_default=True,
              help="run the whole plan this many times, limits included: medians, and each ratio's spread")
@click.option("--project", type=click.Path(file_okay=False, exists=True), default=".",
              help="the directory holding build/ (default: here)")
def bench_kernels(variant, threads, quick, as_json, plot_path, cases, min_bytes, rounds, project):
    """Dense and sparse kernels on Llama-3-8B shapes against the tile peak and read bandwidth measured in the
    same run. Decode cases stream more than 1 GB of weights so that the L3 cannot hide DRAM."""
    from .bench import kernels as kb

    counts = positive_counts(threads, "--threads", "1,2")
    exe = kb.kbench_path(resolve_variant(variant), Path(project))
    if plot_path:
        from .bench import png
        png.check(Path(plot_path))  # before the benchmark, not after it
        kb.check_plottable(cases)
    per_round = []
    for n in range(rounds):
        bar = {"bar": None}

        def progress(record):
            if record.get("record") == "plan":
                label = f"bench {record['variant']}" + (f" round {n + 1}/{rounds}" if rounds > 1 else "")
                bar["bar"] = click.progressbar(length=record["records"], label=label, file=sys.stderr)
                bar["bar"].__enter__()
            elif bar["bar"] is not None:
                bar["bar"].update(1)

        try:
            records = kb.run_kbench(exe, counts, quick, extra=kb.kbench_args(cases, min_bytes), on_record=progress)
        finally:
            if bar["bar"] is not None:
                bar["bar"].__exit__(None, None, None)
        per_round.append(kb.derive(records))
    rows = kb.aggregate(per_round)
    if as_json:
        for row in rows:
            click.echo(json.dumps(row))
    else:
        click.echo(kb.table(rows))
    if plot_path:
        kb.plot(rows, Path(plot_path))
        click.echo(f"plot written to {plot_path}", err=True)


@bench.command("fork")
@click.option("--fork", "forks", multiple=True, type=click.Path(), metavar="PATH",
              help="a fork tree, built here for each variant through the normal build (repeatable: tree against tree)")
@click.option("--package", "packages", multiple=True, type=click.Path(file_okay=False), metavar="DIR",
              help="an `amxforge package` release to run instead of building (repeatable)")
@click.option("--variants", default=None, metavar="V,V,...",
              help="variants to compare, e.g. baseline,amx (default: auto's pick; with --package: all it has)")
@click.option("--threads", default="1", show_default=True, help="comma-separated thread counts, e.g. 1,2,4,8,16")
@click.option("--model", type=click.Path(), default=None, help="a GGUF model (default: synthetic models of --types)")
@click.option("--types", default=None, metavar="T,T,...",
              help="tensor types of synthetic models, e.g. q8_0,q4_0,bf16 (q4_k, q6_k, iq4_xs through the fork's "
                   "llama-quantize; bf16-p50, f16-p70: pruned, that % of each row of the blocks zero); default q8_0")
@click.option("--synth", "synth_shape", default="4x1024x2816", show_default=True, metavar="LAYERSxDIMxFF",
              help="the shape of the synthetic models (a bigger model makes longer, steadier runs)")
@click.option("--amx", type=click.Choice(["auto", "on", "off", "both"]), default="auto", show_default=True,
              help="the AMX branch's --amx runtime option: both where the tools take it (auto), or only on / off")
@click.option("--kernels", default="fork", show_default=True, metavar="K,K",
              help="whose matmul kernels: fork (its own), amxforge (ours, through the handler of "
                   "fork_kernels=amxforge), or fork,amxforge: a column each, the same binary")
@click.option("--pp", type=click.IntRange(1, 65536), default=128, show_default=True, help="prompt tokens per run")
@click.option("--tg", type=click.IntRange(1, 65536), default=32, show_default=True,
              help="generated tokens per run (llama-sweep-bench generates pp/4)")
@click.option("--reps", type=click.IntRange(1, 200), default=12, show_default=True,
              help="rounds at least (a round runs every cell once, in ABBA order); a 95 % interval needs 6, one "
                   "that an outlier run cannot move 12")
@click.option("--threshold", type=click.FloatRange(0, 50, min_open=True), default=2.0, show_default=True,
              metavar="PCT", help="a difference whose interval lies within +-PCT % is called \"same\"")
@click.option("--target-ci", type=click.FloatRange(0, 100, min_open=True), default=None, metavar="PCT",
              help="add rounds until every comparison's 95 % interval is within +-PCT % (or --max-time is spent)")
@click.option("--max-time", default=None, metavar="DURATION",
              help="with --target-ci: stop adding rounds when another would not fit in this, counted from the "
                   "first model made (models, warm-up and rounds; not the builds), e.g. 600, 10m, 1h (default: 200 "
                   "rounds)")
@click.option("--warmup", type=click.IntRange(0, 10), default=1, show_default=True,
              help="passes over all cells before measuring (not counted)")
@click.option("--tool", default="auto", show_default=True,
              help="the fork tool that measures: auto (the first in toolchain/bench.toml that can express every "
                   "cell), llama-bench or llama-sweep-bench")
@click.option("--numa", type=click.Choice(["off", "distribute", "isolate", "numactl"]), default="off",
              show_default=True, help="the tools' --numa mode")
@click.option("--timeout", type=click.FloatRange(1, 86400), default=600, show_default=True,
              help="seconds one run may take; a cell that times out is marked failed, the others complete")
@click.option("--out", type=click.Path(file_okay=False), default="build/bench-fork", show_default=True,
              help="where builds, models, cells.jsonl, summary.json and the plot go: a new or empty directory, or an "
                   "earlier run's (a second run into it waits for the first)")
@click.option("--plot", "plot_path", type=click.Path(dir_okay=False), default=None,
              help="the PNG of t/s against threads (default OUT/tps.png)")
@click.option("--json", "as_json", is_flag=True, help="JSON lines on stdout: a line per cell, then the summary")
@click.option("--save-preference", is_flag=True,
              help="write the winning variant order into the host preference file the package selector honours")
@click.option("--prefer", type=click.Choice(["tg", "pp"]), default="tg", show_default=True,
              help="the metric that orders variants in the preference")
@click.option("--jobs", type=click.IntRange(1, 1024), default=None, help="parallel compile jobs per build")
@click.option("--project", type=click.Path(file_okay=False, exists=True), default=".",
              help="the amxforge project to build in (default: here)")
def bench_fork(forks, packages, variants, threads, model, types, synth_shape, amx, kernels, pp, tg, reps, threshold,
               target_ci, max_time, warmup, tool, numa, timeout, out, plot_path, as_json, save_preference, prefer, jobs,
               project):
    """A fork's own tools over variants x threads x trees x --amx on/off x types: a table per metric (rows =
    threads, columns = variants / trees / --amx, each against the first), JSON lines, a PNG and a recommendation.

    Cells are warmed up, pinned to physical cores and interleaved in rounds; each difference is the ratio of two
    cells within a round, summarised over the rounds with an exact Wilcoxon signed-rank 95 % interval: "+21 % [+6, +31]
    faster", or slower, same (within +-threshold) or undecided. --target-ci adds rounds until the intervals are that
    narrow. The run's conditions (governor, turbo, load, steal, busy processes, pinning) are recorded and the noisy
    ones named. Exit 1 when a cell failed: its tool crashed, timed out or skipped products (printed a line of
    bench.toml's evidence.not_computed); the others complete."""
    from .bench import fork as fb
    from .report import bench_fork_report

    project = Path(project).resolve()
    from .bench import png
    can_plot = png.available()
    if plot_path:
        png.check(Path(plot_path))  # before the benchmark, not after it
    chosen = csv_items(variants) or ([] if packages and not forks else [resolve_variant(None)])
    qtypes = csv_items(types)
    try:
        shape = tuple(int(x) for x in synth_shape.lower().split("x"))
    except ValueError:
        shape = ()
    if len(shape) != 3 or min(shape) <= 0:
        raise AmxforgeError(f"--synth {synth_shape!r}: give LAYERSxDIMxFF, e.g. 8x2048x5632")
    out_dir = Path(out) if Path(out).is_absolute() else project / out
    from .fork.hook import CHOICES
    kernel_choices = csv_items(kernels)
    bad = [k for k in kernel_choices if k not in CHOICES] or ([] if kernel_choices else ["(none)"])
    if bad:
        raise AmxforgeError(f"--kernels {kernels}: {bad[0]} is not one; give fork, amxforge or fork,amxforge")
    if max_time is not None and not target_ci:
        raise AmxforgeError("--max-time bounds the rounds --target-ci adds: give --target-ci PCT too, e.g. "
                            "--target-ci 5 --max-time 10m")
    max_seconds = duration(max_time, "--max-time") if max_time is not None else None
    if save_preference:
        from .preference import check_preference_writable
        check_preference_writable()  # before the benchmark, not after it
    req = fb.Request(forks=list(forks), packages=[Path(p).resolve() for p in packages], variants=chosen,
                     threads=positive_counts(threads, "--threads", "1,2,4"), types=qtypes,
                     model=Path(model).resolve() if model else None, amx=amx,
                     kernels=tuple(dict.fromkeys(kernel_choices)), pp=pp, tg=tg, reps=reps, warmup=warmup,
                     tool=tool, numa=numa, timeout=timeout, out=out_dir, project=project, jobs=jobs, prefer=prefer,
                     shape=shape, threshold=threshold, target_ci=target_ci, max_time=max_seconds)
    bar = {"bar": None}

    def progress(i, total, kind, cell):
        if bar["bar"] is None:
            bar["bar"] = click.progressbar(length=total, label="bench fork", file=sys.stderr,
                                           item_show_func=lambda x: x)
            bar["bar"].__enter__()
        bar["bar"].length = total  # --target-ci adds rounds: the bar grows with them
        bar["bar"].update(1, None if cell is None else
                          f"{kind} {cell.column.label(True)} {cell.threads}t {cell.qtype}")

    log = lambda line: click.echo(line, err=True)  # noqa: E731
    try:
        result = fb.run_bench(req, log, progress)
    finally:
        if bar["bar"] is not None:
            bar["bar"].__exit__(None, None, None)
    written = fb.write_outputs(result, out_dir)
    plot_file = Path(plot_path) if plot_path else out_dir / "tps.png"
    if can_plot:
        fb.plot(result, plot_file)
    else:
        plot_file = None
        click.echo(f"amxforge: bench fork: no plot (matplotlib is not installed: {png.INSTALL})", err=True)
    saved = None
    if save_preference:
        import time
        note = f"amxforge bench fork {time.strftime('%Y-%m-%d')}: by {prefer} t/s ({written['summary']})"
        from .preference import save_preference
        saved = save_preference(result["summary"]["preference"], note)
    if as_json:
        for rec in result["cells"]:
            click.echo(json.dumps(rec))
        click.echo(json.dumps(result["summary"] | {"outputs": written, "plot": str(plot_file) if plot_file else None,
                                                   "preference_file": str(saved) if saved else None}))
    else:
        click.echo(bench_fork_report(result, saved=saved, prefer=prefer))
        click.echo(f"\ncells {written['cells']}, summary {written['summary']}, plot {plot_file}")
    if result["summary"]["failed"]:
        raise BenchFailed(f"{len(result['summary']['failed'])} cell(s) failed: {result['summary']['failed'][0]}")


@bench.command("compare")
@click.argument("old", type=click.Path())
@click.argument("new", type=click.Path())
@click.option("--threshold", type=click.FloatRange(0, 50, min_open=True), default=2.0, show_default=True,
              metavar="PCT", help="a difference whose interval lies within +-PCT % is called \"same\"")
@click.option("--json", "as_json", is_flag=True, help="one JSON object: every row, the verdict counts")
@click.option("--fail-on-slower", is_flag=True, help="exit 1 when a cell of NEW is slower than in OLD")
def bench_compare(old, new, threshold, as_json, fail_on_slower):
    """Two saved `bench fork` runs, NEW against OLD, cell by cell (same column, threads and type): each metric's
    ratio of medians with an exact Mann-Whitney / Hodges-Lehmann 95 % interval (the runs of two benchmarks are not
    paired), and a verdict: faster, slower, same (within +-threshold) or undecided. OLD and NEW are `bench fork
    --out` directories or their cells.jsonl. Exit 2 when they are not bench runs or share no cell."""
    from .bench.compare import compare_runs, load_run
    from .report import bench_compare_report

    result = compare_runs(load_run(old), load_run(new), threshold / 100.0)
    if as_json:
        click.echo(json.dumps(result | {"old": str(old), "new": str(new)}))
    else:
        click.echo(bench_compare_report(result, old, new))
    if fail_on_slower and result["verdicts"]["slower"]:
        raise BenchFailed(f"{result['verdicts']['slower']} comparison(s) slower in {new}")


class BenchFailed(AmxforgeError):
    """A finding of a benchmark: cells failed (a tool crashed or timed out; the others completed), or `bench compare
    --fail-on-slower` found a slower cell: exit 1."""

    exit_code = 1


