"""The kernel library's implementations and element types, from toolchain/kernels.toml: the one table that the
generated C header (dispatch, kbench, selftest), the ctypes binding, the benchmark and the tests read."""

from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from .errors import AmxforgeError
from .paths import toolchain_dir
from .tomlfile import load_toml


@dataclass(frozen=True)
class Dtype:
    name: str
    id: int
    elem_bytes: int
    group: int  # k values per 32-bit group

    @property
    def tile_k(self) -> int:
        """k values a 16-row tile spans (a tile row is 16 columns x one group)."""
        return 16 * self.group

    @property
    def mask_bytes(self) -> int:
        """Bytes of a sparse tile-row mask: one bit per value of the row."""
        return 16 * self.group // 8


@dataclass(frozen=True)
class Implementation:
    name: str
    id: int  # 1-based, in dispatch preference order (0 means "best")
    needs: tuple
    units: tuple
    bench: bool
    peak: dict = field(default_factory=dict)

    @property
    def bit(self) -> int:
        return 1 << (self.id - 1)


class KernelTable:
    def __init__(self, path: Path = None, isa=None):
        self.path = Path(path or toolchain_dir() / "kernels.toml")
        data = load_toml(self.path)
        where = self.path.name
        try:
            self.dtypes = {name: Dtype(name, int(rec["id"]), int(rec["elem_bytes"]), int(rec["group"]))
                           for name, rec in data["dtypes"].items()}
            rows = data["implementations"]
            self.hook = dict(data.get("hook", {"sparse_min": 0.5}))  # the matmul handler's settings
        except (KeyError, TypeError, ValueError) as exc:
            raise AmxforgeError(f"{self.path}: needs [dtypes.NAME] (id, elem_bytes, group) and "
                                f"[[implementations]] ({exc})") from None
        self.implementations = []
        for i, rec in enumerate(rows):
            name = rec.get("name")
            if not isinstance(name, str) or not name.isidentifier():
                raise AmxforgeError(f"{where} implementations[{i}]: name {name!r} must be a C identifier")
            if not rec.get("units"):
                raise AmxforgeError(f"{where} [{name}]: lists no units (the C files with its entry points)")
            unknown = set(rec) - {"name", "needs", "units", "bench", "peak"}
            if unknown:
                raise AmxforgeError(f"{where} [{name}]: unknown key(s) {', '.join(sorted(unknown))}")
            needs = tuple(isa.expand(rec.get("needs", []), f"{where} [{name}] needs") if isa else rec.get("needs", []))
            peak = dict(rec.get("peak", {}))
            bad = set(peak) - set(self.dtypes)
            if bad:
                raise AmxforgeError(f"{where} [{name}]: peak names unknown dtype(s) {', '.join(sorted(bad))}")
            self.implementations.append(Implementation(name, i + 1, needs, tuple(rec["units"]),
                                                       bool(rec.get("bench", True)), peak))
        names = [impl.name for impl in self.implementations]
        if len(set(names)) != len(names) or not names:
            raise AmxforgeError(f"{where}: implementation names must be unique and at least one must exist")
        decode = self.hook.get("sparse_decode")
        if decode and decode["impl"] not in names:
            raise AmxforgeError(f"{where} [hook] sparse_decode: impl {decode['impl']!r} is no implementation; "
                                f"choose {', '.join(names)}")
        if sorted(d.id for d in self.dtypes.values()) != list(range(1, len(self.dtypes) + 1)):
            raise AmxforgeError(f"{where}: dtype ids must be 1..{len(self.dtypes)}")

    def __getitem__(self, name: str) -> Implementation:
        for impl in self.implementations:
            if impl.name == name:
                return impl
        raise AmxforgeError(f"unknown implementation {name!r}; the table ({self.path.name}) has "
                            f"{', '.join(self.names)}")

    @property
    def names(self) -> list:
        return [impl.name for impl in self.implementations]

    def dtype(self, name: str) -> Dtype:
        try:
            return self.dtypes[name]
        except KeyError:
            raise AmxforgeError(f"unknown dtype {name!r}; choose {', '.join(self.dtypes)}") from None

    # --- what a variant builds -------------------------------------------------------------------------------
    def built(self, unit_features) -> dict:
        """{impl name: compiled in?} given unit_features(path) -> the features that unit's flags enable."""
        return {impl.name: all(set(impl.needs) <= set(unit_features(unit)) for unit in impl.units)
                for impl in self.implementations}

    def built_for(self, policy, variant, compiler) -> dict:
        """The same from the policy alone (no build): classify each unit by its path."""
        def features(unit):
            return policy.class_features(policy.classify(unit).unit_class, variant, compiler)
        return self.built(features)

    def header_context(self, built: dict) -> dict:
        return {"implementations": self.implementations, "built": built, "dtypes": list(self.dtypes.values()),
                "hook": self.hook}


@lru_cache(maxsize=None)
def _cached(path: str):
    from .policy import Policy
    return KernelTable(Path(path), Policy().isa)


def kernel_table() -> KernelTable:
    """The project's table, loaded once per process (features expanded against isa.toml)."""
    return _cached(str(toolchain_dir() / "kernels.toml"))


PROGRAM_PREFIX = "amxforge-"  # kernels/bin/NAME.c is installed as bin/amxforge-NAME


def our_programs(kernels_dir: Path) -> list:
    """The programs the kernels build and install: one per kernels/bin/*.c (what the SConscript builds and a package
    ships)."""
    return [PROGRAM_PREFIX + main.stem for main in sorted(Path(kernels_dir, "bin").glob("*.c"))]
