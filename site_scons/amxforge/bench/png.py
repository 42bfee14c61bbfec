"""The PNGs the bench commands draw: matplotlib (Agg, no display) and the place are checked before the benchmark, so
that its result is not lost at the end to a missing directory or a FIFO; the file is written atomically."""

import importlib.util
import io
from pathlib import Path

from .. import atomic
from ..errors import AmxforgeError

INSTALL = "pip install -e '.[bench]'"


def available() -> bool:
    return importlib.util.find_spec("matplotlib") is not None


def check(path: Path, option: str = "--plot") -> None:
    """One line unless matplotlib is installed and `path` names a .png that can be written (absent or a regular file,
    in a directory where a file can be made): a PNG under another name (x.jpg) would mislead whoever opens it."""
    if not available():
        raise AmxforgeError(f"{option} needs matplotlib: {INSTALL}")
    if path.suffix.lower() != ".png":
        raise AmxforgeError(f"{option} {path}: the plot is a PNG; give a path ending in .png, e.g. "
                            f"{path.with_name(path.stem + '.png') if path.name else 'plot.png'}")
    atomic.require_writable(path, option, "a .png path in an existing, writable directory")


def pyplot():
    if not available():
        raise AmxforgeError(f"the plot needs matplotlib: {INSTALL}")
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def save(fig, path: Path, dpi: int) -> None:
    """The figure as a PNG at `path`, written atomically; the figure is closed."""
    data = io.BytesIO()
    fig.savefig(data, format="png", dpi=dpi)
    pyplot().close(fig)
    atomic.write_bytes(path, data.getvalue())
