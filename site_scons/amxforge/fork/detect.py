"""Which llama.cpp-family tree is this: ik_llama.cpp (ggml/src/iqk/), its AMX branch (an ik tree with
ggml/src/ggml-cpu/amx/), or upstream llama.cpp (ggml/src/ggml-cpu/ without iqk/). Anything else: one clear line."""

import re
import subprocess
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..errors import AmxforgeError

KINDS = {
    "ik_llama.cpp": "ik_llama.cpp (IQK kernels in ggml/src/iqk/)",
    "ik_llama.cpp+amx": "ik_llama.cpp AMX branch (ggml/src/iqk/ and ggml/src/ggml-cpu/amx/)",
    "llama.cpp": "upstream llama.cpp (ggml/src/ggml-cpu/)",
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

    @property
    def has_amx_backend(self) -> bool:
        return self.kind == "ik_llama.cpp+amx" or (self.root / "ggml/src/ggml-cpu/amx").is_dir()

    def as_dict(self) -> dict:
        return asdict(self) | {"root": str(self.root), "description": KINDS[self.kind]}


def detect_fork(path, base=None) -> ForkInfo:
    """`path` as the user wrote it (messages repeat it); relative paths are taken from `base` (the project)."""
    root = Path(path).expanduser()
    if base is not None and not root.is_absolute():
        root = Path(base) / root
    if not root.exists():
        raise AmxforgeError(f"fork={path}: no such directory; point fork= at a checkout of ik_llama.cpp or llama.cpp")
    root = root.resolve()
    if not (root / "CMakeLists.txt").is_file() or not (root / "ggml").is_dir():
        raise AmxforgeError(f"fork={path}: not a llama.cpp-family tree (no CMakeLists.txt and ggml/ at its top); "
                            f"point fork= at the checkout's root")
    src = root / "ggml" / "src"
    if (src / "iqk").is_dir():
        kind = "ik_llama.cpp+amx" if (src / "ggml-cpu" / "amx").is_dir() else "ik_llama.cpp"
    elif (src / "ggml-cpu").is_dir():
        kind = "llama.cpp"
    else:
        raise AmxforgeError(f"fork={path}: a ggml tree, but neither ggml/src/iqk/ (ik_llama.cpp) nor "
                            f"ggml/src/ggml-cpu/ (llama.cpp): not a tree amxforge knows how to build")
    options = set()
    for cml in (root / "CMakeLists.txt", root / "ggml" / "CMakeLists.txt", src / "CMakeLists.txt"):
        if cml.is_file():
            options.update(_OPTION.findall(cml.read_text(errors="replace")))
    return ForkInfo(root, kind, _git_commit(root), sorted(o for o in options if o in KNOWN_OPTIONS))


def _git_commit(root: Path):
    """HEAD of the checkout whose top level is `root` (not of a repository that merely contains it)."""
    try:
        out = subprocess.run(["git", "-C", str(root), "rev-parse", "--show-toplevel", "HEAD"], capture_output=True,
                             text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    lines = out.stdout.split()
    if out.returncode != 0 or len(lines) != 2 or Path(lines[0]).resolve() != root:
        return None
    return lines[1]
