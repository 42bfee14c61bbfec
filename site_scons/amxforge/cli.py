"""`amxforge`: probe the host; explain a unit's flags; audit a built variant; benchmark the kernels and a fork's own
tools; detect fork trees and list their kinds; package every variant into one release with a selector; check the
shared cache and the icecream scheduler; write synthetic models. Builds themselves run through SCons.

Exit codes: 0 success; 1 findings (the audit, a benchmark cell that failed, an unreachable cache or scheduler); 2 bad
input or cannot run here (one line on stderr); 3 internal error (one line naming the log with the traceback); 130
interrupted, 143 terminated.
"""

import json
import sys
from pathlib import Path

import click

from .cli_bench import bench
from .cliargs import VARIANT_HELP, csv_items, resolve_variant
from .errors import AmxforgeError
from .fork.hook import CHOICES as KERNEL_CHOICES
from .model.prune import DEFAULT_GLOB as PRUNE_GLOB

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


cli.add_command(bench)


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
                   f"{' '.join(k.default_targets)}\n  kernels  {k.kernels['route']} ({' '.join(k.kernels['entries'])})"
                   + (f"; fork_kernels=amxforge wraps {' '.join(k.kernels['wrap'])}" if k.kernels.get("wrap") else
                      "; fork_kernels=amxforge builds libggml-amxforge.so, a backend its loader takes"))


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
@click.option("--fork-kernels", type=click.Choice(KERNEL_CHOICES), default="fork", show_default=True,
              help="the fork's matmul kernels in every variant: its own, or ours through the handler (bf16 weights; "
                   "the variant the selector picks is also the implementation our kernels run)")
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
def package(variants, out, fork, fork_targets, fork_kernels, name, version_, force, cuda_arch, jobs, project,
            as_json):
    """Build every variant, audit each (an unclean one is refused, naming the object), and write one release:
    OUT/bin/<target> picks the best variant that runs on each machine (AMXFORGE_EXPLAIN=1 says why, AMXFORGE_VARIANT
    forces one), OUT/manifest.json names each variant's CPU and OS needs, and OUT.tar.gz is reproducible."""
    from .package import Request, make_package

    targets = None if fork_targets is None else csv_items(fork_targets)
    if fork_targets is not None and not targets:
        raise AmxforgeError("--fork-targets is empty; name at least one, e.g. --fork-targets llama-bench, or leave it "
                            "out for the fork kind's default")
    if targets and not fork:
        raise AmxforgeError("--fork-targets names programs of a fork tree: pass --fork PATH too, or leave it out")
    if fork_kernels != "fork" and not fork:
        raise AmxforgeError("--fork-kernels amxforge puts our kernels into a fork's binaries: pass --fork PATH too")
    req = Request(csv_items(variants), Path(out).resolve(), Path(project).resolve(),
                  fork, targets, name, version_, force, jobs, cuda_arch, fork_kernels)
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


@cli.command()
@click.argument("release", type=click.Path(file_okay=False, exists=True))
@click.option("--json", "as_json", is_flag=True)
def verify(release, as_json):
    """Check a whole release against its manifest: every file's size and SHA-256, and the selector's table (exit 1
    naming each bad file). The selector itself checks sizes at every start and CRC-32s once per change."""
    from .package.layout import verify_release
    result = verify_release(Path(release))
    if as_json:
        click.echo(json.dumps(result))
    else:
        for line in result["bad"]:
            click.echo(f"{release}: {line}")
        click.echo(f"{release}: {result['files']} files, {len(result['bad'])} bad")
    if result["bad"]:
        sys.exit(1)


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
@click.option("--sparsity", type=click.FloatRange(0, 1, max_open=True), default=0.0, show_default=True,
              help="zero this fraction of each row of the blocks' matrices, smallest first (as model prune does)")
@click.option("--json", "as_json", is_flag=True)
def model_synth(out, qtype, quantize_with, layers, dim, ff, heads, kv_heads, vocab, ctx, seed, sparsity, as_json):
    """A small llama-architecture GGUF with random weights. Random weights measure speed only, never quality."""
    from .model.synth import ModelShape, synth

    info = synth(Path(out), qtype, ModelShape(layers, dim, ff, heads, kv_heads, vocab, ctx), seed, quantize_with,
                 sparsity)
    if as_json:
        click.echo(json.dumps(info))
    else:
        click.echo(f"{info['path']}: llama, {info['type']}, {info['parameters'] / 1e6:.1f} M parameters, "
                   f"{info['bytes'] / 2**20:.1f} MiB (random weights: for speed measurements only)")


@model.command("prune")
@click.option("--in", "src", required=True, type=click.Path(dir_okay=False), help="the .gguf model to prune")
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="the pruned .gguf to write")
@click.option("--sparsity", required=True, type=click.FloatRange(0, 1, max_open=True),
              help="the fraction of each row's weights set to zero, smallest magnitudes first, e.g. 0.5")
@click.option("--tensors", default=PRUNE_GLOB, show_default=True,
              help="a glob of tensor names to prune (bf16 / f16 matrices only; the default leaves the embeddings "
                   "and the output as they are)")
@click.option("--json", "as_json", is_flag=True)
def model_prune(src, out, sparsity, tensors, as_json):
    """Unstructured magnitude pruning per output row of a GGUF's bf16 / f16 matrices: a pruned model for the sparse
    path of fork_kernels=amxforge, without a download. Everything else is copied as it is."""
    from .model.prune import prune

    info = prune(Path(src), Path(out), sparsity, tensors)
    if as_json:
        click.echo(json.dumps(info))
    else:
        what = "matrix" if info["tensors"] == 1 else "matrices"
        click.echo(f"{info['path']}: {info['tensors']} {what} pruned to {info['zero_fraction']:.1%} zeros "
                   f"({info['bytes'] / 2**20:.1f} MiB)")


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
