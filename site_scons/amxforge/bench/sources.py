"""Where `amxforge bench fork` takes its binaries from (a Source): BuiltTree, a fork tree built through the normal
build, its installed part copied aside so that two trees built into one build/VARIANT run side by side; Release, an
`amxforge package` release run through its selector with AMXFORGE_VARIANT."""

import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import AmxforgeError
from .forktools import bench_tools, tool_targets


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
    fork_kernels = "fork"  # amxforge: linked with our handler (serves both --kernels columns)
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
        cmd = scons_command(variant, str(self.path), targets, jobs, fork_kernels=self.fork_kernels)
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
    from ..package.outputs import release_manifest
    manifest = release_manifest(path, "--package ")
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
