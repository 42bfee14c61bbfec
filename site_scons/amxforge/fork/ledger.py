"""Read build/VARIANT/fork/ledger.jsonl: one line per compilation the shim ran. A unit compiled again (a resumed or
incremental build) appears again; the last line for an object wins."""

import json
from pathlib import Path


def read_ledger(path: Path) -> list:
    if not Path(path).is_file():
        return []
    latest = {}
    for line in Path(path).read_text().splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue  # a line cut short by a killed build: the unit is compiled (and logged) again on resume
        if entry.get("object"):
            latest[entry["object"]] = entry
    return [e for e in latest.values() if e.get("rc") == 0]


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
