"""ctypes binding of build/VARIANT/lib/libamxforge_kernels.so (tests and bench use it). Implementations and dtypes
are the rows of toolchain/kernels.toml; the library itself says which it compiled and which run here."""

import ctypes
from pathlib import Path

import numpy as np

from .errors import AmxforgeError

STATUS = {0: "ok", 1: "CPU lacks a feature", 2: "OS has not enabled the state", 3: "AMX permission refused",
          4: "bad arguments", 5: "not built into this variant"}

_u16p = np.ctypeslib.ndpointer(np.uint16, flags="C_CONTIGUOUS")
_f32p = np.ctypeslib.ndpointer(np.float32, flags="C_CONTIGUOUS")
_i8p = np.ctypeslib.ndpointer(np.int8, flags="C_CONTIGUOUS")
_u8p = np.ctypeslib.ndpointer(np.uint8, flags="C_CONTIGUOUS")


class SparseInfo(ctypes.Structure):
    _fields_ = [("dtype", ctypes.c_int), ("K", ctypes.c_int), ("N", ctypes.c_int), ("panels", ctypes.c_int),
                ("ktiles", ctypes.c_int), ("nnz", ctypes.c_uint64), ("tiles", ctypes.c_uint64),
                ("zero_tiles", ctypes.c_uint64), ("bytes", ctypes.c_uint64)]


def aligned_empty(count: int, dtype, align: int = 64) -> np.ndarray:
    """A 1-D array whose data is `align`-byte aligned (packed weights: tile rows must not straddle cache lines)."""
    itemsize = np.dtype(dtype).itemsize
    raw = np.empty(count * itemsize + align, dtype=np.uint8)
    offset = (-raw.ctypes.data) % align
    return raw[offset:offset + count * itemsize].view(dtype)


def to_bf16(x) -> np.ndarray:
    """float32 -> bf16 bits, round to nearest even (what the hardware conversions do)."""
    bits = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32)
    return ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16).astype(np.uint16)


def from_bf16(h) -> np.ndarray:
    return (np.asarray(h, dtype=np.uint16).astype(np.uint32) << 16).view(np.float32)


class HookTotals(ctypes.Structure):
    _fields_ = [("dense", ctypes.c_uint64), ("sparse", ctypes.c_uint64), ("refused", ctypes.c_uint64),
                ("repacked", ctypes.c_uint64), ("bytes", ctypes.c_size_t), ("refused_bytes", ctypes.c_size_t),
                ("freed", ctypes.c_uint64), ("freed_bytes", ctypes.c_size_t), ("pairs", ctypes.c_uint64),
                ("pairs_moved", ctypes.c_uint64), ("panels", ctypes.c_uint64), ("panels_moved", ctypes.c_uint64)]


GGML_TYPES = {"f32": 0, "f16": 1, "q8_0": 8, "bf16": 30}  # the ggml type ids the matmul handler is called with


class KernelLibrary:
    def __init__(self, variant: str, project_dir: Path = None):
        path = Path(project_dir or ".").resolve() / "build" / variant / "lib" / "libamxforge_kernels.so"
        if not path.is_file():
            raise AmxforgeError(f"{path} not found: build it with scons variant={variant}")
        self.path = path
        try:
            lib = ctypes.CDLL(str(path))
        except OSError as exc:
            raise AmxforgeError(f"{path} does not load ({exc}); rebuild it with scons variant={variant}") from None
        lib.akf_variant.restype = ctypes.c_char_p
        lib.akf_required_features.restype = ctypes.c_char_p
        lib.akf_guard.argtypes = [ctypes.c_char_p, ctypes.c_size_t]
        lib.akf_compiled_impls.restype = ctypes.c_uint
        lib.akf_runnable_impls.restype = ctypes.c_uint
        lib.akf_impl_count.restype = ctypes.c_int
        lib.akf_impl_name.restype = ctypes.c_char_p
        lib.akf_impl_name.argtypes = [ctypes.c_int]
        lib.akf_impl_needs.restype = ctypes.c_char_p
        lib.akf_impl_needs.argtypes = [ctypes.c_int]
        lib.akf_bf16_packed_elems.restype = ctypes.c_size_t
        lib.akf_bf16_packed_elems.argtypes = [ctypes.c_int, ctypes.c_int]
        lib.akf_bf16_pack_b.argtypes = [ctypes.c_int, ctypes.c_int, _u16p, _u16p]
        lib.akf_gemm_bf16.argtypes = [ctypes.c_int] * 4 + [_u16p, _u16p, _f32p]
        lib.akf_int8_packed_bytes.restype = ctypes.c_size_t
        lib.akf_int8_packed_bytes.argtypes = [ctypes.c_int, ctypes.c_int]
        lib.akf_int8_pack_b.argtypes = [ctypes.c_int, ctypes.c_int, _i8p, _u8p]
        lib.akf_gemm_int8.argtypes = [ctypes.c_int] * 4 + [_i8p, _f32p, _u8p, _f32p, _f32p]
        lib.akf_sparse_pack.restype = ctypes.c_void_p
        lib.akf_sparse_pack.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_void_p, ctypes.c_char_p,
                                        ctypes.c_size_t]
        lib.akf_sparse_pack_bt.restype = ctypes.c_void_p
        lib.akf_sparse_pack_bt.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_void_p, ctypes.c_size_t,
                                           ctypes.c_char_p, ctypes.c_size_t]
        lib.akf_sparse_free.argtypes = [ctypes.c_void_p]
        lib.akf_sparse_info.argtypes = [ctypes.c_void_p, ctypes.POINTER(SparseInfo)]
        lib.akf_sparse_unpack.argtypes = [ctypes.c_void_p, ctypes.c_void_p]
        lib.akf_sparse_save.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_size_t]
        lib.akf_sparse_load.restype = ctypes.c_void_p
        lib.akf_sparse_load.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_size_t]
        lib.akf_spmm_bf16.argtypes = [ctypes.c_int, ctypes.c_int, _u16p, ctypes.c_void_p, _f32p]
        lib.akf_spmm_int8.argtypes = [ctypes.c_int, ctypes.c_int, _i8p, _f32p, ctypes.c_void_p, _f32p, _f32p]
        lib.akf_cvt_bf16.argtypes = [ctypes.c_int, _f32p, _u16p, ctypes.c_size_t]
        lib.akf_hook_mul_mat_4d.restype = ctypes.c_int
        lib.akf_hook_mul_mat_4d.argtypes = ([ctypes.c_long] * 13 + [ctypes.c_int, ctypes.c_void_p, ctypes.c_long] * 2
                                            + [ctypes.c_void_p, ctypes.c_long, ctypes.c_int, ctypes.c_int])
        lib.akf_hook_totals.argtypes = [ctypes.POINTER(HookTotals)]
        lib.akf_hook_settings.argtypes = [ctypes.c_int, ctypes.c_double]
        self.lib = lib
        # the library's own table (built from kernels.toml for this variant): name -> id
        self.ids = {lib.akf_impl_name(i).decode(): i for i in range(1, lib.akf_impl_count() + 1)}
        from .implementations import kernel_table
        self.dtypes = {name: d.id for name, d in kernel_table().dtypes.items()}

    @property
    def variant(self) -> str:
        return self.lib.akf_variant().decode()

    def guard(self):
        msg = ctypes.create_string_buffer(512)
        return self.lib.akf_guard(msg, len(msg)), msg.value.decode()

    def impls(self, runnable=True) -> list:
        """The implementations this library compiled (runnable=False) or can run here, in the table's order."""
        mask = self.lib.akf_runnable_impls() if runnable else self.lib.akf_compiled_impls()
        return [name for name, i in self.ids.items() if mask & (1 << (i - 1))]

    def impl_id(self, impl: str) -> int:
        if impl == "best":
            return 0
        try:
            return self.ids[impl]
        except KeyError:
            raise AmxforgeError(f"implementation {impl!r} is not in this library's table "
                                f"({', '.join(self.ids)})") from None

    def pack_b_bf16(self, B: np.ndarray) -> np.ndarray:
        K, N = B.shape
        out = aligned_empty(self.lib.akf_bf16_packed_elems(K, N), np.uint16)
        self.lib.akf_bf16_pack_b(K, N, np.ascontiguousarray(B, dtype=np.uint16), out)
        return out

    def cvt_bf16(self, x: np.ndarray, impl: str = "best") -> np.ndarray:
        x = np.ascontiguousarray(x, dtype=np.float32).ravel()
        out = np.zeros(x.size, dtype=np.uint16)
        self._check(self.lib.akf_cvt_bf16(self.impl_id(impl), x, out, x.size), f"akf_cvt_bf16({impl})")
        return out

    # --- the matmul handler, called as a fork calls it -----------------------------------------------------
    def hook_settings(self, impl: str = "best", sparse_min: float = 0.5) -> None:
        self.lib.akf_hook_settings(self.impl_id(impl), sparse_min)

    def hook_mul_mat(self, W: np.ndarray, B: np.ndarray, C: np.ndarray, ith: int, nth: int, type_a: str = "bf16",
                     type_b: str = "f32", batch=(1, 1, 1, 1)) -> bool:
        """One thread's call: W [Nx x K] (bf16 bits; its rows may be strided), B [Ny x K] (float32, or bf16 bits with
        type_b="bf16"), C [Ny x >=Nx] float32, all 2-D views whose row strides are passed as the fork passes them
        (bytes, bytes, floats)."""
        Nx, K = W.shape
        Ny = B.shape[0]
        for a in (W, B, C):
            if a.strides[1] != a.itemsize:
                raise AmxforgeError("hook_mul_mat: rows must be contiguous")
        return bool(self.lib.akf_hook_mul_mat_4d(
            Nx, Ny, K, *batch, 0, 0, 0, 0, 0, 0, GGML_TYPES[type_a], W.ctypes.data, W.strides[0],
            GGML_TYPES[type_b], B.ctypes.data, B.strides[0], C.ctypes.data, C.strides[0] // 4, ith, nth))

    def hook_totals(self) -> dict:
        t = HookTotals()
        self.lib.akf_hook_totals(ctypes.byref(t))
        return {name: getattr(t, name) for name, _ in HookTotals._fields_}

    def hook_forget(self) -> None:
        self.lib.akf_hook_forget()

    @staticmethod
    def _check(rc: int, what: str) -> None:
        if rc != 0:
            raise AmxforgeError(f"{what} failed: {STATUS.get(rc, rc)}")

    def gemm_bf16(self, A: np.ndarray, Bp: np.ndarray, N: int, impl: str = "best") -> np.ndarray:
        M, K = A.shape
        C = np.zeros((M, N), dtype=np.float32)
        self._check(self.lib.akf_gemm_bf16(self.impl_id(impl), M, N, K, np.ascontiguousarray(A, dtype=np.uint16), Bp, C),
                    f"akf_gemm_bf16({impl})")
        return C

    def pack_b_int8(self, B: np.ndarray) -> np.ndarray:
        K, N = B.shape
        out = aligned_empty(self.lib.akf_int8_packed_bytes(K, N), np.uint8)
        self.lib.akf_int8_pack_b(K, N, np.ascontiguousarray(B, dtype=np.int8), out)
        return out

    def gemm_int8(self, A, a_scale, Bp, b_scale, impl: str = "best") -> np.ndarray:
        M, K = A.shape
        N = len(b_scale)
        C = np.zeros((M, N), dtype=np.float32)
        self._check(self.lib.akf_gemm_int8(self.impl_id(impl), M, N, K, np.ascontiguousarray(A, dtype=np.int8),
                                           np.ascontiguousarray(a_scale, dtype=np.float32), Bp,
                                           np.ascontiguousarray(b_scale, dtype=np.float32), C), f"akf_gemm_int8({impl})")
        return C

    # --- sparse -----------------------------------------------------------------------------------------
    def sparse_pack(self, B: np.ndarray, dtype: str) -> "SparseMatrix":
        K, N = B.shape
        data = np.ascontiguousarray(B, dtype=np.uint16 if dtype == "bf16" else np.int8)
        msg = ctypes.create_string_buffer(512)
        handle = self.lib.akf_sparse_pack(self.dtypes[dtype], K, N, data.ctypes.data, msg, len(msg))
        return self._sparse(handle, msg)

    def sparse_pack_bt(self, W: np.ndarray, dtype: str) -> "SparseMatrix":
        """B = W^T packed straight from W [N x K] (bf16 bits or int8), whose rows may be strided, as a fork's are."""
        N, K = W.shape
        if W.dtype != (np.uint16 if dtype == "bf16" else np.int8) or W.strides[1] != W.itemsize:
            raise AmxforgeError("sparse_pack_bt: W must hold bf16 bits (uint16) or int8 in contiguous rows")
        msg = ctypes.create_string_buffer(512)
        handle = self.lib.akf_sparse_pack_bt(self.dtypes[dtype], K, N, W.ctypes.data, W.strides[0] // W.itemsize,
                                             msg, len(msg))
        return self._sparse(handle, msg)

    def _sparse(self, handle, msg) -> "SparseMatrix":
        if not handle:
            raise AmxforgeError(f"sparse pack: {msg.value.decode()}")
        return SparseMatrix(self, handle)

    def sparse_load(self, path) -> "SparseMatrix":
        msg = ctypes.create_string_buffer(512)
        handle = self.lib.akf_sparse_load(str(path).encode(), msg, len(msg))
        if not handle:
            raise AmxforgeError(msg.value.decode())
        return SparseMatrix(self, handle)


class SparseMatrix:
    """A packed sparse weight matrix owned by the C library (freed with the object)."""

    def __init__(self, lib: KernelLibrary, handle: int):
        self.owner, self.handle = lib, handle

    def __del__(self):
        if getattr(self, "handle", None):
            self.owner.lib.akf_sparse_free(self.handle)
            self.handle = None

    def is_bf16(self, info) -> bool:
        return info["dtype"] == self.owner.dtypes["bf16"]

    def info(self) -> dict:
        out = SparseInfo()
        self.owner.lib.akf_sparse_info(self.handle, ctypes.byref(out))
        return {name: getattr(out, name) for name, _ in SparseInfo._fields_}

    def unpack(self) -> np.ndarray:
        info = self.info()
        out = np.zeros((info["K"], info["N"]), dtype=np.uint16 if self.is_bf16(info) else np.int8)
        self.owner._check(self.owner.lib.akf_sparse_unpack(self.handle, out.ctypes.data), "akf_sparse_unpack")
        return out

    def save(self, path) -> None:
        msg = ctypes.create_string_buffer(512)
        if self.owner.lib.akf_sparse_save(self.handle, str(path).encode(), msg, len(msg)) != 0:
            raise AmxforgeError(msg.value.decode())

    def matmul(self, A: np.ndarray, impl: str = "best", a_scale=None, b_scale=None) -> np.ndarray:
        info = self.info()
        M = A.shape[0]
        C = np.zeros((M, info["N"]), dtype=np.float32)
        lib, impl_id = self.owner.lib, self.owner.impl_id(impl)
        if self.is_bf16(info):
            rc = lib.akf_spmm_bf16(impl_id, M, np.ascontiguousarray(A, dtype=np.uint16), self.handle, C)
        else:
            rc = lib.akf_spmm_int8(impl_id, M, np.ascontiguousarray(A, dtype=np.int8),
                                   np.ascontiguousarray(a_scale, dtype=np.float32), self.handle,
                                   np.ascontiguousarray(b_scale, dtype=np.float32), C)
        self.owner._check(rc, f"akf_spmm({impl})")
        return C
