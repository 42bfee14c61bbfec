"""Dense bf16 GEMM of the kernel library (ctypes) against numpy float64 references, the guard, the audits."""

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from amxforge.errors import AmxforgeError
from amxforge.kernels import KernelLibrary, from_bf16, to_bf16
from conftest import HOST, ROOT, needs_amx, needs_avx512, run, tool

VARIANTS = ["baseline", "avx512", "amx"]


@pytest.fixture(scope="module")
def libs(kernel_builds):
    out = {}
    for v in VARIANTS:
        kernel_builds(v)
        out[v] = KernelLibrary(v, ROOT)
    return out


def reference(A16, B16):
    return from_bf16(A16).astype(np.float64) @ from_bf16(B16).astype(np.float64)


def check(lib, impl, M, N, K, seed=0, density=1.0):
    rng = np.random.default_rng(seed)
    A16 = to_bf16(rng.standard_normal((M, K)).astype(np.float32))
    B = rng.standard_normal((K, N)).astype(np.float32) * (rng.random((K, N)) < density)
    B16 = to_bf16(B)
    C = lib.gemm_bf16(A16, lib.pack_b_bf16(B16), N, impl)
    ref = reference(A16, B16)
    # bf16 products are exact in fp32; fp32 accumulation of K terms: |err| <= K * eps32 * (|A| @ |B|)
    scale = np.abs(from_bf16(A16)).astype(np.float64) @ np.abs(from_bf16(B16)).astype(np.float64)
    bound = 1e-6 + (K + 2) * np.finfo(np.float32).eps * scale
    assert np.all(np.abs(C - ref) <= bound), (impl, M, N, K, np.max(np.abs(C - ref) - bound))
    assert np.linalg.norm(C - ref) <= (K + 2) * np.finfo(np.float32).eps * np.linalg.norm(scale) + 1e-6
    return C


def runnable(lib, impl):
    if impl not in lib.impls():
        pytest.skip(f"{impl} is not compiled into or cannot run in variant {lib.variant} here")


IMPL_VARIANT = [("ref", "baseline"), ("avx512", "avx512"), ("amx", "amx")]


@pytest.mark.parametrize("impl,variant", IMPL_VARIANT)
@pytest.mark.parametrize("M", list(range(1, 18)))
def test_edge_rows(libs, impl, variant, M):
    runnable(libs[variant], impl)
    check(libs[variant], impl, M, 45, 77, seed=M)


@pytest.mark.parametrize("impl,variant", IMPL_VARIANT)
@pytest.mark.parametrize("N,K", [(1, 1), (16, 32), (17, 33), (31, 63), (64, 64), (15, 2), (3, 200), (100, 31)])
def test_edge_columns_and_depth(libs, impl, variant, N, K):
    runnable(libs[variant], impl)
    check(libs[variant], impl, 19, N, K, seed=N * 1000 + K)


@pytest.mark.parametrize("impl,variant", IMPL_VARIANT)
@pytest.mark.parametrize("density", [0.0, 1.0])
def test_all_zero_and_fully_dense(libs, impl, variant, density):
    runnable(libs[variant], impl)
    C = check(libs[variant], impl, 33, 48, 96, density=density)
    if density == 0.0:
        assert not C.any()


@needs_amx
@settings(max_examples=25, deadline=None)
@given(M=st.integers(1, 40), N=st.integers(1, 70), K=st.integers(1, 130), seed=st.integers(0, 2**16))
def test_amx_matches_reference_on_random_shapes(libs, M, N, K, seed):
    check(libs["amx"], "amx", M, N, K, seed)


@needs_amx
def test_amx_and_avx512_agree_closely(libs):
    rng = np.random.default_rng(7)
    A16, B16 = to_bf16(rng.standard_normal((64, 300))), to_bf16(rng.standard_normal((300, 80)))
    Bp = libs["amx"].pack_b_bf16(B16)
    a, b = libs["amx"].gemm_bf16(A16, Bp, 80, "amx"), libs["amx"].gemm_bf16(A16, Bp, 80, "avx512")
    assert np.allclose(a, b, rtol=1e-5, atol=1e-4)


def test_impls_follow_the_variant(libs):
    assert libs["baseline"].impls(runnable=False) == ["ref"]
    assert libs["avx512"].impls(runnable=False) == ["ref", "avx512"]
    assert libs["amx"].impls(runnable=False) == ["ref", "avx512", "amx"]
    with pytest.raises(AmxforgeError, match="not built into this variant"):
        libs["baseline"].gemm_bf16(np.zeros((1, 1), np.uint16), libs["baseline"].pack_b_bf16(np.zeros((1, 1),
                                   np.uint16)), 1, "amx")


def selftest(variant, hide=None):
    env = {"AMXFORGE_GUARD_HIDE": hide} if hide else {}
    return run([str(ROOT / "build" / variant / "bin" / "amxforge-selftest")], env=env)


@needs_amx
def test_selftest_passes_on_this_host(libs):
    res = selftest("amx")
    assert res.returncode == 0, res.stderr
    assert '"amx": {"ok": true' in res.stdout and '"avx512": {"ok": true' in res.stdout


@pytest.mark.parametrize("variant,hide,message", [
    ("amx", "amx_tile", "this CPU lacks amx_tile (variant amx needs:"),
    ("amx", "avx512_bf16 amx_int8", "this CPU lacks amx_int8 avx512_bf16"),
    ("amx", "xcr0_tile", "the OS has not enabled the AMX tile state"),
    ("amx", "amx_permission", "Linux refused AMX permission: arch_prctl(ARCH_REQ_XCOMP_PERM) failed: Operation not permitted"),
    ("avx512", "avx512f", "this CPU lacks avx512f"),
    ("baseline", "avx2", "this CPU lacks avx2"),
])
def test_guard_refuses_with_a_message_and_exit_2(libs, variant, hide, message):
    res = selftest(variant, hide)
    assert res.returncode == 2, (res.returncode, res.stdout, res.stderr)
    assert res.stderr.startswith(f"amxforge-selftest: variant {variant} cannot run on this host: ")
    assert message in res.stderr and res.stdout == ""


@pytest.mark.parametrize("variant", VARIANTS)
def test_kernel_audits_are_clean(libs, variant):
    res = run([tool("amxforge"), "audit", "--variant", variant], cwd=ROOT)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "clean" in res.stdout
