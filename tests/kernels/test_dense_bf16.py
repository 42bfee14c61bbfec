"""Dense bf16 GEMM of the kernel library (ctypes) against numpy float64 references, the guard, the audits. Every
implementation of toolchain/kernels.toml is tested on a build this host can run; the others skip with the reason."""

import re

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from amxforge.errors import AmxforgeError
from amxforge.kernels import KernelLibrary, from_bf16, to_bf16
from conftest import HOST, KERNEL_VARIANTS, TABLE, at_a_guard_page, needs_amx, run, tool, variant_runs_here

IMPLS = TABLE.names


def reference(A16, B16):
    return from_bf16(A16).astype(np.float64) @ from_bf16(B16).astype(np.float64)


def check(lib, impl, M, N, K, seed=0, density=1.0, guard=False):
    """One product against the reference; guard: with A ending where a page no process may read starts."""
    rng = np.random.default_rng(seed)
    A16 = to_bf16(rng.standard_normal((M, K)).astype(np.float32))
    B = rng.standard_normal((K, N)).astype(np.float32) * (rng.random((K, N)) < density)
    B16 = to_bf16(B)
    Bp = lib.pack_b_bf16(B16)
    C = at_a_guard_page(A16, lambda A: lib.gemm_bf16(A, Bp, N, impl)) if guard else lib.gemm_bf16(A16, Bp, N, impl)
    ref = reference(A16, B16)
    # bf16 products are exact in fp32; fp32 accumulation of K terms: |err| <= K * eps32 * (|A| @ |B|)
    scale = np.abs(from_bf16(A16)).astype(np.float64) @ np.abs(from_bf16(B16)).astype(np.float64)
    bound = 1e-6 + (K + 2) * np.finfo(np.float32).eps * scale
    assert np.all(np.abs(C - ref) <= bound), (impl, M, N, K, np.max(np.abs(C - ref) - bound))
    assert np.linalg.norm(C - ref) <= (K + 2) * np.finfo(np.float32).eps * np.linalg.norm(scale) + 1e-6
    return C


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("M", list(range(1, 18)) + [23, 40])
def test_edge_rows(library_for, impl, M):
    lib, _ = library_for(impl)
    check(lib, impl, M, 45, 77, seed=M)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("N,K", [(1, 1), (16, 32), (17, 33), (31, 63), (64, 64), (15, 2), (3, 200), (100, 31),
                                 (40, 300), (20, 600)])
def test_edge_columns_and_depth(library_for, impl, N, K):
    lib, _ = library_for(impl)
    check(lib, impl, 19, N, K, seed=N * 1000 + K)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("M,N,K", [(1, 100, 64), (5, 256, 96), (16, 16, 32), (32, 200, 2048), (48, 64, 2112),
                                   (16, 257, 64), (3, 40, 70), (20, 64, 64)])
def test_activations_read_in_place_never_past_their_end(library_for, impl, M, N, K):
    """Products of few columns (the AMX kernel: up to 256, whole k-tiles and row blocks) read A where it lies
    instead of copying it into tiles: A ends where a guard page starts, and the result is within the bound (257
    columns, K = 70, or 20 rows (a partial second block): the copied path, the same checks)."""
    lib, _ = library_for(impl)
    check(lib, impl, M, N, K, seed=M * 31 + N + K, guard=True)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("K", [1100, 2100])
def test_prefill_shape_with_several_k_blocks(library_for, impl, K):
    """Rows and depth large enough for every kernel's blocked path (several K blocks, several row blocks; at 2100
    the AMX kernel's bf16 K chunk of 2048 leaves partial sums between chunks)."""
    lib, _ = library_for(impl)
    check(lib, impl, 70, 100, K, seed=3)


@pytest.mark.parametrize("impl", [i for i in IMPLS if i != "ref"])
def test_callers_on_two_threads_at_once_get_exact_results(library_for, impl):
    """The kernels keep scratch (A tiles, partial sums) per calling thread between calls: two threads calling at
    once (ctypes lets go of the GIL), with shapes that grow and shrink it, each get their own and right results."""
    from concurrent.futures import ThreadPoolExecutor
    lib, _ = library_for(impl)
    shapes = [(70, 100, 2100), (5, 33, 77), (40, 64, 600), (1, 45, 1100), (33, 17, 3000), (16, 16, 32)] * 2
    with ThreadPoolExecutor(2) as pool:
        done = list(pool.map(lambda s: check(lib, impl, *s, seed=s[0] + s[2]).shape, shapes))
    assert done == [(M, N) for M, N, _ in shapes]


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("density", [0.0, 1.0])
def test_all_zero_and_fully_dense(library_for, impl, density):
    lib, _ = library_for(impl)
    C = check(lib, impl, 33, 48, 96, density=density)
    if density == 0.0:
        assert not C.any()


@pytest.mark.parametrize("impl", [i for i in IMPLS if i != "ref"])
def test_fast_implementations_match_reference_on_random_shapes(library_for, impl):
    lib, _ = library_for(impl)

    @settings(max_examples=25, deadline=None)
    @given(M=st.integers(1, 40), N=st.integers(1, 70), K=st.integers(1, 130), seed=st.integers(0, 2**16))
    def random_shapes(M, N, K, seed):
        check(lib, impl, M, N, K, seed)
    random_shapes()


@needs_amx
def test_amx_and_avx512_agree_closely(library_for):
    lib, _ = library_for("amx")
    rng = np.random.default_rng(7)
    A16, B16 = to_bf16(rng.standard_normal((64, 300))), to_bf16(rng.standard_normal((300, 80)))
    Bp = lib.pack_b_bf16(B16)
    a, b = lib.gemm_bf16(A16, Bp, 80, "amx"), lib.gemm_bf16(A16, Bp, 80, "avx512")
    assert np.allclose(a, b, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("variant", KERNEL_VARIANTS)
def test_each_library_compiles_what_the_table_says(kernel_project, variant):
    """The library's own list (from its generated header) equals the table's rule: an implementation is built where
    the variant's flags enable every feature it needs; and baseline, the AVX2 level, always has a real kernel."""
    from amxforge.context import VariantContext
    project = kernel_project(variant)
    lib = KernelLibrary(variant, project)
    ctx = VariantContext(variant, project_dir=project)
    expected = TABLE.built_for(ctx.policy, ctx.variant, ctx.compiler)
    assert lib.impls(runnable=False) == [name for name in IMPLS if expected[name]]
    assert {"ref", "avx2"} <= set(lib.impls(runnable=False))
    assert ("amx" in lib.impls(runnable=False)) == (variant == "amx")
    if variant == "baseline":
        with pytest.raises(AmxforgeError, match="not built into this variant"):
            lib.gemm_bf16(np.zeros((1, 1), np.uint16), lib.pack_b_bf16(np.zeros((1, 1), np.uint16)), 1, "amx")


@pytest.mark.parametrize("variant", KERNEL_VARIANTS)
def test_runnable_implementations_follow_this_host(kernel_project, variant):
    """What the library says runs here is computed from the host: its variant runs, and each needs are present."""
    lib = KernelLibrary(variant, kernel_project(variant))
    runs, _ = variant_runs_here(variant)
    expected = [i for i in lib.impls(runnable=False) if runs and set(TABLE[i].needs) <= HOST]
    assert lib.impls(runnable=True) == expected


def selftest(project, variant, hide=None):
    env = {"AMXFORGE_GUARD_HIDE": hide} if hide else {}
    return run([str(project / "build" / variant / "bin" / "amxforge-selftest")], env=env)


@pytest.mark.parametrize("variant", KERNEL_VARIANTS)
def test_selftest_checks_every_implementation_that_runs_here(kernel_project, variant):
    ok, why = variant_runs_here(variant)
    if not ok:
        pytest.skip(f"variant {variant} cannot run on this host: {why}")
    project = kernel_project(variant)
    import json
    res = selftest(project, variant)
    assert res.returncode == 0, res.stdout + res.stderr
    out = json.loads(res.stdout)
    runs = KernelLibrary(variant, project).impls(runnable=True)
    assert set(out["checks"]) == set(runs) - {"ref"}
    assert all(c["ok"] for c in out["checks"].values())


GUARD_CASES = [("amx", "amx_tile"), ("amx", "avx512_bf16 amx_int8"), ("amx", "xcr0_tile"), ("amx", "amx_permission"),
               ("avx512", "avx512f"), ("baseline", "avx2"), ("baseline", "xcr0_avx")]


def expected_refusal(variant: str, hide: str, required: set) -> str:
    """What the guard must say: the CPU features it lacks (missing here, or hidden), else the OS part hidden."""
    hidden = set(hide.split())
    lacking = (required - HOST) | (required & hidden)
    if lacking:
        return "lacks:" + " ".join(sorted(lacking))
    if "xcr0_tile" in hidden:
        return "the OS has not enabled the AMX tile register state"
    if "xcr0_avx" in hidden:
        return "the OS has not enabled the AVX register state"
    return "Linux refused AMX permission: arch_prctl(ARCH_REQ_XCOMP_PERM) failed: Operation not permitted"


@pytest.mark.parametrize("variant,hide", GUARD_CASES)
def test_guard_refuses_with_a_message_and_exit_2(kernel_project, variant, hide):
    project = kernel_project(variant)
    required = set(KernelLibrary(variant, project).lib.akf_required_features().decode().split())
    res = selftest(project, variant, hide)
    assert res.returncode == 2, (res.returncode, res.stdout, res.stderr)
    assert res.stderr.startswith(f"amxforge-selftest: variant {variant} cannot run on this host: ")
    assert res.stdout == "" and len(res.stderr.strip().splitlines()) == 1
    want = expected_refusal(variant, hide, required)
    if want.startswith("lacks:"):
        lacking = re.search(r"this CPU lacks (.*?) \(variant", res.stderr)
        assert lacking and set(lacking.group(1).split()) == set(want[6:].split()), res.stderr
    else:
        assert want in res.stderr, res.stderr


@pytest.mark.parametrize("variant", KERNEL_VARIANTS)
def test_kernel_audits_are_clean(kernel_project, variant):
    res = run([tool("amxforge"), "audit", "--variant", variant], cwd=kernel_project(variant))
    assert res.returncode == 0, res.stdout + res.stderr
    assert "clean" in res.stdout


def test_guard_names_a_feature_it_cannot_check(kernel_project):
    """A variant needing a feature the guard has no CPUID bit for is refused, not silently allowed."""
    lib = KernelLibrary("baseline", kernel_project("baseline"))
    import ctypes
    msg = ctypes.create_string_buffer(256)
    lib.lib.akf_check_features.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_size_t]
    assert lib.lib.akf_check_features(b"x", b"avx2 warp_drive", msg, 256) != 0
    assert "needs warp_drive, which this guard cannot check" in msg.value.decode()
