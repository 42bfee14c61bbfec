"""The fork bench's parts that need no build: the tool table against its schema, reading the tools' structured
output, which options a tool takes (from its --help), the run order, the CPU lists and the verdicts on noise."""

import json

import pytest

from amxforge.bench import forktools, pinning, verdicts
from amxforge.bench.cells import schedule
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
    plan = list(schedule(cells, reps=2, warmup=1, reference=ref))
    assert [c for k, c in plan] == ["A", "B", "C", "R", "A", "B", "C", "R", "R", "C", "B", "A", "R"]
    assert [k for k, _ in plan][:3] == ["warmup"] * 3


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


def _cell(column, tg):
    return {"type": "q8_0", "column": column, "threads": 4, "oversubscribed": False,
            "tg": verdicts.stats(tg), "pp": verdicts.stats([100.0])}


def test_the_recommendation_names_ties_within_the_noise():
    cells = [_cell("baseline", [40.0, 41.0]), _cell("amx", [40.5, 40.9]), _cell("avx512", [30.0, 31.0])]
    rec = verdicts.recommend(cells, {"pp": 1.0, "tg": 3.0})
    assert rec["q8_0"]["tg"]["column"] == "amx"
    assert rec["q8_0"]["tg"]["equal_within_noise"] == ["baseline at 4 threads"]


def test_lines_a_fork_prints_into_llama_bench_json_are_dropped_and_counted():
    # the AMX branch prints a line of its own into stdout right after the array opens
    polluted = LLAMA_BENCH_JSON.replace("[\n", "[\n======================================= HAVE_FANCY_SIMD is defined\n", 1)
    got = forktools.parse_output("llama-bench-json", "[AMX] init\n" + polluted, "")
    assert got == {"pp": 612.5, "tg": 41.25, "foreign_lines": 1}
