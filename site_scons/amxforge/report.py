"""Tables for people, from templates/report/*.j2 (JSON for machines is written where the data is made)."""

from collections import Counter

from .bench.comparisons import text as comparison_text
from .templating import render


def _render(name: str, **context) -> str:
    return render("report", name, **context).rstrip()


def build_summary(ctx) -> str:
    doc = ctx.policy_document()
    build = f"build/{ctx.name}"
    bins = sorted(p.relative_to(ctx.project_dir).as_posix() for p in (ctx.build_dir / "bin").glob("*")
                  if p.is_file())
    by_class = dict(sorted(Counter(u["unit_class"] for u in doc["units"]).items()))
    cached = None
    if ctx.kernel_statslog is not None:  # cache= or dist=: what ccache did with the kernels' compiles
        from .cache import read_statslog
        cached = Counter(read_statslog(ctx.kernel_statslog).values())
    return _render("summary.j2", d=doc, by_class=by_class, build=build, binaries=bins, cached=cached)


def dist_status_report(status: dict) -> str:
    return _render("dist_status.j2", s=status)


def audit_report(result) -> str:
    return _render("audit.j2", r=result)


def probe_table(result: dict, interesting) -> str:
    features = set(result["cpu"]["features"])
    isa_line = " ".join(f if f in features else f"-{f}" for f in interesting)
    return _render("probe.j2", p=result, isa_line=isa_line)


def bench_fork_report(result: dict, saved=None, prefer="tg") -> str:
    """The fork bench's tables (a table per metric and type: rows = threads, columns = variants / trees / --amx),
    with the difference of every column against the first."""
    cells, summary = result["cells"], result["summary"]
    tables = []
    for qtype in summary["types"]:
        for metric in ("pp", "tg"):
            rows = []
            for threads in summary["threads"]:
                line = [c for c in cells if c["type"] == qtype and c["threads"] == threads]
                by_col = {c["column"]: c for c in line}
                texts, diffs = [], []
                for i, label in enumerate(summary["columns"]):
                    c = by_col.get(label)
                    st = c.get(metric) if c else None
                    if c is None or c["status"] != "ok" or not st:
                        texts.append("failed" if c and c["status"] != "ok" else "-")
                    else:
                        amx = " AMX" if c.get("amx_buffer") else ""
                        texts.append(f"{st['median']:.2f} [{st['min']:.2f}-{st['max']:.2f}]{amx}")
                    if i:
                        diffs.append(comparison_text({
                            k: c.get(f"{metric}_{k}") for k in ("ratio", "ci_low", "ci_high", "pairs", "verdict")}
                            if c else {}))
                first = line[0] if line else {}
                rows.append({"threads": threads, "cpus": first.get("cpus", "-"), "over": first.get("oversubscribed"),
                             "cells": texts, "diffs": diffs})
            tokens = next((c["tokens"][metric] for c in cells if c["type"] == qtype and c.get("tokens")), None)
            widths = [max([len(label)] + [len(r["cells"][i]) for r in rows])
                      for i, label in enumerate(summary["columns"])]
            widths += [max([len(f"diff {i}")] + [len(r["diffs"][i - 1]) for r in rows])
                       for i in range(1, len(summary["columns"]))]
            tables.append({"type": qtype, "metric": metric, "columns": summary["columns"], "rows": rows,
                           "widths": widths,
                           "tokens": tokens, "over": any(r["over"] for r in rows),
                           "any_amx": any(c.get("amx_buffer") for c in cells)})
    return _render("bench_fork.j2", r=result, tables=tables, saved=saved, prefer=prefer)


def bench_compare_report(result: dict, old, new) -> str:
    width = max([len("column")] + [len(r["column"]) for r in result["rows"]])
    return _render("bench_compare.j2", r=result, old=old, new=new, width=width,
                   texts=[comparison_text(r) for r in result["rows"]])
