"""The fork kinds of toolchain/forks.toml: how a tree is recognised, where its ggml lives, what amxforge passes to its
CMake, which targets it builds by default, how its releases are named, and where our kernels can enter it."""

import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from ..errors import AmxforgeError
from ..paths import toolchain_dir
from ..tomlfile import load_toml

FACTS = ("amx", "cuda")  # what a setting's {value} may name: ON when the variant (and the tree) has it


@dataclass(frozen=True)
class Kind:
    name: str
    description: str
    markers: tuple
    ggml: str
    option_files: tuple
    default_targets: tuple
    amx_backend: str
    kernels: dict

    def missing(self, root: Path) -> list:
        """The markers this tree lacks (a marker ending in / must be a directory)."""
        return [m for m in self.markers
                if not ((root / m).is_dir() if m.endswith("/") else (root / m).exists())]


@dataclass(frozen=True)
class Setting:
    name: str
    value: str  # a literal, or {amx} / {cuda}
    when: str  # always | declared

    def render(self, facts: dict) -> str:
        m = re.fullmatch(r"\{(\w+)\}", self.value)
        return ("ON" if facts[m.group(1)] else "OFF") if m else self.value


class KindTable:
    def __init__(self, path: Path):
        data = load_toml(path)  # validated against toolchain/schemas/forks.schema.json
        self.path = path
        self.package = data["package"]
        self.kinds = {}
        for name in data["order"]:
            if name not in data["kinds"]:
                raise AmxforgeError(f"{path}: order names {name!r}, which has no [kinds.\"{name}\"] table")
            rec = data["kinds"][name]
            self.kinds[name] = Kind(name, rec["description"], tuple(rec["markers"]), rec["ggml"],
                                    tuple(rec["option_files"]), tuple(rec["default_targets"]),
                                    rec.get("amx_backend", ""), dict(rec["kernels"]))
        unordered = sorted(set(data["kinds"]) - set(self.kinds))
        if unordered:
            raise AmxforgeError(f"{path}: kinds {', '.join(unordered)} are not in `order`; add them where they belong")
        self.settings = [Setting(n, s["value"], s["when"]) for n, s in data["settings"].items()]
        self.shown_options = tuple(data["shown_options"])

    @property
    def read_options(self) -> set:
        """The CMake options amxforge reads from a tree: those it sets when declared, and those it shows."""
        return {s.name for s in self.settings} | set(self.shown_options)

    def identify(self, root: Path, given) -> Kind:
        """The first kind whose markers this tree has; one line naming the nearest kinds otherwise."""
        for kind in self.kinds.values():
            if not kind.missing(root):
                return kind
        nearest = sorted(self.kinds.values(), key=lambda k: len(k.missing(root)) / len(k.markers))[:2]
        lacks = "; ".join(f"{k.name} needs {', '.join(k.missing(root))}" for k in nearest)
        raise AmxforgeError(f"fork={given}: not a tree amxforge knows ({lacks}); point fork= at the root of a checkout "
                            f"of {', '.join(self.kinds)}")

    def package_name(self, kind: str) -> str:
        return self.package.format(kind=kind)

    def help_list(self) -> str:
        """The kinds as help texts name them."""
        return ", ".join(self.kinds)


@lru_cache(maxsize=1)
def kinds() -> KindTable:
    return KindTable(toolchain_dir() / "forks.toml")
