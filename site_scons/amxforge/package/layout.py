"""The release tree of `amxforge package`, built in a hidden staging directory beside --out and renamed into place
only when it is complete."""

import json
import os
import shutil
import zlib
from pathlib import Path

from .. import atomic
from ..errors import AmxforgeError
from ..fork.backend import LIBRARY as BACKEND_LIBRARY, launcher_env
from ..launchtable import launch_table

TABLE = "share/amxforge/launch.tsv"
HWCAPS_LEVELS = ("x86-64-v2", "x86-64-v3", "x86-64-v4")  # the glibc-hwcaps subdirectories glibc (>= 2.33) knows


class Layout:
    def __init__(self, out: Path, epoch: int):
        self.out = out.resolve()
        self.epoch = epoch
        self.stage = self.out.parent / f".{self.out.name}.staging-{os.getpid()}"

    def begin(self) -> None:
        """The staging directory, made beside --out (a place that cannot be written fails here, before any work)."""
        for stale in self.out.parent.glob(f".{self.out.name}.staging-*"):
            shutil.rmtree(stale, ignore_errors=True)  # an interrupted run's leftovers: never a release
        try:
            self.stage.mkdir()
        except OSError as exc:
            raise AmxforgeError(f"--out {self.out}: cannot write in {self.out.parent} ({exc.strerror}); choose a "
                                f"writable place for the release") from None

    def _copy(self, src: Path, rel: str) -> None:
        if not src.is_file():
            raise AmxforgeError(f"{src} is missing: build the variant again (scons variant=...)")
        dest = self.stage / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, dest)
        dest.chmod(0o755 if os.access(src, os.X_OK) else 0o644)

    def add_variant(self, variant: str, build: Path, targets) -> list:
        """variants/<v>/libexec/<target> and variants/<v>/lib/*: every shared library the build installed (not the
        static archive fork_kernels=amxforge links into the fork's libraries: nothing loads it at run time)."""
        rels = []
        for target in targets:
            rels.append(f"variants/{variant}/libexec/{target}")
            self._copy(build / "libexec" / target, rels[-1])
        for lib in sorted((build / "lib").iterdir()):
            if lib.is_file() and lib.suffix != ".a":
                rels.append(f"variants/{variant}/lib/{lib.name}")
                self._copy(lib, rels[-1])
        return rels

    def add_hwcaps(self, variant: str, level, features, isa):
        """lib/glibc-hwcaps/<level>/ gets the variant's libraries when all it requires is within a psABI level (the
        manifest decides, not the variant's name); returns (dir or None, why not)."""
        if level not in HWCAPS_LEVELS:
            v4 = set(isa.levels["x86-64-v4"].features)
            beyond = sorted(set(features) - v4)
            return None, (f"needs {' '.join(beyond)}, beyond x86-64-v4 (the last glibc-hwcaps level): left to the "
                          f"selector")
        folder = f"lib/glibc-hwcaps/{level}"
        if (self.stage / folder).exists():
            return None, f"{folder} already holds a variant with the same level: left to the selector"
        for lib in sorted((self.stage / "variants" / variant / "lib").iterdir()):
            self._copy(lib, f"{folder}/{lib.name}")
        return folder, None

    def add_selectors(self, launcher: Path, targets) -> None:
        for target in targets:
            self._copy(launcher, f"bin/{target}")
            (self.stage / "bin" / target).chmod(0o755)

    def finish(self, manifest: dict, name: str, order, requires: dict, gpu: dict) -> dict:
        """gpu: {variant: its gpu_needs, or None}."""
        """Identical files stored once (hard links), the launch table and manifest.json written, modes and times
        fixed. Returns what the manifest adds: the file list and the sizes."""
        first_of, files, naive, stored = {}, [], 0, 0
        for path in sorted(p for p in self.stage.rglob("*") if p.is_file()):
            rel = path.relative_to(self.stage).as_posix()
            digest, size = atomic.file_sha256(path), path.stat().st_size
            naive += size
            entry = {"path": rel, "sha256": digest, "size": size}
            if digest in first_of:  # the same bytes again: a hard link to the first copy
                path.unlink()
                os.link(self.stage / first_of[digest], path)
                entry["link"] = first_of[digest]
            else:
                first_of[digest] = rel
                stored += size
            files.append(entry)
        extra = {"files": files, "size": {"naive": naive, "stored": stored}}
        text = json.dumps(manifest | extra, indent=2, sort_keys=True) + "\n"
        atomic.write_text(self.stage / "manifest.json", text)
        by_variant = {v: [f for f in files if f["path"].startswith(f"variants/{v}/")] for v in order}
        table = launch_table([(v, f"variants/{v}", requires[v]["features"], gpu[v]) for v in order],
                             package=name,
                             files=[(v, f["path"], f["size"], atomic.file_crc32(self.stage / f["path"])) for v in order
                                    for f in by_variant[v]],
                             manifest=("manifest.json", f"{zlib.crc32(text.encode()):08x}"),
                             env=[e for v in order for e in launcher_env(
                                 v, any(f["path"] == f"variants/{v}/lib/{BACKEND_LIBRARY}" for f in by_variant[v]))])
        (self.stage / TABLE).parent.mkdir(parents=True, exist_ok=True)
        atomic.write_text(self.stage / TABLE, table)
        for path in sorted(self.stage.rglob("*"), reverse=True):
            if path.is_dir():
                path.chmod(0o755)
            os.utime(path, (self.epoch, self.epoch), follow_symlinks=False)
        os.utime(self.stage, (self.epoch, self.epoch))
        return extra

    def commit(self, force: bool) -> Path:
        from .outputs import is_release
        if self.out.exists():
            if not force:
                raise AmxforgeError(f"--out {self.out} appeared while packaging; add --force to replace it")
            if any(self.out.iterdir()) and not is_release(self.out):
                raise AmxforgeError(f"--out {self.out} filled with files that are not an amxforge release while "
                                    f"packaging; it is left as it is: choose a new directory")
            old = self.out.parent / f".{self.out.name}.old-{os.getpid()}"
            os.rename(self.out, old)
            os.rename(self.stage, self.out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(self.stage, self.out)
        return self.out

    def abandon(self) -> None:
        shutil.rmtree(self.stage, ignore_errors=True)


def verify_release(release: Path) -> dict:
    """A whole release against its manifest: every file there, of its size and SHA-256; the launch table sealed and
    listing what the manifest lists. {"files": n, "bad": ["path: why", ...]}; AmxforgeError when it is no release."""
    from .outputs import release_manifest
    release = Path(release)
    manifest = release_manifest(release)
    bad = []
    for entry in manifest.get("files", []):
        path = release / entry["path"]
        try:
            if path.stat().st_size != entry["size"]:
                bad.append(f"{entry['path']}: {path.stat().st_size} bytes, the manifest says {entry['size']}")
            elif atomic.file_sha256(path) != entry["sha256"]:
                bad.append(f"{entry['path']}: its SHA-256 differs from the manifest's")
        except OSError as exc:
            bad.append(f"{entry['path']}: {atomic.why(exc)}")
    table = atomic.read_text(release / TABLE)
    body, _, end = table.rstrip("\n").rpartition("\n")
    body += "\n"
    if end != f"end\t{body.count(chr(10))}\t{zlib.crc32(body.encode()):08x}":
        bad.append(f"{TABLE}: its end line does not match the lines before it")
    listed = {line.split("\t")[2] for line in body.splitlines() if line.startswith("file\t")}
    wanted = {e["path"] for e in manifest.get("files", []) if e["path"].startswith("variants/")}
    for path in sorted(wanted - listed):
        bad.append(f"{TABLE}: no file line for {path}")
    return {"files": len(manifest.get("files", [])), "bad": bad}
