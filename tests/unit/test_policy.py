"""Rendering for every class x variant, classification, and the policy's bad-input errors."""


import pytest

from amxforge.errors import AmxforgeError
from amxforge.policy import Compiler, Policy
from amxforge.policy.classes import glob_to_regex
from amxforge.policy.cuda_arch import normalize, resolve_cuda_archs
from amxforge.probe.cpu import parse_cpuinfo
from conftest import FIXTURES, ROOT, policy_root

GCC12 = Compiler("gcc", "12.2.0", "/usr/bin/gcc")
POLICY = Policy()
ISA = POLICY.isa
AVX512 = set(ISA.groups["avx512"])
AMX_FLAGS = {ISA.features[f].flag for f in ISA.features if ISA.features[f].family == "amx"}
SPR = parse_cpuinfo((FIXTURES / "cpuinfo" / "sapphire_rapids_amx.txt").read_text())["features"]
SKX = parse_cpuinfo((FIXTURES / "cpuinfo" / "skylake_avx512_no_amx.txt").read_text())["features"]
VARIANTS = [v for v in POLICY.variants.raw]
CLASSES = POLICY.classes.classes


def flags(cls, name, host=SPR, compiler=GCC12, archs=("90",)):
    variant = POLICY.variant(name, host)
    return POLICY.class_flags(cls, variant, compiler, archs if cls == "cuda" else ())


@pytest.mark.parametrize("name", VARIANTS)
@pytest.mark.parametrize("cls", CLASSES)
def test_every_class_and_variant_renders_within_the_rules(cls, name):
    out = flags(cls, name)
    assert out and "-march=native" not in out
    enabled = ISA.features_of_flags(out) if cls != "cuda" else set()
    # AVX-512 is all or nothing
    assert not (enabled & AVX512) or AVX512 <= enabled, out
    # AMX flags only on amx units, only in AMX variants
    has_amx = bool(AMX_FLAGS & set(out)) if cls != "cuda" else False
    assert has_amx == (cls == "amx" and bool(POLICY.variant(name, SPR).amx)), out


@pytest.mark.parametrize("name", VARIANTS)
def test_protected_is_default_plus_amx_off_and_portable_is_x86_64(name):
    default, protected = flags("default", name), flags("protected", name)
    assert protected[:len(default)] == default
    assert protected[len(default):] == ("-mno-amx-tile", "-mno-amx-int8", "-mno-amx-bf16")
    assert flags("portable", name) == ("-march=x86-64", "-mtune=generic")
    if POLICY.variant(name, SPR).amx:
        assert set(flags("amx", name)) - set(default) == {"-mamx-tile", "-mamx-int8", "-mamx-bf16"}


def test_protected_flags_equal_in_avx512_and_amx():
    assert flags("protected", "avx512") == flags("protected", "amx")


def test_cuda_class_gencode_and_host_flags():
    out = flags("cuda", "amx-cuda", archs=("86", "90"))
    assert out[:3] == ("-gencode=arch=compute_86,code=sm_86", "-gencode=arch=compute_90,code=sm_90",
                       "-gencode=arch=compute_90,code=compute_90")
    assert "-Xcompiler=-mavx512bf16" in out and not any("amx" in f for f in out)


def test_native_expands_host_features_never_march_native():
    out = flags("amx", "native")
    assert "-mavx512fp16" in out and "-mamx-tile" in out and "-march=x86-64-v3" in out
    assert "-mamx-tile" not in flags("default", "native")


def test_native_without_complete_avx512_set_drops_avx512():
    # Skylake-SP has F CD BW DQ VL but not VNNI/BF16/VBMI: a partial set would break IQK FA
    out = flags("protected", "native", host=SKX)
    assert not any(f.startswith("-mavx512") for f in out)


def test_compiler_too_old_names_compiler_flag_and_minimum():
    with pytest.raises(AmxforgeError, match=r"gcc 10\.2\.0 .* does not accept -march=x86-64-v3 .*gcc >= 11"):
        flags("amx", "amx", compiler=Compiler("gcc", "10.2.0", "/opt/gcc10/bin/gcc"))
    host = SPR + ["amx_fp16"]
    with pytest.raises(AmxforgeError, match=r"-mamx-fp16 \(amx_fp16 needs gcc >= 13\)"):
        flags("amx", "native", host=host)


@pytest.mark.parametrize("path,cls,rule", [
    ("ggml/src/iqk/fa/iqk_fa_128_128.cpp", "protected", "iqk-flash-attention"),
    ("ggml/src/iqk/iqk_flash_attn.cpp", "protected", "iqk-flash-attention"),
    ("ggml/src/iqk/iqk_mul_mat.cpp", "default", "everything-else"),
    ("ggml/src/ggml-cpu/amx/mmq.cpp", "amx", "fork-amx-backend"),
    ("ggml/src/ggml-cpu-traits.cpp", "amx", "fork-amx-backend"),
    ("ggml/src/ggml-backend.cpp", "amx", "fork-amx-backend"),
    ("ggml/src/ggml-cpu/ggml-cpu.cpp", "amx", "fork-amx-backend"),
    ("src/ggml-cpu/ggml-cpu.c", "amx", "fork-amx-backend"),  # upstream ggml: ggml_cpu_has_amx_int8()
    ("ggml/src/ggml-cpu/ggml-cpu.c", "amx", "fork-amx-backend"),  # llama.cpp vendors the same ggml-cpu.c
    ("kernels/dense/gemm_bf16_amx.c", "amx", "kernels-amx"),
    ("kernels/runtime/guard.c", "portable", "runtime-guard"),
    ("ggml/src/ggml-cuda/mmq.cu", "cuda", "cuda-units"),
    ("src/llama.cpp", "default", "everything-else"),
])
def test_classification_first_match_wins(path, cls, rule):
    found = POLICY.classify(path)
    assert (found.unit_class, found.rule) == (cls, rule)


def test_glob_semantics():
    assert glob_to_regex("**/iqk/fa/*.cpp").match("iqk/fa/x.cpp")
    assert glob_to_regex("**/iqk/fa/*.cpp").match("a/b/iqk/fa/x.cpp")
    assert not glob_to_regex("**/iqk/fa/*.cpp").match("a/iqk/fa/sub/x.cpp")
    assert not glob_to_regex("kernels/runtime/*.c").match("kernels/runtime/x/y.c")


def test_content_scan_names_file_and_line(tmp_path):
    unit = tmp_path / "helper.c"
    unit.write_text("#include <immintrin.h>\n\nvoid f(void) { _tile_release(); }\n")
    with pytest.raises(AmxforgeError, match=r"helper\.c:3: uses AMX intrinsics .* classed default"):
        POLICY.unit("src/helper.c", unit, POLICY.variant("amx"), GCC12)
    ok = tmp_path / "helper_amx.c"
    ok.write_text(unit.read_text())
    assert POLICY.unit("src/helper_amx.c", ok, POLICY.variant("amx"), GCC12).unit_class == "amx"


def test_unknown_variant_lists_valid_ones():
    with pytest.raises(AmxforgeError, match=r"unknown variant 'avx1024'; valid variants: baseline, avx512, amx"):
        POLICY.variant("avx1024")


@pytest.fixture
def policy_copy(tmp_path):
    return policy_root(tmp_path)


def test_malformed_toml_names_file_and_line(policy_copy):
    path = policy_copy / "toolchain" / "variants.toml"
    path.write_text(path.read_text().replace('level = "x86-64-v3"', 'level = x86-64-v3', 1))
    with pytest.raises(AmxforgeError, match=r"variants\.toml: malformed TOML: .*line \d+"):
        Policy(policy_copy)


def test_partial_avx512_variant_is_refused(policy_copy):
    path = policy_copy / "toolchain" / "variants.toml"
    path.write_text(path.read_text() + '\n[variants.broken]\nlevel = "x86-64-v3"\nfeatures = ["avx512f", "avx512bw"]\n')
    with pytest.raises(AmxforgeError, match=r"broken\]: partial AVX-512 set \(missing avx512cd"):
        Policy(policy_copy)


def test_template_errors_name_file_and_line(policy_copy):
    tpl = policy_copy / "templates" / "flags" / "amx.j2"
    tpl.write_text(tpl.read_text() + "{{ no_such_thing }}\n")
    with pytest.raises(AmxforgeError, match=r"amx\.j2:\d+: template error: .*no_such_thing"):
        Policy(policy_copy).class_flags("amx", POLICY.variant("amx"), GCC12)
    tpl.write_text("{% for f in amx %}\n{{ flag(f) }}\n")
    with pytest.raises(AmxforgeError, match=r"amx\.j2:\d+: template error"):
        Policy(policy_copy).class_flags("amx", POLICY.variant("amx"), GCC12)


def test_cuda_arch_resolution():
    probe = {"cuda": {"nvcc": {"version": "13.0.88", "archs": ["75", "80", "86", "89", "90", "100", "120"]},
                      "devices": []}}
    assert normalize("90") == "90" and normalize("sm_86") == "86" and normalize("120a") == "120a"
    assert normalize("sm_100f") == "100f"
    assert resolve_cuda_archs("90;86", probe) == ("86", "90")
    # the grammar is nvcc's: \d{2,3}[af]? with an optional sm_; what once slipped through is refused
    for bad in ("1.20", "9.0", "sm_90x", "compute_90", "9", "1200", "90b", "sm90"):
        with pytest.raises(AmxforgeError, match=r"is not an arch; write e\.g\. cuda_arch=90"):
            normalize(bad)
    with pytest.raises(AmxforgeError, match=r"cuda_arch 61 is not known to nvcc 13\.0\.88; it supports: 75 80"):
        resolve_cuda_archs("61", probe)
    with pytest.raises(AmxforgeError, match=r"no CUDA device visible .* cuda_arch=90"):
        resolve_cuda_archs(None, probe)
    probe["cuda"]["devices"] = [{"index": 0, "name": "NVIDIA H200", "cc": "9.0"}]
    assert resolve_cuda_archs("native", probe) == ("90",)
    probe["cuda"]["nvcc"] = None
    with pytest.raises(AmxforgeError, match="needs nvcc"):
        resolve_cuda_archs("90", probe)


def test_blackwell_archs_become_arch_specific_for_forks():
    from amxforge.policy.cuda_arch import arch_specific
    from amxforge.tomlfile import load_toml
    specific = load_toml(ROOT / "toolchain" / "cuda.toml")["arch_specific"]
    assert arch_specific(("86", "90", "120"), specific) == ("86", "90", "120a")
    probe = {"cuda": {"nvcc": {"version": "13.0.88", "archs": ["86", "90", "120"]}, "devices": []}}
    archs = arch_specific(resolve_cuda_archs("86;120", probe), specific)
    variant = POLICY.variant("cuda")
    out = POLICY.class_flags("cuda", variant, GCC12, archs)
    assert "-gencode=arch=compute_120a,code=sm_120a" in out and out[2] == "-gencode=arch=compute_120a,code=compute_120a"


def test_every_toolchain_table_has_a_schema_it_passes():
    """Each toolchain/*.toml is validated when it is loaded (tomlfile.load_toml): none may go without a schema."""
    from amxforge.tomlfile import load_toml, schema_path
    for path in sorted((ROOT / "toolchain").glob("*.toml")):
        assert schema_path(path).is_file(), f"{path.name} has no schema in toolchain/schemas/"
        load_toml(path)


@pytest.mark.parametrize("name,old,new,where", [
    ("kernels.toml", 'bench = false', 'bench = "no"', r"kernels\.toml \[implementations\[0\]\.bench\]: 'no' is not of type 'boolean'"),
    ("forks.toml", 'ggml = "src"', 'ggml = "/abs"', r"forks\.toml \[kinds\.ggml\.ggml\]: '/abs' does not match"),
    ("forks.toml", 'value = "OFF"\nwhen = "always"', 'value = "OFF"\nwhen = "sometimes"', r"\[settings\.GGML_NATIVE\.when\]"),
    ("models.toml", 'amx = true', 'amx = true\nextra = 1', r"models\.toml \[types\.f16\]: unknown key\(s\): 'extra'"),
])
def test_a_table_that_breaks_its_schema_names_file_key_and_row(policy_copy, name, old, new, where):
    from amxforge.tomlfile import load_toml
    path = policy_copy / "toolchain" / name
    path.write_text(path.read_text().replace(old, new, 1))
    with pytest.raises(AmxforgeError, match=where):
        load_toml(path)


def test_the_hooks_sparse_decode_names_an_implementation(policy_copy):
    from amxforge.implementations import KernelTable
    path = policy_copy / "toolchain" / "kernels.toml"
    path.write_text(path.read_text().replace('impl = "avx512"', 'impl = "avx513"', 1))
    with pytest.raises(AmxforgeError, match=r"\[hook\] sparse_decode: impl 'avx513' is no implementation; choose ref, "):
        KernelTable(path)


def test_selection_order_for_every_mix_of_cpu_and_cuda_variants():
    """Best first by `auto`'s order, each CUDA variant just before its CPU twin (its `like`), for every subset."""
    import itertools
    from amxforge.package import selection_order
    names = [n for n in POLICY.variants.raw if not POLICY.variants.raw[n].get("host")]
    assert selection_order(POLICY, names) == ["amx-cuda", "amx", "avx512", "cuda", "baseline"]
    rank = {n: i for i, n in enumerate(POLICY.variants.auto)}
    for k in range(1, len(names) + 1):
        for subset in itertools.combinations(names, k):
            order = selection_order(POLICY, list(subset))
            assert sorted(order) == sorted(subset)
            twin = {n: POLICY.variants.raw[n].get("like", n) for n in subset}
            assert [rank[twin[n]] for n in order] == sorted(rank[twin[n]] for n in order), order
            for i, n in enumerate(order):  # a CUDA variant comes right before its twin when both are there
                if twin[n] != n and twin[n] in subset:
                    assert order[i + 1] == twin[n], order
