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
    """A --variant left out (or `auto`) is the variant `scons` builds here: the best this host can build and run."""
    if variant in (None, "auto"):
        from .probe import choose_auto, probe as run_probe
        return choose_auto(run_probe())
    return variant


VARIANT_HELP = "variant name (see `amxforge probe`); default: the one `auto` picks on this host"


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

    ctx = VariantContext(variant or "auto", cc=cc, cuda_arch=cuda_arch)
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

    try:
        counts = [int(t) for t in threads.split(",")]
        assert counts and all(t > 0 for t in counts)
    except (ValueError, AssertionError):
        raise AmxforgeError(f"--threads {threads!r}: give positive counts like 1,2") from None
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


@cli.group()
def fork():
    """Fork trees (ik_llama.cpp, its AMX branch, llama.cpp) that `scons fork=PATH` builds."""


@fork.command("detect")
@click.argument("path", type=click.Path())
@click.option("--json", "as_json", is_flag=True)
def fork_detect(path, as_json):
    """Which tree PATH is, its commit, and the CMake options amxforge sets on it."""
    from .fork.detect import detect_fork

    info = detect_fork(path)
    if as_json:
        click.echo(json.dumps(info.as_dict()))
    else:
        click.echo(f"{info.root}\n  kind     {info.kind}: {info.as_dict()['description']}\n"
                   f"  commit   {info.commit or '(not a git checkout)'}\n  options  {' '.join(info.options) or 'none'}")


@cli.command()
@click.option("--variants", required=True, metavar="V,V,...",
              help="the variants to ship, e.g. baseline,avx512,amx (cuda, amx-cuda too); the selector picks one at run time")
@click.option("--out", required=True, type=click.Path(file_okay=False),
              help="the release directory to write (refused if it exists and is not empty, unless --force)")
@click.option("--fork", default=None, help="a fork tree to build into every variant (ik_llama.cpp, ggml, ...)")
@click.option("--fork-targets", default="llama-bench", show_default=True,
              help="comma-separated fork targets to ship (with --fork)")
@click.option("--name", default=None, help="package name (default: the fork's kind, or amxforge-kernels)")
@click.option("--version", "version_", default=None, help="package version (default: amxforge's, with the commit)")
@click.option("--force", is_flag=True, help="replace an existing --out")
@click.option("--jobs", type=click.IntRange(1, 1024), default=None, help="parallel compile jobs per variant build")
@click.option("--project", type=click.Path(file_okay=False, exists=True), default=".",
              help="the amxforge project to build in (default: here)")
@click.option("--json", "as_json", is_flag=True, help="the summary as JSON")
def package(variants, out, fork, fork_targets, name, version_, force, jobs, project, as_json):
    """Build every variant, audit each (an unclean one is refused, naming the object), and write one release:
    OUT/bin/<target> picks the best variant that runs on each machine (AMXFORGE_EXPLAIN=1 says why, AMXFORGE_VARIANT
    forces one), OUT/manifest.json names each variant's CPU and OS needs, and OUT.tar.gz is reproducible."""
    from .package import Request, make_package

    targets = [t.strip() for t in fork_targets.split(",") if t.strip()]
    if fork and not targets:
        raise AmxforgeError("--fork-targets is empty; name at least one, e.g. --fork-targets llama-bench")
    req = Request([v.strip() for v in variants.split(",") if v.strip()], Path(out).resolve(), Path(project).resolve(),
                  fork, targets, name, version_, force, jobs)
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
def model():
    """Models for running built binaries with no download."""


@model.command("synth")
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="the .gguf file to write")
@click.option("--type", "qtype", type=click.Choice(["q8_0", "q4_0", "f16"]), default="q8_0", show_default=True)
@click.option("--layers", type=int, default=4, show_default=True)
@click.option("--dim", type=int, default=1024, show_default=True, help="embedding length")
@click.option("--ff", type=int, default=2816, show_default=True, help="feed-forward length")
@click.option("--heads", type=int, default=16, show_default=True)
@click.option("--kv-heads", type=int, default=4, show_default=True)
@click.option("--vocab", type=int, default=2048, show_default=True)
@click.option("--ctx", type=int, default=4096, show_default=True, help="context length")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--json", "as_json", is_flag=True)
def model_synth(out, qtype, layers, dim, ff, heads, kv_heads, vocab, ctx, seed, as_json):
    """A small llama-architecture GGUF with random weights. Random weights measure speed only, never quality."""
    from .model.synth import ModelShape, synth

    info = synth(Path(out), qtype, ModelShape(layers, dim, ff, heads, kv_heads, vocab, ctx), seed)
    if as_json:
        click.echo(json.dumps(info))
    else:
        click.echo(f"{info['path']}: llama, {info['type']}, {info['parameters'] / 1e6:.1f} M parameters, "
                   f"{info['bytes'] / 2**20:.1f} MiB (random weights: for speed measurements only)")


def _usage_line(exc: click.exceptions.UsageError) -> str:
    """Click's usage error (several lines: usage, a hint, the error) as one line naming the fix."""
    path = exc.ctx.command_path if exc.ctx is not None else "amxforge"
    return f"amxforge: error: {path}: {exc.format_message().rstrip('.')}; see `{path} --help`"


def main(argv=None):
    """Exit codes: 0 ok; 1 findings (the audit); 2 bad input or cannot run here (one line on stderr); 3 internal
    error (one line naming the log file that holds the traceback); 130 interrupted. Never a Python traceback."""
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
    except (click.exceptions.Abort, KeyboardInterrupt):
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
