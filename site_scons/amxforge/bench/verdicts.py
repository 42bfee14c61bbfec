"""What `amxforge bench fork` concludes from its cells: each cell's statistics, the best column per type and metric
with the cells it cannot be told from (paired comparisons, bench/comparisons.py), and the variant order a package's
host preference takes: by the chosen metric's verdicts, ties broken by the other metric's, each place explained."""

import functools
import statistics

from .comparisons import paired, text

METRICS = ("pp", "tg")


def stats(values: list) -> dict:
    if not values:
        return None
    med = statistics.median(values)
    return {"median": med, "min": min(values), "max": max(values), "n": len(values),
            "spread_pct": 100.0 * (max(values) - min(values)) / med if med else None, "samples": values}


def compare(a: dict, b: dict, metric: str, threshold: float) -> dict:
    """Cell record b against cell record a on a metric, paired round by round (their `<metric>_rounds`)."""
    return paired(a.get(f"{metric}_rounds") or [], b.get(f"{metric}_rounds") or [], threshold)


def recommend(records, threshold: float) -> dict:
    """Per type and metric: the best cell, and the cells the paired comparison cannot tell from it (same, or
    undecided), each with the comparison against the best."""
    out = {}
    for qtype in dict.fromkeys(r["type"] for r in records):
        for m in METRICS:
            ok = [r for r in records if r["type"] == qtype and r.get(m)]
            if not ok:
                continue
            best = max(ok, key=lambda r: r[m]["median"])
            ties = []
            for r in sorted(ok, key=lambda r: -r[m]["median"]):
                if r is best:
                    continue
                comp = compare(best, r, m, threshold)
                if comp["verdict"] in ("same", "undecided"):
                    ties.append(f"{r['column']} at {r['threads']} threads ({text(comp)})")
            out.setdefault(qtype, {})[m] = {
                "column": best["column"], "threads": best["threads"], "median": best[m]["median"],
                "oversubscribed": best["oversubscribed"], "not_told_apart": ties}
    return out


def decisive(comp: dict) -> bool:
    """A verdict that orders variants: faster or slower with the whole interval beyond the threshold. A difference
    whose interval reaches into +-threshold is too small to be called same, and too small to outrank a large one on
    the other metric (the AMX host: tg +3 % [+0, +6] against pp -43 % in one run, +0 % [-3, +3] in the next)."""
    t = comp.get("threshold", 0.0)
    return (comp["verdict"] == "faster" and comp["ci_low"] > 1 + t) or \
        (comp["verdict"] == "slower" and comp["ci_high"] < 1 - t)


def explain(a: str, b: str, comparisons: list, metric: str) -> str:
    """Why variant a stands before b: its comparisons against b, the chosen metric first."""
    decided = [m for m, c in comparisons if decisive(c)]
    return (f"{a} before {b}: " + "; ".join(f"{m} {text(c)}" for m, c in comparisons)
            + (f" ({decided[0]} decides)" if decided else
               f"; no difference beyond +-threshold decides: by the {metric} medians"))


def preference_lines(records, sources, metric: str, threshold: float) -> tuple:
    """({package name: its variants best first}, {package name: why each stands where it does}): what the package
    selector's host preference file takes. Variants are ordered by the chosen metric's paired verdicts (each
    variant at its best cell: thread count, --amx mode, type) where they are decisive (beyond +-threshold), else by
    the other metric's, and only then by the medians; a variant that wins one metric and ties the other is never
    put below."""
    other = "pp" if metric == "tg" else "tg"
    lines, why = {}, {}
    for src in sources:
        best = {}
        for r in records:
            if r["tree"] != src.label:
                continue
            for m in METRICS:
                key = (r["variant"], m)
                if r.get(m) and (key not in best or r[m]["median"] > best[key][m]["median"]):
                    best[key] = r
        variants = sorted({v for v, m in best if m == metric})
        if not variants or src.package_name in lines:  # two trees of one kind: the first tree's order
            continue
        def verdicts(a, b) -> list:
            """a against b on each metric both have, the chosen one first."""
            return [(m, compare(best[(b, m)], best[(a, m)], m, threshold)) for m in (metric, other)
                    if (a, m) in best and (b, m) in best]

        def order(a, b):
            for _, comp in verdicts(a, b):
                if decisive(comp):
                    return -1 if comp["verdict"] == "faster" else 1
            ma, mb = best[(a, metric)][metric]["median"], best[(b, metric)][metric]["median"]
            return -1 if ma > mb else (1 if ma < mb else 0)

        ranked = sorted(variants, key=functools.cmp_to_key(order))
        lines[src.package_name] = ranked
        why[src.package_name] = [explain(a, b, verdicts(a, b), metric) for a, b in zip(ranked, ranked[1:])]
    return lines, why
