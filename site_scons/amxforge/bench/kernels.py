"""`amxforge bench kernels`: run build/VARIANT/bin/amxforge-kbench, derive the figures people compare (fractions of
the limits measured in the same run, sparse speedups over our best dense kernel, the byte-ratio ceiling)."""

import json
import subprocess
from pathlib import Path

from ..errors import AmxforgeError

from ..implementations import kernel_table

MASK_BYTES_PER_WEIGHT = 0.125  # one mask bit per weight (32-bit mask per 32 bf16, 64-bit per 64 int8)
UNSTABLE_LIMIT_PCT = 10.0  # a limit whose repetitions spread more than this judges nothing: its fractions are flagged


def ceiling(dtype: str, sparsity: float) -> float:
    """Byte-ratio ceiling of memory-bound decode: dense bytes per weight over sparse bytes per weight."""
    dense = float(kernel_table().dtype(dtype).elem_bytes)
    return dense / (MASK_BYTES_PER_WEIGHT + dense * (1.0 - sparsity))


def kbench_path(variant: str, project: Path) -> Path:
    exe = Path(project) / "build" / variant / "bin" / "amxforge-kbench"
    if not exe.is_file():
        raise AmxforgeError(f"{exe} not found: build it first with scons variant={variant}")
    return exe


def kbench_args(cases=(), min_bytes=None) -> list:
    args = []
    for case in cases:
        args += ["--case", case]
    if min_bytes is not None:
        args += ["--min-bytes", str(min_bytes)]
    return args


def check_plottable(cases) -> None:
    """`--plot` with `--case`: the plot draws sparse cases against a dense case of the same dtype and shape; without
    such a pair there is nothing to draw, which is said before the benchmark, not after it."""
    fields = [case.split(":") for case in cases]
    sparse = [f for f in fields if len(f) >= 6 and f[0] == "sparse"]
    dense = [f for f in fields if len(f) >= 6 and f[0] == "dense"]
    dense_shapes = {(d[1], *d[3:6]) for d in dense}  # dtype, M, N, K
    if not cases or any((f[1], *f[3:6]) in dense_shapes for f in sparse):
        return
    dtype, impl, m, n, kk = (sparse or dense or [["", "bf16", "IMPL", "1", "4096", "4096"]])[0][1:6]
    dense_case = f"--case dense:{dtype}:{impl}:{m}:{n}:{kk}"
    sparse_case = f"--case sparse:{dtype}:{impl}:{m}:{n}:{kk}:0.7"
    # the peer of the first case given, else a pair of examples
    peer = dense_case if sparse else sparse_case if dense else f"{dense_case} {sparse_case}"
    raise AmxforgeError("--plot: no --case is a sparse case with a dense case of its dtype and M:N:K, so there would "
                        f"be nothing to plot; add {peer}")


def run_kbench(exe: Path, threads, quick: bool, extra=(), on_record=None) -> list:
    cmd = [str(exe), "--threads", ",".join(str(t) for t in threads), *extra]
    if quick:
        cmd.append("--quick")
    from ..children import reaped
    records = []
    with reaped(subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)) as proc:
        for line in proc.stdout:
            record = json.loads(line)
            records.append(record)
            if on_record:
                on_record(record)
        err = proc.stderr.read()
    if proc.wait() != 0:
        raise AmxforgeError(err.strip().splitlines()[-1] if err.strip() else f"{exe.name} exited {proc.returncode}")
    return records


def derive(records: list) -> list:
    """Add gflops, gbps, peak_fraction (against the limit the implementation's table row names for the dtype),
    bw_fraction, and for sparse cases speedup_vs_dense and the ceiling; every case says which variant ran it."""
    table = kernel_table()
    variant = next((r.get("variant") for r in records if r.get("record") == "plan"), None)
    limits = {(r["limit"], r["threads"]): r for r in records if r.get("record") == "limit"}
    cases = [dict(r) for r in records if r.get("record") == "case"]
    best_dense = {}
    for c in cases:
        if c["kernel"] == "dense":
            key = (c["dtype"], c["M"], c["N"], c["K"], c["threads"])
            best_dense[key] = min(best_dense.get(key, float("inf")), c["seconds"])
    out = []
    for c in cases:
        c["gflops"] = c["flops"] / c["seconds"] / 1e9
        c["gbps"] = c["weight_bytes"] / c["seconds"] / 1e9
        c["variant"] = variant
        c["peak_limit"] = table[c["impl"]].peak.get(c["dtype"])
        peak = limits.get((c["peak_limit"], c["threads"]))
        bw = limits.get(("read_bw", c["threads"]))
        c["peak_fraction"] = c["gflops"] / peak["gflops"] if peak else None
        c["bw_fraction"] = c["gbps"] / bw["gbps"] if bw else None
        if "bw_fraction_paired" in c:  # a decode: against the read measured beside each of its reps, not minutes apart
            c["bw_fraction"] = c["bw_fraction_paired"]
            bw = None  # so the limit's own spread does not judge it
        # which limits judging this case were unstable in this run (spread of their repetitions over 10 %)
        c["unstable_limits"] = [lim["limit"] for lim in (peak, bw) if lim and (lim.get("spread_pct") or 0.0)
                                > UNSTABLE_LIMIT_PCT]
        if c["kernel"] == "sparse":
            dense = best_dense.get((c["dtype"], c["M"], c["N"], c["K"], c["threads"]))
            c["speedup_vs_dense"] = dense / c["seconds"] if dense else None
            c["ceiling"] = ceiling(c["dtype"], c["sparsity"])
            c["ceiling_fraction"] = c["speedup_vs_dense"] / c["ceiling"] if dense else None
        out.append(c)
    return [dict(r) for r in records if r.get("record") == "limit"] + out


RATIOS = ("peak_fraction", "bw_fraction", "speedup_vs_dense", "ceiling_fraction")


def aggregate(rounds: list) -> list:
    """Several rounds of derived rows -> one row per limit and case: medians, each ratio computed within its own
    round (against that round's limits) and reported with its spread [min, max] over the rounds."""
    if len(rounds) == 1:
        return rounds[0]
    import statistics

    def key(r):
        return (r.get("limit"),) if "limit" in r else (r["kernel"], r["impl"], r["dtype"], r["M"], r["N"], r["K"],
                                                      r["sparsity"], r["threads"])

    groups = {}
    for rows in rounds:
        for r in rows:
            groups.setdefault(key(r) + (r["threads"],), []).append(r)
    out = []
    for items in groups.values():
        row = dict(items[0], rounds=len(items))
        if "kernel" in row:  # a limit unstable in any round makes the case's fraction doubtful
            row["unstable_limits"] = sorted({lim for r in items for lim in r.get("unstable_limits") or ()})
        for field in ("seconds", "gflops", "gbps", *RATIOS):
            values = [r[field] for r in items if r.get(field) is not None]
            if values:
                row[field] = statistics.median(values)
                if field in RATIOS or field in ("gflops", "gbps"):
                    row[f"{field}_spread"] = [min(values), max(values)]
        out.append(row)
    return out


def table(rows: list) -> str:
    lines = []
    for r in rows:
        if "limit" in r:
            value = f"{r['gflops']:.0f} GFLOP/s" if "gflops" in r else f"{r['gbps']:.1f} GB/s"
            spread = r.get("spread_pct")
            shaky = spread is not None and spread > UNSTABLE_LIMIT_PCT
            lines.append(f"limit  {r['limit']:<15} threads={r['threads']}  {value}" +
                         (f"  spread {spread:.1f} % over {r.get('reps')} reps" if spread is not None else "") +
                         ("  UNSTABLE: fractions against it are marked !" if shaky else ""))
    head = (f"{'kernel':<7}{'impl':<7}{'dtype':<6}{'M':>5}{'N':>7}{'K':>7}{'sp':>5}{'thr':>4}{'ms':>9}{'GFLOP/s':>9}"
            f"{'GB/s':>7}{'%peak':>7}{'%bw':>6}{'speedup':>9}{'ceiling':>9}")
    lines += ["", head, "-" * len(head)]
    for r in rows:
        if "kernel" not in r:
            continue
        shaky = set(r.get("unstable_limits") or ())
        pct = lambda v, lim="": (f"{100 * v:.0f}" + ("!" if lim in shaky else "")) if v is not None else "-"  # noqa: E731
        sp = f"{r['speedup_vs_dense']:.2f}x" if r.get("speedup_vs_dense") else "-"
        ce = f"{r['ceiling']:.2f}x" if r.get("ceiling") else "-"
        lines.append(f"{r['kernel']:<7}{r['impl']:<7}{r['dtype']:<6}{r['M']:>5}{r['N']:>7}{r['K']:>7}"
                     f"{100 * r['sparsity']:>4.0f}%{r['threads']:>4}{1e3 * r['seconds']:>9.3f}{r['gflops']:>9.0f}"
                     f"{r['gbps']:>7.1f}{pct(r['peak_fraction'], r.get('peak_limit')):>7}{pct(r['bw_fraction'], 'read_bw'):>6}"
                     f"{sp:>9}{ce:>9}")
    return "\n".join(lines)


def plot(rows: list, path: Path) -> None:
    """Speedup of sparse decode over our best dense kernel against sparsity, with the byte-ratio ceilings."""
    from . import png
    plt = png.pyplot()

    sparse = [r for r in rows if r.get("kernel") == "sparse" and r.get("speedup_vs_dense")]
    if not sparse:
        raise AmxforgeError("no sparse cases with a dense baseline in this run: nothing to plot")
    fig, ax = plt.subplots(figsize=(8, 5))
    grid = [i / 100 for i in range(0, 95)]
    for dtype, style in (("bf16", "-"), ("int8", "--")):
        if any(r["dtype"] == dtype for r in sparse):
            ax.plot([100 * s for s in grid], [ceiling(dtype, s) for s in grid], "k" + style, lw=1,
                    label=f"byte-ratio ceiling ({dtype})")
    series = {}
    for r in sparse:
        key = (r["impl"], r["dtype"], r["M"], r["N"], r["K"], r["threads"])
        series.setdefault(key, []).append((100 * r["sparsity"], r["speedup_vs_dense"]))
    for (impl, dtype, M, N, K, threads), points in sorted(series.items()):
        points.sort()
        ax.plot([p[0] for p in points], [p[1] for p in points], marker="o",
                label=f"{impl} {dtype} M={M} {N}x{K} t={threads}")
    ax.set_xlabel("weight sparsity (%)")
    ax.set_ylabel("decode speedup over our best dense kernel")
    ax.set_title("amxforge sparse decode vs dense (same run)")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    png.save(fig, path, dpi=120)
