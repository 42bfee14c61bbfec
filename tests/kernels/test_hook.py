"""The matmul handler forks enter our kernels through (kernels/hook/mulmat.c), called as ik_llama.cpp's mul_mat calls
iqk_mul_mat_4d: every thread ith of nth with the same arguments, byte strides for weights and activations, a float
stride for C. Against a float64 reference, for every implementation this host runs, dense and sparse, random shapes
that are not multiples of the tiles, padded strides, threads one after another and at once.

The tolerance: the handler rounds the f32 activations to bf16 (as the fork's own bf16 path does: BF16's vec_dot_type
is BF16) and multiplies in fp32, whose products of bf16 values are exact; the only error left is fp32 accumulation
over K terms, |err| <= K * eps32 * sum_k |a_k| |w_k| (the standard bound on recursive summation; any blocking or
order of the sums stays within it)."""

import os
import re
import subprocess
import sys
import mmap
import threading

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from amxforge.kernels import from_bf16, to_bf16
from conftest import ROOT, TABLE

IMPLS = TABLE.names


@pytest.mark.parametrize("impl", IMPLS)
def test_activation_conversion_rounds_to_nearest_even_like_numpy(library_for, impl):
    lib, _ = library_for(impl)
    rng = np.random.default_rng(5)
    bits = rng.integers(0, 2**32, 4000, dtype=np.uint64).astype(np.uint32)
    bits[:8] = [0x3F808000, 0x3F818000, 0x3F807FFF, 0x7F800000, 0xFF800000, 0x7FC00001, 0x7F800001, 0x00000000]
    x = bits.view(np.float32)
    finite = np.isfinite(x) & (np.abs(x) >= np.finfo(np.float32).tiny)  # the hardware flushes denormals
    for n in [0, 1, 15, 16, 17, 31, 33, 4000]:
        got = lib.cvt_bf16(x[:n], impl)
        assert np.array_equal(got[finite[:n]], to_bf16(x[:n])[finite[:n]]), (impl, n)
        nan = np.isnan(x[:n])
        assert np.all(np.isnan(from_bf16(got[nan]))), (impl, n)  # a NaN stays a NaN


def run_script(lib, variant, script, env, timeout=60, **fields):
    """A script (a *_SCRIPT below) in a fresh Python process with the library of `variant` and the environment's
    additions `env` (the handler reads its settings once per process); it must exit 0."""
    code = script.format(site=str(ROOT / "site_scons"), variant=variant, project=str(lib.path.parents[3]), **fields)
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout,
                         env={**os.environ, **env})
    assert res.returncode == 0, res.stderr
    return res


def weights(rng, Nx, K, pad, density):
    """W [Nx x K] bf16 bits inside a wider buffer (row stride K + pad), with about `density` nonzeros."""
    full = to_bf16(rng.standard_normal((Nx, K + pad)).astype(np.float32) * (rng.random((Nx, K + pad)) < density))
    return full[:, :K]


def reference(W, B):
    Bq = from_bf16(to_bf16(B)).astype(np.float64)
    Wf = from_bf16(W).astype(np.float64)
    return Bq @ Wf.T, np.abs(Bq) @ np.abs(Wf).T


def run_threads(lib, W, B, C, nth, together=False, **kwargs):
    """Every thread of the split, one after another or at once (ctypes lets go of the GIL during the call)."""
    taken = [None] * nth
    if not together:
        for ith in range(nth):
            taken[ith] = lib.hook_mul_mat(W, B, C, ith, nth, **kwargs)
        return taken

    def one(ith):
        taken[ith] = lib.hook_mul_mat(W, B, C, ith, nth, **kwargs)
    pool = [threading.Thread(target=one, args=(i,)) for i in range(nth)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    return taken


def case(M, Nx, K, seed, sparse, pad=(0, 0, 0)):
    """W, B and C of one call, each inside a wider buffer when padded (the fork's strides)."""
    rng = np.random.default_rng(seed)
    W = weights(rng, Nx, K, pad[0], 0.3 if sparse else 1.0)
    B = rng.standard_normal((M, K + pad[1])).astype(np.float32)[:, :K]
    return W, B, np.full((M, Nx + pad[2]), np.nan, dtype=np.float32)[:, :Nx]


def check(lib, nth, W, B, C, together=False):
    (M, K), Nx = B.shape, W.shape[0]
    taken = run_threads(lib, W, B, C, nth, together)
    assert taken == [True] * nth
    zeros = float(np.mean((W & 0x7FFF) == 0))
    ref, scale = reference(W, B)
    bound = 1e-30 + (K + 2) * np.finfo(np.float32).eps * scale
    err = np.abs(C.astype(np.float64) - ref)
    assert np.all(err <= bound), (M, Nx, K, nth, float(np.max(err - bound)))
    return lib.hook_totals(), zeros


@pytest.fixture(scope="module")
def hook(library_for):
    """hook(impl, sparse_min) -> the library of `impl`, no tensor packed, that implementation and threshold set."""
    def get(impl, sparse_min):
        lib, _ = library_for(impl)
        lib.hook_forget()
        lib.hook_settings(impl, sparse_min)
        return lib
    yield get


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("sparse", [False, True], ids=["dense", "sparse"])
@settings(max_examples=12, deadline=None)
@given(M=st.integers(1, 40), Nx=st.integers(1, 300), K=st.integers(1, 300), nth=st.integers(1, 9),
       pad=st.tuples(st.integers(0, 9), st.integers(0, 9), st.integers(0, 9)), seed=st.integers(0, 2**31))
def test_random_shapes_every_thread_split(hook, impl, sparse, M, Nx, K, nth, pad, seed):
    lib = hook(impl, 0.5 if sparse else 2.0)
    totals, zeros = check(lib, nth, *case(M, Nx, K, seed, sparse, pad))
    assert totals["sparse" if sparse and zeros >= 0.5 else "dense"] == 1 and totals["refused"] == 0, (totals, zeros)


@pytest.mark.parametrize("impl", [i for i in IMPLS if i != "ref"])
@pytest.mark.parametrize("M", [1, 7, 512])
@pytest.mark.parametrize("sparse", [False, True], ids=["dense", "sparse"])
def test_decode_and_prefill_shapes_threads_at_once(hook, impl, M, sparse):
    """Real threads racing for the first packing, then a second call on the packed tensor (no packing again)."""
    lib = hook(impl, 0.5 if sparse else 2.0)
    W, B, C = case(M, 333, 257, 7, sparse, pad=(3, 1, 5))
    check(lib, 8, W, B, C, together=True)
    C[:] = np.nan
    totals, _ = check(lib, 8, W, B, C, together=True)
    assert totals["sparse" if sparse else "dense"] == 1 and totals["repacked"] == 0, totals


@pytest.mark.parametrize("sparse", [False, True], ids=["dense", "sparse"])
def test_sixteen_threads_share_the_packing_of_a_large_tensor(hook, sparse):
    """125 panels in 63 chunks of 2, counted then packed by whichever of 16 racing threads is free: one packing,
    the right result, twice over (the second call finds it packed)."""
    lib = hook("ref", 0.5 if sparse else 2.0)
    W, B, C = case(3, 2000, 300, 11, sparse, pad=(2, 0, 1))
    check(lib, 16, W, B, C, together=True)
    C[:] = np.nan
    totals, _ = check(lib, 16, W, B, C, together=True)
    assert totals["sparse" if sparse else "dense"] == 1 and totals["repacked"] == 0 and totals["refused"] == 0, totals


SHARE_SCRIPT = """
import sys, threading, time, numpy as np
sys.path.insert(0, {site!r})
from amxforge.kernels import KernelLibrary, to_bf16, from_bf16
lib = KernelLibrary({variant!r}, {project!r})
lib.hook_settings({impl!r}, {sparse_min!r})
rng = np.random.default_rng(13)
M = 4
while True:  # sized for this implementation: a thread's share takes 20 ms at least
    Wf = rng.standard_normal((2048, 1024)).astype(np.float32)
    W = to_bf16(Wf * (rng.random(Wf.shape) >= {zeros!r}))
    B = rng.standard_normal((M, 1024)).astype(np.float32)
    C = np.zeros((M, 2048), np.float32)
    for ith in range(2):
        assert lib.hook_mul_mat(W, B, C, ith, 2)  # packs the weights
    t0 = time.perf_counter()
    assert lib.hook_mul_mat(W, B, C, 0, 2)
    share = time.perf_counter() - t0
    if share >= 0.02 or M >= 1024:
        break
    M *= 4
Bq, Wf = from_bf16(to_bf16(B)).astype(np.float64), from_bf16(W).astype(np.float64)
ref, bound = Bq @ Wf.T, 1e-30 + 1026 * np.finfo(np.float32).eps * (np.abs(Bq) @ np.abs(Wf).T)
moved = 0
for _ in range(3):
    C[:] = np.nan
    before = lib.hook_totals()[{unit!r} + "_moved"]
    first = threading.Thread(target=lib.hook_mul_mat, args=(W, B, C, 0, 2))
    first.start()
    time.sleep(share / 3)
    assert lib.hook_mul_mat(W, B, C, 1, 2)
    first.join()
    moved += lib.hook_totals()[{unit!r} + "_moved"] - before
    assert np.all(np.abs(C.astype(np.float64) - ref) <= bound), M
totals = lib.hook_totals()
assert totals[{unit!r}] >= 3 * {per_call!r} and totals[{unit!r} + "_moved"] <= totals[{unit!r}], totals
assert totals["sparse" if {unit!r} == "pairs" else "dense"] == 0, totals  # the form asked for, every time
print(moved, M, share)
"""


@pytest.mark.parametrize("sparse", [False, True], ids=["dense", "sparse"])
@pytest.mark.parametrize("impl", IMPLS)
def test_a_late_thread_s_units_are_computed_by_an_early_one(library_for, impl, sparse):
    """The team shares a product's units (a dense one's pairs of panels, a pruned one's panels): thread 1 starts a
    third of a share's time after thread 0, so thread 0, done with its own units, takes thread 1's from the back of
    its range, which its owner claims a quarter at a time (AKF_HOOK_SHARE_PART=25, what a team of more than 4 threads
    does) or, by default in a team of 2, half at a time. Every column is computed once and right, whoever computed it;
    the totals count the units that moved. With the static split (AKF_HOOK_SHARE=0) none moves."""
    lib, variant = library_for(impl)
    fields = dict(impl=impl, sparse_min=0.5 if sparse else 2.0, zeros=0.7 if sparse else 0.0,
                  unit="panels" if sparse else "pairs", per_call=128 if sparse else 64)
    for env in ({"AKF_HOOK_SHARE_PART": "25"}, {}):
        res = run_script(lib, variant, SHARE_SCRIPT, env, timeout=120, **fields)
        moved, M, share = res.stdout.split()
        assert int(moved) > 0, (impl, env, M, share)
    res = run_script(lib, variant, SHARE_SCRIPT, {"AKF_HOOK_SHARE": "0"}, timeout=120, **fields)
    assert res.stdout.split()[0] == "0", res.stdout


KEPT_SCRIPT = """
import sys, numpy as np
sys.path.insert(0, {site!r})
from amxforge.kernels import KernelLibrary, to_bf16, from_bf16
lib = KernelLibrary({variant!r}, {project!r})
lib.hook_settings({impl!r}, {sparse_min!r})
rng = np.random.default_rng(17)
W = to_bf16(rng.standard_normal((600, 96)).astype(np.float32) * (rng.random((600, 96)) >= {zeros!r}))
Wf = from_bf16(W).astype(np.float64)
for product in range(4):  # the same shape, other activations, every product through the same thread
    B = rng.standard_normal((40, 96)).astype(np.float32) * (product + 1)
    C = np.full((40, 600), np.nan, np.float32)
    for ith in range(2):
        assert lib.hook_mul_mat(W, B, C, ith, 2)
    Bq = from_bf16(to_bf16(B)).astype(np.float64)
    bound = 1e-30 + 98 * np.finfo(np.float32).eps * (np.abs(Bq) @ np.abs(Wf).T)
    assert np.all(np.abs(C.astype(np.float64) - Bq @ Wf.T) <= bound), product
print(lib.hook_totals()[{unit!r}])
"""


@pytest.mark.parametrize("sparse", [False, True], ids=["dense", "sparse"])
@pytest.mark.parametrize("impl", IMPLS)
def test_a_product_s_claims_share_its_activations_and_no_other_product_does(library_for, impl, sparse):
    """A thread claiming its range a quarter at a time makes a kernel call of each claim; the AMX kernels keep the
    activations' tile blocks from the first claim for the others (40 rows: copied, not read in place). The next
    product, through the same thread and the same converted-activations buffer, has other values: its results are
    its own, never computed from the last product's tiles."""
    lib, variant = library_for(impl)
    fields = dict(impl=impl, sparse_min=0.5 if sparse else 2.0, zeros=0.7 if sparse else 0.0,
                  unit="panels" if sparse else "pairs")
    res = run_script(lib, variant, KEPT_SCRIPT, {"AKF_HOOK_SHARE_PART": "25"}, timeout=120, **fields)
    assert int(res.stdout) >= 4 * (38 if sparse else 19), res.stdout  # every unit of four products computed


def test_other_weights_at_the_same_address_are_packed_again(hook):
    """A model freed and another loaded where it was: the fingerprint sees new weights, never the old packing."""
    lib = hook("ref", 2.0)
    rng = np.random.default_rng(1)
    W = weights(rng, 40, 70, 0, 1.0)
    B = rng.standard_normal((3, 70)).astype(np.float32)
    C = np.zeros((3, 40), dtype=np.float32)
    assert run_threads(lib, W, B, C, 2) == [True, True]
    W[:] = weights(rng, 40, 70, 0, 1.0)  # new weights, same buffer
    assert run_threads(lib, W, B, C, 2) == [True, True]
    ref, scale = reference(W, B)
    assert np.all(np.abs(C - ref) <= 1e-30 + 72 * np.finfo(np.float32).eps * scale)
    assert lib.hook_totals()["repacked"] == 1


def test_packed_weights_are_released_when_their_pages_go(hook):
    """A model freed (its weights' pages unmapped): the packed copy is released before the next tensor is packed;
    weights still mapped keep theirs."""
    lib = hook("ref", 2.0)
    rng = np.random.default_rng(2)
    Nx, K = 64, 96
    region = mmap.mmap(-1, Nx * K * 2)
    W = np.frombuffer(region, dtype=np.uint16).reshape(Nx, K)
    W[:] = weights(rng, Nx, K, 0, 1.0)
    kept, other = weights(rng, Nx, K, 0, 1.0), weights(rng, Nx, K, 0, 1.0)  # allocated now: not in W's pages
    B = rng.standard_normal((2, K)).astype(np.float32)
    C = np.zeros((2, Nx), dtype=np.float32)
    assert run_threads(lib, W, B, C, 2) == [True, True]
    assert run_threads(lib, kept, B, C, 2) == [True, True]
    each = lib.hook_totals()["bytes"] // 2
    del W
    region.close()  # munmap, as a model's file mapping or a large free() does
    assert run_threads(lib, other, B, C, 2) == [True, True]
    totals = lib.hook_totals()
    assert (totals["dense"], totals["freed"], totals["freed_bytes"], totals["bytes"]) == (3, 1, each, 2 * each), totals
    ref, scale = reference(other, B)
    assert np.all(np.abs(C - ref) <= 1e-30 + (K + 2) * np.finfo(np.float32).eps * scale)


def test_a_tensor_too_large_to_pack_is_left_to_the_fork_before_its_weights_are_read(hook, capfd):
    """Weights whose packed form could need more than half of MemAvailable: declined with one warning naming the
    shape and bytes, counted, and never read beyond the fingerprint's rows (the mapping is mostly never touched)."""
    lib = hook("ref", 0.5)
    avail = next(int(line.split()[1]) * 1024 for line in open("/proc/meminfo") if line.startswith("MemAvailable:"))
    K = 4096
    N = (avail // 2) // (2 * K) + 16  # dense bytes alone above half of what is available
    noreserve = getattr(mmap, "MAP_NORESERVE", 0x4000)  # Python < 3.12 lacks the name; Linux's value
    try:
        region = mmap.mmap(-1, N * K * 2, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS | noreserve)
    except OSError as exc:
        pytest.skip(f"this host does not map {N * K * 2} bytes unreserved ({exc}): no tensor too large can be shown")
    try:
        W = np.frombuffer(region, dtype=np.uint16).reshape(N, K)
        B, C = np.ones((1, K), np.float32), np.full((1, N), 7.0, np.float32)
        assert run_threads(lib, W, B, C, 2) == [False, False]
        assert run_threads(lib, W, B, C, 2) == [False, False]  # once refused, declined without another try
        totals = lib.hook_totals()
        assert (totals["refused"], totals["dense"], totals["sparse"]) == (1, 0, 0), totals
        assert totals["refused_bytes"] >= N * K * 2 and totals["bytes"] == 0, totals
        assert C[0, 0] == 7.0 and C[0, -1] == 7.0  # untouched: the caller computes it
        err = capfd.readouterr().err
        assert err.count("not enough memory to pack") == 1 and f"a {N}x{K} bf16 tensor" in err, err
        del W
    finally:
        region.close()


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("sparse", [False, True], ids=["dense", "sparse"])
@pytest.mark.parametrize("pad", [0, 3], ids=["rows-contiguous", "rows-strided"])
def test_bf16_activations_rounded_by_the_caller_once(hook, impl, sparse, pad):
    """ik's team rounds the activations to bf16 once and calls again with those rows (strideB = 2K: used where they
    are; wider rows: copied): the same result as from the f32 rows, which the handler rounds the same way."""
    lib = hook(impl, 0.5 if sparse else 2.0)
    for M in (1, 5, 40):
        W, B, C = case(M, 77, 131, 3 + M, sparse, pad=(1, 0, 2))
        Bq = np.zeros((M, 131 + pad), np.uint16)[:, :131]
        Bq[:] = to_bf16(B)
        assert run_threads(lib, W, Bq, C, 3, together=True, type_b="bf16") == [True] * 3
        ref, scale = reference(W, B)
        assert np.all(np.abs(C - ref) <= 1e-30 + 133 * np.finfo(np.float32).eps * scale), (M, impl)
    assert lib.hook_totals()["sparse" if sparse else "dense"] == 3  # one tensor per M


def test_the_handler_asks_for_bf16_activations_only_where_it_would_take_them(hook):
    """ik's entry is declined for bf16 x f32 2-d products (the team then rounds once and calls again with bf16)."""
    lib = hook("ref", 2.0).lib
    bf16, f32, f16 = 30, 0, 1
    assert lib.akf_hook_wants_bf16(1, 1, 1, 1, bf16, f32) == 1
    assert lib.akf_hook_wants_bf16(1, 1, 1, 1, bf16, bf16) == 0  # rounded already: take it
    assert lib.akf_hook_wants_bf16(1, 1, 1, 1, f16, f32) == 0  # not ours: the fork's own entry decides
    assert lib.akf_hook_wants_bf16(2, 1, 2, 1, bf16, f32) == 0  # batched: the fork's own


@pytest.mark.parametrize("case,kwargs", [
    ("weights q8_0", {"type_a": "q8_0"}),
    ("weights f16", {"type_a": "f16"}),
    ("activations f16", {"type_b": "f16"}),
    ("3-d batch", {"batch": (2, 1, 2, 1)}),
])
def test_what_it_does_not_take_is_declined_untouched(hook, case, kwargs):
    lib = hook("ref", 2.0)
    rng = np.random.default_rng(0)
    W, B = weights(rng, 20, 30, 0, 1.0), rng.standard_normal((2, 30)).astype(np.float32)
    C = np.full((2, 20), 7.0, dtype=np.float32)
    assert not any(lib.hook_mul_mat(W, B, C, ith, 3, **kwargs) for ith in range(3)), case
    assert np.all(C == 7.0) and lib.hook_totals()["dense"] == 0


STATS_SCRIPT = """
import sys, numpy as np
sys.path.insert(0, {site!r})
from amxforge.kernels import KernelLibrary, to_bf16
lib = KernelLibrary({variant!r}, {project!r})
W = to_bf16(np.ones((33, 40), np.float32)); B = np.ones((2, 40), np.float32); C = np.zeros((2, 33), np.float32)
for rep in range(3):
    for ith in range(4):
        lib.hook_mul_mat(W, B, C, ith, 4)
lib.hook_mul_mat(W, B, C, 0, 1, type_a="q8_0")
print(float(C[1, 32]))
"""


@pytest.mark.parametrize("env,expect", [
    ({"AMXFORGE_KERNELS_STATS": "1"}, ["taken: dense 33x2 (K 40) typeA 30 typeB 0: 3 calls",
                                       "fell back (weights not bf16) 33x2 (K 40) typeA 8 typeB 0: 1 calls",
                                       "packed 1 dense + 0 sparse tensors"]),
    ({"AMXFORGE_KERNELS_STATS": "1", "AMXFORGE_KERNELS": "fork"}, ["fell back (AMXFORGE_KERNELS=fork) 33x2"]),
    ({"AMXFORGE_KERNELS_STATS": "1", "AMXFORGE_KERNELS_IMPL": "nosuch"},
     ["amxforge-kernels: AMXFORGE_KERNELS_IMPL=nosuch is no implementation (runs here: {runs}): the fork's own kernels "
      "run every call\n", "amxforge-kernels: AMXFORGE_KERNELS_IMPL=nosuch is no implementation (runs here: {runs}): "
      "every call fell back\n", "fell back (setting refused) 33x2"]),
    # without stats too, a setting the handler cannot follow is said once, when the first call reads the settings
    ({"AMXFORGE_KERNELS": "Fork"}, ["amxforge-kernels: AMXFORGE_KERNELS=Fork is neither fork nor amxforge: the fork's "
                                    "own kernels run every call\n"]),
    ({"AMXFORGE_SPARSE_MIN": "half"}, ["amxforge-kernels: AMXFORGE_SPARSE_MIN=half is no zero fraction (give one like "
                                       "0.5): the fork's own kernels run every call\n"]),
    ({"AKF_HOOK_SHARE": "no"}, ["amxforge-kernels: AKF_HOOK_SHARE=no is neither 0 (the static split) nor 1: the fork's "
                                "own kernels run every call\n"]),
    ({"AKF_HOOK_SHARE_PART": "150"}, ["amxforge-kernels: AKF_HOOK_SHARE_PART=150 is no percentage from 1 to 100: the "
                                      "fork's own kernels run every call\n"]),
    # a value the statistics do not know is said; the kernels run as they would (on: 1; it was any other value)
    ({"AMXFORGE_KERNELS_STATS": "yes"}, ["amxforge-kernels: AMXFORGE_KERNELS_STATS=yes is neither 0 nor 1: no "
                                         "statistics at exit (give 1 for them)\n"]),
    ({"AMXFORGE_KERNELS_STATS": "1", "AMXFORGE_KERNELS": "amxforge", "AMXFORGE_SPARSE_MIN": "0.9", "AKF_HOOK_SHARE": "1",
      "AKF_HOOK_SHARE_PART": "25"},
     ["taken: dense 33x2 (K 40) typeA 30 typeB 0: 3 calls"]),
])
def test_stats_at_exit_and_the_environment(library_for, env, expect):
    lib, variant = library_for("ref")
    res = run_script(lib, variant, STATS_SCRIPT, env)
    runs = " ".join(n for n in IMPLS if n in lib.impls())
    for line in expect:
        assert line.format(runs=runs) in res.stderr, res.stderr
    said = "the fork's own kernels run every call"  # once, and only where a setting was refused
    taken = env.get("AMXFORGE_KERNELS", "amxforge") == "amxforge" and not any(said in line for line in expect)
    assert res.stderr.count(said) == sum(said in line for line in expect)
    if env.get("AMXFORGE_KERNELS_STATS") != "1":
        assert "amxforge-kernels: implementation" not in res.stderr and "calls" not in res.stderr, res.stderr
    elif taken:  # thread 0's time computing what it took; none on what fell back (no fork's function to time here)
        assert re.search(r"typeB 0: 3 calls, \d+\.\d{3} ms in thread 0\n", res.stderr), res.stderr
        assert re.search(r"thread 0 in the matmuls: \d+\.\d{3} ms in ours \(and \d+\.\d{3} ms finding and packing "
                         r"tensors\), 0\.000 ms in the fork's own function", res.stderr), res.stderr
        assert re.search(r"typeA 8 typeB 0: 1 calls\n", res.stderr), res.stderr
        # the team's balance: every thread of the split (4) computed its share; the least and most are named
        assert re.search(r"time computing the calls taken, per thread \(packing excluded\), 4 threads: min "
                         r"\d+\.\d{3} ms \(thread [0-3]\), mean \d+\.\d{3} ms, max \d+\.\d{3} ms \(thread [0-3]\)\n",
                         res.stderr), res.stderr
    else:
        assert "per thread" not in res.stderr  # nothing was taken
    assert float(res.stdout) == (40.0 if taken else 0.0)


def test_an_implementation_this_library_cannot_run_is_refused_not_aborted(library_for):
    """AMXFORGE_KERNELS_IMPL naming an implementation of the table that the variant did not build (or the host cannot
    run) took the call and then aborted the fork's process ("failed (status 5) after the call was taken"); now the
    setting is refused in one line, naming what runs here, and every call falls back to the fork's own kernels."""
    lib, variant = library_for("ref")
    others = [n for n in IMPLS if n not in lib.impls()]
    if not others:
        pytest.skip(f"variant {variant} builds and runs every implementation of the table here: none to refuse")
    res = run_script(lib, variant, STATS_SCRIPT, {"AMXFORGE_KERNELS_IMPL": others[-1]})
    runs = " ".join(n for n in IMPLS if n in lib.impls())
    assert res.stderr.splitlines() == [f"amxforge-kernels: AMXFORGE_KERNELS_IMPL={others[-1]} is not built into variant "
                                       f"{variant} or cannot run here (runs here: {runs}): the fork's own kernels run "
                                       "every call"]
    assert float(res.stdout) == 0.0  # nothing computed by us: the script has no fork function behind the entry


DECODE_SCRIPT = """
import sys, numpy as np
sys.path.insert(0, {site!r})
from amxforge.kernels import KernelLibrary, to_bf16, from_bf16
lib = KernelLibrary({variant!r}, {project!r})
rng = np.random.default_rng(3)
W = to_bf16(rng.standard_normal((70, 300)).astype(np.float32) * (rng.random((70, 300)) < {density}))
sparse = lib.sparse_pack_bt(W, "bf16") if {density} < 1 else None
Bp = lib.pack_b_bf16(np.ascontiguousarray(W.T))
for M, impl in {expect!r}:  # each product through the handler is, bit for bit, that implementation's
    B = rng.standard_normal((M, 300)).astype(np.float32); C = np.zeros((M, 70), np.float32)
    assert lib.hook_mul_mat(W, B, C, 0, 1)
    A = to_bf16(B)
    same = sparse.matmul(A, impl) if sparse else lib.gemm_bf16(A, Bp, 70, impl)
    assert np.array_equal(C, same), (M, impl)
    ref = from_bf16(A).astype(np.float64) @ from_bf16(W).astype(np.float64).T
    bound = 302 * np.finfo(np.float32).eps * (np.abs(from_bf16(A)) @ np.abs(from_bf16(W)).T)
    assert np.all(np.abs(C - ref) <= bound + 1e-30), M
"""


@pytest.mark.parametrize("impl", IMPLS)
def test_sparse_decode_runs_the_tables_choice_where_it_runs(library_for, impl):
    """[hook] sparse_decode: the best's sparse products of at most `rows` activation rows run the table's choice where
    this host runs it (said in the stats line, and bit for bit that implementation's result), larger ones the best;
    dense ones of one row the best (the AMX host decoded slower through avx512)."""
    lib, variant = library_for(impl)
    runs = lib.impls(runnable=True)
    decode = TABLE.hook.get("sparse_decode")
    chosen = decode["impl"] if decode and decode["impl"] in runs else runs[-1]
    rows = decode["rows"] if decode else 0
    for density in (0.3, 1.0):
        sparse = density < 1
        expect = [(M, chosen if sparse and M <= rows else runs[-1]) for M in sorted({1, max(rows, 1), rows + 1, 6})]
        res = run_script(lib, variant, DECODE_SCRIPT, {"AMXFORGE_KERNELS_STATS": "1"}, density=density, expect=expect)
        assert f"implementation {runs[-1]} (variant {variant})" in res.stderr, res.stderr
        assert f"packed {int(not sparse)} dense + {int(sparse)} sparse tensors" in res.stderr, res.stderr
        said = f", sparse products of up to {rows} rows {chosen};"
        assert (said in res.stderr) == (chosen != runs[-1]), res.stderr
