"""`amxforge model synth`: a small llama-architecture GGUF with random weights (gguf from PyPI).

Random weights make the model produce nonsense: it is for measuring speed (llama-bench), never quality."""

import os
import shutil
import subprocess
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from ..atomic import require_writable
from ..errors import AmxforgeError
from ..paths import toolchain_dir
from ..tomlfile import load_toml


@lru_cache(maxsize=1)
def type_table() -> dict:
    """toolchain/models.toml: the tensor types synth knows (gguf's names, whether the AMX path has a kernel)."""
    path = toolchain_dir() / "models.toml"
    types = load_toml(path).get("types", {})
    for name, rec in types.items():
        missing = [k for k in ("tensor", "file", "amx", "quantize") if k not in rec]
        if missing:
            raise AmxforgeError(f"{path}: [types.{name}] lacks {', '.join(missing)}; restore it from git")
    return types


@lru_cache(maxsize=None)
def gguf_cannot(qtype: str):
    """None when the installed gguf package quantizes qtype itself, else why not (asked of gguf, one block)."""
    try:
        import gguf
        import numpy as np
    except ImportError as exc:
        return f"the gguf and numpy packages are missing ({exc}): pip install gguf"
    tensor = getattr(gguf.GGMLQuantizationType, type_table()[qtype]["tensor"])
    try:
        gguf.quants.quantize(np.zeros((1, 256), dtype=np.float32), tensor)
    except NotImplementedError:
        from importlib.metadata import version
        return f"gguf {version('gguf')} has no quantizer for {tensor.name}"
    return None


def writable_types() -> list:
    """The types the installed gguf quantizes itself."""
    return [t for t in type_table() if not gguf_cannot(t)]


def check_known(qtype: str) -> None:
    if qtype not in type_table():
        raise AmxforgeError(f"--type {qtype}: choose one of {', '.join(type_table())}")


def check_type(qtype: str, quantize_with=None) -> None:
    check_known(qtype)
    why = gguf_cannot(qtype)
    if why and not quantize_with:
        raise AmxforgeError(f"--type {qtype} cannot be written here: {why}; add --quantize-with PATH/llama-quantize "
                            f"(a fork's own quantizer) or choose one of {', '.join(writable_types())}")

GIVE_GGUF = "a .gguf path in an existing, writable directory"  # what --out of model synth and prune should be
BLOCK = 32  # q8_0/q4_0 quantize rows in blocks of 32 values


@dataclass
class ModelShape:
    layers: int = 4
    dim: int = 1024
    ff: int = 2816
    heads: int = 16
    kv_heads: int = 4
    vocab: int = 2048
    ctx: int = 4096

    def check(self, spelling: dict = None) -> None:
        """One line naming the fix, in the front end's own words: `spelling` maps a field to how the user gave it
        (model synth: --dim; bench fork: DIM of --synth), and fields the front end does not take to their fixed
        value."""
        say = {name: f"--{name.replace('_', '-')}" for name in ("layers", "dim", "ff", "heads", "kv_heads", "vocab",
                                                                 "ctx")} | (spelling or {})
        for name in ("layers", "dim", "ff", "heads", "kv_heads", "vocab", "ctx"):
            if getattr(self, name) <= 0:
                raise AmxforgeError(f"{say[name]} must be positive")
        if self.dim % self.heads or self.heads % self.kv_heads:
            raise AmxforgeError(f"{say['dim']} ({self.dim}) must divide by {say['heads']} ({self.heads}), and "
                                f"{say['heads']} by {say['kv_heads']} ({self.kv_heads})")
        if self.dim % BLOCK or self.ff % BLOCK:
            raise AmxforgeError(f"{say['dim']} and {say['ff']} must be multiples of {BLOCK} (quantization blocks)")
        if self.vocab < 259:
            raise AmxforgeError(f"{say['vocab']} must be at least 259 (3 control tokens and 256 byte tokens)")

    def matrices(self) -> list:
        """(rows, cols) of every weight matrix, in the order synth writes them."""
        kv = self.dim // self.heads * self.kv_heads
        per_layer = [(self.dim, self.dim), (kv, self.dim), (kv, self.dim), (self.dim, self.dim),
                     (self.ff, self.dim), (self.ff, self.dim), (self.dim, self.ff)]
        return [(self.vocab, self.dim)] + per_layer * self.layers + [(self.vocab, self.dim)]

    def room(self, qtype: str) -> tuple:
        """(bytes of the file, bytes of memory while writing it): gguf's writer holds every tensor until it writes,
        and each matrix passes through float32 once."""
        import gguf
        block, size = gguf.GGML_QUANT_SIZES[getattr(gguf.GGMLQuantizationType, type_table()[qtype]["tensor"])]
        weights = sum(r * c for r, c in self.matrices())
        norms = 4 * (2 * self.layers + 1) * self.dim
        file_bytes = weights * size // block + norms + 64 * self.vocab + (1 << 20)
        largest = max(r * c for r, c in self.matrices())
        return file_bytes, file_bytes + 3 * 4 * largest

    @property
    def parameters(self) -> int:
        kv = self.dim // self.heads * self.kv_heads
        per_layer = 2 * self.dim * self.dim + 2 * kv * self.dim + 3 * self.dim * self.ff + 2 * self.dim
        return self.layers * per_layer + 2 * self.vocab * self.dim + self.dim


def _vocab(gguf, size: int):
    tokens = ["<unk>", "<s>", "</s>"] + [f"<0x{b:02X}>" for b in range(256)]
    tokens += [f"\u2581tok{i}" for i in range(size - len(tokens))]
    kinds = ([gguf.TokenType.UNKNOWN, gguf.TokenType.CONTROL, gguf.TokenType.CONTROL] +
             [gguf.TokenType.BYTE] * 256 + [gguf.TokenType.NORMAL] * (size - 259))
    return tokens, [0.0] * 3 + [-1000.0] * 256 + [-float(i) for i in range(size - 259)], kinds


def _close_quietly(writer) -> None:
    try:
        writer.close()
    except OSError:
        pass  # closing a file on a full disk can fail again: the temporary file is removed anyway


def _remove_quietly(path: Path) -> None:
    try:
        path.unlink(missing_ok=True)
    except OSError:
        pass  # a read-only disk never got the file in the first place


def synth(out: Path, qtype: str = "q8_0", shape: ModelShape = None, seed: int = 0, quantize_with=None,
          sparsity: float = 0.0) -> dict:
    try:
        import gguf
        import numpy as np
    except ImportError as exc:
        raise AmxforgeError(f"model synth needs the gguf and numpy packages: pip install gguf ({exc})") from None
    check_type(qtype, quantize_with)
    from .prune import check_sparsity, prune_rows, prunes
    check_sparsity(sparsity)
    require_writable(out, "--out", GIVE_GGUF)
    if gguf_cannot(qtype):  # write f16, then the fork's own quantizer converts it
        return _quantized(out, qtype, shape, seed, quantize_with)
    shape = shape or ModelShape()
    shape.check()
    out = Path(out)
    check_room(out, qtype, shape)
    rng = np.random.default_rng(seed)
    ggml_type = getattr(gguf.GGMLQuantizationType, type_table()[qtype]["tensor"])
    file_type = getattr(gguf.LlamaFileType, type_table()[qtype]["file"])
    tmp = out.with_name(out.name + f".tmp{os.getpid()}")
    try:
        writer = gguf.GGUFWriter(str(tmp), "llama")
    except OSError as exc:
        raise AmxforgeError(f"cannot write {out}: {exc.strerror}; choose an --out in a writable directory") from None
    try:
        writer.add_name("amxforge synthetic llama (random weights: for speed measurements only)")
        writer.add_context_length(shape.ctx)
        writer.add_embedding_length(shape.dim)
        writer.add_block_count(shape.layers)
        writer.add_feed_forward_length(shape.ff)
        writer.add_head_count(shape.heads)
        writer.add_head_count_kv(shape.kv_heads)
        writer.add_rope_dimension_count(shape.dim // shape.heads)
        writer.add_layer_norm_rms_eps(1e-5)
        writer.add_vocab_size(shape.vocab)
        writer.add_file_type(file_type)
        tokens, scores, kinds = _vocab(gguf, shape.vocab)
        writer.add_tokenizer_model("llama")
        writer.add_token_list(tokens)
        writer.add_token_scores(scores)
        writer.add_token_types(kinds)
        writer.add_bos_token_id(1)
        writer.add_eos_token_id(2)
        writer.add_unk_token_id(0)

        def matrix(name, rows, cols):
            w = (rng.standard_normal((rows, cols), dtype=np.float32) * 0.02)
            if sparsity and prunes(name):  # as `model prune` does: the blocks' matrices, per row
                w = prune_rows(w, sparsity)
            if ggml_type == gguf.GGMLQuantizationType.F16:
                writer.add_tensor(name, w.astype(np.float16))
            else:
                writer.add_tensor(name, gguf.quants.quantize(w, ggml_type), raw_dtype=ggml_type)

        def norm(name, n):
            writer.add_tensor(name, np.ones(n, dtype=np.float32))

        kv = shape.dim // shape.heads * shape.kv_heads
        matrix("token_embd.weight", shape.vocab, shape.dim)
        for i in range(shape.layers):
            norm(f"blk.{i}.attn_norm.weight", shape.dim)
            matrix(f"blk.{i}.attn_q.weight", shape.dim, shape.dim)
            matrix(f"blk.{i}.attn_k.weight", kv, shape.dim)
            matrix(f"blk.{i}.attn_v.weight", kv, shape.dim)
            matrix(f"blk.{i}.attn_output.weight", shape.dim, shape.dim)
            norm(f"blk.{i}.ffn_norm.weight", shape.dim)
            matrix(f"blk.{i}.ffn_gate.weight", shape.ff, shape.dim)
            matrix(f"blk.{i}.ffn_up.weight", shape.ff, shape.dim)
            matrix(f"blk.{i}.ffn_down.weight", shape.dim, shape.ff)
        norm("output_norm.weight", shape.dim)
        matrix("output.weight", shape.vocab, shape.dim)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
        os.replace(tmp, out)  # never a half-written model under the real name
    except OSError as exc:
        _close_quietly(writer)
        _remove_quietly(tmp)
        # numpy's tofile reports a full disk as "N requested and M written", without an errno
        why = exc.strerror or (f"{exc}: the disk is full" if "written" in str(exc) else str(exc))
        raise AmxforgeError(f"cannot write {out}: {why}; choose an --out on a writable disk with room for the "
                            f"model") from None
    except BaseException:
        _close_quietly(writer)
        _remove_quietly(tmp)
        raise
    return _info(out, qtype, shape, "gguf") | {"sparsity": sparsity}


def check_room(out: Path, qtype: str, shape: ModelShape, extra_files: int = 0) -> None:
    """Refuse a model that does not fit the free memory (while writing) or the free disk beside `out`, with the
    sizes, before any of it is made. extra_files: temporary copies written beside it (an f16 to quantize)."""
    file_bytes, ram = shape.room(qtype)
    disk = file_bytes * (1 + extra_files)
    free_ram = available_memory()
    place = os.statvfs(Path(out).parent)
    if place.f_flag & os.ST_RDONLY:
        raise AmxforgeError(f"cannot write {out}: Read-only file system; choose an --out in a writable directory")
    free_disk = place.f_bavail * place.f_frsize
    if free_ram is not None and ram > free_ram:
        raise AmxforgeError(f"a {qtype} model of {shape.layers} layers, dim {shape.dim}, ff {shape.ff} "
                            f"({shape.parameters / 1e6:.0f} M parameters) needs about {_size(ram)} of memory to "
                            f"write, and {_size(free_ram)} is available; choose a smaller shape")
    if disk > free_disk:
        raise AmxforgeError(f"a {qtype} model of {shape.parameters / 1e6:.0f} M parameters needs about {_size(disk)} "
                            f"on disk, and {_size(free_disk)} free beside {out}; the disk is full for it: choose "
                            f"a smaller shape or another place")


def _size(n: int) -> str:
    return f"{n / (1 << 30):.1f} GiB" if n >= 1 << 30 else f"{n / (1 << 20):.1f} MiB"


def available_memory():
    """MemAvailable from /proc/meminfo in bytes (None where it cannot be read)."""
    from ..atomic import read_text
    try:
        for line in read_text("/proc/meminfo").splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def _info(out: Path, qtype: str, shape: ModelShape, writer: str) -> dict:
    return {"path": str(out), "type": qtype, "parameters": shape.parameters, "bytes": out.stat().st_size,
            "layers": shape.layers, "dim": shape.dim, "ff": shape.ff, "heads": shape.heads,
            "kv_heads": shape.kv_heads, "vocab": shape.vocab, "amx_kernel": type_table()[qtype]["amx"],
            "written_by": writer}


def _quantized(out: Path, qtype: str, shape: ModelShape, seed: int, quantize_with) -> dict:
    """An f16 synth converted by the fork's llama-quantize (gguf has no quantizer for the K and IQ types)."""
    exe = shutil.which(str(quantize_with))
    if not exe:
        raise AmxforgeError(f"--quantize-with {quantize_with}: not an executable; give the path of a fork's "
                            f"llama-quantize (e.g. build/amx/bin/llama-quantize)")
    shape = shape or ModelShape()
    shape.check()
    out = Path(out)
    check_room(out, "f16", shape, extra_files=1)
    f16 = out.with_name(out.name + f".f16.tmp{os.getpid()}")
    tmp = out.with_name(out.name + f".tmp{os.getpid()}")
    try:
        synth(f16, "f16", shape, seed)
        want = type_table()[qtype]["quantize"]
        res = subprocess.run([exe, str(f16), str(tmp), want], capture_output=True, text=True)
        if res.returncode != 0 or not tmp.is_file():
            last = (res.stderr.strip().splitlines() or res.stdout.strip().splitlines() or ["no output"])[-1]
            raise AmxforgeError(f"{exe} could not write {want} (exit {res.returncode}): {last}")
        os.replace(tmp, out)
    finally:
        _remove_quietly(f16)
        _remove_quietly(tmp)
    return _info(out, qtype, shape, exe)
