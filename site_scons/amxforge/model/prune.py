"""`amxforge model prune`: unstructured magnitude pruning of a GGUF's bf16 / f16 weight matrices, per output row
(ggml's row: the K weights of one output), written with gguf: a pruned model without a download, for measuring the
sparse path of fork_kernels=amxforge against the dense one on the same weights.

Every metadata field and every other tensor is copied as it is; the output is written beside --out under a
temporary name and renamed when complete."""

import fnmatch
import os
from pathlib import Path

from ..errors import AmxforgeError
from ..atomic import open_regular, require_writable, why
from .synth import GIVE_GGUF, _close_quietly, _remove_quietly, available_memory

PRUNABLE = ("bf16", "f16")  # the types whose matrices prune writes back exactly (gguf's names, upper-cased)
DEFAULT_GLOB = "blk.*"  # the transformer blocks' matrices; token embeddings and the output head stay dense


def check_sparsity(sparsity: float) -> None:
    if not 0.0 <= sparsity < 1.0:
        raise AmxforgeError(f"--sparsity {sparsity}: give a fraction from 0 to below 1, e.g. 0.5")


def prunes(name: str, glob: str = DEFAULT_GLOB) -> bool:
    """Whether a tensor of this name is pruned (`model prune --tensors`, `model synth --sparsity`)."""
    return fnmatch.fnmatchcase(name, glob)


def prune_rows(w, sparsity: float):
    """w (rows x K, float32) with the round(sparsity * K) smallest magnitudes of every row set to zero."""
    import numpy as np
    k = w.shape[1]
    drop = int(round(sparsity * k))
    if drop <= 0:
        return w
    idx = np.argpartition(np.abs(w), drop - 1, axis=1)[:, :drop]
    out = w.copy()
    np.put_along_axis(out, idx, 0.0, axis=1)
    return out


def _to_float(data, type_name: str):
    import numpy as np
    from ..kernels import from_bf16
    if type_name == "BF16":
        return from_bf16(np.asarray(data).view(np.uint16))
    return np.asarray(data).view(np.float16).astype(np.float32)


def _from_float(w, type_name: str):
    from ..kernels import to_bf16
    return to_bf16(w) if type_name == "BF16" else w.astype("float16")  # exact: the kept values are the inputs


def prune(src: Path, out: Path, sparsity: float, tensors: str = DEFAULT_GLOB) -> dict:
    try:
        import gguf
        import numpy as np
    except ImportError as exc:
        raise AmxforgeError(f"model prune needs the gguf and numpy packages: pip install gguf ({exc})") from None
    check_sparsity(sparsity)
    src, out = Path(src), Path(out)
    try:
        open_regular(src).close()  # a FIFO, a directory or a device is refused in one line
        reader = gguf.GGUFReader(str(src))
    except (OSError, ValueError) as exc:
        raise AmxforgeError(f"--in {src}: not a readable GGUF file ({why(exc)}); give a .gguf model") from None
    if out.resolve() == src.resolve():
        raise AmxforgeError(f"--out {out} is the input: give another file")
    require_writable(out, "--out", GIVE_GGUF)
    chosen = [t for t in reader.tensors if prunes(t.name, tensors) and len(t.shape) == 2]
    prunable = [t for t in chosen if t.tensor_type.name.lower() in PRUNABLE]
    if not prunable:
        kinds = sorted({t.tensor_type.name for t in chosen}) or ["none"]
        raise AmxforgeError(f"--tensors {tensors} matches no bf16 or f16 matrix in {src} (matched types: "
                            f"{', '.join(kinds)}); write a bf16 model (amxforge model synth --type bf16) or give "
                            f"another --tensors glob")
    largest = max(int(np.prod(t.shape)) for t in prunable)
    free = available_memory()
    if free is not None and 12 * largest > free:
        raise AmxforgeError(f"pruning {src} needs about {12 * largest >> 20} MiB of memory for its largest matrix and "
                            f"{free >> 20} MiB is available")
    arch_field = reader.fields.get("general.architecture")
    arch = arch_field.contents() if arch_field else "llama"
    tmp = out.with_name(out.name + f".tmp{os.getpid()}")
    try:
        writer = gguf.GGUFWriter(str(tmp), arch)
    except OSError as exc:
        raise AmxforgeError(f"cannot write {out}: {exc.strerror}; choose an --out in a writable directory") from None
    names = {t.name for t in prunable}
    zeros = total = 0
    try:
        for key, field in reader.fields.items():
            if key.startswith("GGUF.") or key == "general.architecture":
                continue  # the writer's own
            vtype = field.types[0]
            sub = field.types[-1] if vtype == gguf.GGUFValueType.ARRAY else None
            writer.add_key_value(key, field.contents(), vtype, sub_type=sub)
        for t in reader.tensors:
            data = np.asarray(t.data)
            if t.name in names:
                rows = _to_float(data, t.tensor_type.name).reshape(-1, int(t.shape[0]))
                pruned = prune_rows(rows, sparsity)
                zeros += int(np.count_nonzero(pruned == 0))
                total += pruned.size
                packed = _from_float(pruned, t.tensor_type.name)
                writer.add_tensor(t.name, packed.view(data.dtype).reshape(data.shape), raw_dtype=t.tensor_type)
            else:
                writer.add_tensor(t.name, data, raw_dtype=t.tensor_type)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
        os.replace(tmp, out)
    except OSError as exc:
        _close_quietly(writer)
        _remove_quietly(tmp)
        raise AmxforgeError(f"cannot write {out}: {exc.strerror or exc}; choose an --out with room for the "
                            f"model") from None
    except BaseException:
        _close_quietly(writer)
        _remove_quietly(tmp)
        raise
    return {"path": str(out), "source": str(src), "sparsity": sparsity, "tensors": len(prunable),
            "zero_fraction": round(zeros / total, 4) if total else 0.0, "bytes": out.stat().st_size}
