"""int8 GEMM (exact), the sparse format (pack, unpack, file, validation) and sparse kernels against references."""

import json
import os
import re
import subprocess

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from amxforge.errors import AmxforgeError
from amxforge.kernels import KernelLibrary, from_bf16, to_bf16
from conftest import HOST, TABLE, at_a_guard_page, needs_amx, run, tool

IMPLS = TABLE.names


@pytest.fixture
def ref_lib(library_for):
    """A library whose reference implementation runs here (for the format and packing tests)."""
    return library_for("ref")[0]


def int8_case(M, N, K, seed, density=1.0):
    rng = np.random.default_rng(seed)
    A = rng.integers(-128, 128, (M, K), dtype=np.int8)
    B = rng.integers(-128, 128, (K, N), dtype=np.int8) * (rng.random((K, N)) < density)
    a_s = (rng.random(M) + 0.5).astype(np.float32)
    b_s = (rng.random(N) + 0.5).astype(np.float32)
    acc = A.astype(np.int64) @ B.astype(np.int64)
    assert np.abs(acc).max(initial=0) < 2 ** 24  # exactly representable in fp32
    ref = acc.astype(np.float32) * (a_s[:, None] * b_s[None, :])  # the kernels' rounding order
    return A, B.astype(np.int8), a_s, b_s, ref


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("M,N,K", [(1, 1, 1), (1, 45, 77), (17, 33, 130), (16, 16, 64), (33, 100, 200), (5, 7, 3),
                                   (64, 96, 1100), (32, 200, 128), (3, 256, 8256)])
def test_int8_gemm_is_exact(library_for, impl, M, N, K):
    lib, _ = library_for(impl)
    A, B, a_s, b_s, ref = int8_case(M, N, K, M * 7 + N)
    C = lib.gemm_int8(A, a_s, lib.pack_b_int8(B), b_s, impl)
    assert np.array_equal(C, ref)


@pytest.mark.parametrize("impl", [i for i in IMPLS if i != "ref"])
def test_int8_exact_on_random_shapes(library_for, impl):
    lib, _ = library_for(impl)

    @settings(max_examples=25, deadline=None)
    @given(M=st.integers(1, 40), N=st.integers(1, 70), K=st.integers(1, 300), seed=st.integers(0, 2 ** 16))
    def random_shapes(M, N, K, seed):
        A, B, a_s, b_s, ref = int8_case(M, N, K, seed)
        assert np.array_equal(lib.gemm_int8(A, a_s, lib.pack_b_int8(B), b_s, impl), ref)
    random_shapes()


def bf16_sparse_case(M, N, K, sparsity, seed):
    rng = np.random.default_rng(seed)
    A = to_bf16(rng.standard_normal((M, K)).astype(np.float32))
    B = to_bf16(rng.standard_normal((K, N)).astype(np.float32) * (rng.random((K, N)) >= sparsity))
    return A, B


def assert_bf16_product(A, B, C):
    """C = A @ B within fp32 accumulation's bound over K terms (bf16 products are exact in fp32)."""
    ref = from_bf16(A).astype(np.float64) @ from_bf16(B).astype(np.float64)
    scale = np.abs(from_bf16(A)).astype(np.float64) @ np.abs(from_bf16(B)).astype(np.float64)
    assert np.all(np.abs(C - ref) <= 1e-6 + (A.shape[1] + 2) * np.finfo(np.float32).eps * scale)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("sparsity", [0.0, 0.5, 0.9, 1.0])
@pytest.mark.parametrize("M,N,K", [(1, 45, 77), (2, 50, 90), (4, 64, 256), (17, 33, 130), (16, 100, 64),
                                   (70, 40, 100)])
def test_sparse_bf16_against_reference(library_for, impl, sparsity, M, N, K):
    lib, _ = library_for(impl)
    A, B = bf16_sparse_case(M, N, K, sparsity, M + N + K)
    C = lib.sparse_pack(B, "bf16").matmul(A, impl)
    assert_bf16_product(A, B, C)
    if sparsity == 1.0:
        assert not C.any()


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("M,N,K", [(1, 100, 64), (16, 256, 96), (32, 200, 2048), (20, 64, 64), (16, 300, 64)])
def test_sparse_products_never_read_past_the_activations(library_for, impl, M, N, K):
    """A ends where a guard page starts: no implementation reads past it (the AMX kernel copies A into tiles; read
    in place, as the dense kernel does for few columns, it ran at half the rate on the builder: each panel reloads
    every A tile)."""
    lib, _ = library_for(impl)
    A, B = bf16_sparse_case(M, N, K, 0.7, M * 7 + N + K)
    S = lib.sparse_pack(B, "bf16")
    assert_bf16_product(A, B, at_a_guard_page(A, lambda a: S.matmul(a, impl)))


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("sparsity", [0.0, 0.5, 0.9, 1.0])
@pytest.mark.parametrize("M,N,K", [(1, 45, 77), (2, 50, 90), (4, 64, 256), (17, 33, 130), (70, 40, 300)])
def test_sparse_int8_is_exact(library_for, impl, sparsity, M, N, K):
    lib, _ = library_for(impl)
    A, B, a_s, b_s, ref = int8_case(M, N, K, M + N, density=1.0 - sparsity)
    assert np.array_equal(lib.sparse_pack(B, "int8").matmul(A, impl, a_s, b_s), ref)


@needs_amx
@pytest.mark.parametrize("M", [1, 4, 16, 17, 40])
@pytest.mark.parametrize("sparsity", [0.0, 0.7])
def test_sparse_amx_equals_dense_amx_on_masked_weights(library_for, M, sparsity):
    lib, _ = library_for("amx")
    A, B = bf16_sparse_case(M, 96, 300, sparsity, M)
    dense = lib.gemm_bf16(A, lib.pack_b_bf16(B), 96, "amx")
    assert np.array_equal(lib.sparse_pack(B, "bf16").matmul(A, "amx"), dense)
    A8, B8, a_s, b_s, _ = int8_case(M, 96, 300, M, density=1.0 - sparsity)
    assert np.array_equal(lib.sparse_pack(B8, "int8").matmul(A8, "amx", a_s, b_s),
                          lib.gemm_int8(A8, a_s, lib.pack_b_int8(B8), b_s, "amx"))


@pytest.mark.parametrize("impl", [i for i in IMPLS if i != "ref"])
def test_sparse_property_random_shapes(library_for, impl):
    lib, _ = library_for(impl)

    @settings(max_examples=20, deadline=None)
    @given(M=st.integers(1, 20), N=st.integers(1, 60), K=st.integers(1, 200), sparsity=st.floats(0, 1),
           seed=st.integers(0, 2 ** 16))
    def random_shapes(M, N, K, sparsity, seed):
        A, B, a_s, b_s, ref = int8_case(M, N, K, seed, density=1.0 - sparsity)
        S = lib.sparse_pack(B, "int8")
        assert np.array_equal(S.unpack(), B)
        assert np.array_equal(S.matmul(A, impl, a_s, b_s), ref)
    random_shapes()


def test_packing_from_the_weights_rows_equals_packing_their_transpose(ref_lib):
    """A fork's W [N x K] (strided rows) packed straight: the same matrix, byte for byte, as B = W^T packed."""
    @settings(max_examples=25, deadline=None)
    @given(N=st.integers(1, 70), K=st.integers(1, 150), pad=st.integers(0, 9), sparsity=st.floats(0, 1),
           dtype=st.sampled_from(["bf16", "int8"]), seed=st.integers(0, 2 ** 16))
    def same(N, K, pad, sparsity, dtype, seed):
        rng = np.random.default_rng(seed)
        keep = rng.random((N, K + pad)) >= sparsity
        if dtype == "bf16":
            full = to_bf16(rng.standard_normal((N, K + pad)).astype(np.float32) * keep)
        else:
            full = (rng.integers(-127, 128, (N, K + pad)) * keep).astype(np.int8)
        W = full[:, :K]
        direct, transposed = ref_lib.sparse_pack_bt(W, dtype), ref_lib.sparse_pack(np.ascontiguousarray(W.T), dtype)
        assert direct.info() == transposed.info()
        expect = W.T.copy()
        if dtype == "bf16":
            expect[(expect & 0x7FFF) == 0] = 0  # -0 is a zero: unpacked as +0
        assert np.array_equal(direct.unpack(), expect)
        if dtype == "int8":  # the column sums the int8 kernels correct with
            A, ones = rng.integers(-5, 6, (3, K)).astype(np.int8), np.ones(3, np.float32)
            assert np.array_equal(direct.matmul(A, "ref", ones, np.ones(N, np.float32)),
                                  transposed.matmul(A, "ref", ones, np.ones(N, np.float32)))
    same()


def test_packing_from_rows_refuses_a_stride_shorter_than_a_row(ref_lib):
    W = np.zeros((4, 10), np.uint16)
    bad = np.lib.stride_tricks.as_strided(W, shape=(4, 10), strides=(8, 2))  # rows 4 elements apart
    with pytest.raises(AmxforgeError, match="row stride 4 is shorter than a row"):
        ref_lib.sparse_pack_bt(bad, "bf16")


def test_all_zero_tiles_are_counted_and_skipped(ref_lib):
    lib = ref_lib
    B = np.zeros((128, 64), np.int8)
    B[0:64, 0:16] = 3  # one tile of the 2x4 is dense, the other seven are all zero
    info = lib.sparse_pack(B, "int8").info()
    assert (info["tiles"], info["zero_tiles"], info["nnz"]) == (8, 7, 64 * 16)
    assert info["bytes"] == 64 * 16 + 8 * 16 * 8 + 9 * 8  # values + 64-bit masks + tile offsets


def test_round_trip_through_a_file(ref_lib, tmp_path):
    lib = ref_lib
    A, B = bf16_sparse_case(3, 70, 90, 0.6, 1)
    S = lib.sparse_pack(B, "bf16")
    S.save(tmp_path / "w.amxs")
    T = lib.sparse_load(tmp_path / "w.amxs")
    assert T.info() == S.info()
    assert np.array_equal(from_bf16(T.unpack()), from_bf16(B))
    assert np.array_equal(T.matmul(A, "ref"), S.matmul(A, "ref"))
    assert not (tmp_path / "w.amxs.tmp").exists()


@pytest.mark.parametrize("damage,message", [
    (lambda b: b[:20], "truncated header"),
    (lambda b: b"XXXXXXXX" + b[8:], "bad magic"),
    (lambda b: b[:8] + (7).to_bytes(4, "little") + b[12:], "version 7, this library reads version 1"),
    (lambda b: b[:-5], "truncated: expected"),
    (lambda b: b + b"\0", "trailing data"),
    (lambda b: b[:-3] + bytes([b[-3] ^ 0x40]) + b[-2:], "checksum mismatch"),
    (lambda b: b[:16] + (0).to_bytes(4, "little") + b[20:], "impossible sizes"),
])
def test_corrupted_files_are_rejected_with_a_message(ref_lib, tmp_path, damage, message):
    lib = ref_lib
    _, B = bf16_sparse_case(2, 40, 50, 0.5, 2)
    good = tmp_path / "good.amxs"
    lib.sparse_pack(B, "bf16").save(good)
    bad = tmp_path / "bad.amxs"
    bad.write_bytes(damage(good.read_bytes()))
    with pytest.raises(AmxforgeError, match=message):
        lib.sparse_load(bad)


@pytest.mark.parametrize("shape,message", [
    ("directory", r"is a directory, not a regular file"),  # once: "truncated header (9223372036854775807 bytes)"
    ("fifo", r"is a FIFO, not a regular file"),  # opened without waiting for a writer
    ("missing", r"No such file or directory"),
])
def test_the_sparse_loader_reads_regular_files_only(ref_lib, tmp_path, shape, message):
    import os
    path = tmp_path / "w.amxs"
    if shape == "directory":
        path.mkdir()
    elif shape == "fifo":
        os.mkfifo(path)
    with pytest.raises(AmxforgeError, match=message):
        ref_lib.sparse_load(path)


@pytest.mark.parametrize("B,dtype,message", [
    (np.array([[0x3F80, 0x7FC0]], np.uint16), "bf16", r"B\[0\]\[1\] is Inf or NaN"),
    (np.array([[0x7F80]], np.uint16), "bf16", "Inf or NaN"),
    (np.zeros((0, 4), np.int8), "int8", "bad shape"),
])
def test_packer_validates_its_input(ref_lib, B, dtype, message):
    lib = ref_lib
    with pytest.raises(AmxforgeError, match=message):
        lib.sparse_pack(B, dtype)


def test_sparse_split_balances_nonzeros_not_columns(ref_lib):
    """Four dense panels followed by 28 empty ones: split by columns, thread 0 would get all the work; split by
    nonzeros, each of two threads gets two dense panels (and the empty ones cost nothing)."""
    import ctypes
    B = np.zeros((512, 16 * 32), np.int8)
    B[:, :64] = 1
    lib = ref_lib
    S = lib.sparse_pack(B, "int8")
    split = lib.lib.akf_sparse_split
    split.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_int, ctypes.POINTER(ctypes.c_int),
                      ctypes.POINTER(ctypes.c_int)]
    ranges = []
    for t in range(2):
        p0, p1 = ctypes.c_int(), ctypes.c_int()
        split(S.handle, 2, t, ctypes.byref(p0), ctypes.byref(p1))
        ranges.append((p0.value, p1.value))
    assert ranges == [(0, 2), (2, 32)]
    # three threads over four equal panels: every panel is assigned exactly once, no thread gets all
    covered = []
    for t in range(3):
        p0, p1 = ctypes.c_int(), ctypes.c_int()
        split(S.handle, 3, t, ctypes.byref(p0), ctypes.byref(p1))
        covered += list(range(p0.value, p1.value))
    assert covered == list(range(32))


def test_bench_cli_reports_limits_fractions_and_speedups(kernel_project):
    """`amxforge bench kernels` with no --variant runs the variant auto picks here, on its best implementation."""
    from conftest import HOST_PROBE
    variant = HOST_PROBE["variants"]["auto"]["picks"]
    if variant is None:
        pytest.skip("no variant can run on this host")
    project = kernel_project(variant)
    impl = KernelLibrary(variant, project).impls()[-1]
    res = run([tool("amxforge"), "bench", "kernels", "--json", "--min-bytes", "2e6",
               "--case", f"dense:bf16:{impl}:4:256:256", "--case", f"sparse:bf16:{impl}:4:256:256:0.7",
               "--case", f"dense:bf16:{impl}:64:256:256"], cwd=project)
    assert res.returncode == 0, res.stderr
    rows = [json.loads(line) for line in res.stdout.splitlines()]
    names = [r["limit"] for r in rows if "limit" in r]
    limits = set(names)
    peak = TABLE[impl].peak.get("bf16")
    # with cases and no --limits, kbench measures only the limits that judge them, not every one the host runs, and
    # a peak three cases share once
    assert limits == {"read_bw"} | ({peak} if peak else set()) and len(names) == len(limits)
    for lim in (r for r in rows if "limit" in r):  # each limit: a median of repetitions, with their spread
        value = lim.get("gflops", lim.get("gbps"))
        assert lim["reps"] >= 3 and lim["min"] <= value <= lim["max"] and lim["spread_pct"] >= 0
    dense, sparse, prefill = [r for r in rows if r.get("record") == "case"]
    assert {r["impl"] for r in (dense, sparse, prefill)} == {impl} and dense["variant"] == variant
    for r in (dense, sparse):
        assert set(r) >= {"kernel", "impl", "dtype", "M", "N", "K", "sparsity", "threads", "seconds", "gflops", "gbps",
                          "peak_fraction", "bw_fraction"}
        assert r["seconds"] > 0 and r["copies"] * r["weight_bytes"] >= 2e6
        # a decode's fraction of the read bandwidth is taken against the read measured beside each of its reps
        assert r["paired_read_gbps"] > 0 and r["bw_fraction"] == r["bw_fraction_paired"]
        assert 0 < r["bw_fraction_paired_min"] <= r["bw_fraction_paired"] <= r["bw_fraction_paired_max"]
    assert "bw_fraction_paired" not in prefill  # a prefill does not stream its weights: nothing to pair
    assert sparse["speedup_vs_dense"] == pytest.approx(dense["seconds"] / sparse["seconds"])
    assert sparse["ceiling"] == pytest.approx(2 / (0.125 + 2 * 0.3))
    # a prefill case is judged against the peak its implementation names in the table, measured in this run
    assert (prefill["peak_fraction"] is not None) == (peak is not None)
    if peak:
        assert peak in limits and prefill["peak_limit"] == peak
    bad = run([tool("amxforge"), "bench", "kernels", "--case", "dense:fp64:avx2:1:1:1"], cwd=project)
    assert bad.returncode == 2 and "want KERNEL:DTYPE:IMPL" in bad.stderr


def test_kbench_pins_its_threads_and_measures_the_limits_asked_for(kernel_project):
    """amxforge-kbench pins one thread per core unless OMP_PROC_BIND says otherwise, and says so in every record;
    --limits measures only the limits named; asked for more threads than its CPUs, it warns that they share cores."""
    from conftest import HOST_PROBE
    variant = HOST_PROBE["variants"]["auto"]["picks"]
    if variant is None:
        pytest.skip("no variant can run on this host")
    exe = str(kernel_project(variant) / "build" / variant / "bin" / "amxforge-kbench")
    res = run([exe, "--threads", "1", "--only", "limits", "--limits", "read_bw"], check=True)
    records = [json.loads(line) for line in res.stdout.splitlines()]
    assert [r["limit"] for r in records if r["record"] == "limit"] == ["read_bw"]
    assert records[0] == {"record": "plan", "records": 1, "variant": variant}  # the plan counts what follows
    assert records[-1]["pinned"] is True and records[-1]["gbps"] > 0
    unpinned = run([exe, "--threads", "1", "--case", "dense:bf16:ref:2:16:32", "--limits", "none", "--min-bytes", "0"],
                   env={"OMP_PROC_BIND": "false"}, check=True)
    records = [json.loads(line) for line in unpinned.stdout.splitlines()]
    assert [r["record"] for r in records] == ["plan", "case"] and records[1]["pinned"] is False
    assert records[1]["min_seconds"] <= records[1]["seconds"] <= records[1]["max_seconds"]
    # cases without --limits: the read bandwidth alone where their implementation names no peak (the reference)
    ref = run([exe, "--threads", "1", "--case", "dense:bf16:ref:2:16:32", "--case", "sparse:bf16:ref:3:16:32:0.5",
               "--min-bytes", "0"], check=True)
    assert [json.loads(line).get("limit") for line in ref.stdout.splitlines()] == [None, "read_bw", None, None]
    if len(os.sched_getaffinity(0)) >= 2:  # pinned, two threads on two CPUs: no warning
        two = run([exe, "--threads", "2", "--only", "limits", "--limits", "none"], check=True)
        assert "warning" not in two.stderr
    one_cpu = subprocess.run([exe, "--threads", "2", "--only", "limits", "--limits", "none"], capture_output=True,
                             text=True, preexec_fn=lambda: os.sched_setaffinity(0, {min(os.sched_getaffinity(0))}))
    assert one_cpu.returncode == 0
    assert "2 threads asked for, but this process may run on 1 CPUs only" in one_cpu.stderr


def test_kbench_refuses_on_a_host_without_the_variants_features(kernel_project):
    project = kernel_project("amx")
    res = run([str(project / "build" / "amx" / "bin" / "amxforge-kbench"), "--only", "limits"],
              env={"AMXFORGE_GUARD_HIDE": "amx_tile"})
    required = set(KernelLibrary("amx", project).lib.akf_required_features().decode().split())
    assert res.returncode == 2 and "amxforge-kbench: variant amx cannot run on this host: this CPU lacks" in res.stderr
    lacking = re.search(r"this CPU lacks (.*?) \(variant", res.stderr).group(1).split()
    assert set(lacking) == (required - HOST) | {"amx_tile"}


def test_bench_cli_plot_is_checked_before_the_benchmark_and_written_whole(kernel_project, tmp_path):
    """`bench kernels --plot` into a FIFO or a missing directory: one line before the benchmark (it was an internal
    error after it); to a name not ending in .png: one line (a PNG was written under it); into a path with a space and
    a quote: a PNG, written atomically (no temporary left beside it)."""
    from conftest import HOST_PROBE
    variant = HOST_PROBE["variants"]["auto"]["picks"]
    if variant is None:
        pytest.skip("no variant can run on this host")
    project = kernel_project(variant)
    impl = KernelLibrary(variant, project).impls()[-1]
    cases = ["--min-bytes", "2e6", "--case", f"dense:bf16:{impl}:1:256:256", "--case",
             f"sparse:bf16:{impl}:1:256:256:0.7"]
    os.mkfifo(tmp_path / "fifo.png")
    for bad, why in ((tmp_path / "fifo.png", "it is a FIFO, not a regular file"),
                     (tmp_path / "nowhere" / "p.png", "No such file or directory")):
        res = run([tool("amxforge"), "bench", "kernels", *cases, "--plot", str(bad)], cwd=project)
        assert res.returncode == 2 and res.stdout == "", res.stderr
        assert res.stderr.strip().splitlines() == [f"amxforge: error: --plot {bad}: cannot be written ({why}); give "
                                                   f"a .png path in an existing, writable directory"]
    res = run([tool("amxforge"), "bench", "kernels", *cases, "--plot", str(tmp_path / "s p.jpg")], cwd=project)
    assert res.returncode == 2 and res.stdout == "" and not (tmp_path / "s p.jpg").exists()
    assert res.stderr.strip().splitlines() == [f"amxforge: error: --plot {tmp_path / 's p.jpg'}: the plot is a PNG; "
                                               f"give a path ending in .png, e.g. {tmp_path / 's p.png'}"]
    plots = tmp_path / "my 'plots'"
    plots.mkdir()
    res = run([tool("amxforge"), "bench", "kernels", *cases, "--plot", str(plots / "s p.png")], cwd=project)
    assert res.returncode == 0, res.stderr
    assert [p.name for p in plots.iterdir()] == ["s p.png"]
    assert (plots / "s p.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_kbench_and_selftest_refuse_bad_options_in_one_line_and_drop_none(kernel_project, tmp_path):
    """Every option of amxforge-kbench is checked whole: a count past the table's room (the ninth --threads count was
    dropped without a word), an empty count (1,,2 ran 1,2), a fraction, a negative byte count, an unknown --only or
    limit name: one line naming the value and the fix, exit 2, nothing measured. --help exits 0. Through `amxforge
    bench kernels` the line is the one shown; `--plot` with cases that hold no sparse / dense pair is refused before
    the benchmark."""
    from conftest import HOST_PROBE
    variant = HOST_PROBE["variants"]["auto"]["picks"]
    if variant is None:
        pytest.skip("no variant can run on this host")
    project = kernel_project(variant)
    kbench = str(project / "build" / variant / "bin" / "amxforge-kbench")
    many = ",".join(str(t) for t in range(1, 18))  # distinct: amxforge runs a repeated count once
    for args, line in (
            (["--threads", many], f"--threads {many}: at most 16 counts in one run"),
            (["--threads", "1.5"], "--threads 1.5: give positive counts, e.g. 1,2"),
            (["--threads", "2,0"], "--threads 2,0: give positive counts, e.g. 1,2"),
            (["--threads", "1,,2"], "--threads 1,,2: give positive counts, e.g. 1,2"),
            (["--threads", "4,"], "--threads 4,: give positive counts, e.g. 1,2"),
            (["--reps", "x"], "--reps x: give a count from 1 to 1000"),
            (["--min-bytes", "-1"], "--min-bytes -1: give a byte count from 0 to 1e12, e.g. 1.1e9"),
            (["--only", "dens"], "--only dens: give dense, sparse or limits")):
        res = run([kbench, *args])
        assert res.returncode == 2 and res.stdout == "", (args, res.stdout[:200])
        assert res.stderr.splitlines() == [f"amxforge-kbench: {line}"], args
    res = run([kbench, "--limits", "read_bw,read_bandwidth"])
    assert res.returncode == 2 and res.stdout == ""
    assert res.stderr.startswith("amxforge-kbench: --limits read_bw,read_bandwidth: give none or names from "
                                 "tile_peak_bf16, ")
    assert res.stderr.rstrip().endswith(", read_bw") and len(res.stderr.splitlines()) == 1
    cases = [a for i in range(33) for a in ("--case", f"dense:bf16:avx2:1:8:{8 + i}")]
    res = run([kbench, "--only", "limits", *cases])
    assert res.returncode == 2 and res.stderr.splitlines() == [
        "amxforge-kbench: --case dense:bf16:avx2:1:8:40: at most 32 cases in one run: split them over runs"]
    res = run([kbench, "--bogus"])
    assert res.returncode == 2 and res.stderr.splitlines()[-1] == "amxforge-kbench: unknown option --bogus: see the " \
        "usage above" and res.stderr.startswith("usage: amxforge-kbench")
    res = run([kbench, "--help"])
    assert res.returncode == 0 and res.stdout.startswith("usage: amxforge-kbench") and res.stderr == ""
    selftest = str(project / "build" / variant / "bin" / "amxforge-selftest")  # it takes no options: none ignored
    res = run([selftest, "--impl", "avx2"])
    assert res.returncode == 2 and res.stdout == "" and res.stderr.splitlines()[-1] == \
        "amxforge-selftest: --impl: it takes no options; run it without any"
    res = run([selftest, "--help"])
    assert res.returncode == 0 and res.stdout.startswith("usage: amxforge-selftest") and res.stderr == ""
    res = run([tool("amxforge"), "bench", "kernels", "--threads", many], cwd=project)
    assert res.returncode == 2 and res.stderr.splitlines()[-1] == \
        f"amxforge: error: amxforge-kbench: --threads {many}: at most 16 counts in one run"
    impl = KernelLibrary(variant, project).impls()[-1]
    plot = tmp_path / "p.png"
    for cases, add in (([f"sparse:bf16:{impl}:1:256:256:0.7", f"dense:bf16:{impl}:1:256:512"],
                        f"--case dense:bf16:{impl}:1:256:256"),
                       ([f"dense:int8:{impl}:1:256:256"], f"--case sparse:int8:{impl}:1:256:256:0.7")):
        res = run([tool("amxforge"), "bench", "kernels", *[a for c in cases for a in ("--case", c)], "--plot",
                   str(plot)], cwd=project)
        assert res.returncode == 2 and res.stdout == "" and not plot.exists()
        assert res.stderr.splitlines() == ["amxforge: error: --plot: no --case is a sparse case with a dense case of "
                                           f"its dtype and M:N:K, so there would be nothing to plot; add {add}"]


@pytest.mark.parametrize("sig, code", [("SIGINT", 130), ("SIGTERM", 143)])
def test_an_interrupted_bench_kernels_leaves_no_kbench_running(kernel_project, sig, code):
    """SIGINT or SIGTERM to amxforge alone (`kill`, a supervisor; Ctrl-C in a terminal reaches the whole group) left
    its amxforge-kbench running on, an orphan loading the host for minutes. Now amxforge exits 130 / 143, one line,
    and the kbench it started is gone with it. (kbench restarts itself once, to pin its threads, by its own path:
    ps names it amxforge-kbench, not "exe".)"""
    import signal
    import time
    from amxforge import procfs
    from conftest import HOST_PROBE
    variant = HOST_PROBE["variants"]["auto"]["picks"]
    if variant is None:
        pytest.skip("no variant can run on this host")
    project = kernel_project(variant)
    proc = subprocess.Popen([tool("amxforge"), "bench", "kernels", "--threads", "1"], cwd=project,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def kbench():  # the pid of proc's amxforge-kbench child, or None
        for entry in os.listdir("/proc"):
            try:
                name, fields = procfs.stat(f"/proc/{entry}/stat") if entry.isdigit() else (None, {})
            except (OSError, ValueError):
                continue
            if name == "amxforge-kbench" and fields.get(4) == str(proc.pid) and fields.get(procfs.STATE) != "Z":
                return int(entry)
        return None

    try:
        deadline = time.monotonic() + 60
        while (child := kbench()) is None and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.1)
        assert child, "amxforge-kbench never started"
        time.sleep(1)  # measuring
        proc.send_signal(getattr(signal, sig))
        _, err = proc.communicate(timeout=30)
        assert proc.returncode == code and err.strip().splitlines()[-1] == \
            f"amxforge: {'interrupted' if sig == 'SIGINT' else 'terminated'}", err
        try:
            name, fields = procfs.stat(f"/proc/{child}/stat")
        except OSError:  # gone: amxforge killed and waited for it
            name, fields = None, {}
        assert name != "amxforge-kbench" or fields[procfs.STATE] == "Z", f"amxforge-kbench {child} still runs"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_plot_draws_speedup_against_the_ceiling(tmp_path):
    from amxforge.bench import kernels as kb
    rows = kb.derive([
        {"record": "limit", "limit": "read_bw", "gbps": 14.0, "threads": 1},
        {"record": "case", "kernel": "dense", "impl": "amx", "dtype": "bf16", "M": 1, "N": 64, "K": 64,
         "sparsity": 0.0, "threads": 1, "seconds": 1.0, "weight_bytes": 8192, "flops": 8192, "copies": 1},
        *[{"record": "case", "kernel": "sparse", "impl": "amx", "dtype": "bf16", "M": 1, "N": 64, "K": 64,
           "sparsity": s, "threads": 1, "seconds": 1.0 / (1 + s), "weight_bytes": 4096, "flops": 8192, "copies": 1}
          for s in (0.5, 0.7, 0.9)]])
    sparse = [r for r in rows if r.get("kernel") == "sparse"]
    assert [round(r["speedup_vs_dense"], 2) for r in sparse] == [1.5, 1.7, 1.9]
    assert sparse[0]["ceiling_fraction"] == pytest.approx(1.5 / kb.ceiling("bf16", 0.5))
    assert kb.ceiling("bf16", 0.5) == pytest.approx(1.78, abs=0.01) and kb.ceiling("int8", 0.7) == pytest.approx(2.35, abs=0.01)
    out = tmp_path / "speedup.png"
    kb.plot(rows, out)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 10_000
    with pytest.raises(AmxforgeError, match="nothing to plot"):
        kb.plot([r for r in rows if r.get("kernel") != "sparse"], out)


def test_a_fraction_against_an_unstable_limit_is_flagged():
    """Limits carry the spread of their repetitions; above 10 % the fractions judged against them are marked."""
    from amxforge.bench import kernels as kb
    case = {"record": "case", "kernel": "dense", "impl": "avx2", "dtype": "bf16", "M": 512, "N": 64, "K": 64,
            "sparsity": 0.0, "threads": 1, "seconds": 1e-3, "weight_bytes": 8192, "flops": 2 * 512 * 64 * 64,
            "copies": 1}
    steady = {"record": "limit", "limit": "fma_peak_fp32", "gflops": 100.0, "spread_pct": 4.0, "reps": 5,
              "threads": 1}
    shaky = dict(steady, spread_pct=25.0)
    bw = {"record": "limit", "limit": "read_bw", "gbps": 14.0, "spread_pct": 2.0, "reps": 5, "threads": 1}
    good = [r for r in kb.derive([steady, bw, case]) if r.get("record") == "case"][0]
    bad = [r for r in kb.derive([shaky, bw, case]) if r.get("record") == "case"][0]
    assert good["unstable_limits"] == [] and bad["unstable_limits"] == ["fma_peak_fp32"]
    assert good["peak_fraction"] == bad["peak_fraction"]
    text = kb.table(kb.derive([shaky, bw, case]))
    assert "UNSTABLE" in text and f"{100 * bad['peak_fraction']:.0f}!" in text
    assert "UNSTABLE" not in kb.table(kb.derive([steady, bw, case]))


def test_a_decode_is_judged_against_the_read_beside_its_reps():
    """The paired fraction replaces the one against the limit measured before the cases, whose spread then does not
    judge it (the paired figure carries its own)."""
    from amxforge.bench import kernels as kb
    case = {"record": "case", "kernel": "dense", "impl": "amx", "dtype": "bf16", "M": 1, "N": 64, "K": 64,
            "sparsity": 0.0, "threads": 1, "seconds": 1e-3, "weight_bytes": 14_000_000, "flops": 8192, "copies": 1,
            "paired_read_gbps": 20.0, "bw_fraction_paired": 0.7, "bw_fraction_paired_min": 0.6,
            "bw_fraction_paired_max": 0.8}
    shaky_bw = {"record": "limit", "limit": "read_bw", "gbps": 14.0, "spread_pct": 40.0, "reps": 5, "threads": 1}
    row = [r for r in kb.derive([shaky_bw, case]) if r.get("record") == "case"][0]
    assert row["bw_fraction"] == 0.7 and "read_bw" not in row["unstable_limits"]
    unpaired = {k: v for k, v in case.items() if not k.startswith(("paired", "bw_fraction"))}
    row = [r for r in kb.derive([shaky_bw, unpaired]) if r.get("record") == "case"][0]
    assert row["bw_fraction"] == pytest.approx(1.0) and row["unstable_limits"] == ["read_bw"]
