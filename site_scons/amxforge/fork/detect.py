"""Which tree is this: the kinds of toolchain/forks.toml (ik_llama.cpp, its AMX branch, upstream llama.cpp,
upstream ggml, whisper.cpp), tried in order by their markers; its commit, the CMake options it declares that amxforge
sets or reads, and whether it declares the entry points our kernels would take. Anything else: one clear line."""

import os
import re
import subprocess
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..atomic import read_text, why
from ..errors import AmxforgeError
from .kinds import kinds

_COMMENT = re.compile(r"//[^\n]*|/\*.*?\*/", re.DOTALL)
_OPTION = re.compile(r"^\s*option\s*\(\s*([A-Z][A-Z0-9_]*)\b", re.MULTILINE)


@dataclass
class ForkInfo:
    root: Path
    kind: str
    commit: str = None
    options: list = field(default_factory=list)
    dirty: bool = None  # tracked files changed since the commit (None outside git)

    @property
    def spec(self):
        return kinds().kinds[self.kind]

    @property
    def src(self) -> Path:
        """The directory holding ggml's sources: ggml/src in llama.cpp-family trees, src in ggml itself."""
        return self.root / self.spec.ggml

    @property
    def has_amx_backend(self) -> bool:
        return bool(self.spec.amx_backend) and (self.src / self.spec.amx_backend).is_dir()

    def kernel_entries(self) -> dict:
        """Where our kernels can enter this tree (forks.toml), and which of its entry points the header declares."""
        spec = self.spec.kernels
        header = self.src / spec["header"]
        try:
            text = read_text(header)
        except OSError:
            text = ""
        text = _COMMENT.sub(" ", text)  # a name in a comment declares nothing
        declared = [e for e in spec["entries"] if re.search(rf"\b{re.escape(e)}\s*\(", text)]
        return {"route": spec["route"], "header": os.path.normpath(header),
                "declared": declared, "missing": [e for e in spec["entries"] if e not in declared]}

    def as_dict(self) -> dict:
        return asdict(self) | {"root": str(self.root), "description": self.spec.description}


def detect_fork(path, base=None) -> ForkInfo:
    """`path` as the user wrote it (messages repeat it); relative paths are taken from `base` (the project)."""
    from ..argv import refuse_control_characters
    refuse_control_characters(path, "fork=")
    root = Path(path).expanduser()
    if base is not None and not root.is_absolute():
        root = Path(base) / root
    if not root.exists():
        raise AmxforgeError(f"fork={path}: no such directory; point fork= at a checkout of "
                            f"{kinds().help_list()}")
    root = root.resolve()
    kind = kinds().identify(root, path)
    options = set()
    for rel in kind.option_files:
        cml = root / rel
        if cml.is_file():
            try:
                options.update(_OPTION.findall(read_text(cml)))
            except OSError as exc:
                raise AmxforgeError(f"fork={path}: {cml} cannot be read ({why(exc)})") from None
    commit, dirty = _git_state(root)
    return ForkInfo(root, kind.name, commit, sorted(options & kinds().read_options), dirty)


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
