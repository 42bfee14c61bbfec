"""fork_kernels=amxforge on a tree with a backend registry (upstream ggml, llama.cpp, whisper.cpp; issue 21): our
kernels as a dynamic ggml backend, libggml-amxforge.so, built by kernels/SConscript from kernels/backend/ against
the tree's own headers (its public include directory and the backend interface, ggml-backend-impl.h, beside its
sources) with the variant's class flags, and installed into build/VARIANT/lib/ beside the tree's libraries. ggml's
loader takes it from GGML_BACKEND_PATH (or ggml_backend_load); the tree itself is built as it is, untouched.

The checks: the tree declares the loader (the kind's `entries` in its header) and has the interface header, else
one line naming what is missing; after the build, the library exports what the loader looks up."""

import hashlib
import subprocess
from pathlib import Path

from ..audit import binutil
from ..errors import AmxforgeError

LIBRARY = "libggml-amxforge.so"  # in build/VARIANT/lib/
INTERFACE = "ggml-backend-impl.h"  # the backend interface, in the tree's ggml source directory
EXPORTS = ("ggml_backend_init", "ggml_backend_score")  # what ggml's loader looks up in a backend library
DEFINES = ("GGML_BACKEND_DL", "GGML_BACKEND_BUILD", "GGML_BACKEND_SHARED")  # a backend library, built as ggml's are
LOADER_VARIABLE = "GGML_BACKEND_PATH"  # the library ggml's loader opens besides its own


def launcher_env(variant: str, has_library: bool) -> list:
    """The launch table's env lines for a variant (none unless its lib/ holds our backend library): the launcher
    points GGML_BACKEND_PATH at that library where the caller has not, so the variant it picks is also the
    implementation the backend runs."""
    return [(variant, LOADER_VARIABLE, f"lib/{LIBRARY}")] if has_library else []


class DynamicBackend:
    """The backend route for one tree: where its headers are, and the proof that the library is a loadable backend."""

    def __init__(self, fork, library: Path):
        entries = fork.kernel_entries()
        if entries["missing"]:
            raise AmxforgeError(f"fork_kernels=amxforge: {fork.root} does not declare {entries['missing'][0]} in "
                                f"{entries['header']} (the loader our backend library needs); build it with "
                                f"fork_kernels=fork")
        interface = fork.src / INTERFACE
        if not interface.is_file():
            raise AmxforgeError(f"fork_kernels=amxforge: {fork.root} has no {interface.relative_to(fork.root)} (the "
                                f"backend interface our library implements); build it with fork_kernels=fork")
        self.fork, self.library = fork, Path(library)
        self.include_dirs = [Path(entries["header"]).parent, fork.src]

    def record(self, project_dir: Path) -> dict:
        """What the build record says of the library; an error when it is missing or exports less than the loader
        needs."""
        try:
            data = self.library.read_bytes()
        except OSError as exc:
            raise AmxforgeError(f"{self.library} cannot be read ({exc.strerror}): build the variant's kernels "
                                f"first") from None
        res = subprocess.run([binutil("nm"), "-D", "--defined-only", str(self.library)], capture_output=True, text=True)
        exported = {line.split()[-1] for line in res.stdout.splitlines() if line.split()}
        missing = [s for s in EXPORTS if s not in exported]
        if missing:
            raise AmxforgeError(f"fork_kernels=amxforge: {self.library} does not export {missing[0]}: ggml's loader "
                                f"would refuse it; nothing was installed, the last good build is untouched")
        return {"choice": "amxforge", "route": "backend",
                "library": self.library.relative_to(project_dir).as_posix(),
                "sha256": hashlib.sha256(data).hexdigest(), "exports": list(EXPORTS),
                "load": f"{LOADER_VARIABLE}={self.library.name} (beside the tree's libraries)"}
