"""A reproducible archive of a release directory: the same tree gives the same bytes, wherever and whenever it is
written. Sorted names, owner and group 0 without names, every mtime SOURCE_DATE_EPOCH, hard links kept as links (so
files shared by variants are stored once), gzip without a file name or time stamp."""

import gzip
import os
import tarfile
from pathlib import Path



def _normalize(info: tarfile.TarInfo, epoch: int) -> tarfile.TarInfo:
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    info.mtime = epoch
    info.mode = 0o755 if info.isdir() or info.mode & 0o111 else 0o644
    return info


def write_archive(release: Path, epoch: int) -> Path:
    """<release>.tar.gz next to the release directory, written atomically; its top folder is the release's name."""
    release = Path(release)
    target = release.parent / f"{release.name}.tar.gz"
    tmp = release.parent / f".{release.name}.tar.gz.{os.getpid()}.tmp"
    try:
        with open(tmp, "wb") as raw:
            with gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0, compresslevel=9) as gz:
                with tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar:
                    paths = [release] + sorted(release.rglob("*"), key=lambda p: p.relative_to(release).as_posix())
                    for path in paths:
                        arcname = Path(release.name, path.relative_to(release)).as_posix() if path != release \
                            else release.name
                        info = _normalize(tar.gettarinfo(str(path), arcname), epoch)
                        if info.isreg():
                            with open(path, "rb") as handle:
                                tar.addfile(info, handle)
                        else:
                            tar.addfile(info)
            raw.flush()
            os.fsync(raw.fileno())
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return target
