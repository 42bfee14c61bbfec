"""`amxforge bench compare OLD NEW`: two saved `bench fork` runs, cell by cell (same column, thread count and type),
each metric's runs of NEW against OLD's. The runs of two benchmarks are not paired (no round holds one of each), so
the two-sample Mann-Whitney / Hodges-Lehmann interval is used (bench/comparisons.py), with the same verdicts."""

import json
from pathlib import Path

from .. import atomic
from ..errors import AmxforgeError
from .comparisons import UNPAIRED, unpaired
from .verdicts import METRICS

FIX = "give a `bench fork --out` directory or its cells.jsonl (or a saved `bench fork --json` output)"


def load_run(path) -> list:
    """The cell records of a saved run, each checked for what a comparison reads."""
    path = Path(path)
    if path.is_dir():
        path = path / "cells.jsonl"
    try:
        text = atomic.read_text(path)
    except FileNotFoundError:
        raise AmxforgeError(f"{path}: no such file; {FIX}") from None
    except atomic.NotRegular as exc:
        raise AmxforgeError(f"{exc.strerror}; {FIX}") from None
    except OSError as exc:
        raise AmxforgeError(f"{path}: cannot be read ({atomic.why(exc)}); {FIX}") from None
    cells = []
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except ValueError:
            raise AmxforgeError(f"{path} line {n}: not JSON; {FIX}") from None
        if not isinstance(rec, dict) or rec.get("record") not in ("cell", "summary"):
            raise AmxforgeError(f"{path} line {n}: not a bench fork record; {FIX}")
        if rec["record"] == "summary":
            continue
        ok = (isinstance(rec.get("column"), str) and isinstance(rec.get("threads"), int)
              and isinstance(rec.get("type"), str)
              and all(rec.get(m) is None or (isinstance(rec[m], dict) and isinstance(rec[m].get("samples"), list)
                                              and all(isinstance(v, (int, float)) and v > 0
                                                      for v in rec[m]["samples"])) for m in METRICS))
        if not ok:
            raise AmxforgeError(f"{path} line {n}: a cell without column, threads, type and per-metric samples; {FIX}")
        cells.append(rec)
    if not cells:
        raise AmxforgeError(f"{path}: no cell records; {FIX}")
    return cells


def key(cell: dict) -> tuple:
    return cell["type"], cell["threads"], cell["column"]


def compare_runs(old: list, new: list, threshold: float) -> dict:
    """{"rows": a row per cell both runs have and metric both measured, "only_old", "only_new": the cells one run
    has, "verdicts": counts}."""
    olds, news = {key(c): c for c in old}, {key(c): c for c in new}
    common = [k for k in olds if k in news]
    if not common:
        raise AmxforgeError(f"the two runs have no cell in common (same column, thread count and type): the old has "
                            f"{', '.join(sorted({c['column'] for c in old}))}, the new "
                            f"{', '.join(sorted({c['column'] for c in new}))}")
    rows = []
    for k in common:
        for m in METRICS:
            a, b = olds[k].get(m), news[k].get(m)
            if not a or not b:
                continue
            comp = unpaired(a["samples"], b["samples"], threshold)
            rows.append({"type": k[0], "threads": k[1], "column": k[2], "metric": m, "old_median": a["median"],
                         "new_median": b["median"]} | comp)
    return {"method": UNPAIRED, "threshold_pct": 100 * threshold, "rows": rows,
            "only_old": [" ".join(map(str, k)) for k in olds if k not in news],
            "only_new": [" ".join(map(str, k)) for k in news if k not in olds],
            "verdicts": {v: sum(1 for r in rows if r["verdict"] == v) for v in ("faster", "slower", "same",
                                                                                "undecided")}}
