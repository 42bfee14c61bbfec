"""Variants from toolchain/variants.toml, resolved against isa.toml (and, for `native`, the host's features)."""

from dataclasses import dataclass
from pathlib import Path

from ..errors import AmxforgeError
from ..tomlfile import load_toml
from .isa import Isa

FIELDS = ("summary", "level", "features", "amx", "like", "host", "cuda")


@dataclass(frozen=True)
class Variant:
    name: str
    summary: str
    level: str
    features: tuple  # on every non-portable unit (beyond the level's own)
    amx: tuple  # on amx-class units only
    cuda: bool
    host: bool

    def required_features(self, isa: Isa) -> set:
        """What a CPU needs to run this variant's binaries."""
        return set(isa.levels[self.level].features) | set(self.features) | set(self.amx)

    @property
    def uses_amx(self) -> bool:
        return bool(self.amx)


class VariantTable:
    def __init__(self, path: Path, isa: Isa):
        data = load_toml(path)
        self.path = path
        self.isa = isa
        self.raw = data.get("variants", {})
        self.auto = list(data.get("auto", []))
        for name, rec in self.raw.items():
            unknown = set(rec) - set(FIELDS)
            if unknown:
                raise AmxforgeError(f"{path}: [variants.{name}] has unknown key(s) {', '.join(sorted(unknown))}; "
                                    f"known: {', '.join(FIELDS)}")
        for name in self.auto:
            if name not in self.raw:
                raise AmxforgeError(f"{path}: auto lists {name!r}, which is not a variant")
        # resolve every non-host variant now, so a bad table fails at load, not at first use
        for name, rec in self.raw.items():
            if not self.fields(name).get("host"):
                self.resolve(name)

    @property
    def names(self) -> list:
        return list(self.raw) + ["auto"]

    def fields(self, name: str, seen=()) -> dict:
        rec = self.raw[name]
        if "like" in rec:
            parent = rec["like"]
            if parent not in self.raw or parent in seen:
                raise AmxforgeError(f"{self.path}: [variants.{name}] like = {parent!r} is not a usable variant")
            merged = dict(self.fields(parent, seen + (name,)))
            merged.update({k: v for k, v in rec.items() if k != "like"})
            return merged
        return dict(rec)

    def unknown(self, name: str) -> AmxforgeError:
        return AmxforgeError(f"unknown variant {name!r}; valid variants: {', '.join(self.names)}")

    def resolve(self, name: str, host_features=None) -> Variant:
        """The variant `name`; `native` needs the host's /proc/cpuinfo features. `auto` is chosen by the caller."""
        if name not in self.raw:
            raise self.unknown(name)
        rec = self.fields(name)
        where = f"{self.path} [variants.{name}]"
        if rec.get("host"):
            if host_features is None:
                raise AmxforgeError(f"variant {name!r} needs the host's CPU features; run it on the target host")
            level, features, amx = self._host_sets(set(host_features))
        else:
            if "level" not in rec:
                raise AmxforgeError(f"{where}: no level; set level = one of {', '.join(self.isa.levels)}")
            level = self.isa.level(rec["level"], where).name
            features = self.isa.expand(rec.get("features", []), where)
            amx = self.isa.expand(rec.get("amx", []), where)
            for feat in features:
                if self.isa.features.get(feat) and self.isa.features[feat].family == "amx":
                    raise AmxforgeError(f"{where}: {feat} is in features; AMX goes in `amx` (amx-class units only)")
            self.isa.check_complete_sets(features, where)
        return Variant(name, rec.get("summary", ""), level, tuple(features), tuple(amx),
                       bool(rec.get("cuda")), bool(rec.get("host")))

    def _host_sets(self, host: set):
        """native: the best level the host satisfies, then every other known feature it has, as explicit flags.
        AVX-512 only as the complete set; AMX only with it (the AMX units need it) and only on amx units."""
        levels = [lv for lv in self.isa.levels.values() if set(lv.features) <= host and not lv.psabi_only]
        if not levels:
            raise AmxforgeError("this CPU lacks SSE2 (x86-64 baseline); it cannot run any variant")
        level = max(levels, key=lambda lv: len(lv.features))
        complete_avx512 = set(self.isa.groups["avx512"]) <= host
        features, amx = [], []
        for name, feat in self.isa.features.items():
            if name not in host or name in level.features:
                continue
            if feat.family == "avx512" and not complete_avx512:
                continue
            if feat.family == "amx":
                if complete_avx512:
                    amx.append(name)
                continue
            features.append(name)
        return level.name, features, amx
