"""How `amxforge bench fork` decides that one column is faster than another on a shared, drifting host.

Paired: the two cells run in the same round, adjacent in the ABBA order, so the drift of the host moves both alike;
their ratio within each round cancels it, where the max-min spread of one cell keeps it. Over the rounds, the log
ratios are summarised by the Hodges-Lehmann estimate (the median of the Walsh averages) and an EXACT Wilcoxon
signed-rank confidence interval (the order statistics of the Walsh averages that the signed-rank distribution puts
at alpha/2 on each side). Why this method: it is exact at the few pairs a benchmark has (a bootstrap interval is too
narrow below ten or so), it makes no normality assumption and from 12 pairs an outlier run moves it by a rank only
(a t interval on the same ratios is dragged by it at any count), and its efficiency against the t interval is 95 %
where the ratios are normal. One outlier pair (another tenant's burst in one run) makes the n most extreme Walsh
averages; below ROBUST_PAIRS (12) the interval's end is among them and the outlier decides it, so the pairs planned
are never fewer. It assumes the log ratios are symmetric about their median; a sign-test interval would not, at
about two thirds of the efficiency. Below 6 pairs no exact 95 % interval exists (1 - 2/2^n < 0.95): the verdict is
then undecided.

Verdicts against a threshold t (default 2 %): `same` when the interval lies inside +-t, else `faster` / `slower` when it
lies wholly above / below 1, else `undecided`. Unpaired (two saved runs): the Mann-Whitney / Hodges-Lehmann two-sample
interval, the same reasoning without the pairing."""

import math
from functools import lru_cache

ALPHA = 0.05
PAIRED = "wilcoxon signed-rank (exact), Hodges-Lehmann estimate"
UNPAIRED = "mann-whitney (exact), Hodges-Lehmann estimate"
# the Wilcoxon test's efficiency against the t test: 0.955 where the data are normal, never below 0.864 (Hodges and
# Lehmann's bound over all distributions); the pairs it needs are planned with the bound
ARE = 0.864


@lru_cache(maxsize=None)
def _signed_rank_counts(n: int) -> tuple:
    """counts[s]: how many subsets of the ranks 1..n sum to s (the null distribution of the signed-rank statistic)."""
    counts = [1]
    for k in range(1, n + 1):
        new = counts + [0] * k
        for s, c in enumerate(counts):
            new[s + k] += c
        counts = new
    return tuple(counts)


@lru_cache(maxsize=None)
def _rank_sum_counts(m: int, n: int) -> tuple:
    """counts[u]: arrangements of m x's among n y's with u (x, y) pairs x > y (the Mann-Whitney U distribution)."""
    table = {(0, 0): [1]}

    def dist(a, b):
        if (a, b) in table:
            return table[(a, b)]
        out = [0] * (a * b + 1)
        if a:
            for u, c in enumerate(dist(a - 1, b)):  # the largest value is an x: it beats all b y's
                out[u + b] += c
        if b:
            for u, c in enumerate(dist(a, b - 1)):
                out[u] += c
        table[(a, b)] = out
        return out
    return tuple(dist(m, n))


def _lower_index(counts, alpha: float) -> int:
    """The largest c with P(statistic <= c) <= alpha/2, or -1 when none."""
    total, cum, c = sum(counts), 0, -1
    for s, k in enumerate(counts):
        if (cum + k) / total > alpha / 2:
            break
        cum += k
        c = s
    return c


def _normal_index(mean: float, var: float, alpha: float = ALPHA) -> int:
    """_lower_index from the normal approximation (large samples: the exact counts grow too big to tabulate)."""
    return int(math.floor(mean - 1.959964 * math.sqrt(var) - 0.5))


class _Counts:
    """Stands in for an exact count table where only _lower_index and the confidence are asked (normal approx)."""

    def __init__(self, mean, var):
        self.mean, self.var = mean, var


def interval(values: list, counts, alpha: float = ALPHA):
    """(estimate, low, high, achieved confidence) from the sorted candidate values of a rank interval; low and high
    None when no interval at 1 - alpha exists."""
    values = sorted(values)
    mid = len(values) // 2
    estimate = values[mid] if len(values) % 2 else (values[mid - 1] + values[mid]) / 2
    if isinstance(counts, _Counts):
        c = _normal_index(counts.mean, counts.var, alpha)
        confidence = 1 - alpha if c >= 0 else None
    else:
        c = _lower_index(counts, alpha)
        confidence = 1 - 2 * sum(counts[:c + 1]) / sum(counts) if c >= 0 else None
    if c < 0:
        return estimate, None, None, None
    return estimate, values[c], values[len(values) - c - 1], confidence


def verdict(low, high, threshold: float) -> str:
    """On ratios (1.0 = equal): same, faster, slower or undecided."""
    if low is None:
        return "undecided"
    if 1 - threshold <= low and high <= 1 + threshold:
        return "same"
    if low > 1:
        return "faster"
    if high < 1:
        return "slower"
    return "undecided"


def paired(base: list, other: list, threshold: float = 0.02) -> dict:
    """other against base, run by run in the same rounds (two lists of t/s, index = round; None where a run failed)."""
    logs = [math.log(b / a) for a, b in zip(base, other) if a and b]
    out = {"pairs": len(logs), "method": PAIRED, "threshold": threshold}
    if not logs:
        return out | {"ratio": None, "ci_low": None, "ci_high": None, "confidence": None, "verdict": "undecided"}
    n = len(logs)
    walsh = [(logs[i] + logs[j]) / 2 for i in range(n) for j in range(i, n)]
    counts = _signed_rank_counts(n) if n <= 200 else _Counts(n * (n + 1) / 4, n * (n + 1) * (2 * n + 1) / 24)
    est, low, high, conf = interval(walsh, counts)
    return out | _as_ratios(est, low, high, conf, threshold)


def unpaired(base: list, other: list, threshold: float = 0.02) -> dict:
    """other against base, runs of two separate benchmarks (no pairing): the two-sample shift of the log t/s."""
    xs, ys = [math.log(v) for v in other if v], [math.log(v) for v in base if v]
    out = {"pairs": None, "samples": [len(ys), len(xs)], "method": UNPAIRED, "threshold": threshold}
    if not xs or not ys:
        return out | {"ratio": None, "ci_low": None, "ci_high": None, "confidence": None, "verdict": "undecided"}
    diffs = [x - y for x in xs for y in ys]
    m, n = len(xs), len(ys)
    counts = _rank_sum_counts(m, n) if m * n <= 900 else _Counts(m * n / 2, m * n * (m + n + 1) / 12)
    est, low, high, conf = interval(diffs, counts)
    return out | _as_ratios(est, low, high, conf, threshold)


def _as_ratios(est, low, high, conf, threshold) -> dict:
    ratio = math.exp(est)
    lo, hi = (math.exp(low), math.exp(high)) if low is not None else (None, None)
    return {"ratio": ratio, "ci_low": lo, "ci_high": hi, "confidence": conf, "verdict": verdict(lo, hi, threshold)}


def half_width(comparison: dict):
    """Half the interval's width in percent of the ratio (None without an interval)."""
    if comparison.get("ci_low") is None:
        return None
    return 50.0 * (comparison["ci_high"] - comparison["ci_low"]) / comparison["ratio"]


def _robust_pairs() -> int:
    """The fewest pairs whose interval end lies beyond the n Walsh averages one outlier pair makes (c >= n)."""
    n = 6
    while _lower_index(_signed_rank_counts(n), ALPHA) < n:
        n += 1
    return n


ROBUST_PAIRS = _robust_pairs()


def pairs_needed(base: list, other: list, half_width_pct: float) -> int:
    """The pairs an interval of this half-width needs at the spread the pairs so far show: n with
    (t_{0.975, n-1}) * sd / sqrt(n) <= h, at the Wilcoxon test's efficiency; never fewer than ROBUST_PAIRS."""
    logs = [math.log(b / a) for a, b in zip(base, other) if a and b]
    if len(logs) < 2:
        return ROBUST_PAIRS
    mean = sum(logs) / len(logs)
    sd = math.sqrt(sum((v - mean) ** 2 for v in logs) / (len(logs) - 1))
    h = math.log1p(half_width_pct / 100.0)
    n = ROBUST_PAIRS
    while n < 10000 and _t(0.975, n - 1) * sd / math.sqrt(n * ARE) > h:
        n += 1
    return n


def pairs_to_detect(sd: float, effect: float = 0.05, power: float = 0.8) -> int:
    """The pairs at which an effect of this size (a ratio of 1 + effect) is called with this power, for paired log
    ratios of this standard deviation: the smallest n with (t_{0.975} + t_{power}) * sd / sqrt(n * ARE) <= ln(1 +
    effect). The issue's rough guide, (2.8 sd / effect)^2, is this with the normal's quantiles and without the rank
    test's efficiency: at 5 % sd it says 8 pairs where this says 12 (and the simulation in
    tests/unit/test_comparisons.py calls about 60 % of 5 % effects at 8); never fewer than ROBUST_PAIRS."""
    target = math.log1p(effect)
    n = ROBUST_PAIRS
    while n < 100000 and (_t(0.975, n - 1) + _t(power, n - 1)) * sd / math.sqrt(n * ARE) > target:
        n += 1
    return n


_Z = {0.975: 1.959964, 0.8: 0.841621, 0.9: 1.281552}


def _t(p: float, df: int) -> float:
    """Student's t quantile (Cornish-Fisher expansion around the normal's; within 0.5 % from df 3)."""
    z = _Z[p]
    g1 = (z ** 3 + z) / 4
    g2 = (5 * z ** 5 + 16 * z ** 3 + 3 * z) / 96
    g3 = (3 * z ** 7 + 19 * z ** 5 + 17 * z ** 3 - 15 * z) / 384
    return z + g1 / df + g2 / df ** 2 + g3 / df ** 3


def text(comparison: dict) -> str:
    """'+21 % [+6, +31] faster' for a table cell."""
    if comparison.get("ratio") is None:
        return "-"
    pct = 100 * (comparison["ratio"] - 1)
    if comparison["ci_low"] is None:
        return f"{pct:+.0f} % [{comparison['pairs']} pairs: too few] undecided"
    lo, hi = 100 * (comparison["ci_low"] - 1), 100 * (comparison["ci_high"] - 1)
    return f"{pct:+.0f} % [{lo:+.0f}, {hi:+.0f}] {comparison['verdict']}"
