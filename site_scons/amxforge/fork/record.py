"""The record store of fork builds: build/VARIANT/fork/amxforge-build.json (the last good build: tree, targets,
compilers, every installed file's hash; checksummed) and build/VARIANT/fork/ledger.jsonl (its units, each with its
object's size and hash). Written last and atomically by a build that succeeded; read through `last_good()` by whoever
only needs to know what is installed, through `load_record()` by whoever must say why a record is unusable."""

import hashlib
import json
from pathlib import Path

from .. import atomic
from ..errors import AmxforgeError
from .ledger import RECORD

FIX = "rebuild the variant with its fork= to repair it"


def record_path(build_dir: Path) -> Path:
    return Path(build_dir) / "fork" / RECORD


def write_record(build_dir: Path, record: dict) -> None:
    body = json.dumps(record, sort_keys=True)
    atomic.write_json(record_path(build_dir), record | {"sha256": hashlib.sha256(body.encode()).hexdigest()})


def load_record(build_dir: Path) -> dict:
    """The record, validated (its own checksum, the keys every reader needs); FileNotFoundError if there is none."""
    path = record_path(build_dir)
    fix = FIX
    record = atomic.read_json(path, "fork build record", fix=fix)
    claimed = record.pop("sha256", None)
    body = json.dumps(record, sort_keys=True)
    if claimed != hashlib.sha256(body.encode()).hexdigest():
        raise AmxforgeError(f"{path}: damaged fork build record (checksum mismatch); {fix}")
    missing = {"format", "fork", "targets", "ledger", "installed"} - set(record)
    if missing:
        raise AmxforgeError(f"{path}: damaged fork build record (no {', '.join(sorted(missing))}); {fix}")
    return record | {"sha256": claimed}


def verify_record(record: dict, project_dir: Path) -> list:
    """What no longer matches the record: its ledger, the objects it lists, the files it installed."""
    problems = []
    ledger_path = Path(project_dir) / record["ledger"]["path"]
    try:
        text = atomic.read_text(ledger_path)
    except OSError as exc:
        return [f"{record['ledger']['path']}: {atomic.why(exc)}"]
    if hashlib.sha256(text.encode()).hexdigest() != record["ledger"]["sha256"]:
        problems.append(f"{record['ledger']['path']}: damaged (does not match its record)")
    else:
        entries = read_snapshot(ledger_path)
        if len(entries) != record["ledger"]["units"]:
            problems.append(f"{record['ledger']['path']}: {len(entries)} units, the record says "
                            f"{record['ledger']['units']}")
        problems += [p for p in (object_problem(e) for e in entries) if p]
    for f in record["installed"]:
        path = Path(project_dir) / f["path"]
        if not path.is_file():
            problems.append(f"{f['path']}: missing")
        elif path.stat().st_size != f["size"] or atomic.file_sha256(path) != f["sha256"]:
            problems.append(f"{f['path']}: damaged (does not match the last good build)")
    return problems


def object_problem(entry: dict):
    obj = Path(entry["object"])
    try:
        st = obj.stat()
    except OSError:
        return f"{obj}: missing"
    if st.st_size != entry["size"]:
        return f"{obj}: {st.st_size} bytes, the ledger says {entry['size']} (truncated or replaced)"
    if st.st_mtime_ns != entry.get("mtime_ns") and atomic.file_sha256(obj) != entry["sha256"]:
        return f"{obj}: content differs from the ledger's hash"
    return None


def read_snapshot(path: Path, missing_ok: bool = False) -> list:
    """The last good build's ledger: every line must parse and carry the keys the audit needs."""
    path = Path(path)
    if missing_ok and not path.is_file():
        return []
    entries = []
    for n, line in enumerate(atomic.read_text(path).splitlines(), 1):
        try:
            entry = json.loads(line)
        except ValueError:
            entry = None
        if not (isinstance(entry, dict) and {"source", "object", "class", "rule", "sha256", "size"} <= set(entry)):
            raise AmxforgeError(f"{path}:{n}: damaged ledger line; {FIX}")
        entries.append(entry)
    return entries


def retire(project_dir: Path, files) -> None:
    for f in files:
        Path(project_dir, f["path"]).unlink(missing_ok=True)


def last_good(build_dir: Path):
    """The last good fork build's record, validated; None when there is none or it is damaged (a damaged record
    proves nothing about what is installed; the next build with fork= replaces it)."""
    try:
        return load_record(build_dir)
    except (FileNotFoundError, AmxforgeError):
        return None
