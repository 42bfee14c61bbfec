"""`amxforge`: probe the host, explain a unit's flags, audit a built variant.

Exit codes: 0 success; 1 the audit found problems; 2 bad input or cannot run here (one line on stderr); 3 internal
error (one line naming the log with the traceback).
"""

import json
import sys
from pathlib import Path

import click

from .errors import AmxforgeError

# Features shown in the human probe table (the JSON lists all of them).
SHOWN = ("avx2", "fma", "f16c", "bmi2", "avx512f", "avx512bw", "avx512dq", "avx512vl", "avx512_vnni", "avx512_bf16",
         "avx512vbmi", "avx512_vbmi2", "avx512_fp16", "amx_tile", "amx_int8", "amx_bf16", "amx_fp16")


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.version_option(package_name="amxforge", message="amxforge %(version)s")
def cli():
    """Probe x86 AMX/AVX-512 and CUDA hosts, explain per-unit ISA flags, audit variant builds.

    Builds themselves run through SCons: `scons variant=amx` (see `scons -h`).
    """


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="print the whole result as JSON")
@click.option("--refresh", is_flag=True, help="ignore the cache and probe again")
@click.option("--cpuinfo", type=click.Path(exists=True, dir_okay=False),
              help="judge another machine from a saved copy of its /proc/cpuinfo (the OS and CUDA parts stay "
                   "this host's)")
def probe(as_json, refresh, cpuinfo):
    """What this host has: CPU features, OS AMX support, CUDA, compilers; which variants build and run here."""
    from .probe import probe as run_probe

    result = run_probe(refresh=refresh, cpuinfo=cpuinfo)
    if as_json:
        click.echo(json.dumps(result, indent=2))
    else:
        from .report import probe_table

        click.echo(probe_table(result, SHOWN))


def resolve_variant(variant) -> str:
    """A --variant left out (or `auto`) is the variant `scons` builds here: the best this host can build and run.
    Anything else must be a variant's name (not a path, not shell text): one line listing them otherwise."""
    if variant in (None, "auto"):
        from .probe import choose_auto, probe as run_probe
        return choose_auto(run_probe())
    from .policy import Policy
    variants = Policy().variants
    if variant not in variants.raw:
        raise variants.unknown(variant)
    return variant


VARIANT_HELP = "variant name (see `amxforge probe`); default: the one `auto` picks on this host"


def _csv(text) -> list:
    """A comma-separated option as its non-empty items."""
    return [item.strip() for item in (text or "").split(",") if item.strip()]


def _counts(text: str, name: str, example: str) -> list:
    """A comma-separated list of positive counts (thread counts), or one line naming the fix."""
    try:
        counts = [int(t) for t in _csv(text)]
        assert counts and all(t > 0 for t in counts)
    except (ValueError, AssertionError):
        raise AmxforgeError(f"{name} {text!r}: give positive counts like {example}") from None
    return counts


@cli.command()
@click.option("--variant", "-v", default=None, help=VARIANT_HELP)
@click.option("--cc", default=None, help="compiler to render for (default: $CC or gcc)")
@click.option("--cuda-arch", default=None, help="CUDA archs for cuda variants, e.g. 90 or '86;89;120'")
@click.option("--json", "as_json", is_flag=True, help="one JSON object per file")
@click.argument("files", nargs=-1, required=True, type=click.Path())
def flags(variant, cc, cuda_arch, as_json, files):
    """Which flags each FILE gets in VARIANT, and which rule said so.

    Paths are matched against toolchain/classes.toml relative to the current directory.
    """
    from .context import VariantContext

    from .policy.cuda_arch import CLI
    ctx = VariantContext(resolve_variant(variant), cc=cc, cuda_arch=cuda_arch, cuda_option=CLI)
    for name in files:
        path = Path(name)
        if not path.exists():
            raise AmxforgeError(f"{name}: no such file")
        unit = ctx.unit(path)
        if as_json:
            click.echo(json.dumps(unit.as_dict() | {"variant": ctx.name}))
        else:
            click.echo(f"{unit.source}\n  class    {unit.unit_class}\n  rule     {unit.rule} (glob {unit.glob})\n"
                       f"  variant  {ctx.name} ({ctx.compiler.family} {ctx.compiler.version})\n"
                       f"  flags    {' '.join(unit.flags)}")


@cli.command()
@click.option("--variant", "-v", default=None, help=VARIANT_HELP + " (it must be built under build/)")
@click.option("--project", type=click.Path(file_okay=False, exists=True), default=".",
              help="the directory holding build/ (default: here)")
@click.option("--json", "as_json", is_flag=True, help="the verdict as JSON")
def audit(variant, project, as_json):
    """Disassemble every object of a built variant and check the policy held (exit 1 if not).

    No tile instruction outside amx-class objects; no zmm or tile in baseline; portable objects within
    x86-64; protected objects identical across variants that render the same protected flags.
    """
    from .audit import audit_variant
    from .report import audit_report

    result = audit_variant(resolve_variant(variant), Path(project))
    click.echo(json.dumps(result.as_dict(), indent=2) if as_json else audit_report(result))
    sys.exit(0 if result.ok else 1)


@cli.group()
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

    counts = _counts(threads, "--threads", "1,2")
    exe = kb.kbench_path(resolve_variant(variant), Path(project))
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
                   "llama-quantize); default q8_0")
@click.option("--synth", "synth_shape", default="4x1024x2816", show_default=True, metavar="LAYERSxDIMxFF",
              help="the shape of the synthetic models (a bigger model makes longer, steadier runs)")
@click.option("--amx", type=click.Choice(["auto", "on", "off", "both"]), default="auto", show_default=True,
              help="the AMX branch's --amx runtime option: both where the tools take it (auto), or only on / off")
@click.option("--pp", type=click.IntRange(1, 65536), default=128, show_default=True, help="prompt tokens per run")
@click.option("--tg", type=click.IntRange(1, 65536), default=32, show_default=True,
              help="generated tokens per run (llama-sweep-bench generates pp/4)")
@click.option("--reps", type=click.IntRange(1, 100), default=5, show_default=True,
              help="runs per cell, interleaved across cells")
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
              help="where builds, models, cells.jsonl, summary.json and the plot go")
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
def bench_fork(forks, packages, variants, threads, model, types, synth_shape, amx, pp, tg, reps, warmup, tool, numa, timeout, out,
               plot_path, as_json, save_preference, prefer, jobs, project):
    """A fork's own tools over variants x threads x trees x --amx on/off x types: a table per metric (rows =
    threads, columns = variants / trees / --amx, each against the first), JSON lines, a PNG and a recommendation.

    Cells are interleaved across rounds, warmed up, pinned to physical cores, and differences smaller than a
    reference cell's spread are called "= noise". Exit 1 when a cell failed (the others complete)."""
    from .bench import fork as fb
    from .report import bench_fork_report

    project = Path(project).resolve()
    import importlib.util
    can_plot = importlib.util.find_spec("matplotlib") is not None
    if plot_path and not can_plot:
        raise AmxforgeError("--plot needs matplotlib: pip install -e '.[bench]'")
    chosen = _csv(variants) or ([] if packages and not forks else [resolve_variant(None)])
    qtypes = _csv(types)
    try:
        shape = tuple(int(x) for x in synth_shape.lower().split("x"))
        assert len(shape) == 3 and all(x > 0 for x in shape)
    except (ValueError, AssertionError):
        raise AmxforgeError(f"--synth {synth_shape!r}: give LAYERSxDIMxFF, e.g. 8x2048x5632") from None
    out_dir = Path(out) if Path(out).is_absolute() else project / out
    if save_preference:
        fb.check_preference_writable()  # before the benchmark, not after it
    req = fb.Request(forks=list(forks), packages=[Path(p).resolve() for p in packages], variants=chosen,
                     threads=list(dict.fromkeys(_counts(threads, "--threads", "1,2,4"))), types=qtypes,
                     model=Path(model).resolve() if model else None, amx=amx, pp=pp, tg=tg, reps=reps, warmup=warmup,
                     tool=tool, numa=numa, timeout=timeout, out=out_dir, project=project, jobs=jobs, prefer=prefer,
                     shape=shape)
    bar = {"bar": None}

    def progress(i, total, kind, cell):
        if bar["bar"] is None:
            bar["bar"] = click.progressbar(length=total, label="bench fork", file=sys.stderr,
                                           item_show_func=lambda x: x)
            bar["bar"].__enter__()
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
        click.echo("amxforge: bench fork: no plot (matplotlib is not installed: pip install -e '.[bench]')", err=True)
    saved = None
    if save_preference:
        import time
        note = f"amxforge bench fork {time.strftime('%Y-%m-%d')}: by {prefer} t/s ({written['summary']})"
        saved = fb.save_preference(result["summary"]["preference"], note)
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


class BenchFailed(AmxforgeError):
    """Some cells failed (a tool crashed or timed out); the others completed: exit 1."""

    exit_code = 1


@cli.group()
def fork():
    """Fork trees that `scons fork=PATH` builds (the kinds of toolchain/forks.toml: `amxforge fork kinds`)."""


@fork.command("kinds")
@click.option("--json", "as_json", is_flag=True)
def fork_kinds(as_json):
    """The kinds of tree amxforge builds, in the order they are recognised: markers, default targets, kernel route."""
    from .fork.kinds import kinds
    table = kinds()
    if as_json:
        click.echo(json.dumps([k.__dict__ for k in table.kinds.values()]))
        return
    for k in table.kinds.values():
        click.echo(f"{k.name}\n  {k.description}\n  markers  {' '.join(k.markers)}\n  targets  "
                   f"{' '.join(k.default_targets)}\n  kernels  {k.kernels['route']} ({' '.join(k.kernels['entries'])})")


@fork.command("detect")
@click.argument("path", type=click.Path())
@click.option("--json", "as_json", is_flag=True)
def fork_detect(path, as_json):
    """Which tree PATH is, its commit, and the CMake options amxforge sets on it."""
    from .fork.detect import detect_fork

    info = detect_fork(path)
    entries = info.kernel_entries()
    if as_json:
        click.echo(json.dumps(info.as_dict() | {"kernels": entries}))
    else:
        found = (f"{', '.join(entries['declared'])} in {entries['header']}" if entries["declared"] else
                 f"none of {', '.join(entries['missing'])} in {entries['header']}")
        click.echo(f"{info.root}\n  kind     {info.kind}: {info.as_dict()['description']}\n"
                   f"  commit   {info.commit or '(not a git checkout)'}\n  options  {' '.join(info.options) or 'none'}\n"
                   f"  kernels  {entries['route']}: {found}")


@cli.command()
@click.option("--variants", required=True, metavar="V,V,...",
              help="the variants to ship, e.g. baseline,avx512,amx (cuda, amx-cuda too); the selector picks one at run time")
@click.option("--out", required=True, type=click.Path(file_okay=False),
              help="the release directory to write: new, empty, or an earlier release (with --force); never the "
                   "project, build/, a checkout, / or your home")
@click.option("--fork", default=None, help="a fork tree to build into every variant (`amxforge fork kinds`)")
@click.option("--fork-targets", default=None,
              help="comma-separated programs of the fork to ship (with --fork; default: its kind's, e.g. llama-bench)")
@click.option("--name", default=None, help="package name (default: the fork's kind, or amxforge-kernels)")
@click.option("--version", "version_", default=None, help="package version (default: amxforge's, with the commit)")
@click.option("--force", is_flag=True, help="replace an earlier release at --out (nothing else is ever replaced)")
@click.option("--cuda-arch", default=None, metavar="ARCHS",
              help="CUDA archs for the cuda variants, e.g. 90 or '86;89;120a' (default: the GPUs visible here; a "
                   "GPU-less builder must name them)")
@click.option("--jobs", type=click.IntRange(1, 1024), default=None, help="parallel compile jobs per variant build")
@click.option("--project", type=click.Path(file_okay=False, exists=True), default=".",
              help="the amxforge project to build in (default: here)")
@click.option("--json", "as_json", is_flag=True, help="the summary as JSON")
def package(variants, out, fork, fork_targets, name, version_, force, cuda_arch, jobs, project, as_json):
    """Build every variant, audit each (an unclean one is refused, naming the object), and write one release:
    OUT/bin/<target> picks the best variant that runs on each machine (AMXFORGE_EXPLAIN=1 says why, AMXFORGE_VARIANT
    forces one), OUT/manifest.json names each variant's CPU and OS needs, and OUT.tar.gz is reproducible."""
    from .package import Request, make_package

    targets = None if fork_targets is None else _csv(fork_targets)
    if fork_targets is not None and not targets:
        raise AmxforgeError("--fork-targets is empty; name at least one, e.g. --fork-targets llama-bench, or leave it "
                            "out for the fork kind's default")
    if targets and not fork:
        raise AmxforgeError("--fork-targets names programs of a fork tree: pass --fork PATH too, or leave it out")
    req = Request(_csv(variants), Path(out).resolve(), Path(project).resolve(),
                  fork, targets, name, version_, force, jobs, cuda_arch)
    summary = make_package(req, log=lambda line: click.echo(line, err=True))
    if as_json:
        click.echo(json.dumps({k: v for k, v in summary.items() if k != "manifest"}))
        return
    manifest = summary["manifest"]
    click.echo(f"{summary['release']}: {manifest['package']['name']} {manifest['package']['version']}, "
               f"variants {', '.join(summary['variants'])} (selection order), targets {', '.join(summary['targets'])}")
    for v in summary["variants"]:
        d = manifest["variants"][v]
        where = d["glibc_hwcaps"] or f"selector only ({d['glibc_hwcaps_why_not']})"
        click.echo(f"  {v:9s} psABI {d['psabi_level'] or 'none':10s} hwcaps: {where}")
    click.echo(f"  stored {summary['bytes_stored'] / 2**20:.1f} MiB (identical files linked; {summary['bytes_naive'] / 2**20:.1f}"
               f" MiB naive); archive {summary['archive']} {summary['archive_bytes'] / 2**20:.1f} MiB")


@cli.group()
def dist():
    """Builds past one machine: the shared compile cache (scons ... cache=redis://HOST:PORT) and compiles on other
    hosts through icecream (scons ... dist=icecc dist_scheduler=HOST)."""


@dist.command("status")
@click.option("--cache", default=None, metavar="URL",
              help="the remote cache to check, as given to scons cache= (default: $AMXFORGE_CACHE_URL)")
@click.option("--scheduler", default=None, metavar="HOST[:PORT]",
              help="the icecream scheduler to check, as given to scons dist_scheduler= (default: $ICECC_SCHEDULER)")
@click.option("--project", type=click.Path(file_okay=False, exists=True), default=".",
              help="the project whose last fork builds' hit rates to show (default: here)")
@click.option("--json", "as_json", is_flag=True)
def dist_status(cache, scheduler, project, as_json):
    """Is the remote cache reachable and can this ccache use it; is the icecream scheduler there, which daemons
    (and slots) it lists, does it know this host, which pinned toolchains are made; how the last fork builds hit the
    cache and where their units compiled. Exit 1 when a configured cache or scheduler cannot be used."""
    import os
    from . import dist as icecream
    from .cache import ccache_facts, last_builds, mask, parse_cache_url, reachable

    cache = cache or os.environ.get("AMXFORGE_CACHE_URL")
    scheduler = icecream.scheduler_option(scheduler or "")
    status = {"ccache": ccache_facts(), "cache": None, "scheduler": None, "builds": last_builds(Path(project)),
              "toolchains": icecream.toolchains()}
    if cache:
        ok, why = reachable(parse_cache_url(cache))
        status["cache"] = {"url": mask(cache), "reachable": ok, "why": why}
    if scheduler:
        status["scheduler"] = icecream.check(scheduler)
    if as_json:
        click.echo(json.dumps(status))
    else:
        from .report import dist_status_report
        click.echo(dist_status_report(status))
    if (status["cache"] and not status["cache"]["reachable"]) or (status["scheduler"] and
                                                                 not status["scheduler"]["usable"]):
        sys.exit(1)


@cli.group()
def model():
    """Models for running built binaries with no download."""


@model.command("synth")
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="the .gguf file to write")
@click.option("--type", "qtype", default="q8_0", show_default=True,
              help="tensor type (toolchain/models.toml): f16 bf16 q8_0 q4_0 q4_1 q5_0 written by gguf; q4_k q5_k q6_k "
                   "iq4_xs need --quantize-with")
@click.option("--quantize-with", type=click.Path(), default=None,
              help="a fork's llama-quantize, for the types gguf cannot quantize (written as f16, then converted)")
@click.option("--layers", type=int, default=4, show_default=True)
@click.option("--dim", type=int, default=1024, show_default=True, help="embedding length")
@click.option("--ff", type=int, default=2816, show_default=True, help="feed-forward length")
@click.option("--heads", type=int, default=16, show_default=True)
@click.option("--kv-heads", type=int, default=4, show_default=True)
@click.option("--vocab", type=int, default=2048, show_default=True)
@click.option("--ctx", type=int, default=4096, show_default=True, help="context length")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--json", "as_json", is_flag=True)
def model_synth(out, qtype, quantize_with, layers, dim, ff, heads, kv_heads, vocab, ctx, seed, as_json):
    """A small llama-architecture GGUF with random weights. Random weights measure speed only, never quality."""
    from .model.synth import ModelShape, synth

    info = synth(Path(out), qtype, ModelShape(layers, dim, ff, heads, kv_heads, vocab, ctx), seed, quantize_with)
    if as_json:
        click.echo(json.dumps(info))
    else:
        click.echo(f"{info['path']}: llama, {info['type']}, {info['parameters'] / 1e6:.1f} M parameters, "
                   f"{info['bytes'] / 2**20:.1f} MiB (random weights: for speed measurements only)")


def _usage_line(exc: click.exceptions.UsageError) -> str:
    """Click's usage error (several lines: usage, a hint, the error) as one line naming the fix."""
    path = exc.ctx.command_path if exc.ctx is not None else "amxforge"
    return f"amxforge: error: {path}: {exc.format_message().rstrip('.')}; see `{path} --help`"


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where the program is so that what it was writing is cleaned up on the way out."""


def _terminate(signum, frame):
    raise Terminated()


def main(argv=None):
    """Exit codes: 0 ok; 1 findings (the audit); 2 bad input or cannot run here (one line on stderr); 3 internal
    error (one line naming the log file that holds the traceback); 130 interrupted (143 terminated). Never a Python
    traceback. SIGTERM unwinds like Ctrl-C: staging directories and temporary files are removed on the way out."""
    import signal
    try:
        signal.signal(signal.SIGTERM, _terminate)
    except ValueError:
        pass  # not the main thread (a test calling main()): the default disposition stays
    try:
        cli.main(args=argv, prog_name="amxforge", standalone_mode=False)
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except click.exceptions.UsageError as exc:
        click.echo(_usage_line(exc), err=True)
        return 2
    except click.ClickException as exc:
        click.echo(f"amxforge: error: {exc.format_message()}", err=True)
        return 2
    except (click.exceptions.Abort, KeyboardInterrupt) as exc:
        # click turns an interrupt into Abort, keeping it as the cause
        if isinstance(exc, Terminated) or isinstance(exc.__cause__, Terminated):
            click.echo("amxforge: terminated", err=True)
            return 143
        click.echo("amxforge: interrupted", err=True)
        return 130
    except AmxforgeError as exc:
        click.echo(f"amxforge: error: {exc}", err=True)
        return exc.exit_code
    except BrokenPipeError:
        return 0  # the reader (head, less) went away: nothing left to say
    except Exception as exc:  # noqa: BLE001 - the boundary: a bug is one line and a log, exit 3
        from .crash import INTERNAL_ERROR, report
        click.echo(report(exc, "cli"), err=True)
        return INTERNAL_ERROR
    return 0


if __name__ == "__main__":
    sys.exit(main())
