"""The audit: objects -> instruction classes -> verdict, from `objdump -d` of every object of a variant.

Checks (toolchain/audit.toml says which instructions need which feature):
- an object contains only instruction classes whose feature its unit's rendered flags enable: so no tile
  instruction outside amx-class objects, no zmm or tile at all in baseline, portable objects within x86-64;
- protected objects are identical across built variants that render the same protected flags (avx512 vs amx).
"""

import hashlib
import os
import re
import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .errors import AmxforgeError
from .paths import toolchain_dir
from .tomlfile import load_toml

PREFIXES = {"rep", "repz", "repnz", "repe", "repne", "lock", "notrack", "bnd", "data16", "addr32", "cs", "ds"}


@dataclass
class InstructionClass:
    name: str
    needs: str
    mnemonics: frozenset
    mnemonic_regex: re.Pattern = None
    operands: re.Pattern = None

    def matches(self, mnemonic: str, operands: str, vex_prefixed: bool) -> bool:
        if mnemonic in self.mnemonics:
            return True
        if self.mnemonic_regex is not None and self.mnemonic_regex.search(mnemonic):
            # `{vex} vpdpbusd` is the AVX-VNNI form: not an AVX-512 instruction
            if not (vex_prefixed and self.needs.startswith("avx512")):
                return True
        return self.operands is not None and bool(self.operands.search(operands))


def load_instruction_classes(path: Path = None) -> list:
    path = path or toolchain_dir() / "audit.toml"
    data = load_toml(path)
    out = []
    for rec in data.get("instruction_classes", []):
        try:
            out.append(InstructionClass(
                rec["name"], rec["needs"], frozenset(rec.get("mnemonics", ())),
                re.compile(rec["mnemonic_regex"]) if rec.get("mnemonic_regex") else None,
                re.compile(rec["operands"]) if rec.get("operands") else None))
        except (KeyError, re.error) as exc:
            raise AmxforgeError(f"{path}: bad instruction class {rec.get('name')!r}: {exc}") from None
    return out


def binutil(name: str = "objdump") -> str:
    """objdump, nm, ...: the path of a binutils program, or one line saying how to install it."""
    tool = shutil.which(name)
    if not tool:
        raise AmxforgeError(f"{name} not found: install binutils (apt-get install binutils)")
    return tool


def objdump() -> str:
    return binutil("objdump")


def disassemble(obj: Path):
    """(mnemonic, operands, vex_prefixed) for each instruction of the object's code sections."""
    res = subprocess.run([objdump(), "-d", "-w", "--no-show-raw-insn", str(obj)], capture_output=True, text=True)
    if res.returncode != 0:
        raise AmxforgeError(f"objdump cannot read {obj}: {res.stderr.strip()}; rebuild the variant")
    for line in res.stdout.splitlines():
        addr, sep, rest = line.partition(":\t")
        if not sep or not addr.strip() or " " in addr.strip():
            continue
        tokens = rest.split()
        vex = False
        while tokens and (tokens[0] in PREFIXES or tokens[0].startswith("{")):
            vex = vex or tokens[0] == "{vex}"
            tokens = tokens[1:]
        if tokens:
            yield tokens[0], " ".join(tokens[1:]), vex


def scan_object(obj: Path, classes) -> dict:
    """{instruction class name: {"count": n, "example": "mnemonic operands"}}"""
    seen = {}
    for mnemonic, operands, vex in disassemble(obj):
        for ic in classes:
            if ic.matches(mnemonic, operands, vex):
                entry = seen.setdefault(ic.name, {"count": 0, "example": f"{mnemonic} {operands}".strip()})
                entry["count"] += 1
    return seen


def _scan_or_error(obj: Path, classes):
    try:
        return scan_object(obj, classes)
    except AmxforgeError as exc:
        return str(exc)


def fingerprint(obj: Path) -> str:
    """Code, relocations and data of an object, without its file name: equal iff the compiler made the same."""
    res = subprocess.run([objdump(), "-d", "-r", "-s", "-w", str(obj)], capture_output=True, text=True)
    body = "\n".join(line for line in res.stdout.splitlines() if "file format" not in line)
    return hashlib.sha256(body.encode()).hexdigest()


@dataclass
class Finding:
    object: str
    source: str
    unit_class: str
    rule: str
    problem: str
    instruction: str = ""

    def line(self) -> str:
        extra = f" (e.g. `{self.instruction}`)" if self.instruction else ""
        return f"{self.object}: class {self.unit_class} (rule {self.rule}): {self.problem}{extra}"


@dataclass
class AuditResult:
    variant: str
    objects: int
    by_class: dict
    findings: list = field(default_factory=list)
    compared: list = field(default_factory=list)  # [{"with": variant, "objects": n, "identical": n}]
    not_compared: list = field(default_factory=list)
    features_seen: set = field(default_factory=set)  # what the objects' instructions need (toolchain/audit.toml)

    @property
    def ok(self) -> bool:
        return not self.findings

    def as_dict(self) -> dict:
        return {"variant": self.variant, "ok": self.ok, "objects": self.objects, "by_class": self.by_class,
                "findings": [asdict(f) for f in self.findings], "compared": self.compared,
                "not_compared": self.not_compared, "features_seen": sorted(self.features_seen)}


def load_policy(build_root: Path, variant: str) -> dict:
    from .atomic import read_json

    path = build_root / variant / "policy.json"
    fix = f"rebuild it with scons variant={variant}"
    try:
        policy = read_json(path, "policy record", fix=fix)
    except FileNotFoundError:
        raise AmxforgeError(f"{path} not found: build the variant first (scons variant={variant})") from None
    missing = {"variant", "classes", "units", "fork"} - set(policy)
    if missing or not isinstance(policy["units"], list) or not isinstance(policy["classes"], dict):
        raise AmxforgeError(f"{path}: damaged policy record (missing or wrong {', '.join(sorted(missing)) or 'units'});"
                            f" {fix}")
    return policy


def fork_units(policy: dict, project_dir: Path, variant: str):
    """The fork's units of the last good build, and what is wrong with that build's files (missing, damaged, fewer
    than recorded): a fork the policy says was built but whose units cannot be seen is a finding, never skipped."""
    from .fork.record import load_record, read_snapshot, verify_record
    from .fork.ledger import audit_units as ledger_units

    if not policy.get("fork"):
        return [], []
    build_dir = project_dir / "build" / variant
    try:
        record = load_record(build_dir)
    except FileNotFoundError:
        return [], [f"policy.json says fork {policy['fork']['root']} was built, but its record "
                    f"build/{variant}/fork/amxforge-build.json is missing"]
    except AmxforgeError as exc:
        return [], [str(exc)]
    if record["fork"].get("root") != policy["fork"].get("root"):
        return [], [f"the fork record is for {record['fork'].get('root')}, policy.json for {policy['fork'].get('root')}"]
    problems = verify_record(record, project_dir)
    ledger = project_dir / record["ledger"]["path"]
    if not ledger.is_file():
        return [], problems  # verify_record named it
    try:
        entries = read_snapshot(ledger)
    except (OSError, AmxforgeError) as exc:
        return [], problems + [str(exc)]
    return ledger_units(entries, project_dir), problems


def audit_units(policy: dict, project_dir: Path, variant: str) -> list:
    """The variant's units (kernels and, when built, the fork's last good build), each with an absolute object path."""
    units = [dict(unit, object_path=project_dir / unit["object"]) for unit in policy["units"]]
    return units + fork_units(policy, project_dir, variant)[0]


def audit_variant(variant: str, project_dir: Path = None, jobs: int = 4) -> AuditResult:
    project_dir = Path(project_dir or ".").resolve()
    build_root = project_dir / "build"
    policy = load_policy(build_root, variant)
    classes = load_instruction_classes()
    units = [dict(unit, object_path=project_dir / unit["object"]) for unit in policy["units"]]
    fork, fork_problems = fork_units(policy, project_dir, variant)
    units += fork
    by_class = {}
    for unit in units:
        by_class[unit["unit_class"]] = by_class.get(unit["unit_class"], 0) + 1
    result = AuditResult(variant, len(units), by_class)
    for problem in fork_problems:
        result.findings.append(Finding(f"build/{variant}/fork", "fork", "-", "-",
                                       f"{problem}; rebuild with scons variant={variant} fork=..."))
    missing = [u for u in units if not u["object_path"].is_file()]
    for unit in missing:
        result.findings.append(Finding(unit["object"], unit["source"], unit["unit_class"], unit["rule"],
                                       f"object missing; rebuild with scons variant={variant}"))
    units = [u for u in units if u not in missing]

    with ThreadPoolExecutor(max_workers=jobs) as pool:
        scans = list(pool.map(lambda u: _scan_or_error(u["object_path"], classes), units))
    needs = {ic.name: ic.needs for ic in classes}
    for unit, seen in zip(units, scans):
        if isinstance(seen, str):  # objdump could not read it: a damaged object is a finding
            result.findings.append(Finding(unit["object"], unit["source"], unit["unit_class"], unit["rule"], seen))
            continue
        allowed = set(policy["classes"].get(unit["unit_class"], {}).get("features", ()))
        for name, entry in seen.items():
            result.features_seen.add(needs[name])
            if needs[name] not in allowed:
                result.findings.append(Finding(
                    unit["object"], unit["source"], unit["unit_class"], unit["rule"],
                    f"{entry['count']} {name} instruction(s), which need {needs[name]}; "
                    f"its flags do not enable it", entry["example"]))

    _compare_protected(result, policy, units, build_root, project_dir)
    return result


def _fork_identity(policy: dict):
    fork = policy.get("fork") or {}
    return fork.get("root"), fork.get("commit")


def _compare_protected(result: AuditResult, policy: dict, units: list, build_root: Path, project_dir: Path):
    """Protected objects must be identical in every built variant whose protected flags are the same."""
    mine = [u for u in units if u["unit_class"] == "protected"]
    if not mine:
        return
    flags = policy["classes"]["protected"]["flags"]
    own = {}
    for other_dir in sorted(p for p in build_root.iterdir() if (p / "policy.json").is_file()):
        other_name = other_dir.name
        if other_name == result.variant:
            continue
        try:
            other = load_policy(build_root, other_name)
        except AmxforgeError:
            result.not_compared.append(other_name)  # its record is damaged: nothing to compare with
            continue
        if other.get("classes", {}).get("protected", {}).get("flags") != flags:
            continue
        same_fork = _fork_identity(other) == _fork_identity(policy)
        # a fork's units are comparable only with a build of the same tree at the same commit
        theirs = {u["source"]: u["object_path"] for u in audit_units(other, project_dir, other_name)
                  if u["unit_class"] == "protected" and (same_fork or not u["source"].startswith("fork:"))}
        identical = compared = 0
        for unit in mine:
            twin = theirs.get(unit["source"])
            if twin is None or not twin.is_file():
                continue
            compared += 1
            if unit["object"] not in own:  # one disassembly per own object, however many variants compare
                own[unit["object"]] = fingerprint(unit["object_path"])
            if own[unit["object"]] == fingerprint(twin):
                identical += 1
            else:
                result.findings.append(Finding(
                    unit["object"], unit["source"], "protected", unit["rule"],
                    f"differs from {os.path.relpath(twin, project_dir)} although both variants render the same "
                    f"protected flags: something outside the policy changed this unit's code"))
        if compared:
            result.compared.append({"with": other_name, "objects": compared, "identical": identical})
        else:
            result.not_compared.append(other_name)
