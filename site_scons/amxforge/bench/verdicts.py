"""What `amxforge bench fork` concludes: each cell's statistics, the best column per type and metric with those equal to
it within the run's noise, and the variant order a package's host preference takes."""

import statistics

METRICS = ("pp", "tg")


def stats(values: list) -> dict:
    if not values:
        return None
    med = statistics.median(values)
    return {"median": med, "min": min(values), "max": max(values), "n": len(values),
            "spread_pct": 100.0 * (max(values) - min(values)) / med if med else None, "samples": values}


def recommend(records, noise) -> dict:
    """Per type and metric: the best cell, and the cells equal to it within the run's noise."""
    out = {}
    for qtype in dict.fromkeys(r["type"] for r in records):
        for m in METRICS:
            ok = [r for r in records if r["type"] == qtype and r.get(m)]
            if not ok:
                continue
            best = max(ok, key=lambda r: r[m]["median"])
            ties = sorted((r for r in ok if r is not best and noise[m] is not None and
                           100.0 * (best[m]["median"] - r[m]["median"]) / best[m]["median"] <= noise[m]),
                          key=lambda r: -r[m]["median"])
            out.setdefault(qtype, {})[m] = {
                "column": best["column"], "threads": best["threads"], "median": best[m]["median"],
                "oversubscribed": best["oversubscribed"],
                "equal_within_noise": [f"{r['column']} at {r['threads']} threads" for r in ties]}
    return out


def preference_lines(records, sources, metric) -> dict:
    """package name -> its variants best first by `metric` (each variant at its best thread count and --amx mode):
    what the package selector's host preference file takes."""
    lines = {}
    for src in sources:
        best = {}
        for r in records:
            if r["tree"] == src.label and r.get(metric):
                best[r["variant"]] = max(best.get(r["variant"], 0.0), r[metric]["median"])
        if best and src.package_name not in lines:  # two trees of one kind: the first tree's order
            lines[src.package_name] = sorted(best, key=lambda v: -best[v])
    return lines
