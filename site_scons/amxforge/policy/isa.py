"""The ISA facts of toolchain/isa.toml: features, levels, groups, and which compiler takes which flag."""

import re
from dataclasses import dataclass, field
from pathlib import Path

from packaging.version import Version

from ..errors import AmxforgeError
from ..tomlfile import load_toml


@dataclass(frozen=True)
class Compiler:
    """A C/C++ compiler as the policy needs it: its family (gcc|clang), version and path."""

    family: str
    version: str
    path: str

    def describe(self) -> str:
        return f"{self.family} {self.version} ({self.path})"


@dataclass(frozen=True)
class Feature:
    name: str
    flag: str
    clang_flag: str
    no_flag: str
    minimum: dict
    family: str
    implies: tuple


@dataclass(frozen=True)
class Level:
    name: str
    march: str
    minimum: dict
    features: tuple
    psabi_only: bool = False  # a psABI level to name (hwcaps, manifests), never a variant's level


@dataclass(frozen=True)
class CpuidBit:
    """Where the run-time guard finds a feature: CPUID leaf/subleaf/register/bit, and the XSAVE state it needs."""

    name: str
    leaf: int
    subleaf: int
    register: str
    bit: int
    state: str


@dataclass(frozen=True)
class XsaveState:
    name: str
    xcr0: int
    label: str
    permission: int  # the XSTATE component Linux wants a permission request for (0: none)


REGISTERS = ("eax", "ebx", "ecx", "edx")
# The shape of every flag isa.toml may hold: the flags reach compilers as arguments, and nothing but an ISA switch
# belongs there (a `-D...` or a shell fragment in this file is refused when it is loaded, never passed on).
ISA_FLAG = re.compile(r"-m(?:(?:no-)?[a-z0-9][a-z0-9.-]*|(?:arch|tune)=[a-z0-9][a-z0-9_.-]*)")
ISA_PREFIX = re.compile(r"-m[a-z0-9.=-]*")  # [shim] prefixes: the start of the flags the shim owns
OPTION_NAME = re.compile(r"--?[a-zA-Z][a-zA-Z0-9-]*")  # [shim] nvcc option names


def check_isa_flag(flag, where: str) -> str:
    if not isinstance(flag, str) or not ISA_FLAG.fullmatch(flag):
        raise AmxforgeError(f"{where}: {flag!r} is not an ISA flag (-m<feature>, -mno-<feature>, -march=<level> or "
                            f"-mtune=<cpu>, nothing else); fix that value")
    return flag


def _checked(values, shape: re.Pattern, where: str, what: str) -> tuple:
    values = list(values) if isinstance(values, (list, tuple)) else [values]
    for value in values:
        if not isinstance(value, str) or not shape.fullmatch(value):
            raise AmxforgeError(f"{where}: {value!r} is not {what}; fix that value")
    return tuple(values)


@dataclass
class Isa:
    path: Path
    features: dict
    levels: dict
    groups: dict
    portable_level: str
    portable_tune: str
    cpuid: dict = field(default_factory=dict)
    xsave_states: dict = field(default_factory=dict)
    shim_prefixes: tuple = ()  # [shim]: what the fork launcher removes besides every flag and no_flag above
    nvcc_arch_options: tuple = ()
    nvcc_host_options: tuple = ()
    _flag_to_feature: dict = field(default_factory=dict)

    @classmethod
    def load(cls, path: Path) -> "Isa":
        data = load_toml(path)
        where = f"{path} [top level]"
        try:
            features = {}
            for name, rec in data["features"].items():
                where = f"{path} [features.{name}]"
                flag = check_isa_flag(rec["flag"], f"{where} flag")
                features[name] = Feature(
                    name=name,
                    flag=flag,
                    clang_flag=check_isa_flag(rec.get("clang_flag", flag), f"{where} clang_flag"),
                    no_flag=check_isa_flag(rec["no_flag"], f"{where} no_flag"),
                    minimum={"gcc": str(rec["gcc"]), "clang": str(rec["clang"])},
                    family=rec.get("family", ""),
                    implies=tuple(rec.get("implies", ())),
                )
            levels = {}
            for name, rec in data["levels"].items():
                where = f"{path} [levels.{name}]"
                levels[name] = Level(name, check_isa_flag(rec["march"], f"{where} march"),
                                     {"gcc": str(rec["gcc"]), "clang": str(rec["clang"])},
                                     tuple(rec["features"]), bool(rec.get("psabi_only", False)))
            where = f"{path} [xsave_states]"
            states = {name: XsaveState(name, int(rec["xcr0"]), rec["name"], int(rec.get("permission", 0)))
                      for name, rec in data["xsave_states"].items()}
            cpuid = {}
            for name, rec in data["cpuid"].items():
                leaf, subleaf, register, bit, state = rec
                if register not in REGISTERS or state not in states or not 0 <= int(bit) < 32:
                    raise ValueError(f"[cpuid] {name} = {rec}: want [leaf, subleaf, eax|ebx|ecx|edx, bit 0-31, "
                                     f"one of {', '.join(states)}]")
                cpuid[name] = CpuidBit(name, int(leaf), int(subleaf), register, int(bit), state)
            where = f"{path} [groups]"
            groups = dict(data["groups"])
            where = f"{path} [portable]"
            tune = check_isa_flag(data["portable"]["tune"], f"{where} tune")
            where = f"{path} [shim]"
            shim = data.get("shim", {})
            isa = cls(path, features, levels, groups, data["portable"]["level"], tune, cpuid, states,
                      _checked(shim.get("prefixes", []), ISA_PREFIX, f"{where} prefixes", "the start of an ISA flag"),
                      _checked(shim.get("nvcc_arch_options", []), OPTION_NAME, f"{where} nvcc_arch_options",
                               "an nvcc option name"),
                      _checked(shim.get("nvcc_host_options", []), OPTION_NAME, f"{where} nvcc_host_options",
                               "an nvcc option name"))
        except KeyError as exc:
            raise AmxforgeError(f"{where}: missing key {exc}; every feature needs flag, no_flag, gcc and clang, every "
                                f"level march, gcc, clang and features; [cpuid], [xsave_states], [groups] and "
                                f"[portable] must be there") from None
        except (ValueError, TypeError) as exc:
            raise AmxforgeError(f"{path}: {exc}") from None
        for name, members in isa.groups.items():
            isa.expand(members, where=f"{path} [groups] {name}")
        for feat in features.values():
            isa.expand(feat.implies, where=f"{path} [features.{feat.name}] implies")
            isa._flag_to_feature[feat.flag] = (feat.name, True)
            isa._flag_to_feature[feat.clang_flag] = (feat.name, True)
            isa._flag_to_feature[feat.no_flag] = (feat.name, False)
        unchecked = sorted((set(features) | {f for lv in levels.values() for f in lv.features}) - set(cpuid))
        if unchecked:
            raise AmxforgeError(f"{path}: no [cpuid] entry for {', '.join(unchecked)}: the run-time guard could not "
                                f"check it; add NAME = [leaf, subleaf, register, bit, state]")
        if isa.portable_level not in levels:
            raise AmxforgeError(f"{path}: [portable] level {isa.portable_level!r} is not a level in [levels]")
        return isa

    def expand(self, names, where: str) -> list:
        """Feature names with "@group" expanded, in order, without repeats; unknown names are an error."""
        out = []
        for name in names:
            members = self.groups.get(name[1:]) if name.startswith("@") else [name]
            if members is None:
                raise AmxforgeError(f"{where}: unknown group {name!r}; groups are "
                                    + ", ".join("@" + g for g in self.groups))
            for member in members:
                if member not in self.features and not any(member in lv.features for lv in self.levels.values()):
                    raise AmxforgeError(f"{where}: unknown feature {member!r}; add it to {self.path.name} [features]")
                if member not in out:
                    out.append(member)
        return out

    def check_complete_sets(self, features, where: str) -> None:
        """AVX-512 only as the complete set: a partial set breaks IQK flash attention (ik_llama.cpp #1299)."""
        present = set(features)
        for fam in ("avx512",):
            group = self.groups[fam]
            have = [f for f in group if f in present]
            if have and len(have) != len(group):
                missing = [f for f in group if f not in present]
                raise AmxforgeError(f"{where}: partial AVX-512 set (missing {', '.join(missing)}); "
                                    f"use \"@{fam}\" for the complete set or drop AVX-512 entirely")

    def level(self, name: str, where: str) -> Level:
        usable = [n for n, lv in self.levels.items() if not lv.psabi_only]
        if name not in usable:
            raise AmxforgeError(f"{where}: unknown level {name!r}; levels are {', '.join(usable)}")
        return self.levels[name]

    def psabi_level(self, features) -> str:
        """The lowest x86-64 psABI level (x86-64-vN) whose features include all of `features`, or None."""
        fits = [lv for lv in self.levels.values() if lv.name.startswith("x86-64-v") and set(features) <= set(lv.features)]
        return min(fits, key=lambda lv: len(lv.features)).name if fits else None

    # --- flags for a compiler -------------------------------------------------------------------------
    def _require(self, what: str, flag: str, minimum: dict, compiler: Compiler) -> str:
        need = minimum.get(compiler.family)
        if need is not None and Version(compiler.version) < Version(need):
            # a level (x86-64-v3) is every variant's base: only a newer compiler helps; a feature some variants lack
            other = "" if what in self.levels else f", or a variant without {what} (`amxforge probe` lists them)"
            raise AmxforgeError(
                f"{compiler.describe()} does not accept {flag} ({what} needs {compiler.family} >= {need}); "
                f"install {compiler.family} >= {need} and pass CC=/path/to/it{other}")
        return flag

    def flag(self, name: str, compiler: Compiler) -> str:
        feat = self.features[name]
        flag = feat.clang_flag if compiler.family == "clang" else feat.flag
        return self._require(name, flag, feat.minimum, compiler)

    def no_flag(self, name: str, compiler: Compiler) -> str:
        feat = self.features[name]
        return self._require(name, feat.no_flag, feat.minimum, compiler)

    def march(self, level_name: str, compiler: Compiler) -> str:
        lv = self.levels[level_name]
        return self._require(level_name, lv.march, lv.minimum, compiler)

    # --- reading flags back -----------------------------------------------------------------------------
    def closure(self, names) -> set:
        """The features that `names` turn on, with what each implies (as the compiler does)."""
        out, todo = set(), list(names)
        while todo:
            name = todo.pop()
            if name in out:
                continue
            out.add(name)
            feat = self.features.get(name)
            if feat:
                todo.extend(feat.implies)
        return out

    def features_of_flags(self, flags) -> set:
        """What a compiler command line enables: -march=<level> and -m<feature>/-mno-<feature>, in order."""
        on = set()
        march_of = {lv.march: lv for lv in self.levels.values()}
        for flag in flags:
            if flag in march_of:
                on = self.closure(march_of[flag].features)
            elif flag in self._flag_to_feature:
                name, enable = self._flag_to_feature[flag]
                if enable:
                    on |= self.closure([name])
                else:
                    # -mno-X also turns off whatever needs X (gcc: -mno-avx512f drops all AVX-512)
                    on = {f for f in on if name not in self.closure([f])}
        return on
