"""The outputs `amxforge package` owns, and only those: --out may name a new or empty directory or an earlier release
(recognised by its manifest and launch table), never the project, the fork tree, an ancestor of either, build/, a
directory holding .git, / or $HOME. One package run per --out at a time (a lock beside it). The user's own fork
builds that packaging replaces in build/VARIANT/ are put back afterwards."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from ..errors import AmxforgeError
from ..locks import hold

LOCK_SUFFIX = ".amxforge-package.lock"
MIN_FREE = 64 << 20  # bytes a release of our kernels alone needs, tree and archive


def _manifest(path: Path):
    """The manifest of an earlier `amxforge package` release (one with its format, package and selector's table), or
    None where `path` is no release."""
    try:
        from ..atomic import read_text
        manifest = json.loads(read_text(path / "manifest.json"))
    except (OSError, ValueError):
        return None
    if (isinstance(manifest, dict) and "format" in manifest and "package" in manifest and
            (path / "share" / "amxforge" / "launch.tsv").is_file()):
        return manifest
    return None


def is_release(path: Path) -> bool:
    """An earlier `amxforge package` release: its manifest (format and package) and its selector's table."""
    return _manifest(path) is not None


def release_manifest(path: Path, what: str = "") -> dict:
    """The manifest of the release at `path`, read once; AmxforgeError in one line where it is no release (`what`: the
    option that named it, e.g. '--package ')."""
    manifest = _manifest(path)
    if manifest is None:
        raise AmxforgeError(f"{what}{path}: not an amxforge release (no manifest.json and share/amxforge/launch.tsv); "
                            f"give the directory `amxforge package --out` wrote")
    return manifest


def refuse_unsafe_out(out: Path, project: Path, fork_root: Path = None) -> None:
    """Places --out must never name, whatever is in them and whatever --force says."""
    out = Path(out).resolve()
    project = Path(project).resolve()
    home = Path(os.path.expanduser("~")).resolve()
    what = None
    if out == Path(out.anchor):
        what = "the root directory"
    elif out == home:
        what = "your home directory"
    elif out == project or out in project.parents:
        what = "the amxforge project" if out == project else f"an ancestor of the amxforge project ({project})"
    elif out == project / "build":
        what = "amxforge's build directory"
    elif out.parent == project / "build" and (out / ".lock").exists():
        what = "a variant's build directory"
    elif fork_root is not None and (out == fork_root or out in Path(fork_root).parents):
        what = f"the fork tree ({fork_root})" if out == fork_root else f"an ancestor of the fork tree ({fork_root})"
    elif (out / ".git").exists():
        what = "a directory holding .git (a checkout)"
    if what:
        raise AmxforgeError(f"--out {out} is {what}: amxforge replaces only an empty directory or an earlier release; "
                            f"choose a new directory, e.g. --out {project / 'build' / 'release'}")


def check_out(out: Path, force: bool) -> None:
    """--out is new, empty, or an earlier release (replaced only with --force); its parent exists."""
    out = Path(out)
    if out.is_symlink() or (out.exists() and not out.is_dir()):
        raise AmxforgeError(f"--out {out} exists and is not a directory; choose a new directory")
    if out.is_dir() and any(out.iterdir()):
        if not is_release(out):
            raise AmxforgeError(f"--out {out} holds files that are not an amxforge release; amxforge replaces only "
                                f"an empty directory or an earlier release: choose a new directory")
        if not force:
            raise AmxforgeError(f"--out {out} holds an earlier release; add --force to replace it, or choose a new "
                                f"directory")


class OutLock:
    """One package run per --out: `.<name>.amxforge-package.lock` beside it (its parent made if missing), held for
    the run."""

    def __init__(self, out: Path, log=print):
        self.out = Path(out)
        self.path = self.out.parent / f".{self.out.name}{LOCK_SUFFIX}"
        self.log = log
        self.handle = None

    def __enter__(self):
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.handle = hold(self.path, lambda pid: f"amxforge: package: another package run (pid {pid}) writes "
                                                      f"{self.out}; waiting for it to finish", self.log)
        except OSError as exc:
            raise AmxforgeError(f"--out {self.path.parent}: cannot write there ({exc.strerror}); choose a writable "
                                f"place for the release") from None
        return self

    def __exit__(self, *exc):
        self.handle.close()


def check_space(where: Path, project: Path, variants) -> None:
    """Enough free space beside --out for the release and its archive: twice what the variants' current builds
    install (at least MIN_FREE)."""
    installed = 0
    for variant in variants:
        for sub in ("libexec", "lib"):
            folder = Path(project) / "build" / variant / sub
            if folder.is_dir():
                installed += sum(p.stat().st_size for p in folder.iterdir() if p.is_file())
    need = max(MIN_FREE, 2 * installed)
    free = shutil.disk_usage(where).free
    if free < need:
        raise AmxforgeError(f"--out {where}: {free >> 20} MiB free there, the release needs about {need >> 20} MiB; "
                            f"free some space or choose another --out")


# --- the user's own fork builds ---------------------------------------------------------------------------------
def fork_builds(project: Path, variants) -> dict:
    """{variant: (fork root, targets, cc, cxx, cuda archs, fork_kernels)} of the fork build each variant holds now
    (None: none)."""
    from ..fork.record import last_good
    out = {}
    for variant in variants:
        record = last_good(Path(project) / "build" / variant)
        if record is None:
            out[variant] = None
            continue
        compilers = record.get("compilers") or {}
        out[variant] = (record["fork"]["root"], tuple(record["targets"]), compilers.get("cc"), compilers.get("cxx"),
                        ";".join(record.get("cuda_archs") or ()), (record.get("kernels") or {}).get("choice", "fork"))
    return out


def put_back(project: Path, before: dict, jobs, log) -> None:
    """Rebuild (a ninja no-op where nothing changed) the fork builds that packaging replaced or removed."""
    from . import scons_command
    now = fork_builds(project, before)
    for variant, was in before.items():
        if was is None or now.get(variant) == was:
            continue
        root, targets, cc, cxx, archs, kernels = was
        cmd = scons_command(variant, root, targets, jobs, archs or None, kernels) + [f"CC={cc}"] * bool(cc) + \
            [f"CXX={cxx}"] * bool(cxx)
        log(f"amxforge: package: putting back build/{variant}'s fork build ({root}, {', '.join(targets)})")
        res = subprocess.run(cmd, cwd=project, stdout=sys.stderr, stderr=sys.stderr)
        if res.returncode != 0:
            log(f"amxforge: warning: package: build/{variant}'s fork build could not be put back (scons exit "
                f"{res.returncode}); rebuild it: scons variant={variant} fork={root} fork_targets={','.join(targets)}")
