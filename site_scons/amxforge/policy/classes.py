"""Unit classes from toolchain/classes.toml: ordered glob rules, first match wins, plus a content scan."""

import re
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from ..errors import AmxforgeError
from ..tomlfile import load_toml


ERE_SPECIAL = set(".[]()*+?{}|^$\\")


def glob_to_ere(pattern: str) -> str:
    """The glob as an anchored POSIX extended regex (also what the C launcher matches with regcomp):
    `**/` matches any number of directories, `*` and `?` stay within one path component."""
    out, i = ["^"], 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out.append("(.*/)?")
            i += 3
        elif pattern.startswith("**", i):
            out.append(".*")
            i += 2
        elif pattern[i] == "*":
            out.append("[^/]*")
            i += 1
        elif pattern[i] == "?":
            out.append("[^/]")
            i += 1
        else:
            out.append("\\" + pattern[i] if pattern[i] in ERE_SPECIAL else pattern[i])
            i += 1
    return "".join(out) + "$"


def glob_to_regex(pattern: str) -> re.Pattern:
    """The same pattern for Python (ERE is a subset of Python's syntax here)."""
    return re.compile(glob_to_ere(pattern))


@dataclass(frozen=True)
class Classification:
    unit_class: str
    rule: str
    glob: str


class ClassTable:
    def __init__(self, path: Path):
        data = load_toml(path)
        self.path = path
        self.classes = list(data.get("classes", []))
        self.gpu_classes = list(data.get("gpu_classes", []))
        self.host_class = data.get("host_class", "default")
        unknown = [c for c in self.gpu_classes + [self.host_class] if c not in self.classes]
        if unknown:
            raise AmxforgeError(f"{path}: gpu_classes or host_class name {', '.join(unknown)}, which `classes` does "
                                f"not list")
        self.rules = []
        for i, rule in enumerate(data.get("rules", [])):
            where = f"{path} rules[{i}]"
            if rule.get("class") not in self.classes:
                raise AmxforgeError(f"{where}: class {rule.get('class')!r} is not one of {', '.join(self.classes)}")
            if not rule.get("id") or not rule.get("globs"):
                raise AmxforgeError(f"{where}: every rule needs an id and a list of globs")
            self.rules.append((rule["id"], rule["class"], [(g, glob_to_regex(g)) for g in rule["globs"]]))
        scan = data.get("content_scan", {})
        try:
            self.scan = re.compile(scan["pattern"])
        except (KeyError, re.error) as exc:
            raise AmxforgeError(f"{path}: [content_scan] pattern is missing or not a regex ({exc})") from None
        self.scan_class = scan.get("must_be", "amx")
        self.scan_suffixes = tuple(scan.get("suffixes", (".c", ".cpp")))

    def classify(self, unit: str) -> Classification:
        """Class of a unit path (posix, relative to its tree). Raises if no rule matches."""
        posix = PurePosixPath(unit).as_posix()
        for rule_id, cls, globs in self.rules:
            for text, regex in globs:
                if regex.match(posix):
                    return Classification(cls, rule_id, text)
        raise AmxforgeError(f"{unit}: no rule in {self.path} matches it; add a catch-all rule (globs = [\"**\"])")

    def scan_file(self, unit: str, source: Path, found: Classification) -> None:
        """A unit whose text uses AMX intrinsics must be classed amx: otherwise stop and name it."""
        if found.unit_class == self.scan_class or not str(source).endswith(self.scan_suffixes):
            return
        try:
            text = source.read_text(errors="replace")
        except OSError:
            return  # a generated or missing source: the compiler will report it
        match = self.scan.search(text)
        if match:
            line = text.count("\n", 0, match.start()) + 1
            raise AmxforgeError(
                f"{unit}:{line}: uses AMX intrinsics ({match.group(0)!r}) but is classed {found.unit_class} "
                f"by rule {found.rule!r}; add it to an amx rule in {self.path.name} (or name it *_amx.c)")

