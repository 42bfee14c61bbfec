"""Which llama.cpp-family tree is this: ik_llama.cpp (ggml/src/iqk/), its AMX branch (an ik tree with
ggml/src/ggml-cpu/amx/), upstream llama.cpp (ggml/src/ggml-cpu/ without iqk/), or upstream ggml itself (ggml-org/ggml:
src/ggml-cpu/ at the top, the ggml that llama.cpp vendors). Anything else: one clear line."""

import re
import subprocess
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..atomic import read_text, why
from ..errors import AmxforgeError

KINDS = {
    "ik_llama.cpp": "ik_llama.cpp (IQK kernels in ggml/src/iqk/)",
    "ik_llama.cpp+amx": "ik_llama.cpp AMX branch (ggml/src/iqk/ and ggml/src/ggml-cpu/amx/)",
    "llama.cpp": "upstream llama.cpp (ggml/src/ggml-cpu/)",
    "ggml": "upstream ggml (src/ggml-cpu/ at the top)",
}
# CMake options amxforge sets or reads when the tree declares them.
KNOWN_OPTIONS = ("GGML_NATIVE", "GGML_AVX512", "GGML_AMX", "GGML_AMX_TILE", "GGML_AMX_INT8", "GGML_AMX_BF16",
                 "GGML_CUDA", "GGML_CCACHE", "GGML_IQK_FA_ALL_QUANTS", "GGML_CPU_ALL_VARIANTS", "GGML_BACKEND_DL")
_OPTION = re.compile(r"^\s*option\s*\(\s*(GGML_[A-Z0-9_]+)\b", re.MULTILINE)


@dataclass
class ForkInfo:
    root: Path
    kind: str
    commit: str = None
    options: list = field(default_factory=list)
    dirty: bool = None  # tracked files changed since the commit (None outside git)

    @property
    def src(self) -> Path:
        """The directory holding ggml's sources: ggml/src in llama.cpp-family trees, src in ggml itself."""
        return self.root / ("src" if self.kind == "ggml" else "ggml/src")

    @property
    def has_amx_backend(self) -> bool:
        return self.kind == "ik_llama.cpp+amx" or (self.src / "ggml-cpu" / "amx").is_dir()

    def as_dict(self) -> dict:
        return asdict(self) | {"root": str(self.root), "description": KINDS[self.kind]}


def detect_fork(path, base=None) -> ForkInfo:
    """`path` as the user wrote it (messages repeat it); relative paths are taken from `base` (the project)."""
    from ..argv import refuse_control_characters
    refuse_control_characters(path, "fork=")
    root = Path(path).expanduser()
    if base is not None and not root.is_absolute():
        root = Path(base) / root
    if not root.exists():
        raise AmxforgeError(f"fork={path}: no such directory; point fork= at a checkout of ik_llama.cpp or llama.cpp")
    root = root.resolve()
    kind, src = _kind(root, path)
    options = set()
    for cml in (root / "CMakeLists.txt", root / "ggml" / "CMakeLists.txt", src / "CMakeLists.txt",
                src / "ggml-cpu" / "CMakeLists.txt"):
        if cml.is_file():
            try:
                options.update(_OPTION.findall(read_text(cml)))
            except OSError as exc:
                raise AmxforgeError(f"fork={path}: {cml} cannot be read ({why(exc)})") from None
    commit, dirty = _git_state(root)
    return ForkInfo(root, kind, commit, sorted(o for o in options if o in KNOWN_OPTIONS), dirty)


def _kind(root: Path, path):
    """(kind, the directory holding ggml's sources) of the tree at root."""
    if (root / "CMakeLists.txt").is_file() and (root / "src" / "ggml-cpu").is_dir() and \
            (root / "include" / "ggml.h").is_file():
        return "ggml", root / "src"
    if not (root / "CMakeLists.txt").is_file() or not (root / "ggml").is_dir():
        raise AmxforgeError(f"fork={path}: not a llama.cpp-family tree (no CMakeLists.txt and ggml/ at its top, nor "
                            f"ggml's own src/ggml-cpu/); point fork= at the checkout's root")
    src = root / "ggml" / "src"
    if (src / "iqk").is_dir():
        return ("ik_llama.cpp+amx" if (src / "ggml-cpu" / "amx").is_dir() else "ik_llama.cpp"), src
    if (src / "ggml-cpu").is_dir():
        return "llama.cpp", src
    raise AmxforgeError(f"fork={path}: a ggml tree, but neither ggml/src/iqk/ (ik_llama.cpp) nor "
                        f"ggml/src/ggml-cpu/ (llama.cpp): not a tree amxforge knows how to build")


def _git_state(root: Path):
    """(HEAD, whether tracked files have local changes) of the checkout whose top level is `root` (not of a repository
    that merely contains it); (None, None) outside git."""
    try:
        out = subprocess.run(["git", "-C", str(root), "rev-parse", "--show-toplevel", "HEAD"], capture_output=True,
                             text=True, timeout=10)
        lines = out.stdout.split()
        if out.returncode != 0 or len(lines) != 2 or Path(lines[0]).resolve() != root:
            return None, None
        status = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                                capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None, None
    return lines[1], bool(status.stdout.strip()) if status.returncode == 0 else None
