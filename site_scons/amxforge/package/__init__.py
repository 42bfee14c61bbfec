"""`amxforge package`: every named variant built (kernels, and a fork's targets), audited, and laid out in one release
directory with the selector (the launcher, reading a table of all the variants) in front of each target, a manifest
that names each variant's CPU and OS needs, an extra glibc-hwcaps layout where a variant fits a psABI level, and a
reproducible archive next to it.

    DIR/bin/<target>                      the selector (amxforge-launch)
    DIR/variants/<v>/{libexec,lib}/       each variant's real binaries and shared libraries
    DIR/lib/glibc-hwcaps/x86-64-vN/       shared libraries of a variant whose requirements are within level N
    DIR/share/amxforge/launch.tsv         the selector's table: variants best first, every file's size and hash
    DIR/manifest.json                     schema: toolchain/schemas/manifest.schema.json
    DIR.tar.gz                            the same tree: sorted, owner 0, mtime SOURCE_DATE_EPOCH, gzip without a name

Staged in a hidden directory beside DIR and renamed into place only when complete: an interrupted run leaves no
partial release. Files identical across variants are stored once (hard links, in the tree and in the archive)."""

import hashlib
import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from .. import __version__
from ..context import VariantContext
from ..errors import AmxforgeError
from ..paths import project_root
from .archive import write_archive
from .layout import Layout

FORMAT = 1


class Findings(AmxforgeError):
    """The audit found problems: exit 1, as `amxforge audit`."""

    exit_code = 1


@dataclass
class Request:
    variants: list
    out: Path
    project: Path
    fork: str = None
    fork_targets: list = None  # None: the fork kind's default targets (toolchain/forks.toml)
    name: str = None
    version: str = None
    force: bool = False
    jobs: int = None
    cuda_arch: str = None  # for the CUDA variants (cuda, amx-cuda): a GPU-less builder has no archs to probe
    fork_kernels: str = "fork"  # amxforge: the fork's binaries with our matmul handler (fork_kernels=amxforge)


def source_date_epoch(project: Path) -> int:
    """SOURCE_DATE_EPOCH if set, else the project's HEAD commit time, else 0: every timestamp in the release."""
    env = os.environ.get("SOURCE_DATE_EPOCH")
    if env is not None:
        if not env.isdigit():
            raise AmxforgeError(f"SOURCE_DATE_EPOCH={env!r} is not a number of seconds; unset it or give e.g. 1700000000")
        return int(env)
    res = subprocess.run(["git", "-C", str(project), "log", "-1", "--format=%ct"], capture_output=True, text=True)
    return int(res.stdout.strip()) if res.returncode == 0 and res.stdout.strip().isdigit() else 0


def _git(project: Path, *args) -> str:
    res = subprocess.run(["git", "-C", str(project), *args], capture_output=True, text=True)
    return res.stdout.strip() if res.returncode == 0 else None


def check_request(req: Request, policy, plan: dict) -> None:
    """Bad input before anything is built: unknown or host-only variants, a variant this compiler cannot build."""
    known = [n for n in policy.variants.raw]
    if not req.variants:
        raise AmxforgeError("--variants is empty; name them, e.g. --variants baseline,avx512,amx")
    for name in req.variants:
        if name not in known:
            raise AmxforgeError(f"unknown variant {name!r} in --variants; choose from {', '.join(known)}")
        if policy.variants.raw[name].get("host"):
            raise AmxforgeError(f"variant {name} is this build host's own feature set, not a target for other machines; "
                                f"package named variants (e.g. baseline,avx512,amx)")
        if not plan[name]["buildable"]:
            raise AmxforgeError(f"variant {name} cannot be built here: {plan[name]['why_not_buildable']}")
    cuda = [n for n in req.variants if policy.variants.fields(n).get("cuda")]
    if req.cuda_arch and not cuda:
        raise AmxforgeError(f"--cuda-arch {req.cuda_arch} is for CUDA variants; --variants {','.join(req.variants)} "
                            f"has none: leave --cuda-arch out")
    for name in cuda:  # the archs each CUDA variant builds for, settled before anything is built
        variant_context(req, name, policy)


def variant_context(req: Request, variant: str, policy) -> VariantContext:
    """The variant as package builds it: CUDA variants with --cuda-arch (and its spelling in every message)."""
    from ..policy.cuda_arch import CLI
    cuda = bool(policy.variants.fields(variant).get("cuda"))
    return VariantContext(variant, project_dir=req.project, cuda_arch=req.cuda_arch if cuda else None,
                          cuda_option=CLI)


def selection_order(policy, variants) -> list:
    """Best first: the policy's `auto` order for CPU variants, each CUDA variant just before its CPU twin."""
    rank = {name: i for i, name in enumerate(policy.variants.auto)}

    def key(name):
        cuda = bool(policy.variants.fields(name).get("cuda"))
        twin = policy.variants.raw[name].get("like", name) if cuda else name  # fields() merges `like` away
        return (rank.get(twin, len(rank)), 0 if cuda else 1, name)
    return sorted(variants, key=key)


def scons_command(variant: str, fork: str = None, targets=(), jobs: int = None, cuda_arch: str = None,
                  fork_kernels: str = "fork") -> list:
    """The normal build of one variant (and a fork's targets), as `amxforge package` and `bench fork` run it."""
    scons = shutil.which("scons", path=str(Path(sys.executable).parent)) or shutil.which("scons")
    if not scons:
        raise AmxforgeError("scons not found: pip install -e . installs it")
    cmd = [scons, "-Q", f"--site-dir={project_root() / 'site_scons'}", f"variant={variant}"]
    if fork:
        cmd += [f"fork={fork}", f"fork_targets={','.join(targets)}", f"fork_kernels={fork_kernels}"]
    if jobs:
        cmd.append(f"jobs={jobs}")
    if cuda_arch:
        cmd.append(f"cuda_arch={cuda_arch}")
    return cmd


def build_variant(req: Request, variant: str, policy, log) -> None:
    archs = ";".join(variant_context(req, variant, policy).cuda_archs)
    cmd = scons_command(variant, req.fork, req.fork_targets, req.jobs, archs or None, req.fork_kernels)
    log(f"amxforge: package: building variant {variant}: {' '.join(cmd[1:])}")
    res = subprocess.run(cmd, cwd=req.project, stdout=sys.stderr, stderr=sys.stderr)
    if res.returncode != 0:
        raise AmxforgeError(f"building variant {variant} failed (scons exit {res.returncode}, output above); nothing "
                            f"was packaged")


def make_package(req: Request, log=print) -> dict:
    """Everything is checked before anything is built (the variants, --out and its place, the free space); the
    release is staged beside --out and renamed into place; the user's fork builds it replaced are put back."""
    from . import outputs

    base = VariantContext("baseline", project_dir=req.project)  # the policy, the probe and the build's compiler
    policy, plan = base.policy, base.plan
    check_request(req, policy, plan)
    fork = None
    if req.fork:
        from ..fork.detect import detect_fork
        fork = detect_fork(req.fork, base=req.project)
        if req.fork_targets is None:
            req.fork_targets = list(fork.spec.default_targets)
    outputs.refuse_unsafe_out(req.out, req.project, fork.root if fork else None)
    order = selection_order(policy, list(dict.fromkeys(req.variants)))
    epoch = source_date_epoch(req.project)
    with outputs.OutLock(req.out, log):
        outputs.check_out(req.out, req.force)
        layout, before = Layout(Path(req.out), epoch), None
        try:  # entered before anything exists: an interrupt (SIGINT, SIGTERM) anywhere below removes the staging
            layout.begin()  # a place we cannot write fails here, before any build
            outputs.check_space(layout.stage, req.project, order)
            before = outputs.fork_builds(req.project, order)
            release, manifest, targets = _build_and_lay_out(req, fork, order, epoch, base, layout, log)
        except BaseException:
            layout.abandon()
            raise
        finally:
            if before is not None:
                outputs.put_back(req.project, before, req.jobs, log)
        archive = write_archive(release, epoch)
    return {"release": str(release), "archive": str(archive), "variants": order, "targets": targets,
            "bytes_stored": manifest["size"]["stored"], "bytes_naive": manifest["size"]["naive"],
            "archive_bytes": archive.stat().st_size, "manifest": manifest}


def _build_and_lay_out(req: Request, fork, order, epoch, base, layout, log) -> tuple:
    from ..audit import audit_variant
    from ..policy.planner import requirements

    policy = base.policy
    for variant in order:
        build_variant(req, variant, policy, log)
    audits = {}
    for variant in order:
        result = audit_variant(variant, req.project)
        if not result.ok:
            raise Findings(f"variant {variant} is not clean, so it is not packaged: {result.findings[0].line()} "
                           f"({len(result.findings)} finding(s): amxforge audit --variant {variant})")
        audits[variant] = result
    from ..implementations import our_programs
    targets = our_programs(req.project / "kernels") + (list(req.fork_targets) if fork else [])
    from ..fork.kinds import kinds
    name = req.name or (kinds().package_name(fork.kind) if fork else "amxforge-kernels")
    version = req.version or (f"{__version__}+g{(_git(req.project, 'rev-parse', 'HEAD') or 'unknown')[:10]}")
    variants = {}
    for variant in order:
        ctx = variant_context(req, variant, policy)
        needs = requirements(policy, ctx.variant)
        seen = sorted(audits[variant].features_seen)
        beyond = set(seen) - set(needs["features"])
        if beyond:  # the audit checks each object against its class; this is the whole variant's promise
            raise Findings(f"variant {variant}: its objects use {', '.join(sorted(beyond))}, which its "
                           f"requirements do not list; it is not packaged")
        files = layout.add_variant(variant, req.project / "build" / variant, targets)
        level = policy.isa.psabi_level(needs["features"])
        hwcaps, why = layout.add_hwcaps(variant, level, needs["features"], policy.isa)
        variants[variant] = {
            "requires": needs, "audit_seen": seen, "psabi_level": level, "glibc_hwcaps": hwcaps,
            "glibc_hwcaps_why_not": why, "gpu": bool(ctx.variant.cuda), "cuda": ctx.gpu_needs(), "files": files,
            "flags": {cls: list(ctx.class_flags(cls)) for cls in policy.classes_for(ctx.variant)},
        }
    launcher = req.project / "build" / order[0] / "libexec" / "amxforge-launch"
    layout.add_selectors(launcher, targets)
    policy_hash = hashlib.sha256(json.dumps({v: d["flags"] for v, d in variants.items()},
                                            sort_keys=True).encode()).hexdigest()
    manifest = {
        "format": FORMAT,
        "package": {"name": name, "version": version},
        "source": {
            "amxforge": {"commit": _git(req.project, "rev-parse", "HEAD"),
                         "dirty": bool(_git(req.project, "status", "--porcelain", "--untracked-files=no"))},
            "fork": None if fork is None else {"kind": fork.kind, "commit": fork.commit, "dirty": fork.dirty,
                                               "targets": list(req.fork_targets), "kernels": req.fork_kernels},
        },
        "toolchain": {"amxforge": __version__, "compiler": {"family": base.compiler.family,
                                                            "version": base.compiler.version}},
        "policy_sha256": policy_hash,
        "source_date_epoch": epoch,
        "selection": order,
        "targets": targets,
        "variants": {v: {k: d[k] for k in d if k != "flags"} for v, d in variants.items()},
    }
    manifest.update(layout.finish(manifest, name, order, {v: variants[v]["requires"] for v in order},
                                  {v: variants[v]["cuda"] for v in order}))
    return layout.commit(req.force), manifest, targets
