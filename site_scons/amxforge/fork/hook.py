"""fork_kernels=amxforge: our kernels inside a fork's binaries, its tree untouched (issue 20).

The route is the linker's: amxforge's shim is also the fork's linker launcher, and adds to every link
-Wl,--wrap=<entry> for each entry of the kind's `wrap` list (toolchain/forks.toml) and our handler's archive
(build/VARIANT/lib/libamxforge_hook.a: kernels/hook/ and the kernel library, position-independent, compiled under
the variant's class policy like every unit of ours). ld then sends every call of the entry made from another object
file (ggml.c's mul_mat calling iqk_mul_mat_4d) to __wrap_<entry>, which runs our kernels where the handler takes the
call and the fork's own function otherwise. Why the linker and not the fork's sources, a preload or a backend: no
line of the fork changes (its git status stays clean), nothing is loaded by name at run time (a release runs where
it is copied), and ik_llama.cpp has no backend registry to load one through. Trees that have one take the
backend route instead (fork/backend.py).

The proof, after every build: each binary and library the build installs that names an entry (defines or calls it)
must define __wrap_<entry>, and every call or jump to the entry in its code must sit inside __wrap_<entry> (objdump);
anything else is one line naming the file and the function that calls around the handler, and nothing is installed."""

import hashlib
import re
import subprocess
from pathlib import Path

from .. import atomic
from ..audit import binutil
from ..errors import AmxforgeError

CHOICES = ("fork", "amxforge")  # fork_kernels=: the fork's own kernels, or ours through the handler
HOOK_ARCHIVE = "libamxforge_hook.a"  # kernels/SConscript builds it into build/VARIANT/lib/
STAMP = "amxforge-hook.json"    # in the fork's work dir: the archive the last good link used, and what it linked


def check_choice(value: str) -> str:
    if value not in CHOICES:
        raise AmxforgeError(f"fork_kernels={value!r}: give fork (the fork's own kernels) or amxforge (ours, through "
                            f"the matmul handler)")
    return value


class LinkWrap:
    """The link-wrap route for one fork build: what the shim adds to links, and the proof that it happened."""

    def __init__(self, fork, archive: Path, work_dir: Path):
        spec = fork.spec.kernels
        entries = fork.kernel_entries()
        self.symbols = list(spec["wrap"])
        missing = [s for s in self.symbols if s not in entries["declared"]]
        if missing:
            raise AmxforgeError(f"fork_kernels=amxforge: {fork.root} does not declare {missing[0]} in "
                                f"{entries['header']} (the entry our handler wraps); build it with fork_kernels=fork")
        self.archive, self.work_dir = Path(archive), Path(work_dir)

    def records(self, archive_path: str) -> list:
        """The shim's link records: the entries to wrap, and what the links get after their own arguments (the
        archive, hiding its symbols; OpenMP and libm, which our kernels use)."""
        return [["wrap", *self.symbols],
                ["link_add", archive_path, f"-Wl,--exclude-libs,{self.archive.name}", "-fopenmp", "-lm", "-lpthread"]]

    # --- relinking when our archive changes (ninja does not see it: it is not among the links' inputs) ------
    def archive_digest(self) -> str:
        try:
            return hashlib.sha256(self.archive.read_bytes()).hexdigest()
        except OSError as exc:
            raise AmxforgeError(f"{self.archive} cannot be read ({exc.strerror}): build the variant's kernels "
                                f"first") from None

    def before_build(self, log) -> None:
        """Outputs linked with another archive than today's are removed, so that ninja links them again."""
        try:
            stamp = atomic.read_json(self.work_dir / STAMP, "hook stamp")
        except (FileNotFoundError, AmxforgeError):
            return
        if stamp.get("archive_sha256") == self.archive_digest():
            return
        gone = [p for p in stamp.get("outputs", []) if Path(p).is_file()]
        for path in gone:
            Path(path).unlink()
        if gone:
            log(f"amxforge: our kernels' archive changed: linking {len(gone)} fork binaries/libraries again")

    def after_build(self, proven: dict, digest: str) -> None:
        atomic.write_json(self.work_dir / STAMP, {"archive_sha256": digest, "outputs": sorted(proven)})

    # --- the proof ----------------------------------------------------------------------------------------
    def prove(self, files) -> dict:
        """{file: {"wrapped": [entries]}} for each ELF among `files` that names an entry; an error naming the first
        file where a call goes around the handler, or where nothing of the tree defines or calls an entry."""
        proven, named = {}, set()
        for path in files:
            state = wrap_state(Path(path), self.symbols)
            if state is None:
                continue
            for symbol, problem in state.items():
                named.add(symbol)
                if problem:
                    raise AmxforgeError(f"fork_kernels=amxforge: {path}: {problem}; nothing was installed, the last "
                                        f"good build is untouched")
            proven[str(path)] = {"wrapped": sorted(state)}
        unnamed = [s for s in self.symbols if s not in named]
        if unnamed:
            raise AmxforgeError(f"fork_kernels=amxforge: no binary or library built from the targets defines or calls "
                                f"{unnamed[0]} (the entry our handler wraps): the tree lacks it; build it with "
                                f"fork_kernels=fork")
        return proven


# a call or jump to a function's start (a branch inside a function shows as <name+0x..>)
_CALL = re.compile(r"^\s*[0-9a-f]+:\s+(?:call|jmp)\w*\s+[0-9a-f]+ <([^>+@]+)(?:@plt)?>")
_FUNC = re.compile(r"^[0-9a-f]+ <([^>]+)>:$")


def _symbols(path: Path, *flags) -> set:
    res = subprocess.run([binutil("nm"), *flags, str(path)], capture_output=True, text=True)
    return {line.split()[-1] for line in res.stdout.splitlines() if line.split()} if res.returncode == 0 else set()


def wrap_state(path: Path, symbols: list):
    """None when `path` is no ELF or names none of `symbols`; else {symbol: None (wrapped) or the problem}."""
    try:
        with open(path, "rb") as f:
            if f.read(4) != b"\x7fELF":
                return None
    except OSError:
        return None
    dynamic = _symbols(path, "-D")
    static = _symbols(path)
    named = [s for s in symbols if s in dynamic or s in static]
    if not named:
        return None
    state = {s: None for s in named}
    for s in named:
        if f"__wrap_{s}" not in static:
            state[s] = (f"names {s} but has no __wrap_{s}: it was linked without our handler (a link outside "
                        f"amxforge's linker launcher?)" if static else f"names {s} and has no symbol table "
                        f"(stripped): the wrap cannot be proven")
    if any(state.values()):
        return state
    # every call or jump to an entry must be the handler's own fallback, inside __wrap_<entry>
    from ..children import reaped
    func = None
    with reaped(subprocess.Popen([binutil("objdump"), "-d", "--no-show-raw-insn", str(path)], stdout=subprocess.PIPE,
                                 text=True, errors="replace")) as proc:
        for line in proc.stdout:
            m = _FUNC.match(line)
            if m:
                func = m.group(1)
                continue
            m = _CALL.match(line)
            if m and m.group(1) in state and func not in (f"__wrap_{m.group(1)}", m.group(1)) and \
                    state[m.group(1)] is None:
                state[m.group(1)] = f"{func} calls {m.group(1)} around our handler (not through __wrap_{m.group(1)})"
    proc.wait()
    return state
