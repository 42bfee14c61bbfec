"""ctypes binding of build/VARIANT/lib/libamxforge_kernels.so (tests and bench use it)."""

import ctypes
from pathlib import Path

import numpy as np

from .errors import AmxforgeError

IMPLS = {"best": 0, "ref": 1, "avx512": 2, "amx": 4}
STATUS = {0: "ok", 1: "CPU lacks a feature", 2: "OS has not enabled the state", 3: "AMX permission refused",
          4: "bad arguments", 5: "not built into this variant"}

_u16p = np.ctypeslib.ndpointer(np.uint16, flags="C_CONTIGUOUS")
_f32p = np.ctypeslib.ndpointer(np.float32, flags="C_CONTIGUOUS")


def to_bf16(x) -> np.ndarray:
    """float32 -> bf16 bits, round to nearest even (what the hardware conversions do)."""
    bits = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32)
    return ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16).astype(np.uint16)


def from_bf16(h) -> np.ndarray:
    return (np.asarray(h, dtype=np.uint16).astype(np.uint32) << 16).view(np.float32)


class KernelLibrary:
    def __init__(self, variant: str, project_dir: Path = None):
        path = Path(project_dir or ".").resolve() / "build" / variant / "lib" / "libamxforge_kernels.so"
        if not path.is_file():
            raise AmxforgeError(f"{path} not found: build it with scons variant={variant}")
        self.path = path
        lib = ctypes.CDLL(str(path))
        lib.akf_variant.restype = ctypes.c_char_p
        lib.akf_required_features.restype = ctypes.c_char_p
        lib.akf_guard.argtypes = [ctypes.c_char_p, ctypes.c_size_t]
        lib.akf_compiled_impls.restype = ctypes.c_uint
        lib.akf_runnable_impls.restype = ctypes.c_uint
        lib.akf_bf16_packed_elems.restype = ctypes.c_size_t
        lib.akf_bf16_packed_elems.argtypes = [ctypes.c_int, ctypes.c_int]
        lib.akf_bf16_pack_b.argtypes = [ctypes.c_int, ctypes.c_int, _u16p, _u16p]
        lib.akf_gemm_bf16.argtypes = [ctypes.c_int] * 4 + [_u16p, _u16p, _f32p]
        self.lib = lib

    @property
    def variant(self) -> str:
        return self.lib.akf_variant().decode()

    def guard(self):
        msg = ctypes.create_string_buffer(512)
        return self.lib.akf_guard(msg, len(msg)), msg.value.decode()

    def impls(self, runnable=True) -> list:
        mask = self.lib.akf_runnable_impls() if runnable else self.lib.akf_compiled_impls()
        return [name for name, bit in IMPLS.items() if bit and mask & bit]

    def pack_b_bf16(self, B: np.ndarray) -> np.ndarray:
        K, N = B.shape
        out = np.empty(self.lib.akf_bf16_packed_elems(K, N), dtype=np.uint16)
        self.lib.akf_bf16_pack_b(K, N, np.ascontiguousarray(B, dtype=np.uint16), out)
        return out

    def gemm_bf16(self, A: np.ndarray, Bp: np.ndarray, N: int, impl: str = "best") -> np.ndarray:
        M, K = A.shape
        C = np.zeros((M, N), dtype=np.float32)
        rc = self.lib.akf_gemm_bf16(IMPLS[impl], M, N, K, np.ascontiguousarray(A, dtype=np.uint16), Bp, C)
        if rc != 0:
            raise AmxforgeError(f"akf_gemm_bf16({impl}) failed: {STATUS.get(rc, rc)}")
        return C
