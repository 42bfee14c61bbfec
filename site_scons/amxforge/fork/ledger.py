"""The shim's ledger: one JSON line per compilation (source, object, class, rule, flags, final command, rc). The live
ledger of a CMake binary dir grows with every build (a unit compiled again appears again; the last line for an
object wins); build/VARIANT/fork/ledger.jsonl holds only the units of the last good build, each with its object's
size and hash (written by fork/driver.py)."""

import json
from pathlib import Path

LEDGER = "ledger.jsonl"  # in build/VARIANT/fork/: the last good build's units
RECORD = "amxforge-build.json"  # in build/VARIANT/fork/: the last good build's record


def ledger_lines(path: Path, offset: int = 0) -> list:
    """Every whole JSON line of a live ledger from byte `offset` on (a line cut short by a killed build is skipped)."""
    from ..atomic import open_regular
    if not Path(path).is_file():
        return []
    with open_regular(path) as f:
        f.seek(offset)
        text = f.read().decode(errors="replace")
    out = []
    for line in text.splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if isinstance(entry, dict):
            out.append(entry)
    return out


def read_ledger(path: Path, offset: int = 0) -> list:
    """A live ledger's latest successful entry per object (a unit whose line was cut short is compiled, and logged,
    again on resume); from byte `offset` on: the entries of the build that started there."""
    latest = {e["object"]: e for e in ledger_lines(path, offset) if e.get("object")}
    return [e for e in latest.values() if e.get("rc") == 0]


def snapshot_entry(entry: dict) -> dict:
    """A live entry as the last good build records it: with its object's size, mtime and sha256."""
    obj = Path(entry["object"])
    from ..atomic import file_sha256
    st = obj.stat()
    return entry | {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": file_sha256(obj)}


def compile_commands(entries: list, directory: str) -> list:
    return [{"directory": directory, "file": e["path"], "output": e["object"], "arguments": e["command"]}
            for e in entries]


def audit_units(entries: list, project_dir: Path) -> list:
    """Ledger entries in the audit's unit shape (kernels' units come from policy.json)."""
    out = []
    for e in entries:
        obj = Path(e["object"])
        try:
            rel = obj.relative_to(project_dir).as_posix()
        except ValueError:
            rel = obj.as_posix()
        out.append({"source": "fork:" + e["source"], "object": rel, "unit_class": e["class"], "rule": e["rule"],
                    "object_path": obj})
    return out
