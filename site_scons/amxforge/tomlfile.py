"""Read toolchain/*.toml with errors that name the file, the key and the row: parsed, then validated against its schema
(toolchain/schemas/<name>.schema.json, JSON Schema 2020-12, through jsonschema) before any loader sees it. A file that
parsed and validated once is not validated again in this process unless it changes."""

import json
import os
import tomllib
from functools import lru_cache
from pathlib import Path

from .errors import AmxforgeError


def load_toml(path: Path) -> dict:
    import copy

    from .atomic import NotRegular
    path = Path(path)
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise AmxforgeError(f"{path}: missing; restore it from git (git checkout -- {path.name})") from None
    except OSError as exc:
        raise AmxforgeError(f"{path}: cannot be read ({exc.strerror})") from None
    try:
        return copy.deepcopy(_load(str(path), st.st_mtime_ns, st.st_size))  # callers may change their copy
    except NotRegular as exc:
        raise AmxforgeError(f"{exc.strerror}; restore it from git (git checkout -- {path.name})") from None


@lru_cache(maxsize=64)
def _load(path: str, mtime_ns: int, size: int) -> dict:
    from .atomic import read_bytes
    path = Path(path)
    try:
        data = tomllib.loads(read_bytes(path).decode())
    except FileNotFoundError:
        raise AmxforgeError(f"{path}: missing; restore it from git (git checkout -- {path.name})") from None
    except UnicodeDecodeError as exc:
        raise AmxforgeError(f"{path}: not UTF-8 text ({exc.reason}); restore it from git") from None
    except tomllib.TOMLDecodeError as exc:
        # tomllib's message ends with "(at line L, column C)"
        raise AmxforgeError(f"{path}: malformed TOML: {exc}; fix that line") from None
    schema = schema_path(path)
    if schema.is_file():
        validate(data, schema, path)
    return data


def schema_path(path: Path) -> Path:
    return Path(path).parent / "schemas" / f"{Path(path).stem}.schema.json"


def location(parts) -> str:
    """A JSON path as TOML readers write it: kinds.ggml.markers[0], implementations[2].units."""
    out = ""
    for part in parts:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "top level"


def validate(data, schema_file: Path, path: Path, schema: dict = None) -> None:
    """The first error of `data` against the schema, as one line naming the file, the key (and the row of an array
    of tables) and what is wrong."""
    import jsonschema

    schema = schema or json.loads(Path(schema_file).read_text())
    validator = jsonschema.Draft202012Validator(schema)
    error = next(iter(sorted(validator.iter_errors(data), key=lambda e: list(map(str, e.absolute_path)))), None)
    if error is None:
        return
    if error.validator == "required":
        what = f"missing key {error.message.split(' is a required')[0]}"
    elif error.validator == "additionalProperties":
        what = f"unknown key(s): {error.message.split('(')[-1].rstrip(')')}"
    else:
        what = error.message
    raise AmxforgeError(f"{path} [{location(error.absolute_path)}]: {what} (schema: "
                        f"{Path(schema_file).parent.name}/{Path(schema_file).name}); fix that value")
