"""The fork bench's parts that need no build: the tool table against its schema, reading the tools' structured
output, which options a tool takes (from its --help), the run order, the CPU lists and the verdicts on noise."""

import json

import pytest

import os
import subprocess
import sys
import threading

from amxforge.bench import cells as cellmod, conditions, forktools, pinning, verdicts
from amxforge.cliargs import duration, positive_counts
from amxforge.errors import AmxforgeError
from conftest import ROOT

# llama-bench -o json (the fields amxforge reads, as ik_llama.cpp's llama-bench writes them: one object per test)
LLAMA_BENCH_JSON = """[
  {
    "build_commit": "8337e4cd",
    "n_threads": 16,
    "n_prompt": 128,
    "n_gen": 0,
    "avg_ts": 612.5,
    "stddev_ts": 0.0,
    "test": "pp128",
    "samples_ns": [ 208979591 ],
    "samples_ts": [ 612.5 ]
  },
  {
    "build_commit": "8337e4cd",
    "n_threads": 16,
    "n_prompt": 0,
    "n_gen": 32,
    "avg_ts": 41.25,
    "stddev_ts": 0.0,
    "test": "tg32",
    "samples_ns": [ 775757575 ],
    "samples_ts": [ 41.25 ]
  }
]
"""
# llama-sweep-bench --output-format jsonl: on stderr between the loader's log lines
SWEEP_STDERR = """llm_load_tensors:        CPU buffer size =   132.81 MiB
llm_load_tensors:        AMX buffer size =   120.00 MiB
{"n_kv_max": 128, "n_batch": 128, "n_ubatch": 128, "flash_attn": 0, "n_gpu_layers": 0, "n_threads": 16, \
"n_threads_batch": 16, "pp": 128, "tg": 32, "n_kv": 0, "t_pp": 0.2, "speed_pp": 640.0, "t_tg": 0.8, "speed_tg": 40.0 }
"""


def test_the_tool_table_matches_its_schema_and_every_output_kind_has_a_parser():
    jsonschema = pytest.importorskip("jsonschema")
    import tomllib
    doc = tomllib.loads((ROOT / "toolchain" / "bench.toml").read_text())
    schema = json.loads((ROOT / "toolchain" / "schemas" / "bench.schema.json").read_text())
    jsonschema.validate(doc, schema, cls=jsonschema.Draft202012Validator)
    assert set(doc["order"]) == set(doc["tools"])
    assert {t["output"] for t in doc["tools"].values()} <= set(forktools.PARSERS)  # the registry is the one list
    assert forktools.bench_tools()["order"] == doc["order"]


def test_a_tool_whose_output_kind_has_no_parser_is_refused(tmp_path, monkeypatch):
    from amxforge.errors import AmxforgeError
    root = tmp_path / "root"
    (root / "toolchain" / "schemas").mkdir(parents=True)
    (root / "toolchain" / "schemas" / "bench.schema.json").write_text(
        (ROOT / "toolchain" / "schemas" / "bench.schema.json").read_text())
    (root / "toolchain" / "bench.toml").write_text(
        (ROOT / "toolchain" / "bench.toml").read_text().replace('output = "sweep-bench-jsonl"', 'output = "csv"'))
    monkeypatch.setenv("AMXFORGE_ROOT", str(root))
    forktools.bench_tools.cache_clear()
    try:
        with pytest.raises(AmxforgeError, match=r"\[tools.llama-sweep-bench.output\]: 'csv' has no parser; output "
                                                 r"kinds: llama-bench-json, sweep-bench-jsonl"):
            forktools.bench_tools()
    finally:
        forktools.bench_tools.cache_clear()


def test_tokens_per_run_follow_each_tools_rule():
    assert forktools.tokens_per_run("llama-bench", 128, 32) == {"pp": 128, "tg": 32}
    assert forktools.tokens_per_run("llama-sweep-bench", 128, 32) == {"pp": 128, "tg": 32}  # pp/4
    assert forktools.tokens_per_run("llama-sweep-bench", 512, 32) == {"pp": 512, "tg": 128}


def test_llama_bench_json_gives_pp_and_tg():
    assert forktools.parse_output("llama-bench-json", LLAMA_BENCH_JSON, "") == {"pp": 612.5, "tg": 41.25, "foreign_lines": 0}


def test_sweep_bench_jsonl_gives_pp_tg_and_the_tokens():
    got = forktools.parse_output("sweep-bench-jsonl", "", SWEEP_STDERR)
    assert got == {"pp": 640.0, "tg": 40.0, "tokens": {"pp": 128, "tg": 32}}


@pytest.mark.parametrize("kind,stdout,stderr", [
    ("llama-bench-json", "| model | size |\n| llama | 1 MiB |\n", ""),  # markdown: not the structured output
    ("llama-bench-json", "[\n  {\n    \"n_prompt\": 128,", ""),       # cut off mid-way
    ("sweep-bench-jsonl", "", "|   128 |     32 |      0 |    0.200 |   640.00 |\n"),
    ("sweep-bench-jsonl", "", '{"speed_pp": 1.0, "n_kv": 0'),
])
def test_output_that_is_not_the_structured_format_is_refused(kind, stdout, stderr):
    with pytest.raises(ValueError):
        forktools.parse_output(kind, stdout, stderr)


@pytest.mark.parametrize("help_text,expect", [
    ("  -fa, --flash-attn      enable Flash Attention\n       --amx                  enable Intel AMX\n", True),
    ("  --amx-threads N\n  --numa TYPE\n", False),
    ("usage: llama-bench [options]\n  -o, --output <csv|json|md|sql>\n", False),
])
def test_a_tool_takes_amx_only_when_its_help_lists_it(help_text, expect):
    assert forktools.takes(help_text, "amx") is expect


def test_rounds_interleave_cells_abba_between_two_reference_runs():
    cells, ref = ["A", "B", "C"], "R"
    plan = [step for r in range(2) for step in cellmod.round_plan(cells, r, ref)]
    assert [c for k, c in plan] == ["R", "A", "B", "C", "R", "R", "C", "B", "A", "R"]
    assert [k for k, _ in plan][:2] == ["reference", "measure"]
    runs = [{"tg": 40.0, "round": 0}, {"tg": 41.0, "round": 2}, {"pp": 9.0, "round": 1}, {"tg": 1.0, "round": 5}]
    assert cellmod.per_round(runs, "tg", 3) == [40.0, None, 41.0]  # a round without a good run pairs with nothing


def test_cpu_lists_are_written_as_ranges():
    assert pinning.cpus_text([0, 1, 2, 3, 8, 10, 11]) == "0-3,8,10-11"
    assert pinning.cpus_text(None) == "unpinned"
    assert pinning._cpulist("0-3,8,10-11\n") == [0, 1, 2, 3, 8, 10, 11]


def test_one_cpu_per_physical_core_before_any_sibling(tmp_path, monkeypatch):
    # a 2-core, 4-thread host: cpu0/cpu2 and cpu1/cpu3 are siblings
    for cpu, sib in {0: "0,2", 1: "1,3", 2: "0,2", 3: "1,3"}.items():
        (tmp_path / f"cpu{cpu}" / "topology").mkdir(parents=True)
        (tmp_path / f"cpu{cpu}" / "topology" / "thread_siblings_list").write_text(sib + "\n")
    monkeypatch.setattr(pinning.os, "sched_getaffinity", lambda pid: {0, 1, 2, 3})
    assert pinning.cpu_order(tmp_path) == [0, 1, 2, 3]


def _cell(column, tg, pp=None, variant=None, threads=4, qtype="q8_0"):
    pp = pp or [100.0] * len(tg)
    return {"type": qtype, "column": column, "variant": variant or column, "tree": "ik", "threads": threads,
            "oversubscribed": False, "tg": verdicts.stats(tg), "pp": verdicts.stats(pp), "tg_rounds": tg,
            "pp_rounds": pp}


def _rounds(center, wobble=(0.0, 0.4, -0.3, 0.2, -0.1, 0.3, -0.2, 0.1, 0.0, -0.4, 0.2, -0.3)):
    return [center + w for w in wobble]


def test_the_recommendation_names_what_the_paired_comparison_cannot_tell_apart():
    cells = [_cell("baseline", _rounds(40.0)), _cell("amx", _rounds(40.2)), _cell("avx512", _rounds(30.0))]
    rec = verdicts.recommend(cells, 0.02)
    assert rec["q8_0"]["tg"]["column"] == "amx"
    assert len(rec["q8_0"]["tg"]["not_told_apart"]) == 1
    assert rec["q8_0"]["tg"]["not_told_apart"][0].startswith("baseline at 4 threads (-0 % [")
    assert rec["q8_0"]["tg"]["not_told_apart"][0].endswith("] same)")


class _Src:
    label, package_name = "ik", "ik_llama.cpp+amx-amxforge"


def test_a_variant_that_wins_one_metric_and_ties_the_other_is_never_demoted():
    # the Zen 4 case of issue 22: avx512 +70 % in pp, tg a tie within noise; by tg, baseline's median is a hair higher
    cells = [_cell("baseline", _rounds(20.0), pp=_rounds(100.0)),
             _cell("avx512", _rounds(19.95), pp=_rounds(170.0)),
             _cell("amx", _rounds(15.0), pp=_rounds(300.0))]
    lines, why = verdicts.preference_lines(cells, [_Src()], "tg", 0.02)
    assert lines == {"ik_llama.cpp+amx-amxforge": ["avx512", "baseline", "amx"]}
    assert why["ik_llama.cpp+amx-amxforge"][0].startswith("avx512 before baseline: tg ")
    assert "same; pp +70 % [" in why["ik_llama.cpp+amx-amxforge"][0]
    assert why["ik_llama.cpp+amx-amxforge"][1].startswith("baseline before amx: tg +33 % [")  # tg decides first


def test_a_difference_inside_the_threshold_band_does_not_outrank_a_large_one():
    # the AMX host, issue 22's run 1: baseline +3 % [+0, +6] in tg at 16 threads, -43 % in pp; run 2 called the tg
    # difference undecided. A verdict whose interval reaches into +-threshold leaves the order to the other metric.
    tg_amx = _rounds(400.0, tuple(w * 20 for w in (0.0, 0.4, -0.3, 0.2, -0.1, 0.3, -0.2, 0.1, 0.0, -0.4, 0.2, -0.3)))
    tg_base = [v * f for v, f in zip(tg_amx, (1.00, 1.05, 1.01, 1.06, 1.02, 1.04, 1.00, 1.05, 1.03, 1.06, 1.01, 1.04))]
    cells = [_cell("amx", tg_amx, pp=_rounds(3700.0)), _cell("baseline", tg_base, pp=_rounds(2100.0))]
    comp = verdicts.compare(cells[0], cells[1], "tg", 0.02)
    assert comp["verdict"] == "faster" and 1.0 < comp["ci_low"] < 1.02, comp  # faster, but not beyond the band
    lines, why = verdicts.preference_lines(cells, [_Src()], "tg", 0.02)
    assert lines == {"ik_llama.cpp+amx-amxforge": ["amx", "baseline"]}
    assert why["ik_llama.cpp+amx-amxforge"][0].startswith("amx before baseline: tg -3 % [-5, -1] slower; pp +76 % ")
    assert why["ik_llama.cpp+amx-amxforge"][0].endswith("faster (pp decides)"), why


def test_pinning_is_watched_thread_by_thread(tmp_path):
    allowed = sorted(os.sched_getaffinity(0))
    if len(allowed) < 2:
        pytest.skip(f"this process may run on {len(allowed)} CPU only: a move off the pinned CPU cannot be made")
    spin = "import os, sys, time\nif len(sys.argv) > 1: os.sched_setaffinity(0, {int(sys.argv[1])})\n" \
           "end = time.time() + 0.4\nwhile time.time() < end: pass\n"
    for extra, held in (([], True), ([str(allowed[1])], False)):  # the second re-pins itself, as a tool might
        proc = subprocess.Popen([sys.executable, "-c", spin, *extra],
                                preexec_fn=lambda: os.sched_setaffinity(0, {allowed[0]}))
        seen = set()
        watcher = threading.Thread(target=cellmod._watch_cpus, args=(proc, seen, {allowed[0]}, 0.01))
        watcher.start()
        proc.wait()
        watcher.join()
        assert seen and (seen <= {allowed[0]}) == held, (extra, seen)


def test_conditions_are_read_and_the_noisy_ones_named():
    before = conditions.host_conditions()
    spin = "import time, sys\nend = time.time() + float(sys.argv[1])\nwhile time.time() < end: pass"
    burner = subprocess.Popen([sys.executable, "-c", spin, "1.0"])
    burner.wait()  # a process that used a CPU during the run and ended: not named (it is gone) ...
    hog = subprocess.Popen([sys.executable, "-c", spin, "30"])
    try:
        import time
        time.sleep(1.0)
        logged = []
        got = conditions.finish_conditions(before, logged.append, ["x at 1 threads ran on CPUs 1, pinned to 0"])
    finally:
        hog.kill()
        hog.wait()
    pids = [p["pid"] for p in got["busy_processes"]]
    assert pids.count(hog.pid) == 1 and burner.pid not in pids  # ... one still running is
    assert got["pinning_held"] is False and len(got["load_before"]) == 3 and got["cpus"] == os.cpu_count()
    assert got["steal_pct"] is None or got["steal_pct"] >= 0
    assert isinstance(got["governor"], dict) and got["turbo"] in (True, False, None)
    assert any("other processes used CPU" in w and f"({hog.pid}," in w for w in got["warnings"])
    assert any(w.startswith("pinning did not hold: x at 1 threads") for w in got["warnings"])
    assert logged == [f"amxforge: bench fork: warning: {w}" for w in got["warnings"]]
    assert not any(k.startswith("_") for k in got)


@pytest.mark.parametrize("text, seconds", [("600", 600), ("90s", 90), ("10m", 600), ("1h30m", 5400),
                                           ("1.5h", 5400)])
def test_durations(text, seconds):
    assert duration(text, "--max-time") == seconds


@pytest.mark.parametrize("text", ["", "0", "10 minutes", "5x", "-3", "m"])
def test_bad_durations_name_the_fix(text):
    with pytest.raises(AmxforgeError, match="give a duration like 600, 90s, 10m or 1h30m"):
        duration(text, "--max-time")


@pytest.mark.parametrize("text,counts", [("1,2", [1, 2]), (" 16 , 4,16,1,4 ", [16, 4, 1]), ("8", [8])])
def test_thread_counts_keep_their_order_and_each_count_once(text, counts):
    """A count given twice (`--threads 1,1`) is run once: bench kernels ran it twice and merged the two as rounds."""
    assert positive_counts(text, "--threads", "1,2") == counts


@pytest.mark.parametrize("text", ["", "0", "1,0", "2,x", "1.5", "-1", "1,,2", "4,"])
def test_bad_thread_counts_name_the_fix(text):
    with pytest.raises(AmxforgeError, match=r"--threads .*: give positive counts like 1,2$"):
        positive_counts(text, "--threads", "1,2")


def test_input_checks_hold_under_python_O():
    """Checks written as `assert` vanish under `python -O` (PYTHONOPTIMIZE=1): `--threads 0` and `--max-time 0s`
    then passed, `bench fork --synth 4x1024` was an internal error and a ledger line without its keys was taken. No
    module of amxforge checks with `assert`, and under -O the checks still refuse."""
    import ast
    sources = sorted(p for top in ("site_scons/amxforge", "site_scons/site_tools") for p in (ROOT / top).rglob("*.py"))
    offenders = [f"{path.relative_to(ROOT)}:{node.lineno}" for path in sources
                 for node in ast.walk(ast.parse(path.read_text(), str(path))) if isinstance(node, ast.Assert)]
    assert offenders == []
    code = ("import sys; sys.path.insert(0, sys.argv[1])\n"
            "from amxforge.cliargs import duration, positive_counts\n"
            "from amxforge.errors import AmxforgeError\n"
            "cases = ((positive_counts, '0'), (positive_counts, '2,-1'), (duration, '0s'), (duration, '0'))\n"
            "for check, text in cases:\n"
            "    try:\n"
            "        print('taken', check(text, '--x', '1,2') if check is positive_counts else check(text, '--x'))\n"
            "    except AmxforgeError as exc:\n"
            "        print('refused', exc)\n")
    res = subprocess.run([sys.executable, "-O", "-c", code, str(ROOT / "site_scons")], capture_output=True, text=True,
                         timeout=60)
    assert res.returncode == 0 and res.stdout.splitlines() == [
        "refused --x '0': give positive counts like 1,2", "refused --x '2,-1': give positive counts like 1,2",
        "refused --x '0s': give a duration like 600, 90s, 10m or 1h30m",
        "refused --x '0': give a duration like 600, 90s, 10m or 1h30m"], res.stdout + res.stderr


def test_the_plot_s_thread_axis_names_the_counts_measured(monkeypatch, tmp_path):
    """The t/s plot's log2 thread axis was labelled 2^0, 2^1, ...: it names the counts measured (1, 2, 16)."""
    from amxforge.bench import fork as fb, png
    stats = {"median": 10.0, "min": 9.0, "max": 11.0}
    cells = [{"column": col, "type": "bf16", "threads": t, "pp": stats, "tg": stats}
             for col in ("amx", "amx +ours") for t in (1, 2, 16)]
    figures = []
    monkeypatch.setattr(png, "save", lambda fig, path, dpi: figures.append(fig))
    fb.plot({"cells": cells, "summary": {"types": ["bf16"], "columns": ["amx", "amx +ours"], "tool": "llama-bench"}},
            tmp_path / "tps.png")
    axes = figures[0].get_axes()
    assert len(axes) == 2 and all([t.get_text() for t in ax.get_xticklabels()] == ["1", "2", "16"] for ax in axes)


def test_a_program_read_while_it_runs_dies_with_an_interrupted_amxforge():
    """A benchmark cell, kbench or objdump that amxforge reads while it runs is killed and waited for when amxforge
    is interrupted (SIGINT / SIGTERM raise in it); one that ends on its own is left to end."""
    import signal
    from amxforge.children import reaped
    proc = subprocess.Popen(["sleep", "60"])
    with pytest.raises(KeyboardInterrupt), reaped(proc):
        raise KeyboardInterrupt
    assert proc.returncode == -signal.SIGKILL
    with reaped(subprocess.Popen(["sh", "-c", "exit 3"])) as proc:
        pass
    assert proc.wait() == 3


def test_lines_a_fork_prints_into_llama_bench_json_are_dropped_and_counted():
    # the AMX branch prints a line of its own into stdout right after the array opens
    polluted = LLAMA_BENCH_JSON.replace("[\n", "[\n======================================= HAVE_FANCY_SIMD is defined\n", 1)
    got = forktools.parse_output("llama-bench-json", "[AMX] init\n" + polluted, "")
    assert got == {"pp": 612.5, "tg": 41.25, "foreign_lines": 1}


def test_skipped_products_are_named_once_with_their_count():
    """The AMX branch's line for a product its AMX buffer cannot compute (bench.toml's evidence.not_computed), as
    llama-perplexity --amx printed it on a bf16 model on the builder, amid ordinary log lines."""
    log = ("llm_load_tensors:        AMX buffer size =   688.00 MiB\n"
           + "Unsupported quantized data type: 30\n" * 3 + "perplexity: calculating perplexity over 3 chunks\n")
    assert cellmod.not_computed(log) == "3 line(s) like 'Unsupported quantized data type: 30'"
    assert cellmod.not_computed(log.replace("Unsupported", "Supported")) == ""
    assert cellmod.not_computed("") == ""
