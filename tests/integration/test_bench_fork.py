"""`amxforge bench fork` end to end on tests/fixtures/minifork (its llama-bench prints the real tool's JSON, its
llama-sweep-bench takes the common options, --amx included, and prints the real JSONL): real builds, real runs,
pinned; what the table must hold is computed from this host (which variants run, whether AMX runs)."""

import contextlib
import fcntl
import json
import os
import queue
import shutil
import subprocess
import threading
import time

import pytest

from conftest import make_project, needs_variant, run, tool, variant_runs_here
from faultlib import remount, tmpfs

VARIANTS = ["baseline", "avx512", "amx"]
RUNNABLE = [v for v in VARIANTS if variant_runs_here(v)[0]]


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """The project with minifork, and `nofork`: the same tree whose tools have no --amx (like ik_llama.cpp main)."""
    proj = make_project(tmp_path_factory.mktemp("benchfork"))
    shutil.copytree(proj / "minifork", proj / "nofork")
    cml = proj / "nofork" / "tools" / "bench" / "CMakeLists.txt"
    text = cml.read_text()
    assert "parse it)\" ON)" in text
    cml.write_text(text.replace("parse it)\" ON)", "parse it)\" OFF)"))
    return proj


def bench(project, *args, env=None, timeout=900):
    return run([tool("amxforge"), "bench", "fork", *args], cwd=project, env=env, timeout=timeout)


def json_lines(res):
    lines = [json.loads(line) for line in res.stdout.splitlines() if line.strip()]
    return [x for x in lines if x["record"] == "cell"], next(x for x in lines if x["record"] == "summary")


def one_line(res):
    lines = [line for line in res.stderr.splitlines() if line.startswith("amxforge: error:")]
    assert len(lines) == 1 and "Traceback" not in res.stderr, res.stderr
    return lines[0]


def test_variants_threads_types_and_amx_on_off_in_one_table(project, tmp_path):
    pref = tmp_path / "preference"
    pref.write_text("other-package avx512 baseline\n")
    out = tmp_path / "out"
    res = bench(project, "--fork", "minifork", "--variants", ",".join(VARIANTS), "--threads", "1,2", "--types",
                "q8_0,q4_0", "--reps", "2", "--json", "--save-preference", "--out", str(out),
                env={"AMXFORGE_PREFERENCE": str(pref)})
    assert res.returncode == 0, res.stderr[-3000:]
    cells, summary = json_lines(res)
    # the tree's sweep-bench takes --amx and llama-bench does not: one tool for every cell, both --amx modes
    assert summary["tool"] == "llama-sweep-bench" and "llama-bench" in summary["tools_passed_over"]
    expect_columns = [f"{v}{amx}" for v in RUNNABLE for amx in ("", " --amx")]
    assert summary["columns"] == expect_columns
    assert len(cells) == len(expect_columns) * 2 * 2
    for v in set(VARIANTS) - set(RUNNABLE):  # skipped with the probe's reason, never run
        assert any(line.startswith(f"minifork {v}: it cannot run on this host: ") for line in summary["skipped"])
    amx_runs = variant_runs_here("amx")[0]
    for c in cells:
        assert c["status"] == "ok" and c["reps"] == 2 and c["tool"] == "llama-sweep-bench"
        assert c["pp"]["median"] > 0 and c["tg"]["median"] > 0 and len(c["tg"]["samples"]) == 2
        assert c["tokens"] == {"pp": 128, "tg": 32}  # sweep-bench: n_ubatch and n_ubatch / 4
        assert ("--amx" in c["command"]) == bool(c["amx"])
        # the weights went through the AMX buffer only in the amx build, with --amx, on a host that runs AMX
        assert c["amx_buffer"] == (c["variant"] == "amx" and c["amx"] and amx_runs)
        assert c["cpus"] == ("0" if c["threads"] == 1 else c["cpus"]) and c["oversubscribed"] is False
        assert len(c["tg_rounds"]) == 2 and all(v > 0 for v in c["tg_rounds"])
        if c["column"] != expect_columns[0]:  # each against the first column, paired round by round
            assert c["tg_pairs"] == 2 and c["tg_ratio"] > 0 and c["tg_method"].startswith("wilcoxon signed-rank")
            assert c["tg_ci_low"] is None and c["tg_verdict"] == "undecided"  # 2 pairs: no 95 % interval exists
        else:
            assert "tg_ratio" not in c
    assert set(summary["recommendation"]) == {"q8_0", "q4_0"}
    for per in summary["recommendation"].values():
        assert set(per) == {"pp", "tg"} and per["tg"]["column"] in expect_columns
    assert summary["reference"]["runs"] == 4 and summary["reference"]["noise_pct"]["tg"] >= 0
    assert summary["rounds"] == 2 and summary["stopped"] == "2 rounds (--reps)"
    n_comparisons = (len(expect_columns) - 1) * 2 * 2 * 2  # columns after the first x threads x types x metrics
    assert summary["verdicts"]["undecided"] == len(summary["undecided"]) == n_comparisons
    assert all(u["pairs"] == 2 and u["pairs_needed"] >= 12 for u in summary["undecided"])
    assert set(summary["conditions"]) >= {"governor", "turbo", "load_before", "load_after", "steal_pct",
                                          "busy_processes", "pinning_held", "warnings"}
    assert summary["conditions"]["pinning_held"] is True
    assert len(summary["preference_why"]["ik_llama.cpp+amx-amxforge"]) == len(RUNNABLE) - 1
    # the preference: this tree's package line replaced or added, other lines kept; the selector's format
    lines = pref.read_text().splitlines()
    assert "other-package avx512 baseline" in lines
    mine = [line.split() for line in lines if line.startswith("ik_llama.cpp+amx-amxforge ")]
    assert len(mine) == 1 and sorted(mine[0][1:]) == sorted(RUNNABLE)
    assert mine[0][1:] == summary["preference"]["ik_llama.cpp+amx-amxforge"]
    assert (out / "tps.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [json.loads(x) for x in (out / "cells.jsonl").read_text().splitlines()] == cells
    assert not (out / "work").exists() and not list(project.glob("llama*.log"))


def test_amx_off_uses_llama_bench_json_and_marks_oversubscribed_threads(project, tmp_path):
    over = len(os.sched_getaffinity(0)) + 1
    res = bench(project, "--fork", "minifork", "--variants", "baseline", "--amx", "off", "--threads", f"1,{over}",
                "--pp", "64", "--tg", "16", "--reps", "1", "--warmup", "0", "--out", str(tmp_path / "o"))
    assert res.returncode == 0, res.stderr[-3000:]
    assert f"{over} threads is more than this host's" in res.stderr
    table = res.stdout
    assert "tool       llama-bench (every cell)" in table and f"{over}*" in table and "unpinned" in table
    cells = [json.loads(x) for x in (tmp_path / "o" / "cells.jsonl").read_text().splitlines()]
    assert [c["oversubscribed"] for c in cells] == [False, True]
    for c in cells:
        assert c["tool"] == "llama-bench" and c["command"][-2:] == ["-o", "json"] and "--amx" not in c["command"]
        assert c["tokens"] == {"pp": 64, "tg": 16} and c["status"] == "ok"


def test_fork_against_fork_in_one_run(project, tmp_path):
    res = bench(project, "--fork", "minifork", "--fork", "nofork", "--variants", "baseline", "--threads", "1",
                "--reps", "2", "--json", "--out", str(tmp_path / "o"))
    assert res.returncode == 0, res.stderr[-3000:]
    cells, summary = json_lines(res)
    # nofork's tools take no --amx: it has no --amx column, and the same tool measures both trees
    assert summary["columns"] == ["minifork/baseline", "minifork/baseline --amx", "nofork/baseline"]
    assert {c["tool"] for c in cells} == {"llama-sweep-bench"} and all(c["status"] == "ok" for c in cells)
    assert [c["tree"] for c in cells] == ["minifork", "minifork", "nofork"]
    assert "minifork/baseline --amx against minifork/baseline" in run(
        [tool("amxforge"), "bench", "fork", "--fork", "minifork", "--fork", "nofork", "--variants", "baseline",
         "--threads", "1", "--reps", "1", "--warmup", "0", "--out", str(tmp_path / "o2")], cwd=project).stdout


def test_target_ci_adds_rounds_until_the_time_is_spent_and_bench_compare_reads_two_runs(project, tmp_path):
    common = ["--fork", "minifork", "--variants", "baseline", "--amx", "auto", "--threads", "1", "--pp", "32",
              "--tg", "8", "--warmup", "0"]
    res = bench(project, *common, "--reps", "1", "--target-ci", "0.01", "--max-time", "4s", "--json",
                "--out", str(tmp_path / "run a"))
    assert res.returncode == 0, res.stderr[-3000:]
    cells, summary = json_lines(res)
    # an interval of +-0.01 % is out of reach: rounds were added until another would not fit in 4 s
    assert summary["rounds"] > 1 and summary["stopped"].startswith(f"--max-time 4 s spent after {summary['rounds']}")
    assert summary["seconds"] <= 4 + 3 and summary["target_ci_pct"] == 0.01 and summary["max_time_s"] == 4
    assert all(c["reps"] == summary["rounds"] for c in cells)
    res = bench(project, *common, "--reps", "3", "--out", str(tmp_path / "run 'b'"))
    assert res.returncode == 0, res.stderr[-3000:]
    assert "3 round(s) after 0 warm-up pass(es)" in res.stdout and "[3 pairs: too few] undecided" in res.stdout
    assert "undecided (2; the pairs" in res.stdout
    got = run([tool("amxforge"), "bench", "compare", str(tmp_path / "run a"), str(tmp_path / "run 'b'" / "cells.jsonl"),
               "--json"], cwd=project)
    assert got.returncode == 0, got.stderr
    result = json.loads(got.stdout)
    assert result["method"].startswith("mann-whitney") and len(result["rows"]) == 4  # 2 columns x 2 metrics
    for row in result["rows"]:
        assert row["samples"] == [summary["rounds"], 3] and row["verdict"] in ("faster", "slower", "same",
                                                                                "undecided")
    text = run([tool("amxforge"), "bench", "compare", str(tmp_path / "run a"), str(tmp_path / "run 'b'")], cwd=project)
    assert text.returncode == 0 and "NEW against OLD, mann-whitney" in text.stdout
    (tmp_path / "junk.jsonl").write_text('{"record": "cell", "column": "x"}\n')
    os.mkfifo(tmp_path / "fifo.jsonl")  # a FIFO where a saved run was: refused, never waited on
    for args, expect in (([str(tmp_path / "run a"), str(tmp_path / "nothing")], "no such file"),
                         ([str(tmp_path / "run a"), str(tmp_path / "junk.jsonl")], "line 1: a cell without column"),
                         ([str(tmp_path / "run a"), str(project / "SConstruct")], "line 1: not JSON"),
                         ([str(tmp_path / "fifo.jsonl"), str(tmp_path / "run a")], "is a FIFO, not a regular file")):
        bad = run([tool("amxforge"), "bench", "compare", *args], cwd=project, timeout=30)
        assert bad.returncode == 2 and expect in one_line(bad), bad.stderr
    # --fail-on-slower: exit 1 exactly when a cell got slower (two runs written with a known 25 % loss in tg)
    for name, tg in (("old", 40.0), ("new", 30.0), ("same", 40.0)):
        samples = [tg * (1 + 0.001 * i) for i in range(8)]
        (tmp_path / f"{name}.jsonl").write_text(json.dumps({
            "record": "cell", "column": "amx", "threads": 4, "type": "q8_0",
            "tg": {"median": samples[4], "samples": samples}, "pp": None}) + "\n")
    slower = run([tool("amxforge"), "bench", "compare", str(tmp_path / "old.jsonl"), str(tmp_path / "new.jsonl"),
                  "--fail-on-slower"], cwd=project)
    assert slower.returncode == 1 and "1 comparison(s) slower" in one_line(slower)
    assert "-25 % [" in slower.stdout and "] slower" in slower.stdout
    same = run([tool("amxforge"), "bench", "compare", str(tmp_path / "old.jsonl"), str(tmp_path / "same.jsonl"),
                "--fail-on-slower"], cwd=project)
    assert same.returncode == 0 and "] same" in same.stdout


def test_a_cell_that_crashes_or_hangs_is_marked_and_the_others_complete(project, tmp_path):
    res = bench(project, "--fork", "minifork", "--variants", "baseline", "--threads", "1,2", "--reps", "2",
                "--warmup", "0", "--json", "--out", str(tmp_path / "o"), env={"MINIFORK_CRASH_THREADS": "2"})
    assert res.returncode == 1
    assert "cell(s) failed" in one_line(res)
    cells, summary = json_lines(res)
    for c in cells:
        if c["threads"] == 2:
            assert c["status"] == "failed: llama-sweep-bench killed by SIGABRT: no output", c["status"]
        else:
            assert c["status"] == "ok" and c["reps"] == 2
    assert len(summary["failed"]) == 2
    res = bench(project, "--fork", "minifork", "--variants", "baseline", "--amx", "off", "--threads", "1,2",
                "--reps", "1", "--warmup", "0", "--timeout", "2", "--out", str(tmp_path / "t"),
                env={"MINIFORK_HANG_THREADS": "1"})
    assert res.returncode == 1 and "FAILED     baseline 1 threads q8_0: llama-bench timed out after 2 s" in res.stdout
    assert "failed" in res.stdout.split("tg t/s")[1]


@needs_variant("amx")
def test_a_run_that_skipped_products_fails_its_cell_and_is_never_recommended(project, tmp_path):
    """The AMX branch under --amx puts bf16 weights into its AMX buffer, whose matmul has no bf16 kernel: it prints
    why and returns, the product not computed (minifork does the same). Such a run is fast and measures nothing: the
    cell fails, saying so, and the column that computed is the recommendation."""
    out = tmp_path / "o"
    res = bench(project, "--fork", "minifork", "--variants", "amx", "--types", "bf16", "--amx", "both", "--threads",
                "1", "--reps", "1", "--warmup", "0", "--json", "--out", str(out))
    assert res.returncode == 1 and "cell(s) failed" in one_line(res)
    cells, summary = json_lines(res)
    by_amx = {c["amx"]: c for c in cells}
    assert by_amx[False]["status"] == "ok" and by_amx[False]["pp"]["median"] > 0
    status = by_amx[True]["status"]
    assert status.startswith("failed: llama-sweep-bench skipped products, its speed measures no computation: "), status
    assert status.endswith("line(s) like 'Unsupported quantized data type: 30'; the cells without --amx are the ones "
                           "to compare (--amx off)"), status
    assert by_amx[True]["pp"] is None and by_amx[True]["amx_buffer"] is None
    assert {per["column"] for per in summary["recommendation"]["bf16"].values()} == {"amx"}
    assert summary["preference"]["ik_llama.cpp+amx-amxforge"] == ["amx"]
    assert "Unsupported quantized data type: 30" in (out / "logs" / "failed-minifork_amx_--amx-1t-bf16.log").read_text()


def test_amx_on_for_a_tree_without_it_says_so(project, tmp_path):
    res = bench(project, "--fork", "nofork", "--variants", "baseline", "--amx", "on", "--out", str(tmp_path / "o"))
    assert res.returncode == 2
    assert "nofork baseline: --amx on: none of its tools takes --amx" in one_line(res)


@pytest.mark.parametrize("args,expect", [
    (["--model", "/nonexistent.gguf"], "--model /nonexistent.gguf: no such file"),
    (["--model", "SConstruct"], "not a GGUF file"),
    (["--threads", "0"], "--threads '0': give positive counts"),
    (["--variants", "bogus"], "unknown variant 'bogus'"),
    (["--types", "q8_0", "--model", "SConstruct"], "give one of them"),
    (["--types", "zz"], "--type zz: choose one of"),
])
def test_bad_input_is_one_line_and_exit_2(project, tmp_path, args, expect):
    res = bench(project, "--fork", "minifork", "--variants", "baseline", *args, "--out", str(tmp_path / "o"))
    assert res.returncode == 2 and expect in one_line(res), res.stderr


def _model(tmp_path, kind):
    path = tmp_path / f"{kind}.gguf"
    if kind == "magic-only":
        path.write_bytes(b"GGUF" + os.urandom(64))
    elif kind == "cut-short":
        from amxforge.model.synth import ModelShape, synth
        synth(tmp_path / "whole.gguf", "q8_0", ModelShape(layers=1, dim=256, ff=512))
        path.write_bytes((tmp_path / "whole.gguf").read_bytes()[:200_000])
    elif kind == "directory":
        path.mkdir()
    else:
        os.mkfifo(path)
    return path


@pytest.mark.parametrize("setup,expect", [
    (lambda t: ["--model", str(_model(t, "magic-only"))], "a damaged GGUF file"),
    (lambda t: ["--model", str(_model(t, "cut-short"))], "a damaged GGUF file"),
    (lambda t: ["--model", str(_model(t, "directory"))], "is a directory, not a regular file"),
    (lambda t: ["--model", str(_model(t, "fifo"))], "is a FIFO, not a regular file"),
    (lambda t: ["--synth", "1x100000x100000"], "GiB of memory to write"),
    (lambda t: ["--synth", "4x1000x2816"], "DIM of --synth (1000) must divide by the 16 heads synth uses"),
    (lambda t: ["--synth", "0x1024x2816"], "--synth '0x1024x2816': give LAYERSxDIMxFF, e.g. 8x2048x5632"),
    (lambda t: ["--synth", "4x1024"], "--synth '4x1024': give LAYERSxDIMxFF, e.g. 8x2048x5632"),
])
def test_bad_models_and_shapes_are_refused_before_anything_is_built(project, tmp_path, setup, expect):
    """Issue 18 items 11 and 13: a file that only starts with the GGUF magic, a cut-short model, a directory or a
    FIFO as --model, a synthetic shape that cannot fit in memory or has no valid head split: one line, exit 2, and
    no build ran (the builds come after these checks)."""
    res = bench(project, "--fork", "minifork", "--variants", "baseline", *setup(tmp_path), "--out",
                str(tmp_path / "o"), timeout=60)
    assert res.returncode == 2 and expect in one_line(res), res.stderr
    assert "building" not in res.stderr and not (tmp_path / "o" / "builds").exists()


@pytest.mark.parametrize("where", ["fifo", "directory", "read-only"])
def test_save_preference_that_cannot_be_written_is_refused_before_the_benchmark(project, tmp_path, where):
    """Issue 18 item 11: once an internal error after the whole benchmark; now one line before it."""
    target = tmp_path / "pref"
    with contextlib.ExitStack() as stack:
        if where == "fifo":
            os.mkfifo(target)
        elif where == "directory":
            target.mkdir()
        else:
            disk = stack.enter_context(tmpfs(tmp_path / "ro", "1m"))
            remount(disk, "ro")
            target = disk / "pref"
        res = bench(project, "--fork", "minifork", "--variants", "baseline", "--save-preference", "--out",
                    str(tmp_path / "o"), env={"AMXFORGE_PREFERENCE": str(target)}, timeout=60)
    assert res.returncode == 2 and "--save-preference: the host preference file" in one_line(res), res.stderr
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("where", ["fifo", "missing directory", "read-only"])
def test_a_plot_that_cannot_be_written_is_refused_before_the_benchmark(project, tmp_path, where):
    """--plot was written after the whole benchmark, straight to the path: a missing directory or a FIFO there was an
    internal error at the end (the run's result lost). Now one line before anything is built or written."""
    target = tmp_path / "my plot.png"
    with contextlib.ExitStack() as stack:
        if where == "fifo":
            os.mkfifo(target)
        elif where == "missing directory":
            target = tmp_path / "nowhere" / "tps.png"
        else:
            disk = stack.enter_context(tmpfs(tmp_path / "ro", "1m"))
            remount(disk, "ro")
            target = disk / "tps.png"
        res = bench(project, "--fork", "minifork", "--variants", "baseline", "--plot", str(target), "--out",
                    str(tmp_path / "o"), timeout=60)
    assert res.returncode == 2 and one_line(res).startswith(f"amxforge: error: --plot {target}: cannot be written ("), \
        res.stderr
    assert not (tmp_path / "o").exists()


def test_a_directory_of_the_user_s_is_refused_as_out_and_an_earlier_run_s_is_taken_again(project, tmp_path):
    """A run replaces OUT/work and OUT/builds: `--out .` in a directory of the user's that holds a work/ is refused
    before anything is built or written; a new OUT is marked and taken again by the next run, and so is the OUT of a
    run from before the mark (its cells.jsonl)."""
    mine = tmp_path / "my 'dir'"
    (mine / "work").mkdir(parents=True)
    (mine / "work" / "notes.txt").write_text("mine\n")
    common = ["--fork", str(project / "minifork"), "--variants", "baseline", "--amx", "off", "--threads", "1",
              "--pp", "32", "--tg", "8", "--reps", "1", "--warmup", "0"]
    res = run([tool("amxforge"), "bench", "fork", *common, "--out", "."], cwd=mine, timeout=120)
    assert res.returncode == 2 and one_line(res) == (
        f"amxforge: error: --out {mine} holds files that are not a `bench fork` output (a run replaces work/ and "
        f"builds/ in it): choose a new directory, e.g. --out {mine / 'bench-fork'}"), res.stderr
    assert [p.name for p in mine.iterdir()] == ["work"] and (mine / "work" / "notes.txt").read_text() == "mine\n"
    out = tmp_path / "o"
    for _ in range(2):
        res = bench(project, *common, "--out", str(out))
        assert res.returncode == 0, res.stderr[-3000:]
        assert (out / ".amxforge-bench-fork").is_file() and (out / "cells.jsonl").is_file()
    (out / ".amxforge-bench-fork").unlink()
    res = bench(project, *common, "--out", str(out))
    assert res.returncode == 0 and (out / ".amxforge-bench-fork").is_file(), res.stderr[-3000:]


def test_a_second_run_into_the_same_out_waits_for_the_first(project, tmp_path):
    """Two runs into one OUT would replace each other's work/ and builds/: while another process holds OUT's lock
    (here this test, as a first run would), a run says whose run it waits for and writes nothing more; it runs when
    the lock is let go."""
    out = tmp_path / "o {pid} {x}"  # braces in the path, as in a format string
    out.mkdir()
    (out / ".amxforge-bench-fork").write_text("a first run's mark\n")
    with open(out / ".amxforge-bench-fork.lock", "a+") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        proc = subprocess.Popen([tool("amxforge"), "bench", "fork", "--fork", str(project / "minifork"), "--variants",
                                 "baseline", "--amx", "off", "--threads", "1", "--pp", "32", "--tg", "8", "--reps",
                                 "1", "--warmup", "0", "--out", str(out)], cwd=project, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        lines = queue.Queue()
        reader = threading.Thread(target=lambda: [lines.put(x) for x in proc.stderr], daemon=True)
        reader.start()
        first = lines.get(timeout=120)
        assert first == (f"amxforge: bench fork: another run (pid {os.getpid()}) writes {out}; waiting for it to "
                         f"finish\n")
        time.sleep(1)
        assert proc.poll() is None and sorted(p.name for p in out.iterdir()) == [".amxforge-bench-fork",
                                                                                 ".amxforge-bench-fork.lock"]
    stdout = proc.stdout.read()
    proc.wait(timeout=600)
    reader.join(timeout=60)
    assert proc.returncode == 0, "".join(lines.queue)[-3000:]
    assert (out / "cells.jsonl").is_file() and "cells " in stdout


def test_no_tree_and_no_package(project):
    res = bench(project)
    assert res.returncode == 2 and "--fork PATH" in one_line(res)


def test_a_type_gguf_cannot_write_needs_the_trees_quantizer(project, tmp_path):
    """minifork has no llama-quantize: the tools are still built, and the type is refused with the reason."""
    from amxforge.model.synth import gguf_cannot
    if not gguf_cannot("q4_k"):
        pytest.skip("this gguf package quantizes Q4_K itself")
    res = bench(project, "--fork", "minifork", "--variants", "baseline", "--types", "q4_k", "--out",
                str(tmp_path / "o"))
    assert res.returncode == 2
    line = one_line(res)
    assert "could not build its llama-quantize" in line and "choose types gguf writes: f16" in line
    assert (tmp_path / "o" / "builds" / "minifork" / "baseline" / "bin" / "llama-sweep-bench").is_file()


def test_kernels_fork_and_ours_are_columns_of_the_same_binary(project, tmp_path):
    """--kernels fork,amxforge builds the tree with fork_kernels=amxforge and measures each variant twice: the fork's
    own kernels (AMXFORGE_KERNELS=fork) and ours, whose runs show the calls our handler took."""
    variant = RUNNABLE[-1]
    res = bench(project, "--fork", "minifork", "--variants", variant, "--types", "bf16", "--kernels", "fork,amxforge",
                "--amx", "off", "--reps", "2", "--json", "--out", str(tmp_path / "out"))
    assert res.returncode == 0, res.stderr[-3000:]
    cells, summary = json_lines(res)
    assert summary["columns"] == [variant, f"{variant} +ours"]
    ours = [c for c in cells if c["kernels"] == "amxforge"]
    fork = [c for c in cells if c["kernels"] == "fork"]
    assert len(ours) == len(fork) == 1 and fork[0]["kernels_taken"] is None
    assert ours[0]["kernels_taken"] > 0  # every token's bf16 MUL_MAT went through our handler
    assert ours[0]["tg_pairs"] == 2 and ours[0]["status"] == "ok"


def test_pruned_types_are_synthesised_pruned(project, tmp_path):
    res = bench(project, "--fork", "minifork", "--variants", "baseline", "--types", "bf16,bf16-p70", "--amx", "off",
                "--reps", "1", "--json", "--out", str(tmp_path / "out"))
    assert res.returncode == 0, res.stderr[-3000:]
    cells, _ = json_lines(res)
    assert sorted(c["type"] for c in cells) == ["bf16", "bf16-p70"]
    import gguf
    import numpy as np
    model = next(c["model"] for c in cells if c["type"] == "bf16-p70")
    up = next(t for t in gguf.GGUFReader(model).tensors if t.name == "blk.0.ffn_up.weight")
    assert abs(float(np.mean((np.asarray(up.data).view(np.uint16) & 0x7FFF) == 0)) - 0.7) < 0.01
    res = bench(project, "--fork", "minifork", "--types", "bf16-p5x", "--reps", "1")
    assert res.returncode == 2 and "a pruned type is bf16-pNN" in one_line(res)


@pytest.mark.parametrize("fork_kernels", ["fork", "amxforge"])
def test_kernels_ours_from_a_package_only_where_it_was_packaged_with_them(project, tmp_path, fork_kernels):
    rel = tmp_path / "rel"
    res = run([tool("amxforge"), "package", "--variants", "baseline", "--fork", "minifork", "--fork-targets",
               "llama-sweep-bench", "--fork-kernels", fork_kernels, "--out", str(rel)], cwd=project, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    assert json.loads((rel / "manifest.json").read_text())["source"]["fork"]["kernels"] == fork_kernels
    assert not list(rel.rglob("*.a"))  # the archive linked into the fork's libraries is not shipped
    res = bench(project, "--package", str(rel), "--types", "bf16", "--kernels", "fork,amxforge", "--amx", "off",
                "--reps", "1", "--json", "--out", str(tmp_path / "out"))
    assert res.returncode == 0, res.stderr[-3000:]
    cells, summary = json_lines(res)
    if fork_kernels == "amxforge":
        assert summary["columns"] == ["baseline", "baseline +ours"]
        assert [c["kernels_taken"] > 0 for c in cells if c["kernels"] == "amxforge"] == [True]
    else:
        assert summary["columns"] == ["baseline"]
        assert any("baseline +ours: its tools have no amxforge kernels" in line for line in summary["skipped"])


def test_kernels_bad_value_is_one_line(project):
    res = bench(project, "--fork", "minifork", "--kernels", "ours", "--reps", "1")
    assert res.returncode == 2 and "--kernels ours: ours is not one" in one_line(res)
