"""Probe parsing against recorded texts (four CPUs, nvidia-smi, nvcc) and the live host."""

import json

import pytest

from amxforge.probe import probe
from amxforge.probe.cpu import parse_cpuinfo, probe_cpu
from amxforge.probe.cuda import parse_gpu_archs, parse_nvcc_version, parse_nvidia_smi
from conftest import FIXTURES, HOST, needs_amx, run, tool

CPUS = FIXTURES / "cpuinfo"


def cpu(name):
    return probe_cpu((CPUS / f"{name}.txt").read_text())


def test_amx_xeon_parses_features_and_identity():
    c = cpu("sapphire_rapids_amx")
    assert (c["vendor"], c["family"], c["model"]) == ("GenuineIntel", 6, 143)
    assert {"amx_tile", "amx_int8", "amx_bf16", "avx512_bf16", "avx512_vnni", "avx512_fp16"} <= set(c["features"])
    assert c["uarch"] == "sapphirerapids"
    assert c["features"] == sorted(set(c["features"]))  # one entry per feature, stable order


def test_avx2_desktop_has_no_avx512():
    c = cpu("desktop_avx2")
    assert "avx2" in c["features"] and not any(f.startswith("avx512") for f in c["features"])
    assert c["uarch"] == "skylake"


def test_avx512_without_amx():
    c = cpu("skylake_avx512_no_amx")
    assert {"avx512f", "avx512bw", "avx512vl", "avx512dq", "avx512cd"} <= set(c["features"])
    assert "avx512_vnni" not in c["features"] and "amx_tile" not in c["features"]
    assert c["uarch"] == "skylake_avx512"


def test_vm_hiding_xsave_shows_no_avx_family():
    c = cpu("vm_hidden_xsave")
    assert "xsave" not in c["features"] and "avx" not in c["features"] and "avx2" not in c["features"]
    # an Icelake model number, but archspec can only name what the features allow: information only
    assert c["model"] == 106 and c["uarch"] == "westmere"


def test_only_first_processor_block_is_read():
    text = (CPUS / "desktop_avx2.txt").read_text() + "processor\t: 9\nflags\t\t: avx512f\n\n"
    assert "avx512f" not in parse_cpuinfo(text)["features"]


@pytest.mark.parametrize("name,expected", [
    ("h200", [{"index": 0, "name": "NVIDIA H200", "cc": "9.0"}]),
    ("two_gpus", [{"index": 0, "name": "NVIDIA GeForce RTX 4090", "cc": "8.9"},
                  {"index": 1, "name": "NVIDIA GeForce RTX 5090", "cc": "12.0"}]),
    ("no_devices", []),
    ("not_numeric", [{"index": 0, "name": "NVIDIA GeForce RTX 3090", "cc": "8.6"}]),
])
def test_nvidia_smi_parsing_keeps_only_numeric_answers(name, expected):
    assert parse_nvidia_smi((FIXTURES / "nvidia-smi" / f"{name}.txt").read_text()) == expected


def test_nvcc_version_and_archs():
    assert parse_nvcc_version((FIXTURES / "nvcc" / "version_13.0.txt").read_text()) == "13.0.88"
    archs = parse_gpu_archs((FIXTURES / "nvcc" / "list_gpu_arch_13.0.txt").read_text())
    assert archs[0] == "75" and "90" in archs and "120" in archs and "52" not in archs


def test_variant_report_for_recorded_cpus():
    desktop = probe(cpuinfo=str(CPUS / "desktop_avx2.txt"))["variants"]
    assert desktop["baseline"]["runnable"] is True
    assert desktop["avx512"]["runnable"] is False and "CPU lacks" in desktop["avx512"]["why"]
    assert "avx512f" in desktop["amx"]["why"] and "amx_tile" in desktop["amx"]["why"]
    assert desktop["auto"]["picks"] == "baseline"

    skx = probe(cpuinfo=str(CPUS / "skylake_avx512_no_amx.txt"))["variants"]
    # no VNNI/BF16/VBMI: the complete AVX-512 set is missing, so not even avx512 runs
    assert skx["avx512"]["runnable"] is False and "avx512_bf16" in skx["avx512"]["why"]
    assert skx["auto"]["picks"] == "baseline"

    vm = probe(cpuinfo=str(CPUS / "vm_hidden_xsave.txt"))["variants"]
    assert vm["baseline"]["runnable"] is False and "avx2" in vm["baseline"]["why"]
    assert vm["auto"]["picks"] is None and "none of" in vm["auto"]["why"]


def test_cache_is_used_and_refresh_reprobes(tmp_path, monkeypatch):
    from amxforge.probe import cache
    monkeypatch.setenv("AMXFORGE_CACHE", str(tmp_path))
    saved = str(CPUS / "desktop_avx2.txt")
    first = probe(cpuinfo=saved)
    stored = json.loads(cache.cache_file(saved).read_text())
    stored["result"]["cpu"]["vendor"] = "FROM-CACHE"
    cache.cache_file(saved).write_text(json.dumps(stored))
    assert not cache.cache_file().exists()  # judging a saved cpuinfo never writes this host's cache
    assert probe(cpuinfo=str(CPUS / "desktop_avx2.txt"))["cpu"]["vendor"] == "FROM-CACHE"
    assert probe(cpuinfo=str(CPUS / "desktop_avx2.txt"), refresh=True)["cpu"]["vendor"] == first["cpu"]["vendor"]
    # another CPU is another key: no stale answer
    assert probe(cpuinfo=str(CPUS / "skylake_avx512_no_amx.txt"))["cpu"]["model"] == 85


def test_live_host_probe_json_keys():
    res = run([tool("amxforge"), "probe", "--json"], check=True)
    data = json.loads(res.stdout)
    assert set(data) >= {"cpu", "os", "cuda", "compilers", "variants"}
    assert set(data["cpu"]) >= {"vendor", "family", "model", "uarch", "features"}
    assert set(data["os"]) >= {"kernel", "xcr0_tile", "amx_permitted", "error"}
    assert set(data["cuda"]) >= {"nvcc", "devices"}
    assert all(set(c) >= {"name", "path", "version"} for c in data["compilers"])
    assert set(data["variants"]) >= {"baseline", "avx512", "amx", "native", "cuda", "amx-cuda", "auto"}
    assert all(set(v) >= {"buildable", "runnable", "why"} for v in data["variants"].values())
    assert set(data["cpu"]["features"]) == HOST


@needs_amx
def test_live_host_has_amx_permission():
    data = json.loads(run([tool("amxforge"), "probe", "--json", "--refresh"], check=True).stdout)
    assert "amx_tile" in data["cpu"]["features"]
    assert data["os"]["xcr0_tile"] is True and data["os"]["amx_permitted"] is True and data["os"]["error"] is None


def test_human_probe_table():
    out = run([tool("amxforge"), "probe"], check=True).stdout
    assert out.splitlines()[0].startswith("cpu ")
    assert "variant    build  run" in out and "picks" in out
